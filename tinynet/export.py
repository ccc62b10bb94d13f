"""Export a trained lilTinyNet model for phones and CPU servers; every export is checked first.

    python export.py --format tflite tflite-int8            # beside the model: .tflite, _int8.tflite
    python export.py --model my.h5 --format onnx openvino --output exports/my
    python export.py --format tflite --mirror               # _mirror.tflite: each image and its mirror

Formats: savedmodel (TensorFlow Serving), tflite (LiteRT, for phones), tflite-int8 (a quarter of
the size: full integer calibrated on training images, or int8 weights alone if that fails its
check), onnx (ONNX Runtime) and openvino (OpenVINO IR, for Intel CPUs). An export takes
uint8 RGB images as the data loader gives them and returns probabilities. With --mirror, an
export averages the model's probabilities on each image and on its mirror image, at twice the
inference time: more accurate for some models, not all, so both accuracies are printed.

Before an export is reported written, it runs on the test set (a sample of --check-images) in its
own runtime and is compared with the Keras model: float formats must give the same top class for
99.9% of the images and probabilities within 1e-4; int8 may lose at most 1 point of accuracy, or
more only where a test set this small cannot tell the loss from chance (a paired test on the
images the two disagree on). What was judged goes into a .check.json beside it. The runtimes
are optional packages: pip install -r requirements-export.txt

Sizes, speeds and accuracies of each format: README.md's results tables.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from tinynet import backend, cli, formats
from tinynet.data import load_recorded
from tinynet.errors import UserError
from tinynet.model import load_saved_model, mirrored
from tinynet.runfiles import read_sidecar, write_json

CALIBRATION_IMAGES = 300  # training images that set int8's activation ranges


def parse_args(argv: list[str] | None = None):
    parser = cli.make_parser(__doc__)
    cli.add_model_arg(parser)
    parser.add_argument("--format", nargs="+", choices=formats.FORMATS, required=True, dest="formats",
                        help="one or more")
    parser.add_argument("--mirror", action="store_true",
                        help="export the average of the model on each image and on its mirror image (test-time "
                             "augmentation): twice the inference time")
    parser.add_argument("--output", default=None,
                        help="path and name the exports start with (default: the model's, without .h5, and "
                             "_mirror with --mirror)")
    cli.add_moved_data_arg(parser)
    parser.add_argument("--check-images", type=cli.positive_int, default=1000,
                        help="test images every export is checked on")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    backend.require_tensorflow("export.py")  # the exports are written from TensorFlow's SavedModel
    formats.check_packages(args.formats)
    stem = Path(args.output) if args.output else Path(args.model).with_suffix("")
    if args.mirror and not args.output:
        stem = stem.with_name(f"{stem.name}_mirror")
    cli.check_output(str(stem), "--output", suffix=None)
    model = load_saved_model(args.model)

    # The test images to check on, and training images to calibrate int8 on, as the model saw them.
    _, splits = load_recorded(read_sidecar(args.model).get("data", {}), args.data_dir)
    rng = np.random.default_rng(0)
    test = rng.permutation(len(splits.labels["test"]))[:args.check_images]
    images, labels = splits.images["test"][test], splits.labels["test"][test]
    calibration = splits.images["train"][rng.permutation(len(splits.labels["train"]))[:CALIBRATION_IMAGES]]
    if args.mirror:  # it does not pay on every set: said beside the model alone's accuracy
        alone = np.mean(model.predict(images, batch_size=100, verbose=0).argmax(1) == labels)
        model = mirrored(model)
    keras_probabilities = model.predict(images, batch_size=100, verbose=0)
    if args.mirror:
        print(f"mirrored: test accuracy {np.mean(keras_probabilities.argmax(1) == labels):.4f} against {alone:.4f} "
              f"for the model alone, on {len(labels)} test images")

    # Each format: written under a temporary name, run in its own runtime, moved into place if it passes.
    checks = []
    with tempfile.TemporaryDirectory() as folder:
        saved_model = None
        if set(args.formats) - set(formats.KERAS_FORMATS):  # converted from one SavedModel, made once
            saved_model = formats.write_saved_model(model, Path(folder) / "savedmodel", images.shape[1:])
        for fmt in args.formats:
            path = formats.export_path(stem, fmt)
            check = export_checked(model, fmt, path, images, labels, keras_probabilities, calibration, saved_model)
            if fmt == "tflite-int8" and not check["passed"]:
                # Full-integer int8 loses too much on some models; int8 weights with activations
                # quantized as the model runs (dynamic range) keep closer to float.
                check = export_checked(model, fmt, path, images, labels, keras_probabilities, None, saved_model)
            checks.append(check)
    failed = [c["format"] for c in checks if not c["passed"]]
    if failed:
        raise UserError(f"{', '.join(failed)} did not match the Keras model; nothing was written for "
                        f"{'it' if len(failed) == 1 else 'them'}")
    return checks


def export_checked(model, fmt: str, path: Path, images: np.ndarray, labels: np.ndarray,
                   keras_probabilities: np.ndarray, calibration: np.ndarray | None, saved_model: Path | None) -> dict:
    """One export, written under a temporary name, checked in its own runtime against Keras's
    predictions, and moved into place with its .check.json only if it passes."""
    partial = path.with_name(f".partial_{path.name}")  # the suffix kept: exporters go by it
    formats.remove(partial)
    formats.write_export(model, fmt, partial, images.shape[1:], calibration, saved_model)
    probabilities = formats.run_in_batches(formats.load_runner(fmt, partial), images)
    check = formats.compare(fmt, probabilities, keras_probabilities, labels)
    check.update(path=str(path), megabytes=round(formats.file_bytes(partial) / 2**20, 2))
    if fmt == "tflite-int8":
        check["quantization"] = ("full integer, calibrated on training images" if calibration is not None
                                 else "int8 weights, activations quantized at run time (dynamic range)")
    if check["passed"]:
        formats.replace(partial, path)
        write_json(Path(f"{path}.check.json"), check)
    else:
        formats.remove(partial)
    note = f"; {check['quantization']}" if "quantization" in check else ""
    print(f"{fmt:12} {'written' if check['passed'] else 'FAILED its check, not written':30} {path}  "
          f"{check['megabytes']:.1f} MB, accuracy {check['accuracy']:.4f} (Keras {check['keras_accuracy']:.4f}), "
          f"top class agrees {check['top_class_agreement']:.2%}, max difference "
          f"{check['max_probability_difference']:.1e}{note}")
    return check
