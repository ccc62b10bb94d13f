"""Temperature scaling and "unsure": fitted on validation, the ranking never changes."""

from __future__ import annotations

import numpy as np
import pytest

from tinynet import calibration


def overconfident(seed: int = 0, n: int = 400, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities twice as sharp as the truth: the class is drawn from softmax(z), the model says softmax(2z)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, classes))
    truth = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=p) for p in truth])
    sharp = np.exp(2 * logits)
    return sharp / sharp.sum(1, keepdims=True), labels


def test_the_fitted_temperature_undoes_overconfidence_and_keeps_every_ranking():
    probabilities, labels = overconfident()
    fitted = calibration.fit(probabilities, labels)
    assert fitted["temperature"] == pytest.approx(2.0, rel=0.2)
    assert fitted["val_loss_after"] < fitted["val_loss_before"]
    scaled = calibration.calibrated(probabilities, fitted["temperature"])
    assert np.array_equal(np.argsort(scaled, axis=1), np.argsort(probabilities, axis=1))
    np.testing.assert_allclose(scaled.sum(1), 1, atol=1e-12)


def test_the_minimum_confidence_is_where_answering_stops_paying():
    confidence = np.array([0.3, 0.35, 0.4, 0.6, 0.7, 0.9])
    right = np.array([False, False, True, False, True, True])
    probabilities = np.column_stack([confidence, *[(1 - confidence) / 10] * 10])  # class 0 always first
    labels = np.where(right, 0, 1)
    # answering from 0.4 up scores +1 (right, wrong, right, right: 3 - 1 = 2), more than any other cut
    assert calibration.min_confidence(probabilities, labels) == pytest.approx(0.375)
    assert calibration.min_confidence(probabilities, np.zeros(6, int)) == 0.0, "every answer right: answer all"
    assert calibration.min_confidence(probabilities, np.ones(6, int)) == 1.0, "every answer wrong: answer none"
