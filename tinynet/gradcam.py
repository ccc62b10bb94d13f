"""Grad-CAM (Selvaraju et al., 2017): which parts of an image made the model choose a class.

The gradient of the class's probability with respect to the deepest feature maps the head reads,
averaged over each map, weights that map; the weighted sum, negative parts cut, is the heat map.
"""

from __future__ import annotations

from pathlib import Path

import keras
import matplotlib
import numpy as np
import tensorflow as tf
from PIL import Image

from tinynet.model import head_inputs

OPACITY = 0.45  # of the heat map over the image


class GradCam:
    """The model cut where its head reads the base: images -> feature maps -> probabilities."""

    def __init__(self, model: keras.Model):
        maps = head_inputs(model)
        self.front, self.tail = keras.Model(model.input, maps), keras.Model(maps, model.output)

    def heat_maps(self, images: np.ndarray, classes: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """(n, h, w) in [0, 1], one map per image for its class, at the feature maps' resolution;
        in small batches, since the gradient keeps every activation of the batch in memory."""
        return np.concatenate([self._heat_maps(images[i:i + batch_size], classes[i:i + batch_size])
                               for i in range(0, len(images), batch_size)])

    def _heat_maps(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        with tf.GradientTape() as tape:
            maps = self.front(images, training=False)
            maps = maps if isinstance(maps, list) else [maps]
            tape.watch(maps[-1])
            probabilities = self.tail(maps, training=False)
            scores = tf.gather(probabilities, classes, axis=1, batch_dims=1)
        gradients = tape.gradient(scores, maps[-1])
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(weights * maps[-1], axis=-1)).numpy()
        return cams / np.maximum(cams.max(axis=(1, 2), keepdims=True), 1e-12)


def save_overlay(image: np.ndarray, heat_map: np.ndarray, path: Path) -> Path:
    """The image as the model saw it (square, at least 224 pixels to be seen), the heat map over it."""
    side = max(224, image.shape[0])
    picture = np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR), np.float32) / 255
    heat = Image.fromarray(np.uint8(255 * heat_map)).resize((side, side), Image.BILINEAR)
    colours = matplotlib.colormaps["jet"](np.asarray(heat) / 255)[..., :3]
    blended = (1 - OPACITY) * picture + OPACITY * colours
    Image.fromarray(np.uint8(np.rint(255 * blended))).save(path)
    return path
