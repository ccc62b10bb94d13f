"""Stage 1 on a small set: a linear classifier on the base's pooled features, fitted to convergence.

With a few hundred images, a head trained by epochs of mini-batches gets a handful of steps and
stops wherever early stopping on a small validation set happens to land. A linear layer on
globally pooled features is a convex problem instead (logistic regression): it is fitted to its
optimum on the whole training set at once, once for each strength of its L2 penalty, and the
strongest penalty whose validation cross-entropy is within one standard error of the lowest is
kept (the "one-standard-error rule" of cross-validation): on a small validation set the lowest
loss is itself noisy, and of fits it cannot tell apart the more regularised one generalises
better. Cross-entropy, not accuracy: on 20 images per class, accuracy moves in steps of several
points and ties between penalties, while the loss still ranks them.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tinynet.model import make_classifier
from tinynet.optimizers import compile_model, cosine_schedule

MAX_IMAGES = 2000  # up to this many training images the linear head beats the blocks head (bench_own_data)
PENALTIES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # L2 strengths tried, per weight, against the mean loss
FIT_STEPS = 300  # full-batch Adam steps: enough to converge from any starting point in the grid
FIT_RATE = 0.03


def fit_linear_head(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_classes: int,
                    seed: int) -> tuple[keras.Model, list[dict[str, float]], dict[str, float]]:
    """Of one linear fit per penalty, the one kept; a row per penalty (its validation loss, the
    loss's standard error, and accuracy); and the kept one's row. Labels are one-hot."""
    fits, rows = [], []
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # each fit traces its own graph by design: TensorFlow would warn of retracing
    try:
        for penalty in PENALTIES:
            keras.utils.set_random_seed(seed)
            classifier = make_classifier("linear", features["train"].shape[1:], num_classes, penalty)
            fit(classifier, features["train"], labels["train"])
            probabilities = keras.ops.convert_to_numpy(classifier(features["val"], training=False))
            losses = -np.log(np.maximum((probabilities * labels["val"]).sum(1), 1e-12))
            rows.append({"penalty": penalty, "val_loss": float(losses.mean()),
                         "val_loss_error": float(losses.std() / np.sqrt(len(losses))),
                         "val_accuracy": float(np.mean(probabilities.argmax(1) == labels["val"].argmax(1)))})
            fits.append(classifier)
    finally:
        logger.setLevel(level)
    lowest = min(rows, key=lambda row: row["val_loss"])
    kept = max(i for i, row in enumerate(rows) if row["val_loss"] <= lowest["val_loss"] + lowest["val_loss_error"])
    return fits[kept], rows, rows[kept]


def fit(classifier: keras.Model, x: np.ndarray, y: np.ndarray) -> None:
    """Full-batch Adam with a cosine decay: every step sees every image, all steps run in one call."""
    compile_model(classifier, cosine_schedule(FIT_RATE, FIT_STEPS), steps_per_execution=FIT_STEPS)
    whole = tf.data.Dataset.from_tensors((x, y)).repeat()
    classifier.fit(whole, epochs=1, steps_per_epoch=FIT_STEPS, shuffle=False, verbose=0)
