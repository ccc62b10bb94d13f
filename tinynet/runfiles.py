"""A run's files: the model saved atomically and checked, its JSON sidecar, the state folder of a
run in progress, and the free-space check before any of them is written."""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tinynet import backend
from tinynet.data import Dataset, Splits, data_record
from tinynet.errors import UserError
from tinynet.optimizers import compile_model


def run_info(stage: str, args, data: dict, class_names: list[str], history: list[dict[str, float]],
             metrics: dict, times: dict, **extra) -> dict:
    """What the sidecar records: settings, classes, the data record (tinynet.data.data_record),
    per-epoch history, metrics and times."""
    return {
        "stage": stage,
        "settings": vars(args),
        "class_names": class_names,
        "data": data,
        **extra,
        "history": history,
        "metrics": metrics,
        "times": times,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "backend": backend.name(),
                     backend.name(): backend.version()},
    }


def finish(model: keras.Model, stage: str, args, *, learning_rate: float, data: Dataset, splits: Splits, seed: int,
           history: list[dict[str, float]], metrics: dict, times: dict[str, float], started: float, **extra) -> dict:
    """Both trainers' last step: the model compiled for evaluate() and saved, then the sidecar
    with what made it (the data record with the split's seed); returns the sidecar's contents."""
    compile_model(model, learning_rate, for_saving=True)
    start = time.perf_counter()
    save_model(model, args.output)
    times["save"] = round(time.perf_counter() - start, 2)
    times["total"] = round(time.perf_counter() - started, 2)
    info = run_info(stage, args, data_record(data, splits, seed), data.class_names, history, metrics, times,
                    **extra)
    write_sidecar(args.output, info)
    print(f"saved {args.output} and its sidecar {sidecar_path(args.output)}")
    return info


def save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    """np.savez, atomically: a kill mid-write leaves the previous file whole."""
    partial = path.with_name(f".{path.stem}.partial.npz")
    np.savez(partial, *arrays)
    os.replace(partial, path)


def sidecar_path(model_path: str | Path) -> Path:
    """cifar10_lilTinyNet.h5 -> cifar10_lilTinyNet.json"""
    return Path(model_path).with_suffix(".json")


def state_dir(model_path: str | Path) -> Path:
    """Checkpoints of a run in progress live beside its output: cifar10_lilTinyNet.state/"""
    return Path(model_path).with_suffix(".state")


def save_model(model: keras.Model, path: str | Path) -> None:
    """Write the model so that no crash can cost the user a model: to a temporary file in the same
    folder, reloaded and checked to predict what the model in memory predicts, then renamed over
    the target in one step. Until that rename, a model already at `path` stays untouched."""
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # same suffix: Keras picks the format by it
    probe = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    try:
        model.save(partial)
        reloaded = keras.models.load_model(partial)
        # called, not predict()ed: tracing two graphs to run each once took longer than the calls
        before, after = (keras.ops.convert_to_numpy(m(probe, training=False)) for m in (model, reloaded))
        if not np.allclose(after, before, atol=1e-5):
            raise RuntimeError(f"{partial} reloads with different predictions; {path} was left as it was")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def space_needed(model: keras.Model) -> int:
    """Bytes a run writes beside its output: the model, its temporary copy and two checkpoints,
    all float32, plus room for the optimizer's moments in the last one."""
    return 6 * 4 * model.count_params() + 50 * 2**20


def check_free_space(path: str | Path, needed: int) -> None:
    """Fail before training, not after it, when the disk cannot hold what the run will write."""
    free = shutil.disk_usage(Path(path).resolve().parent).free
    if free < needed:
        raise UserError(f"only {free / 2**20:.0f} MiB free beside {path}; the run needs about "
                        f"{needed / 2**20:.0f} MiB: free some space or choose another --output")


def write_sidecar(model_path: str | Path, info: dict) -> None:
    """The JSON beside a finished model; the run's checkpoints are no longer needed after it."""
    write_json(sidecar_path(model_path), info)
    shutil.rmtree(state_dir(model_path), ignore_errors=True)


def write_json(path: Path, data: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


def read_sidecar(model_path: str | Path) -> dict:
    """The settings, history and metrics that training wrote beside a model; {} if none or unreadable."""
    path = sidecar_path(model_path)
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        warnings.warn(f"ignoring unreadable sidecar {path}", stacklevel=2)
        return {}
