"""Training shared by both stages: the learning-rate schedule, the feature pass, the
resumable checkpoint callback, and evaluation."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tinynet.batches import Rows, epoch_batches, in_batches, sharded_in_batches
from tinynet.distributed import check_same_everywhere, local_call
from tinynet.errors import UserError
from tinynet.runfiles import save_arrays, state_dir, write_json
from tinynet.streaming import FeatureFile, ImageFiles, take

HEAD_STEPS_PER_CALL = 64  # a step of the head alone takes milliseconds: run up to 64 per call
PASS_BATCH_SIZE = 128  # images per step of the forward pass: 256 was slower and took more memory
STREAM_CHUNK = 1024  # images decoded at a time when streamed: 150 MB at 224 pixels


def epoch_steps(images: int, batch_size: int, shard: slice | None = None) -> int:
    """Steps in an epoch: the last batch may be partial, except under data-parallel processes."""
    if shard and images < batch_size:
        raise UserError(f"{images} training images fill no global batch of {batch_size} "
                        "(--batch-size per device): lower --batch-size")
    return images // batch_size if shard else math.ceil(images / batch_size)


def steps_per_call(steps_per_epoch: int, at_most: int) -> int:
    """The most training steps Keras may run per call (steps_per_execution) without crossing an
    epoch's end: a call that did would eat the next epoch's first batches from epoch_batches' stream."""
    return max(d for d in range(1, min(at_most, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


def cosine_schedule(peak: float, total_steps: int, warmup_steps: int = 0) -> keras.optimizers.schedules.CosineDecay:
    """Linear warm-up from 0 to `peak` over warmup_steps, then a cosine decay to 0."""
    if warmup_steps:
        return keras.optimizers.schedules.CosineDecay(0.0, max(1, total_steps - warmup_steps),
                                                      warmup_target=peak, warmup_steps=warmup_steps)
    return keras.optimizers.schedules.CosineDecay(peak, total_steps)


def evaluate_splits(model: keras.Model, inputs: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                    batch_size: int, shard: slice | None = None, splits: tuple[str, ...] = ("val", "test")
                    ) -> dict[str, dict[str, float]]:
    """Loss and accuracy on validation and, once, on test, in the batches fit() validates in."""
    return {split: {name: float(value) for name, value in model.evaluate(
        held_out_batches((inputs[split], labels[split]), batch_size, shard), verbose=0, return_dict=True).items()}
        for split in splits}


def split_probabilities(model: keras.Model, inputs: Rows, batch_size: int, shard: slice | None = None
                        ) -> np.ndarray:
    """The model's outputs for every row of a held-out split, in order (each process computes them
    all under data-parallel processes: predict() would take its batch for a slice of a global one)."""
    call = local_call(model) if shard else model.predict_on_batch
    parts = []
    for start in range(0, len(inputs), batch_size):
        parts.append(np.asarray(call(take(inputs, np.arange(start, min(start + batch_size, len(inputs)))))))
    return np.concatenate(parts)


def held_out_batches(arrays: tuple[Rows, Rows], batch_size: int, shard: slice | None) -> tf.data.Dataset:
    """Validation or test batches, in order: this process's slices under data-parallel processes."""
    return sharded_in_batches(arrays, batch_size, shard) if shard else in_batches(arrays, batch_size)


def extract_features(extractor: keras.Model, images: np.ndarray, batch_size: int,
                     progress: keras.utils.Progbar | None = None,
                     call: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """One streamed forward pass: features are written batch by batch into one preallocated array,
    so the upscaled images never exist all at once and the output is never copied. `call` runs a
    batch (default: extractor.predict_on_batch)."""
    features = np.empty((len(images), *extractor.output_shape[1:]), dtype=np.float32)
    progress = progress or keras.utils.Progbar(len(images), unit_name="image")
    call = call or extractor.predict_on_batch
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        size = len(batch)
        if size < batch_size:  # padded: a batch of a new shape would trace the whole pass again
            batch = np.concatenate([batch, np.zeros((batch_size - size, *batch.shape[1:]), batch.dtype)])
        features[start:start + size] = call(batch)[:size]
        progress.add(size)
    return features


def stream_features(extractor: keras.Model, images: ImageFiles, batch_size: int, path: Path,
                    call: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[FeatureFile, np.ndarray]:
    """The forward pass over images read from their files, STREAM_CHUNK at a time, the next chunk
    decoded on another thread while the base runs on this one (through `call`, as extract_features).
    The features go to a file at `path`; unreadable images are left out. Returns the file and a
    mask of the images it holds."""
    features = FeatureFile(path, extractor.output_shape[1:])
    readable = np.zeros(len(images), dtype=bool)
    progress = keras.utils.Progbar(len(images), unit_name="image")
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(images.read, np.arange(min(STREAM_CHUNK, len(images))))
        for start in range(0, len(images), STREAM_CHUNK):
            batch, readable[start:start + STREAM_CHUNK] = pending.result()
            pending = reader.submit(images.read, np.arange(start + STREAM_CHUNK,
                                                           min(start + 2 * STREAM_CHUNK, len(images))))
            features.append(extract_features(extractor, batch, batch_size, progress, call))
            progress.add(int(np.sum(~readable[start:start + STREAM_CHUNK])))
    return features, readable


STATE_KEYS = ("rows", "best", "best_epoch", "run_best", "run_best_epoch")  # state.json: these attributes


class RunCheckpoint(keras.callbacks.Callback):
    """Early stopping with the best weights kept, made resumable.

    At the end of every epoch it writes, into the run's state folder, every variable of the model
    and its optimizer (Dropout's random state and Adam's moments included), the epoch history and
    the early-stopping bookkeeping; `restore()` picks a run up from there. A NaN or infinite loss
    stops training at once. At the end the best epoch's weights are put back into the model.
    The best epoch has the highest validation accuracy, and of equals the lowest validation loss:
    a small set's accuracy moves in steps of one image, and ties are common.
    Patience counts from the best epoch the run itself trained, not from a baseline it was given:
    fine-tuning first falls below its base, and needs time to climb back past it.
    """

    def __init__(self, folder: Path, patience: int, writes: bool = True):
        super().__init__()
        self.folder, self.patience, self.writes = folder, patience, writes
        self.rows: list[dict[str, float]] = []
        self.best, self.best_epoch, self.diverged = (-1.0, math.inf), 0, False  # (accuracy, loss) on validation
        self.best_weights: list[np.ndarray] | None = None
        self.run_best, self.run_best_epoch = (-1.0, math.inf), 0  # the best among trained epochs

    def restore(self) -> int:
        """Load the saved state into the model; return the first epoch still to run (0: none saved)."""
        if not (self.folder / "state.json").exists():
            return 0
        state = json.loads((self.folder / "state.json").read_text())
        afresh = f"run again without --resume to start afresh (the folder {self.folder} is then replaced)"
        if not state.keys() >= set(STATE_KEYS):
            raise UserError(f"the run to resume was saved by an older lilTinyNet: {afresh}")
        self.rows, self.best, self.best_epoch = state["rows"], tuple(state["best"]), state["best_epoch"]
        self.run_best, self.run_best_epoch = tuple(state["run_best"]), state["run_best_epoch"]
        self.model.optimizer.build(self.model.trainable_variables)
        with np.load(self.folder / "last.npz") as last:
            saved = [last[name] for name in last.files]
        if [value.shape for value in saved] != [tuple(variable.shape) for variable in self._variables()]:
            raise UserError(f"the run to resume trained another model (other flags or data): {afresh}")
        for variable, value in zip(self._variables(), saved, strict=True):
            variable.assign(value)
        with np.load(self.folder / "best.npz") as best:
            self.best_weights = list(best.values())
        return len(self.rows)

    def _variables(self) -> list:
        return list(self.model.variables) + list(self.model.optimizer.variables)

    def on_train_begin(self, logs=None):
        if self.writes:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.start = time.perf_counter() - (self.rows[-1]["seconds"] if self.rows else 0.0)

    def on_train_batch_end(self, batch, logs=None):
        if not np.isfinite(logs.get("loss", 0.0)):
            self.diverged = self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged:
            return
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.rows.append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()},
                          "learning_rate": learning_rate, "seconds": round(time.perf_counter() - self.start, 2)})
        scores = float(logs["val_accuracy"]), float(logs["val_loss"])
        if better(scores, self.best):
            self.best, self.best_epoch = scores, epoch + 1
            self.best_weights = self.model.get_weights()
            if self.writes:
                save_arrays(self.folder / "best.npz", self.best_weights)
        if better(scores, self.run_best):
            self.run_best, self.run_best_epoch = scores, epoch + 1
        if self.writes:
            self.save()
        if self.stopped_early(epoch + 1):
            print(f"early stopping: no better epoch on validation for {self.patience} epochs")
            self.model.stop_training = True

    def save(self) -> None:
        save_arrays(self.folder / "last.npz", [keras.ops.convert_to_numpy(v) for v in self._variables()])
        write_json(self.folder / "state.json", {key: getattr(self, key) for key in STATE_KEYS})

    def stopped_early(self, epochs_done: int) -> bool:
        return epochs_done > 0 and epochs_done - self.run_best_epoch >= self.patience

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def better(scores: tuple[float, float], than: tuple[float, float]) -> bool:
    """Whether (accuracy, loss) on validation beat `than`: higher accuracy, or equal and lower loss."""
    return scores[0] > than[0] or (scores[0] == than[0] and scores[1] < than[1])


def train(net: keras.Model, inputs: dict[str, np.ndarray], labels: dict[str, np.ndarray], *, epochs: int,
          batch_size: int, seed: int, output: str | Path, resume: bool, log_dir: str | None, patience: int,
          augment: str | None = None, baseline: tuple[float, float] | None = None, shard: slice | None = None,
          writes: bool = True) -> RunCheckpoint:
    """Fit `net` on the training split, validating each epoch; resumable from the output's state folder.
    Stops early after `patience` epochs without a better epoch. With a baseline (the starting
    weights' validation accuracy and loss), those weights are epoch 0: an epoch must beat them to
    be kept, and if none does, `net` ends with the weights it started with (best_epoch 0).
    Data-parallel processes pass their shard; all but process 0 pass writes=False, and resume from
    process 0's state (the copies are the same).

    Returns the checkpoint callback: its rows are the per-epoch history (across a resume too),
    best_epoch says which weights the model now holds, and diverged whether the loss blew up."""
    checkpoint = RunCheckpoint(state_dir(output), patience, writes)
    checkpoint.set_model(net)
    if not resume and writes:
        shutil.rmtree(checkpoint.folder, ignore_errors=True)
    first_epoch = checkpoint.restore()
    if shard:  # every process resumes from process 0's state, so it must see the same
        check_same_everywhere(first_epoch, f"the epoch to resume after, read from {checkpoint.folder} (--resume "
                                           "across hosts needs the output's folder on a filesystem they share)")
    if baseline is not None and checkpoint.best_weights is None:
        checkpoint.best, checkpoint.best_weights = baseline, net.get_weights()
        if writes:
            checkpoint.folder.mkdir(parents=True, exist_ok=True)
            save_arrays(checkpoint.folder / "best.npz", checkpoint.best_weights)
    if resume:
        print(f"resuming after epoch {first_epoch}" if first_epoch else "nothing to resume: starting afresh")
    callbacks: list[keras.callbacks.Callback] = [checkpoint]
    if log_dir and writes:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.CSVLogger(str(Path(log_dir) / "epochs.csv"), append=first_epoch > 0))
        if importlib.util.find_spec("tensorboard"):
            callbacks.append(keras.callbacks.TensorBoard(log_dir))
        else:
            print("note: tensorboard is not installed, so --log-dir gets epochs.csv only (pip install tensorboard)")
    steps_per_epoch = epoch_steps(len(inputs["train"]), batch_size, shard)
    if steps_per_epoch % net.steps_per_execution:  # one stream for all epochs: a call must not cross an epoch's end
        raise ValueError(f"steps_per_execution {net.steps_per_execution} does not divide an epoch's "
                         f"{steps_per_epoch} steps; compile with steps_per_call()")
    if first_epoch < epochs and not checkpoint.stopped_early(first_epoch):
        net.fit(epoch_batches(inputs["train"], labels["train"], batch_size, seed, first_epoch, epochs, augment, shard),
                epochs=epochs, initial_epoch=first_epoch, steps_per_epoch=steps_per_epoch,
                shuffle=False,  # epoch_batches shuffles, reproducibly per epoch
                validation_data=held_out_batches((inputs["val"], labels["val"]), batch_size, shard),
                callbacks=callbacks)
    else:
        checkpoint.on_train_end()
    return checkpoint


def report_divergence(run: RunCheckpoint) -> None:
    """Say so when the loss blew up; with no finished epoch there is nothing worth saving."""
    if not run.diverged:
        return
    if run.best_weights is None:
        raise UserError("the loss became NaN or infinite in the first epoch; try a lower --learning-rate")
    print(f"warning: the loss became NaN or infinite in epoch {len(run.rows) + 1}: training stopped, "
          f"keeping the best epoch so far ({run.best_epoch})")


@contextmanager
def timed(times: dict[str, float], phase: str) -> Iterator[None]:
    """Record the wall time of a phase into times[phase], in seconds."""
    start = time.perf_counter()
    yield
    times[phase] = round(time.perf_counter() - start, 2)
