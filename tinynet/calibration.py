"""Probabilities a person can read as such, and "unsure" as an answer.

A network's softmax is often over- or under-confident. Temperature scaling (Guo et al., 2017)
divides the log-probabilities by one number fitted on the validation split, which keeps every
ranking (the predicted class never changes) and makes "80%" right about 80% of the time. The
saved model stays a plain Keras model: the temperature goes into the sidecar, and predict.py and
app.py apply it. Below a minimum confidence, chosen on validation as the point where an answer
is more often wrong than right, they answer "unsure" instead of a class.
"""

from __future__ import annotations

import numpy as np

TEMPERATURES = np.exp(np.linspace(np.log(0.05), np.log(20), 401))  # a fine grid: one number, fitted exactly enough


def calibrated(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T), row by row: the same ranking, sharper (T < 1) or softer (T > 1)."""
    logits = np.log(np.maximum(probabilities, 1e-30)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=-1, keepdims=True)


def mean_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.maximum(probabilities[np.arange(len(labels)), labels], 1e-30))))


def fit(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The temperature with the lowest validation cross-entropy, and the minimum confidence below
    which an answer on validation was more often wrong than right; with the losses before and after."""
    labels = np.asarray(labels).reshape(-1)
    losses = [mean_loss(calibrated(probabilities, t), labels) for t in TEMPERATURES]
    temperature = float(TEMPERATURES[int(np.argmin(losses))])
    scaled = calibrated(probabilities, temperature)
    return {"temperature": round(temperature, 4), "min_confidence": round(min_confidence(scaled, labels), 4),
            "val_loss_before": round(mean_loss(probabilities, labels), 4), "val_loss_after": round(min(losses), 4)}


def min_confidence(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The threshold that scores best on validation when a right answer counts +1, a wrong one -1
    and "unsure" 0: below it, answering would have lost more than it won. 0 when every answer pays."""
    confidence = probabilities.max(1)
    right = probabilities.argmax(1) == labels
    order = np.argsort(confidence)
    gains = np.where(right[order], 1, -1)
    # answering only the images from position k up: the score of the rest is the suffix sum
    scores = np.concatenate([np.cumsum(gains[::-1])[::-1], [0]])
    best = int(np.argmax(scores))  # the first best: the lowest threshold that scores it
    if best in (0, len(order)):  # answer everything, or nothing
        return 0.0 if best == 0 else 1.0
    return float(confidence[order][best - 1] + confidence[order][best]) / 2
