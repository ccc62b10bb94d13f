"""A run's resumable checkpoint: every epoch's state written, the best epoch kept."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import keras
import numpy as np

from tinynet.errors import UserError
from tinynet.runfiles import save_arrays, write_json

STATE_KEYS = ("rows", "best", "best_epoch", "run_best", "run_best_epoch", "gave_up")  # state.json: these attributes


class RunCheckpoint(keras.callbacks.Callback):
    """Early stopping with the best weights kept, made resumable; or, for fine-tuning, the average
    of the schedule's last epochs, unless an early look says to give up.

    At the end of every epoch it writes, into the run's state folder, every variable of the model
    and its optimizer (Dropout's random state and Adam's moments included), the epoch history and
    the early-stopping bookkeeping; `restore()` picks a run up from there. A NaN or infinite loss
    stops training at once. At the end the model gets the weights the run returns:
    - by default the best epoch's: the highest validation accuracy, and of equals the lowest
      validation loss (a small set's accuracy moves in steps of one image, and ties are common);
      patience counts from the best epoch the run itself trained, not from a baseline it was
      given, since fine-tuning first falls below its base and needs time to climb back past it;
    - with `average_last`, the mean of the weights the last that many epochs ended with;
    - with `give_up` = (epoch, margin) and a baseline, the baseline's, when no epoch up to that one
      came within `margin` of the baseline's validation accuracy: training stops there. The best
      epoch so far, not the last: one epoch at the peak rate swings too much to judge a run by.
    """

    def __init__(self, folder: Path, patience: int, writes: bool = True, average_last: int = 0,
                 give_up: tuple[int, float] | None = None):
        super().__init__()
        self.folder, self.patience, self.writes = folder, patience, writes
        self.average_last, self.give_up = average_last, give_up
        self.rows: list[dict[str, float]] = []
        self.best, self.best_epoch, self.diverged = (-1.0, math.inf), 0, False  # (accuracy, loss) on validation
        self.best_weights: list[np.ndarray] | None = None
        self.baseline: tuple[float, float] | None = None  # the starting weights' (accuracy, loss), epoch 0
        self.run_best, self.run_best_epoch = (-1.0, math.inf), 0  # the best among trained epochs
        self.gave_up = False
        self.base_weights: list[np.ndarray] | None = None
        self.tail: dict[int, list[np.ndarray]] = {}  # epoch -> its weights, for the average

    def set_baseline(self, scores: tuple[float, float]) -> None:
        """The starting weights are epoch 0: the best so far, and what giving up returns."""
        self.baseline = self.best = scores
        self.best_weights = self.base_weights = self.model.get_weights()
        if self.writes:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_arrays(self.folder / "best.npz", self.best_weights)
            save_arrays(self.folder / "base.npz", self.best_weights)

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
        self.gave_up = state["gave_up"]
        self.model.optimizer.build(self.model.trainable_variables)
        with np.load(self.folder / "last.npz") as last:
            saved = [last[name] for name in last.files]
        if [value.shape for value in saved] != [tuple(variable.shape) for variable in self._variables()]:
            raise UserError(f"the run to resume trained another model (other flags or data): {afresh}")
        for variable, value in zip(self._variables(), saved, strict=True):
            variable.assign(value)
        with np.load(self.folder / "best.npz") as best:
            self.best_weights = list(best.values())
        if (self.folder / "base.npz").exists():
            with np.load(self.folder / "base.npz") as base:
                self.base_weights = list(base.values())
        for path in self.folder.glob("tail_*.npz"):
            with np.load(path) as weights:
                self.tail[int(path.stem.split("_")[1])] = list(weights.values())
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
        if self.average_last and epoch + 1 > self.params["epochs"] - self.average_last:
            self.tail[epoch + 1] = self.model.get_weights()
            if self.writes:
                save_arrays(self.folder / f"tail_{epoch + 1}.npz", self.tail[epoch + 1])
        if self.give_up and self.baseline and epoch + 1 == self.give_up[0]:
            self.gave_up = self.baseline[0] - self.run_best[0] > self.give_up[1]
        if self.writes:
            self.save()
        if self.gave_up:
            print(f"giving up: after {epoch + 1} epochs the best validation accuracy is {self.run_best[0]:.4f}, "
                  f"more than {self.give_up[1]:.4f} below the base model's {self.baseline[0]:.4f}")
            self.model.stop_training = True
        elif self.stopped_early(epoch + 1):
            print(f"early stopping: no better epoch on validation for {self.patience} epochs")
            self.model.stop_training = True

    def save(self) -> None:
        save_arrays(self.folder / "last.npz", [keras.ops.convert_to_numpy(v) for v in self._variables()])
        write_json(self.folder / "state.json", {key: getattr(self, key) for key in STATE_KEYS})

    def stopped_early(self, epochs_done: int) -> bool:
        return self.gave_up or (epochs_done > 0 and epochs_done - self.run_best_epoch >= self.patience)

    def returned(self) -> str:
        """What the model holds at the end, in words: the base, an epoch, or an average of epochs."""
        if self.gave_up:
            return "base"
        if self.average_last and self.tail:
            return f"average of epochs {min(self.tail)} to {max(self.tail)}"
        return f"epoch {self.best_epoch}"

    def on_train_end(self, logs=None):
        if self.gave_up:
            self.model.set_weights(self.base_weights)
        elif self.average_last and len(self.tail) == self.average_last:
            self.model.set_weights(averaged([self.tail[epoch] for epoch in sorted(self.tail)]))
        elif self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def averaged(epochs: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The mean of several epochs' weights; a variable that is not a float (a random generator's
    state) keeps the last epoch's value. BatchNormalization is frozen: its statistics are the same
    in every epoch, so the average needs none recomputed."""
    share = 1 / len(epochs)
    return [sum(share * epoch[k] for epoch in epochs) if np.issubdtype(epochs[-1][k].dtype, np.floating)
            else epochs[-1][k] for k in range(len(epochs[-1]))]


def better(scores: tuple[float, float], than: tuple[float, float]) -> bool:
    """Whether (accuracy, loss) on validation beat `than`: higher accuracy, or equal and lower loss."""
    return scores[0] > than[0] or (scores[0] == than[0] and scores[1] < than[1])
