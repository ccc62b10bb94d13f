"""The forward passes that train nothing, on the fastest runtime that gives the same answers.

On a CPU, LiteRT (TensorFlow Lite's runtime, with its XNNPACK kernels) runs MobileNetV2 about
twice as fast as TensorFlow or faster (bench/bench_runtime.py): the kit converts the Keras model
in memory, as export.py does (model.export(format="litert")), and runs its passes there. Its
first batch is checked against TensorFlow's on the same images; a model that does not convert, a
LiteRT that is not installed, a GPU (where TensorFlow is the fast one), another Keras backend, or
answers that differ send the pass to TensorFlow, with the reason printed once. A conversion takes
seconds: it is cached by the model's weights, and by default made only when it pays back within
the pass (or was made before), so a small set or one photo does not wait for it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tinynet import backend

RUNTIMES = ("auto", "tensorflow", "litert")
TOLERANCE = 1e-3  # of the largest output: LiteRT and TensorFlow sum in other orders, nothing more
CONVERSION_SECONDS = 8  # a little more than a conversion of MobileNetV2 takes on a 2-core CPU (bench_runtime)
SAVED_SHARE = 0.5  # of TensorFlow's time: LiteRT's pass takes at most half of it (bench_runtime)
CHECK_IMAGES = 8  # compared with TensorFlow's outputs before a pass is trusted to LiteRT
SLICE_IMAGES = 16  # images per LiteRT call at 128 pixels inside the model (fewer at larger sizes)
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "liltinynet" / "litert"
Forward = Callable[[np.ndarray], np.ndarray]


def add_runtime_arg(group) -> None:
    """--runtime, the same for every script that runs a model without training it."""
    group.add_argument("--runtime", choices=RUNTIMES, default="auto",
                       help="what runs the passes that train nothing: auto is LiteRT on a CPU where it is "
                            "installed and matches TensorFlow on the first batch, else TensorFlow")


class Runner:
    """A model's forward pass on one runtime: call it with a batch of images, get its outputs."""

    def __init__(self, name: str, forward: Forward, reason: str = ""):
        self.name, self.forward, self.reason = name, forward, reason

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.forward(batch)


def tensorflow_runner(model: keras.Model, reason: str = "") -> Runner:
    """The Keras model itself, one batch per call (predict_on_batch traces once per batch shape)."""
    return Runner("tensorflow", lambda batch: np.asarray(model.predict_on_batch(batch)), reason)


def runner(model: keras.Model, probe: np.ndarray, images: int, choice: str = "auto") -> Runner:
    """The model's forward pass on the runtime `choice` asks for, for a pass over `images` images
    shaped as the probe batch: LiteRT where it can be used, pays back its conversion (auto), and
    agrees with TensorFlow on the probe, else TensorFlow, the reason printed."""
    if choice == "tensorflow":
        return tensorflow_runner(model)
    image_shape = probe.shape[1:]
    reason, expected = unusable_reason(), None
    if not reason and choice == "auto" and not is_cached(model, image_shape):
        reason, expected = not_worth_converting(model, probe, images)
    if not reason:
        try:
            converted_runner = litert_runner(model, image_shape)
        except Exception as error:  # the converter raises many kinds, all meaning "not this model"
            reason = f"the model did not convert ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
        else:
            if expected is None:  # called, not traced: a graph traced to run once would cost more than the check
                probe = probe[:CHECK_IMAGES]
                expected = keras.ops.convert_to_numpy(model(probe, training=False))
            reason = disagreement(expected, converted_runner(probe))
            if not reason:
                return converted_runner
    print(f"note: {'--runtime litert cannot be used' if choice == 'litert' else 'the pass runs on TensorFlow'}: "
          f"{reason}")
    return tensorflow_runner(model, reason)


def not_worth_converting(model: keras.Model, probe: np.ndarray, images: int) -> tuple[str, np.ndarray]:
    """Why converting would cost more than it saves on this many images (TensorFlow's time per
    image timed on the probe), or "" if it pays; and TensorFlow's outputs for the probe."""
    model.predict_on_batch(probe)  # traced: the second call is the one timed
    start = time.perf_counter()
    expected = np.asarray(model.predict_on_batch(probe))
    saved = images * (time.perf_counter() - start) / len(probe) * SAVED_SHARE
    if saved < CONVERSION_SECONDS:
        return f"converting to LiteRT would take longer than it saves on {images:,} images", expected
    return "", expected


def unusable_reason() -> str:
    """Why LiteRT cannot run the passes here, or "" if it can."""
    if not backend.on_tensorflow():
        return f"Keras's {backend.name()} backend runs them itself"
    if tf.config.list_logical_devices("GPU"):
        return "a GPU is faster"
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return "LiteRT is not installed (pip install ai-edge-litert)"
    return ""


def disagreement(expected: np.ndarray, got: np.ndarray) -> str:
    """Why LiteRT's outputs on the probe batch differ from TensorFlow's, or "" when they agree:
    the same largest output (the class, for a classifier), and every output within TOLERANCE of
    the largest."""
    scale = float(np.abs(expected).max()) or 1.0
    difference = float(np.abs(got - expected).max()) / scale
    if expected.ndim == 2 and not np.array_equal(got.argmax(1), expected.argmax(1)):
        return "LiteRT chose other classes than TensorFlow on the first batch"
    if not difference <= TOLERANCE:
        return f"LiteRT's outputs differ from TensorFlow's by {difference:.1e} of their scale on the first batch"
    return ""


def litert_runner(model: keras.Model, image_shape: tuple[int, ...]) -> Runner:
    """The model converted to LiteRT (cached by its weights), on every core. Each batch runs in
    slices of a few images: XNNPACK is fastest when a slice's activations stay in the CPU's caches
    (bench_runtime), so a batch of 128 goes through as eight slices of 16 at 128 pixels."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=converted(model, image_shape), num_threads=os.cpu_count())
    source, result = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    most = slice_size(model)
    allocated = [0]  # the slice size the interpreter is allocated for: allocating takes time
    lock = threading.Lock()  # an interpreter runs one slice at a time

    def forward(batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        step = min(most, len(batch))  # one image alone (a request, a photo) runs as one
        outputs = []
        with lock:
            if step != allocated[0]:
                interpreter.resize_tensor_input(source, (step, *image_shape))
                interpreter.allocate_tensors()
                allocated[0] = step
            for start in range(0, len(batch), step):
                part = batch[start:start + step]
                if len(part) < step:  # the last slice padded: the same shape needs no new allocation
                    part = np.concatenate([part, np.zeros((step - len(part), *part.shape[1:]), np.uint8)])
                interpreter.set_tensor(source, part)
                interpreter.invoke()
                outputs.append(interpreter.get_tensor(result)[:len(batch) - start].copy())
        return np.concatenate(outputs)
    return Runner("litert", forward)


def slice_size(model: keras.Model) -> int:
    """Images per LiteRT call: SLICE_IMAGES at 128 pixels inside the model, fewer when larger."""
    size = model.get_layer("resize").get_config()["height"]
    return max(1, round(SLICE_IMAGES * (128 / size) ** 2))


def cache_path(model: keras.Model, image_shape: tuple[int, ...]) -> Path:
    """Where the model's conversion is cached: named by its architecture, weights and input shape."""
    digest = hashlib.sha256(model.to_json().encode() + repr(tuple(image_shape)).encode())
    for weight in model.weights:
        digest.update(keras.ops.convert_to_numpy(weight).tobytes())
    return CACHE / f"{digest.hexdigest()[:32]}.tflite"


def is_cached(model: keras.Model, image_shape: tuple[int, ...]) -> bool:
    return cache_path(model, image_shape).exists()


def converted(model: keras.Model, image_shape: tuple[int, ...]) -> bytes:
    """The model as a LiteRT flatbuffer taking uint8 images of image_shape: from the cache when
    this model was converted before, else converted and cached."""
    cached = cache_path(model, image_shape)
    if cached.exists():
        return cached.read_bytes()
    from tinynet.formats import signature

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.tflite"
        model.export(str(path), format="litert", input_signature=signature(image_shape), verbose=False)
        content = path.read_bytes()
    try:  # a cache that cannot be written only costs the next run a conversion
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{os.getpid()}.partial")
        partial.write_bytes(content)
        partial.replace(cached)
    except OSError:
        pass
    return content
