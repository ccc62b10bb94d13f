"""lilTinyNet's shared code: data loading, the model, training and the command-line plumbing."""

import logging
import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) hides the progress bars.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keras's absl warnings here are advice that does not apply: the .h5 format is required (the
# original's file names), and a loaded model's metrics are built by its first evaluate().
logging.getLogger("absl").setLevel(logging.ERROR)
