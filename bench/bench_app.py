"""app.py's endpoint under load on loopback: latency of one client, throughput of four.

    python -m bench.bench_app                      # flowers5 at alpha 0.35, 224-pixel photos
    python -m bench.bench_app --seconds 30 --clients 4

Trains stage 1 on flowers5 (the shared set and weights), starts app.py on a free port with that
model, and checks its answers against predict.py --json on the same files (the same runtime).
Then one client sends --requests photos one after another (latency: median and 99th percentile,
as the client sees it, HTTP included), and --clients clients send photos for --seconds (requests
per second, latency, failures, and whether every answer equals predict.py's). Writes
bench/results/app.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.bench_own_data import FLOWERS, run_stage1
from bench.common import ROOT, save


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {len(os.sched_getaffinity(0))} cores"
    return platform.processor()


def start(model: Path) -> tuple[subprocess.Popen, str]:
    import requests

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "app.py", "--model", str(model), "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            requests.get(url, timeout=2)
            return process, url
        except requests.ConnectionError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("app.py did not start")


def summary(latencies: list[float], seconds: float, failures: int, wrong: int) -> dict:
    milliseconds = 1000 * np.asarray(latencies)
    return {"requests": len(latencies), "failures": failures, "answers_unlike_predict": wrong,
            "requests_per_second": round(len(latencies) / seconds, 1),
            "p50_ms": round(float(np.percentile(milliseconds, 50)), 2),
            "p99_ms": round(float(np.percentile(milliseconds, 99)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="one client's requests, for its latency")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    import requests

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "flowers5.h5"
        run_stage1(FLOWERS, 0, model, Path(tmp) / "stage1.log")
        photos = []
        with tarfile.open(FLOWERS) as archive:
            for member in archive:
                if member.isfile() and "/val/" in member.name and len(photos) < 8:
                    photos.append(Path(tmp) / Path(member.name).name)
                    photos[-1].write_bytes(archive.extractfile(member).read())
        subprocess.run([sys.executable, "predict.py", *map(str, photos), "--model", str(model), "--runtime", "litert",
                        "--json", str(Path(tmp) / "p.json")], cwd=ROOT, capture_output=True, check=True)
        expected = {Path(row["path"]).name: row for row in json.loads((Path(tmp) / "p.json").read_text())["images"]}
        contents = {photo.name: photo.read_bytes() for photo in photos}
        process, url = start(model)
        try:
            def ask(name: str) -> tuple[float, bool, bool]:
                start_time = time.perf_counter()
                answer = requests.post(f"{url}/api/classify", files={"image": contents[name]}, timeout=30)
                elapsed = time.perf_counter() - start_time
                ok = answer.status_code == 200
                same = ok and all(abs(a["probability"] - b["probability"]) <= 1e-5 and a["class"] == b["class"]
                                  for a, b in zip(answer.json()["top"], expected[name]["top"], strict=True))
                return elapsed, ok, same

            names = list(contents)
            for name in names:  # warm-up
                ask(name)
            one = [ask(names[k % len(names)]) for k in range(args.requests)]
            single = summary([t for t, _, _ in one], sum(t for t, _, _ in one),
                             sum(not ok for _, ok, _ in one), sum(not same for _, _, same in one))

            def client(k: int) -> list[tuple[float, bool, bool]]:
                seen, end = [], time.perf_counter() + args.seconds
                while time.perf_counter() < end:
                    seen.append(ask(names[k % len(names)]))
                    k += 1
                return seen

            start_time = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                seen = [row for rows in pool.map(client, range(args.clients)) for row in rows]
            loaded = summary([t for t, _, _ in seen], time.perf_counter() - start_time,
                             sum(not ok for _, ok, _ in seen), sum(not same for _, _, same in seen))
        finally:
            process.terminate()
            process.wait(timeout=30)
    save("app", {"hardware": cpu(), "model": "flowers5 stage 1, alpha 0.35, 224 pixels", "photos": len(photos),
                 "one_client": single, f"{args.clients}_clients_{args.seconds:.0f}_s": loaded})


if __name__ == "__main__":
    main()
