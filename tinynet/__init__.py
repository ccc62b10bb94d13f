"""lilTinyNet's shared code: data loading, the model, training and the command-line plumbing."""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) hides the progress bars.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
