"""README's pictures: the evaluator's page and app.py's page, for a flowers5 run of both stages,
taken in headless Chromium (Debian's, driven by Playwright) as the tests open them.

    python -m bench.screenshots          # writes docs/report.png and docs/app.png

Both stages run with their defaults at alpha 0.35 (the shared weights) in a temporary folder; the
report must show every section with every picture loaded, or nothing is written.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.bench_own_data import FLOWERS
from bench.common import ROOT, run_child, weights

DOCS = ROOT / "docs"
SECTIONS = ("Training", "Settings and data", "Per class", "Most confused pairs", "Confusion matrix", "Calibration",
            "Most confident mistakes", "Test images")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run"]


def shot(page, path: Path, height: int) -> None:
    """The top `height` pixels of the page, as a PNG of a few hundred kB."""
    full = path.with_suffix(".full.png")
    page.screenshot(path=str(full), full_page=True)
    with Image.open(full) as image:
        image.crop((0, 0, image.width, min(height, image.height))).convert("P", palette=Image.ADAPTIVE).save(path)
    full.unlink()


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run_child(["lilTinyNet.py", "--data-dir", str(FLOWERS), "--alpha", "0.35", "--weights", str(weights(0.35)),
                   "--output", str(folder / "cifar10_lilTinyNet.h5")], folder / "stage1.log")
        run_child(["lilTinyNet_finetuner.py", "--base", str(folder / "cifar10_lilTinyNet.h5"), "--output",
                   str(folder / "cifar10_finetuned_lilTinyNet.h5")], folder / "stage2.log")
        run_child(["evaluator_lilTinyNet_finetuned.py", "--models", str(folder / "cifar10_lilTinyNet.h5"),
                   str(folder / "cifar10_finetuned_lilTinyNet.h5"), "--out-dir", str(folder / "reports")],
                  folder / "evaluator.log")
        photos = []
        with tarfile.open(FLOWERS) as archive:
            for member in archive:
                if member.isfile() and "/val/tulips/" in member.name and len(photos) < 2:
                    photos.append(folder / Path(member.name).name)
                    photos[-1].write_bytes(archive.extractfile(member).read())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        app = subprocess.Popen([sys.executable, "app.py", "--model", str(folder / "cifar10_finetuned_lilTinyNet.h5"),
                                "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto((folder / "reports" / "index.html").as_uri())
                widths = page.eval_on_selector_all("img", "images => images.map(i => i.naturalWidth)")
                text = page.inner_text("body")
                missing = [section for section in SECTIONS if section not in text]
                if missing or min(widths) == 0:
                    raise SystemExit(f"the report lacks {missing} or has a broken picture: nothing written")
                shot(page, DOCS / "report.png", 2200)
                for _ in range(240):  # app.py loads the model and converts it before it listens
                    try:
                        page.goto(f"http://127.0.0.1:{port}/")
                        break
                    except Exception:
                        time.sleep(0.5)
                page.locator("input[type=file]").first.set_input_files([str(photo) for photo in photos])
                page.wait_for_selector(f"text={photos[-1].name}")
                page.get_by_role("button", name="Classify").click()
                page.wait_for_function("document.querySelectorAll('tr[data-image]').length == 2", timeout=120_000)
                time.sleep(1)  # the gallery's pictures
                shot(page, DOCS / "app.png", 1400)
                browser.close()
        finally:
            app.terminate()
    print(f"wrote {DOCS / 'report.png'} and {DOCS / 'app.png'}")


if __name__ == "__main__":
    main()
