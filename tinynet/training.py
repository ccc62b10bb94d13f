"""The fit loop both stages share: epochs of batches from epoch_batches, validated each epoch,
resumable, and the held-out splits scored in the batches fit() validates in."""

from __future__ import annotations

import importlib.util
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tinynet.batches import Rows, epoch_batches, in_batches, sharded_in_batches
from tinynet.checkpoint import RunCheckpoint
from tinynet.distributed import check_same_everywhere, local_call
from tinynet.errors import UserError
from tinynet.runfiles import state_dir
from tinynet.streaming import take

HEAD_STEPS_PER_CALL = 64  # a step of the head alone takes milliseconds: run up to 64 per call


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


def train(net: keras.Model, inputs: dict[str, np.ndarray], labels: dict[str, np.ndarray], *, epochs: int,
          batch_size: int, seed: int, output: str | Path, resume: bool, log_dir: str | None, patience: int,
          augment: str | None = None, baseline: tuple[float, float] | None = None, shard: slice | None = None,
          writes: bool = True, on_epoch: Callable[[int, keras.Model], None] | None = None, average_last: int = 0,
          give_up: tuple[int, float] | None = None) -> RunCheckpoint:
    """Fit `net` on the training split, validating each epoch; resumable from the output's state folder.
    Stops early after `patience` epochs without a better epoch. With a baseline (the starting
    weights' validation accuracy and loss), those weights are epoch 0: an epoch must beat them to
    be kept, and if none does, `net` ends with the weights it started with (best_epoch 0).
    Data-parallel processes pass their shard; all but process 0 pass writes=False, and resume from
    process 0's state (the copies are the same). on_epoch(epoch, net) is called at the end of every
    epoch, with the weights the epoch ended with (the bench keeps them).

    Returns the checkpoint callback: its rows are the per-epoch history (across a resume too),
    best_epoch says which weights the model now holds, and diverged whether the loss blew up."""
    checkpoint = RunCheckpoint(state_dir(output), patience, writes, average_last, give_up)
    checkpoint.set_model(net)
    if not resume and writes:
        shutil.rmtree(checkpoint.folder, ignore_errors=True)
    first_epoch = checkpoint.restore()
    if shard:  # every process resumes from process 0's state, so it must see the same
        check_same_everywhere(first_epoch, f"the epoch to resume after, read from {checkpoint.folder} (--resume "
                                           "across hosts needs the output's folder on a filesystem they share)")
    if baseline is not None:
        checkpoint.baseline = baseline
        if checkpoint.best_weights is None:
            checkpoint.set_baseline(baseline)
    if resume:
        print(f"resuming after epoch {first_epoch}" if first_epoch else "nothing to resume: starting afresh")
    callbacks: list[keras.callbacks.Callback] = [checkpoint]
    if on_epoch:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: on_epoch(epoch + 1, net)))
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
