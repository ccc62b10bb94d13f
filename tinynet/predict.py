"""Classify your own images with a trained lilTinyNet model.

    python predict.py photo.jpg                             # the 3 likeliest classes of one image
    python predict.py photos/ more.zip 'shots/**/*.png' --csv predictions.csv
    python predict.py photos/ --explain heat_maps/          # and where in each image the model looked

Files, folders (walked recursively), archives (.zip, .tar, .tar.gz, .tgz) and glob patterns are
read as the training data is, and every image is prepared exactly as in training and evaluation:
the same decoder, EXIF orientation, conversion to RGB and way of making a photo square (which
the model itself records). Class names come from the model's sidecar (its .json). Predicting
the files of a model's test folder gives exactly the evaluator's accuracy (tests/test_predict.py).

Probabilities are calibrated: the sidecar's temperature, fitted on validation, makes 80% right
about 80% of the time; below the minimum confidence chosen there (--min-confidence), the answer
is "unsure", with the best guesses still shown.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tinynet import cli
from tinynet.errors import UserError
from tinynet.gradcam import GradCam, save_overlay
from tinynet.image_inputs import answers, classify, find_images
from tinynet.model import load_saved_model
from tinynet.runfiles import read_sidecar
from tinynet.runtime import add_runtime_arg


def parse_args(argv: list[str] | None = None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER_OR_GLOB", help="what to classify")
    cli.add_model_arg(parser)
    parser.add_argument("--top", type=cli.positive_int, default=3, help="classes shown per image")
    parser.add_argument("--min-confidence", type=float, default=None,
                        help="below this probability of its best class an image is answered 'unsure' (default: "
                             "the threshold chosen on validation, from the model's sidecar; 0: never)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=64, help="images per forward pass")
    add_runtime_arg(parser)
    output = parser.add_argument_group("output").add_mutually_exclusive_group()
    output.add_argument("--json", metavar="PATH", help="also write every image's top classes here as JSON")
    output.add_argument("--csv", metavar="PATH", help="also write them here as CSV, one row per image")
    parser.add_argument("--explain", metavar="OUT_DIR",
                        help="write a Grad-CAM heat map over each image for its top class into this folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    for flag, path in (("--json", args.json), ("--csv", args.csv)):
        if path:
            cli.check_output(path, flag, suffix=None)
    heat_map_dir = cli.make_folder(args.explain, "--explain") if args.explain else None
    model = load_saved_model(args.model)
    info = read_sidecar(args.model)
    class_names = info.get("class_names")
    if not class_names:
        print(f"note: {args.model} has no sidecar (.json beside it): classes are shown as numbers")
        class_names = [str(i) for i in range(model.output_shape[-1])]
    files = find_images(args.inputs)

    # Classify in chunks; each image's classes ranked by calibrated probability, or "unsure".
    grad_cam = GradCam(model) if heat_map_dir else None
    rows = []
    for names, images, probabilities in classify(model, files, args.batch_size, args.runtime):
        found = answers(probabilities, class_names, args.top, info.get("calibration", {}), args.min_confidence)
        heat_maps = grad_cam.heat_maps(images, probabilities.argmax(1)) if grad_cam else [None] * len(names)
        for name, image, answer, heat_map in zip(names, images, found, heat_maps, strict=True):
            if heat_map is not None:
                best = answer["top"][0]
                save_overlay(image, heat_map, f"{best['class']} {best['probability']:.0%}",
                             heat_map_dir / f"{len(rows):05d}_{Path(name).stem}.png")
            rows.append({"path": name, **answer})

    if not rows:
        raise UserError(f"none of the {len(files)} file(s) given is a readable image")

    # Report: one line per image, and the files asked for.
    width = max(len(row["path"]) for row in rows)
    for row in rows:
        guesses = "  ".join(f"{t['class']} ({t['probability']:.2f})" for t in row["top"])
        print(row["path"].ljust(width), f"unsure, best guesses: {guesses}" if row["unsure"] else guesses, sep="  ")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "images": rows}, indent=2) + "\n")
    if args.csv:
        write_csv(Path(args.csv), rows, args.top)
    if heat_map_dir:
        print(f"heat maps: {heat_map_dir}/")
    return rows


def write_csv(path: Path, rows: list[dict], top: int) -> None:
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["path", "unsure",
                         *[f"{kind}_{k}" for k in range(1, top + 1) for kind in ("class", "probability")]])
        for row in rows:
            writer.writerow([row["path"], int(row["unsure"]),
                             *[v for t in row["top"] for v in (t["class"], f"{t['probability']:.6f}")]])
