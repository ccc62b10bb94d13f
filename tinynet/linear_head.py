"""Stage 1 on a small set: a linear classifier on the base's pooled features, fitted to convergence.

With a few hundred images, a head trained by epochs of mini-batches gets a handful of steps and
stops wherever early stopping on a small validation set happens to land. A linear layer on
globally pooled features is a convex problem instead (logistic regression): it is fitted to its
optimum on the whole training set at once, once for each strength of its L2 penalty, and the
strongest penalty whose validation cross-entropy is within one standard error of the lowest is
kept (the "one-standard-error rule" of cross-validation): on a small validation set the lowest
loss is itself noisy, and of fits it cannot tell apart the more regularised one generalises
better. Cross-entropy, not accuracy: on 20 images per class, accuracy moves in steps of several
points and ties between penalties, while the loss still ranks them. The margin is at least one
image's worth of loss: where the features separate every validation image, every loss is near
zero and so is their spread, and the rule would keep the weakest penalty, the most confident fit,
which validation cannot tell from the others.

The kept penalty is then cross-validated on the training and validation images together: each
image classified by a fit that did not see it. On a few hundred images that says how often the
frozen features already suffice more steadily than the validation split alone, and stage 2
reads it to decide whether fine-tuning has anything left to gain (tinynet.stage2).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from tinynet.model import make_classifier
from tinynet.optimizers import compile_model, cosine_schedule

MAX_IMAGES = 2000  # up to this many training images the linear head beats the blocks head (bench_own_data)
PENALTIES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # L2 strengths tried, per weight, against the mean loss
FIT_STEPS = 300  # full-batch Adam steps: enough to converge from any starting point in the grid
FIT_RATE = 0.03
FOLDS = 5  # for the cross-validated accuracy: each fit sees four fifths of the images


def fit_linear_head(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_classes: int,
                    seed: int) -> tuple[keras.Model, list[dict[str, float]], dict[str, float]]:
    """Of one linear fit per penalty, the one kept; a row per penalty (its validation loss, the
    loss's standard error, and accuracy); and the kept one's row. Labels are one-hot."""
    fits, rows = [], []
    with quiet_retracing():
        for penalty in PENALTIES:
            classifier = fitted(features["train"], labels["train"], num_classes, penalty, seed)
            probabilities = keras.ops.convert_to_numpy(classifier(features["val"], training=False))
            losses = -np.log(np.maximum((probabilities * labels["val"]).sum(1), 1e-12))
            rows.append({"penalty": penalty, "val_loss": float(losses.mean()),
                         "val_loss_error": float(losses.std() / np.sqrt(len(losses))),
                         "val_accuracy": float(np.mean(probabilities.argmax(1) == labels["val"].argmax(1)))})
            fits.append(classifier)
    kept = one_standard_error(rows, "val_loss", len(labels["val"]))
    return fits[rows.index(kept)], rows, kept


def one_standard_error(rows: list[dict], loss: str, images: float) -> dict:
    """The row of the strongest penalty whose `loss`, a mean over this many images, is within one
    standard error (`<loss>_error`) of the lowest, or within one image's worth of it: a loss of one
    nat on one image."""
    lowest = min(rows, key=lambda row: row[loss])
    margin = max(lowest[f"{loss}_error"], 1 / images)
    return max((row for row in rows if row[loss] <= lowest[loss] + margin), key=lambda row: row["penalty"])


def cross_validated_accuracy(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_classes: int,
                             penalty: float, seed: int) -> float:
    """The share of the training and validation images that a linear head with this penalty,
    fitted on the other folds, classifies right."""
    probabilities, classes = held_out_probabilities(features, labels, num_classes, penalty, seed)
    return float(np.mean(probabilities.argmax(1) == classes))


def held_out_probabilities(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_classes: int,
                           penalty: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each training and validation image's probabilities from a linear head with this penalty
    fitted on the other folds (FOLDS folds, each class spread evenly over them), and its class."""
    x = np.concatenate([features["train"], features["val"]])
    y = np.concatenate([labels["train"], labels["val"]])
    classes = y.argmax(1)
    fold = np.empty(len(y), dtype=int)
    rng = np.random.default_rng(seed)
    for label in np.unique(classes):
        members = rng.permutation(np.flatnonzero(classes == label))
        fold[members] = np.arange(len(members)) % FOLDS
    probabilities = np.empty((len(y), num_classes), dtype=np.float32)
    with quiet_retracing():
        for k in range(FOLDS):
            held = fold == k
            classifier = fitted(x[~held], y[~held], num_classes, penalty, seed)
            probabilities[held] = keras.ops.convert_to_numpy(classifier(x[held], training=False))
    return probabilities, classes


@contextlib.contextmanager
def quiet_retracing() -> Iterator[None]:
    """Each fit traces its own graph by design: TensorFlow would warn of retracing."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def fitted(x: np.ndarray, y: np.ndarray, num_classes: int, penalty: float, seed: int) -> keras.Model:
    """A linear head with this L2 penalty, fitted to convergence on these features."""
    keras.utils.set_random_seed(seed)
    classifier = make_classifier("linear", x.shape[1:], num_classes, penalty)
    fit(classifier, x, y)
    return classifier


def fit(classifier: keras.Model, x: np.ndarray, y: np.ndarray) -> None:
    """Full-batch Adam with a cosine decay: every step sees every image, all steps run in one call."""
    compile_model(classifier, cosine_schedule(FIT_RATE, FIT_STEPS), steps_per_execution=FIT_STEPS)
    whole = tf.data.Dataset.from_tensors((x, y)).repeat()
    classifier.fit(whole, epochs=1, steps_per_epoch=FIT_STEPS, shuffle=False, verbose=0)
