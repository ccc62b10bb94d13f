"""A saved model ready to answer requests: app.py's page and HTTP endpoint both ask it.

Each image is prepared by the code predict.py uses (tinynet.image_inputs.prepared), its answer is
predict.py's (calibrated probabilities, "unsure" below the sidecar's minimum confidence), and
requests that arrive together are classified together: a worker thread takes what is waiting,
up to MAX_BATCH images, and runs them as one batch on the fastest verified runtime.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path
from queue import Empty, Queue

import numpy as np
from PIL import Image

from tinynet import runtime
from tinynet.errors import UserError
from tinynet.gradcam import GradCam, explained
from tinynet.image_inputs import answers, prepared
from tinynet.model import input_settings, load_saved_model
from tinynet.runfiles import read_sidecar

MAX_BATCH = 32  # images run together at most: a larger batch adds latency without adding throughput
MAX_UPLOAD_BYTES = 20 * 2**20  # an upload larger than this is refused before it is decoded


class Classifier:
    """A model, its sidecar, and a worker that batches concurrent requests."""

    def __init__(self, path: str, choice: str = "auto"):
        self.path = path
        self.model = load_saved_model(path)
        self.info = read_sidecar(path)
        self.class_names = self.info.get("class_names") or [str(i) for i in range(self.model.output_shape[-1])]
        self.image_size, self.square = input_settings(self.model)
        self.choice = choice
        self.runners: dict[tuple[int, ...], runtime.Runner] = {}
        self.model_lock = threading.Lock()  # Grad-CAM and a first conversion use the Keras model
        self.queue: Queue[tuple[np.ndarray, Future]] = Queue()
        threading.Thread(target=self._serve, daemon=True).start()

    def runner(self, shape: tuple[int, ...]) -> runtime.Runner:
        """The forward pass for images of this shape: converted once, on first use (a server's
        passes never end, so a conversion always pays: tinynet.runtime)."""
        if shape not in self.runners:
            with self.model_lock:
                probe = np.random.default_rng(0).integers(0, 256, (8, *shape), dtype=np.uint8)
                self.runners[shape] = runtime.runner(self.model, probe, 2**40, self.choice)
        return self.runners[shape]

    def prepare(self, data: bytes) -> np.ndarray:
        """The image as predict.py would give it to the model; a one-line UserError if it is not one."""
        if len(data) > MAX_UPLOAD_BYTES:
            raise UserError(f"the image is {len(data) / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES // 2**20} MiB")
        if not data:
            raise UserError("the request holds no image")
        images, readable = prepared([data], self.image_size, self.square)
        if not readable[0]:
            raise UserError("not a readable image (or larger than 50 megapixels)")
        return images[0]

    def classify(self, images: list[np.ndarray], top: int = 3, min_confidence: float | None = None) -> list[dict]:
        """Each prepared image's answer, through the batching worker."""
        futures = []
        for image in images:
            future: Future = Future()
            self.queue.put((image, future))
            futures.append(future)
        probabilities = np.stack([future.result() for future in futures])
        return answers(probabilities, self.class_names, top, self.info.get("calibration", {}), min_confidence)

    def explain(self, image: np.ndarray, caption: str) -> Image.Image:
        """The image beside Grad-CAM's heat map of its predicted class (as predict.py --explain)."""
        with self.model_lock:
            grad_cam = getattr(self, "grad_cam", None) or GradCam(self.model)
            self.grad_cam = grad_cam
            probabilities = np.asarray(self.model.predict_on_batch(image[None]))
            heat_map = grad_cam.heat_maps(image[None], probabilities.argmax(1))[0]
        return explained(image, heat_map, caption)

    def _serve(self) -> None:
        """The worker: whatever requests are waiting, up to MAX_BATCH, run as batches of one shape."""
        while True:
            waiting = [self.queue.get()]
            try:
                while len(waiting) < MAX_BATCH:
                    waiting.append(self.queue.get_nowait())
            except Empty:
                pass
            by_shape: dict[tuple[int, ...], list[tuple[np.ndarray, Future]]] = {}
            for image, future in waiting:
                by_shape.setdefault(image.shape, []).append((image, future))
            for shape, group in by_shape.items():
                try:
                    outputs = self.runner(shape)(np.stack([image for image, _ in group]))
                except Exception as error:  # every waiting request hears of it; the worker goes on
                    for _, future in group:
                        future.set_exception(error)
                    continue
                for (_, future), output in zip(group, outputs, strict=True):
                    future.set_result(output)

    def facts(self) -> dict:
        """What the page shows of the model: name, classes, test accuracy, when it was trained."""
        test = (self.info.get("metrics") or {}).get("test", {})
        return {"model": Path(self.path).name, "classes": self.class_names,
                "test_accuracy": test.get("accuracy"), "test_images": (self.info.get("data") or {}).get("test"),
                "trained": time.strftime("%Y-%m-%d %H:%M", time.localtime(Path(self.path).stat().st_mtime)),
                "stage": self.info.get("stage")}
