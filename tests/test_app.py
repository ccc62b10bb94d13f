"""app.py: the page and the endpoint answer what predict.py answers, and survive bad input."""

from __future__ import annotations

import base64
import io
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from conftest import ROOT, browser_page
from PIL import Image

from tinynet import predict

pytest.importorskip("gradio", reason="app.py needs requirements-app.txt")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_base):
    port = free_port()
    process = subprocess.Popen([sys.executable, "app.py", "--model", str(tiny_base), "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.5)
        assert process.poll() is None, process.stdout.read()
    else:
        process.kill()
        pytest.fail("app.py did not start")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def test_images(tiny_tree):
    return [tiny_tree / "test" / "cat" / "0000.png", tiny_tree / "test" / "frog" / "0001.png"]


@pytest.fixture(scope="module")
def expected(tiny_base, test_images):
    """predict.py's answers, on the runtime the server uses."""
    rows = predict.main([*map(str, test_images), "--model", str(tiny_base), "--runtime", "litert"])
    return {row["path"].split("/")[-1]: row for row in rows}


def post(url: str, **kwargs) -> requests.Response:
    return requests.post(f"{url}/api/classify", timeout=60, **kwargs)


def test_the_page_shows_what_predict_says(server, test_images, expected):
    with browser_page() as (page, _):
        page.goto(server)
        page.locator("input[type=file]").first.set_input_files([str(path) for path in test_images])
        page.wait_for_selector("text=0000.png")
        page.get_by_role("button", name="Classify").click()
        page.wait_for_function("document.querySelectorAll('tr[data-image]').length == 2", timeout=120_000)
        shown = page.eval_on_selector_all("tr[data-image]", "rows => rows.map(r => [r.dataset.image, "
                                          "r.dataset.class, r.dataset.probability])")
        assert page.eval_on_selector_all("img", "images => images.filter(i => i.naturalWidth > 0).length") >= 2
    for name, top_class, probability in shown:
        best = expected[name]["top"][0]
        assert top_class == best["class"] and float(probability) == pytest.approx(best["probability"], abs=1e-5)


def test_the_endpoint_answers_what_predict_says_from_a_file_or_base64(server, test_images, expected):
    for path in test_images:
        by_file = post(server, files={"image": path.read_bytes()})
        by_json = post(server, json={"image": base64.b64encode(path.read_bytes()).decode()})
        for answer in (by_file, by_json):
            assert answer.status_code == 200, answer.text
            got, want = answer.json(), expected[path.name]
            assert [t["class"] for t in got["top"]] == [t["class"] for t in want["top"]]
            assert [t["probability"] for t in got["top"]] == pytest.approx(
                [t["probability"] for t in want["top"]], abs=1e-5)
            assert got["unsure"] == want["unsure"]


def png_bomb(side: int) -> bytes:
    """A PNG of side x side grey pixels, a few hundred kB that would decode to side**2 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(server, test_images):
    good = test_images[0].read_bytes()
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buffer, "JPEG")
    bad = {
        "not an image": ({"files": {"image": b"hello, not a picture"}}, 400, "not a readable image"),
        "a truncated file": ({"files": {"image": buffer.getvalue()[:200]}}, 400, "not a readable image"),
        "a 100-megapixel image": ({"files": {"image": png_bomb(10_000)}}, 400, "50 megapixels"),
        "a zip bomb": ({"files": {"image": png_bomb(30_000)}}, 400, "50 megapixels"),
        "an empty request": ({}, 400, "multipart/form-data"),
        "an empty file": ({"files": {"image": b""}}, 400, "no image"),
        "a wrong field": ({"files": {"picture": good}}, 400, "field named 'image'"),
        "wrong JSON": ({"json": {"picture": "x"}}, 400, "base64"),
        "too large an upload": ({"files": {"image": b"\0" * (21 * 2**20)}}, 413, "limit"),
    }
    for what, (request, status, words) in bad.items():
        answer = post(server, **request)
        assert answer.status_code == status and words in answer.json()["error"], (what, answer.text)
        assert post(server, files={"image": good}).status_code == 200, f"serving after {what}"


@pytest.mark.slow
def test_four_clients_at_once_get_predicts_answers_and_no_failure(server, test_images, expected):
    """A short, bounded load (the timed one is bench/bench_app.py): concurrent requests are batched
    and each still gets its own image's answer."""
    def client(k: int) -> list[tuple[str, str, float]]:
        seen, end = [], time.time() + 5
        while time.time() < end:
            path = test_images[k % 2]
            answer = post(server, files={"image": path.read_bytes()})
            seen.append((path.name, answer.status_code, answer.json()["top"][0]["probability"]))
            k += 1
        return seen

    with ThreadPoolExecutor(4) as pool:
        seen = [row for rows in pool.map(client, range(4)) for row in rows]
    assert len(seen) > 20 and all(status == 200 for _, status, _ in seen)
    for name, _, probability in seen:
        assert probability == pytest.approx(expected[name]["top"][0]["probability"], abs=1e-5)
