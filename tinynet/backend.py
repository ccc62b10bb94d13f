"""Which Keras backend runs the model (KERAS_BACKEND: tensorflow, the default, or jax), and the
refusal for the features only TensorFlow has. tf.data feeds the model on every backend."""

from __future__ import annotations

import importlib

import keras

from tinynet.errors import UserError


def name() -> str:
    return keras.backend.backend()


def on_tensorflow() -> bool:
    return name() == "tensorflow"


def version() -> str:
    """The version of the library the backend is named after (jax's, TensorFlow's)."""
    return importlib.import_module(name()).__version__


def require_tensorflow(feature: str) -> None:
    """A one-line refusal of a TensorFlow-only feature under another backend."""
    if not on_tensorflow():
        raise UserError(f"{feature} needs Keras's TensorFlow backend, not {name()}: "
                        "run it with KERAS_BACKEND=tensorflow (the default)")
