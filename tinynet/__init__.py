"""lilTinyNet's shared code: data loading, the model, training and the command-line plumbing."""

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) hides the progress bars.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keras's absl warnings here are advice that does not apply: the .h5 format is required (the
# original's file names), and a loaded model's metrics are built by its first evaluate().
logging.getLogger("absl").setLevel(logging.ERROR)


@contextlib.contextmanager
def native_stderr_held() -> Iterator[None]:
    """Hold what C++ code writes to file descriptor 2, and show it only if the block fails.

    Since 2.19, TensorFlow's start-up lines are written before its logging reads
    TF_CPP_MIN_LOG_LEVEL (tensorflow/tensorflow#100442), so the variable cannot quiet them."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to quiet
        yield
        return
    with tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# TF_CPP_MIN_LOG_LEVEL=0 asks for every line: then the start-up lines show too (why no GPU was found, say).
with native_stderr_held() if os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0" else contextlib.nullcontext():
    import tensorflow

    tensorflow.config.list_physical_devices("GPU")  # the first probe of the GPU platform logs too
