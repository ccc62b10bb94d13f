"""lilTinyNet's code. The scripts at the top run the commands here; each module has one job and
imports only the modules below it (tests/test_house.py holds the order):

    foundations  errors, backend, cli, calibration, images, sources, distributed
    data         streaming, data, batches
    model        model, optimizers, linear_head, gradcam, formats, runtime
    runs         runfiles, checkpoint, features, training, devices, metrics
    shown        plots, report, image_inputs, service
    commands     stage1, stage2, evaluate, compare, predict, export, app
"""

import contextlib
import logging
import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) hides the progress bars.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keras's absl warnings here are advice that does not apply: the .h5 format is required (the
# original's file names), and a loaded model's metrics are built by its first evaluate().
logging.getLogger("absl").setLevel(logging.ERROR)

from tinynet.cli import native_stderr_held  # noqa: E402

# TensorFlow is imported here, quietly, so that whichever tinynet module a script imports first
# does it, before anything else can. TF_CPP_MIN_LOG_LEVEL=0 asks for every line: then the
# start-up lines show too (why no GPU was found, say).
with native_stderr_held() if os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0" else contextlib.nullcontext():
    import tensorflow

    tensorflow.config.list_physical_devices("GPU")  # the first probe of the GPU platform logs too
