"""Training plumbing shared by both stages: features, callbacks, history, atomic saving, sidecars."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np

PATIENCE = 3  # epochs without a better validation accuracy before early stopping


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(m,) or (m, 1) integer labels to (m, num_classes) float32 one-hot rows."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels).reshape(-1)]


def extract_features(extractor: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """One streamed forward pass: features are written batch by batch into one preallocated array,
    so the upscaled images never exist all at once and the output is never copied."""
    features = np.empty((len(images), *extractor.output_shape[1:]), dtype=np.float32)
    progress = keras.utils.Progbar(len(images), unit_name="image")
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        features[start:start + len(batch)] = extractor.predict_on_batch(batch)
        progress.add(len(batch))
    return features


class EpochClock(keras.callbacks.Callback):
    """Adds the learning rate and the wall time since training began to each epoch's logs."""

    def __init__(self, offset_seconds: float = 0.0):
        super().__init__()
        self.offset_seconds = offset_seconds

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["seconds"] = self.offset_seconds + time.perf_counter() - self.start


def training_callbacks(state_dir: Path, log_dir: str | None) -> list[keras.callbacks.Callback]:
    """Early stopping with the best weights restored, a checkpoint of the best weights,
    and optionally TensorBoard logs and a per-epoch CSV."""
    state_dir.mkdir(parents=True, exist_ok=True)
    callbacks = [
        EpochClock(),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=PATIENCE, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(str(state_dir / "best.weights.h5"), monitor="val_accuracy",
                                        save_best_only=True, save_weights_only=True),
    ]
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        callbacks += [keras.callbacks.CSVLogger(str(Path(log_dir) / "epochs.csv")),
                      keras.callbacks.TensorBoard(log_dir)]
    return callbacks


def history_rows(history: keras.callbacks.History) -> list[dict[str, float]]:
    """Keras's columns of per-epoch values as one row per epoch."""
    columns = history.history
    return [{"epoch": epoch + 1, **{key: float(values[i]) for key, values in columns.items()}}
            for i, epoch in enumerate(history.epoch)]


@contextmanager
def timed(times: dict[str, float], phase: str) -> Iterator[None]:
    """Record the wall time of a phase into times[phase], in seconds."""
    start = time.perf_counter()
    yield
    times[phase] = round(time.perf_counter() - start, 2)


def sidecar_path(model_path: str | Path) -> Path:
    """cifar10_lilTinyNet.h5 -> cifar10_lilTinyNet.json"""
    return Path(model_path).with_suffix(".json")


def state_dir(model_path: str | Path) -> Path:
    """Checkpoints of a run in progress live beside its output: cifar10_lilTinyNet.state/"""
    return Path(model_path).with_suffix(".state")


def save_model(model: keras.Model, path: str | Path, info: dict) -> None:
    """Write the model and its JSON sidecar so that a crash never leaves a half-written file:
    each is written to a temporary file in the same folder, then renamed over the target."""
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # same suffix: Keras picks the format by it
    try:
        model.save(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    write_json(sidecar_path(path), info)
    shutil.rmtree(state_dir(path), ignore_errors=True)


def write_json(path: Path, data: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


def read_sidecar(model_path: str | Path) -> dict:
    """The settings, history and metrics that training wrote beside a model; {} if none."""
    path = sidecar_path(model_path)
    return json.loads(path.read_text()) if path.exists() else {}
