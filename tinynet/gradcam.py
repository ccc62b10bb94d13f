"""Grad-CAM (Selvaraju et al., 2017): which parts of an image made the model choose a class.

The gradient of the class's probability with respect to the deepest feature maps the head reads,
averaged over each map, weights that map; the weighted sum, negative parts cut, is the heat map.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import matplotlib
import numpy as np
import tensorflow as tf
from keras import ops
from PIL import Image, ImageDraw, ImageFont

from tinynet import backend
from tinynet.model import head_inputs

OPACITY = 0.45  # of the heat map over the image
GAP = 8  # pixels between the image and its heat map


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
        maps = self.front(images, training=False)
        maps = maps if isinstance(maps, list) else [maps]
        chosen = ops.convert_to_tensor(classes[:, None])

        def score(deepest):  # summed over the batch: each image's score depends on its own maps only
            probabilities = self.tail([*maps[:-1], deepest], training=False)
            return ops.sum(ops.take_along_axis(probabilities, chosen, axis=1))

        weights = ops.mean(gradient(score, maps[-1]), axis=(1, 2), keepdims=True)
        cams = ops.convert_to_numpy(ops.relu(ops.sum(weights * maps[-1], axis=-1)))
        return cams / np.maximum(cams.max(axis=(1, 2), keepdims=True), 1e-12)


def gradient(function: Callable, x):
    """The gradient of a scalar function at x: TensorFlow's tape, or jax.grad on JAX."""
    if backend.on_tensorflow():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = function(x)
        return tape.gradient(y, x)
    import jax

    return jax.grad(function)(x)


def explained(image: np.ndarray, heat_map: np.ndarray, caption: str, mistake: bool = False) -> Image.Image:
    """The image as the model saw it (square, at least 224 pixels to be seen) beside the same image
    under its heat map, the caption (class and probability) written below both; red when the
    caption names a mistake."""
    side = max(224, image.shape[0])
    picture = Image.fromarray(image).resize((side, side), Image.BILINEAR)
    heat = Image.fromarray(np.uint8(255 * heat_map)).resize((side, side), Image.BILINEAR)
    colours = matplotlib.colormaps["jet"](np.asarray(heat) / 255)[..., :3]
    blended = (1 - OPACITY) * np.asarray(picture, np.float32) / 255 + OPACITY * colours
    band = side // 7
    canvas = Image.new("RGB", (2 * side + GAP, side + band), "white")
    canvas.paste(picture, (0, 0))
    canvas.paste(Image.fromarray(np.uint8(np.rint(255 * blended))), (side + GAP, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=band // 2)
    draw.text((side + GAP // 2, side + band // 2), caption, fill=(200, 0, 0) if mistake else (0, 0, 0), font=font,
              anchor="mm")
    return canvas


def save_overlay(image: np.ndarray, heat_map: np.ndarray, caption: str, path: Path) -> Path:
    """explained()'s picture, as a PNG at path."""
    explained(image, heat_map, caption).save(path)
    return path
