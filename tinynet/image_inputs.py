"""Classifying image files with a saved model, each image prepared exactly as in training."""

from __future__ import annotations

import glob
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

from tinynet import runtime
from tinynet.calibration import calibrated
from tinynet.errors import UserError
from tinynet.images import decode_all, image_shape, is_image_file, keeps_size, stack_images
from tinynet.model import input_settings
from tinynet.sources import Reader, list_files

CHUNK = 256  # images decoded and classified at a time: memory stays bounded however many there are


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def find_images(inputs: list[str]) -> list[tuple[str, Reader]]:
    """(name, reader) for every image named: files as they are, folders walked recursively and
    archives read as the data loader reads them, and glob patterns (** included) expanded."""
    found: list[tuple[str, Reader]] = []
    for given in inputs:
        paths = [Path(given)] if Path(given).exists() else [Path(p) for p in sorted(glob.glob(given, recursive=True))]
        if not paths:
            warn(f"skipped {given}: no such file, folder or match")
        for path in paths:
            if path.is_dir() or zipfile.is_zipfile(path) or tarfile.is_tarfile(path):
                found += [(f"{path}/{name}", read) for name, read in list_files(path)
                          if read and is_image_file(name, read)]
            else:
                found.append((str(path), path.read_bytes))
    if not found:
        raise UserError(f"no images found in {' '.join(inputs)}")
    return found


def classify(model: keras.Model, files: list[tuple[str, Reader]], batch_size: int, choice: str = "auto"
             ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """(names, images, probabilities) for each chunk of files, the images at the model's input as
    the evaluators give them, on the runtime `choice` asks for (tinynet.runtime); an unreadable
    file is a warning and is left out."""
    image_size, square = input_settings(model)
    # As the data loader: unless every image keeps one shape, those kept small are resized too.
    shapes = {shape if keeps_size(*shape, image_size) else (image_size, image_size)
              for shape in (image_shape(read()) for _, read in files) if shape}
    progress = keras.utils.Progbar(len(files), unit_name="image") if len(files) > CHUNK else None
    forward = None
    for start in range(0, len(files), CHUNK):
        chunk = files[start:start + CHUNK]
        batch, readable = prepared([read() for _, read in chunk], image_size, square, len(shapes) == 1)
        for (name, _), ok in zip(chunk, readable, strict=True):
            if not ok:
                warn(f"skipped {name}: not a readable image")
        if len(batch):
            forward = forward or runtime.runner(model, batch[:batch_size], len(files), choice)
            probabilities = np.concatenate([forward(batch[first:first + batch_size])
                                            for first in range(0, len(batch), batch_size)])
            yield [name for (name, _), ok in zip(chunk, readable, strict=True) if ok], batch, probabilities
        if progress:
            progress.update(start + len(chunk))


def prepared(contents: list[bytes], image_size: int, square: str, one_shape: bool = True
             ) -> tuple[np.ndarray, list[bool]]:
    """Encoded images as the model is given them, as the evaluators give the test set: decoded as
    the data loader decodes, and (unless all keep one shape) small squares resized to image_size;
    the readable ones stacked, and which were readable."""
    images = decode_all(contents, image_size, square)
    kept = [image for image in images if image is not None]
    batch = stack_images(kept, image_size, one_shape) if kept else np.zeros((0, image_size, image_size, 3), np.uint8)
    return batch, [image is not None for image in images]


def answers(probabilities: np.ndarray, class_names: list[str], top: int, calibration: dict,
            min_confidence: float | None = None) -> list[dict]:
    """Each image's `top` classes with their probabilities calibrated by the sidecar's temperature
    (tinynet.calibration), and "unsure" when the first is below min_confidence (default: the
    sidecar's, chosen on validation; 0 never says it)."""
    scaled = calibrated(probabilities, calibration.get("temperature", 1.0))
    floor = calibration.get("min_confidence", 0.0) if min_confidence is None else min_confidence
    order = np.argsort(-scaled, axis=1)[:, :top]
    return [{"top": [{"class": class_names[c], "probability": float(p[c])} for c in ranked],
             "unsure": bool(p[ranked[0]] < floor)} for p, ranked in zip(scaled, order, strict=True)]
