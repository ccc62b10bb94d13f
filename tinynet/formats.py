"""Exporting a saved model for phones and CPU servers, and running each export in its own runtime.

Every export takes what the Keras model takes, uint8 RGB images of the size the data loader gives
(the test set's), and returns class probabilities. Keras's own model.export() writes the SavedModel,
LiteRT and ONNX files; int8 LiteRT and OpenVINO are converted from the SavedModel by their own
tools, the path that works with Keras 3 (TFLiteConverter.from_keras_model does not).
"""

from __future__ import annotations

import importlib
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tinynet.errors import UserError

FORMATS = ("savedmodel", "tflite", "tflite-int8", "onnx", "openvino")
SUFFIXES = {"savedmodel": "_savedmodel", "tflite": ".tflite", "tflite-int8": "_int8.tflite", "onnx": ".onnx",
            "openvino": "_openvino"}
PACKAGES = {"tflite": ["ai-edge-litert"], "tflite-int8": ["ai-edge-litert"], "onnx": ["onnx", "onnxruntime", "tf2onnx"],
            "openvino": ["openvino"]}
KERAS_FORMATS = {"savedmodel": "tf_saved_model", "tflite": "litert", "onnx": "onnx"}  # by model.export()
Runner = Callable[[np.ndarray], np.ndarray]


def check_packages(formats: list[str]) -> None:
    """Refuse, before any work, a format whose optional packages are not installed."""
    for fmt in formats:
        for package in PACKAGES.get(fmt, []):
            try:
                importlib.import_module(package.replace("-", "_"))
            except ImportError:
                raise UserError(f"--format {fmt} needs the package {package}: "
                                "pip install -r requirements-export.txt") from None


def export_path(stem: Path, fmt: str) -> Path:
    """cifar10_finetuned_lilTinyNet + tflite-int8 -> cifar10_finetuned_lilTinyNet_int8.tflite"""
    return stem.with_name(stem.name + SUFFIXES[fmt])


def signature(image_shape: tuple[int, ...]) -> list[keras.InputSpec]:
    """Batches of uint8 images of the data loader's size, as the Keras model takes them."""
    return [keras.InputSpec(shape=(None, *image_shape), dtype="uint8")]


def write_saved_model(model: keras.Model, path: Path, image_shape: tuple[int, ...]) -> Path:
    """The SavedModel that int8 LiteRT and OpenVINO are converted from: written once per run."""
    model.export(str(path), format="tf_saved_model", input_signature=signature(image_shape), verbose=False)
    return path


def write_export(model: keras.Model, fmt: str, path: Path, image_shape: tuple[int, ...],
                 calibration: np.ndarray | None, saved_model: Path | None = None) -> None:
    """The model in one format at path; tflite-int8 and openvino are converted from saved_model
    (write_saved_model). int8 is full integer, its activations' ranges calibrated on the given
    (training) images; without them, int8 weights and activations quantized as the model runs
    (dynamic range)."""
    if fmt in KERAS_FORMATS:
        model.export(str(path), format=KERAS_FORMATS[fmt], input_signature=signature(image_shape), verbose=False)
    elif fmt == "tflite-int8":
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 weights
        if calibration is not None:  # and int8 activations, their ranges set on these images
            converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        path.write_bytes(converter.convert())
    elif fmt == "openvino":
        import openvino as ov

        path.mkdir()
        # float32 weights: save_model's default halves them to float16, which fails the float check
        ov.save_model(ov.convert_model(str(saved_model)), str(path / "model.xml"), compress_to_fp16=False)


def load_runner(fmt: str, path: Path) -> Runner:
    """A function from a batch of images to probabilities, in the export's own runtime, on every core."""
    if fmt == "savedmodel":
        loaded = tf.saved_model.load(str(path))  # held: its variables die with it
        return lambda images: loaded.serve(images).numpy()
    if fmt.startswith("tflite"):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count())
        source, result = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

        def run(images: np.ndarray) -> np.ndarray:
            interpreter.resize_tensor_input(source, images.shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(source, images)
            interpreter.invoke()
            return interpreter.get_tensor(result).copy()
        return run
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda images: session.run(None, {name: images})[0]
    import openvino as ov

    # float32 kept: on CPUs with bfloat16 units OpenVINO would otherwise compute in bfloat16
    compiled = ov.Core().compile_model(str(path / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda images: compiled(images)[0]


def run_in_batches(run: Runner, images: np.ndarray, batch_size: int = 100) -> np.ndarray:
    return np.concatenate([run(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


INT8_TOLERANCE = 0.01  # accuracy int8 may lose on any test set
SIGNIFICANCE = 0.05  # a larger loss is refused only when chance would rarely give it


def compare(fmt: str, probabilities: np.ndarray, keras_probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """How the export's predictions match Keras's. Float formats must give the same top class for
    99.9% of images and probabilities within 1e-4. int8 is judged on the images where the two
    disagree: it passes when it loses at most INT8_TOLERANCE of accuracy, or when its loss is one
    chance could give (McNemar's exact test: of the images one of the two gets right and the
    other wrong, how likely this many or more would go against int8 if either were as likely).
    On 200 test images, 3 lost and none gained is such a loss; 12 lost and 2 gained is not."""
    agreement = float(np.mean(probabilities.argmax(1) == keras_probabilities.argmax(1)))
    difference = float(np.abs(probabilities - keras_probabilities).max())
    right, keras_right = probabilities.argmax(1) == labels, keras_probabilities.argmax(1) == labels
    accuracy, keras_accuracy = float(np.mean(right)), float(np.mean(keras_right))
    check = {"format": fmt, "images": len(labels), "accuracy": accuracy, "keras_accuracy": keras_accuracy,
             "top_class_agreement": agreement, "max_probability_difference": difference}
    if fmt == "tflite-int8":
        lost, gained = lost_and_gained(right, keras_right)
        chance = worse_by_chance(lost, gained)
        passed = accuracy >= keras_accuracy - INT8_TOLERANCE or chance >= SIGNIFICANCE
        criterion = (f"accuracy within {INT8_TOLERANCE:.0%} of Keras's, or a loss chance gives with probability "
                     f"at least {SIGNIFICANCE} (McNemar's exact test on the images the two disagree on)")
        check |= {"images_lost": lost, "images_gained": gained, "chance_of_such_a_loss": round(chance, 4)}
    else:
        passed = agreement >= 0.999 and difference <= 1e-4
        criterion = "top class agrees on 99.9% of images, probabilities within 1e-4"
    return {**check, "criterion": criterion, "passed": bool(passed)}


def lost_and_gained(right: np.ndarray, reference_right: np.ndarray) -> tuple[int, int]:
    """Of the images one model gets right and the other wrong: how many the reference alone gets
    right (lost), and how many the model alone does (gained)."""
    return int(np.sum(reference_right & ~right)), int(np.sum(right & ~reference_right))


def worse_by_chance(lost: int, gained: int) -> float:
    """One-sided exact McNemar test: the probability of `lost` or more of the lost + gained images
    going against the export if each were as likely to go either way."""
    flips = lost + gained
    return sum(math.comb(flips, k) for k in range(lost, flips + 1)) / 2**flips if flips else 1.0


def file_bytes(path: Path) -> int:
    """The size of an export, a file or a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def replace(partial: Path, path: Path) -> None:
    """Move a checked export into place in one step; an older export at path goes."""
    if path.is_dir():
        shutil.rmtree(path)
    os.replace(partial, path)


def remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
