"""lilTinyNet side by side: which model to ship.

    python megaTest.py                                  # both standard models
    python megaTest.py --models a.h5 b.h5 --json results.json

One row per model: test accuracy with its 95% interval for the test set's size, loss and top-3
accuracy (as the original harness measured them: keras.models.load_model, batch size 128),
parameters, file size, throughput at batch 256, single-image latency, and the accuracy gained
over the base model, and whether that gain or loss is more than chance gives on this many test
images. Printed as a table, and written as a page to open in a browser
(reports/megatest.html, beside the evaluator's report).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinynet import cli, plots, report
from tinynet.formats import SIGNIFICANCE, lost_and_gained, worse_by_chance
from tinynet.metrics import (
    add_eval_args,
    compiled_call,
    evaluate,
    latency_ms,
    load_test_data,
    model_facts,
    pass_runner,
    table,
    throughput,
)
from tinynet.model import check_num_classes, load_saved_model
from tinynet.runfiles import read_sidecar
from tinynet.streaming import take

THROUGHPUT_IMAGES = 2048  # timed in memory, so that the speed is the model's, not the disk's
COLUMNS = [("model", "model", ""), ("accuracy", "accuracy", ".4f"), ("interval", "95% interval", ""),
           ("gain_over_base", "gain", "+.4f"), ("against_base", "against the base", ""),
           ("loss", "loss", ".4f"), ("top3_accuracy", "top-3", ".4f"), ("total_params", "params", ","),
           ("trainable_params", "trainable", ","), ("file_mb", "MB", ".1f"),
           ("runtime", "runtime", ""), ("images_per_s", "images/s @256", ".0f"), ("latency_ms", "latency ms", ".1f")]


def parse_args(argv: list[str] | None = None):
    parser = cli.make_parser(__doc__)
    add_eval_args(parser)
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the numbers here as JSON")
    parser.add_argument("--report", default="reports/megatest.html", metavar="PATH",
                        help="the side-by-side page (its chart is written beside it)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.json:
        cli.check_output(args.json, "--json", suffix=None)
    page = Path(args.report)
    cli.make_folder(str(page.parent), "--report")
    models = {path: load_saved_model(path) for path in args.models}  # every file checked before any work
    data = load_test_data(args.models, args.data_dir)
    images, labels = data.images, data.labels
    in_memory = take(images, np.arange(min(THROUGHPUT_IMAGES, len(labels))))  # speed without the reading

    rows, right = [], {}
    for path, model in models.items():
        check_num_classes(model, data.num_classes, path)
        forward = pass_runner(model, images, args.batch_size, args.runtime, len(in_memory))
        result = evaluate(path, model, images, labels, data.class_names, args.batch_size, forward)
        right[path] = result.probabilities.argmax(1) == labels
        low, high = result.accuracy_interval()
        rows.append({"model": path, "stage": read_sidecar(path).get("stage"), "accuracy": result.accuracy,
                     "accuracy_low": low, "accuracy_high": high, "interval": f"{low:.3f} to {high:.3f}",
                     "loss": result.loss, "top3_accuracy": result.top3_accuracy, **model_facts(path, model),
                     "runtime": forward.name, "images_per_s": throughput(forward, in_memory),
                     "latency_ms": latency_ms(forward if forward.name == "litert" else compiled_call(model),
                                              in_memory[0])})

    # The gain is measured against the model whose sidecar says "base", else the first one.
    base = next((row for row in rows if row["stage"] == "base"), rows[0])
    for row in rows:
        row["gain_over_base"] = None if row is base else row["accuracy"] - base["accuracy"]
        row |= {"against_base": "", **(against(right[row["model"]], right[base["model"]]) if row is not base else {})}

    # The table in the terminal, and as a page with a chart.
    shown = [{**row, "model": Path(row["model"]).name} for row in rows]
    print(f"\ntest set: {len(labels)} images from {data.source}\n")
    print(table(shown, COLUMNS))
    chart = plots.accuracy_chart(shown, page.with_name(f"{page.stem}_accuracy.png"))
    report.comparison_page(page, shown, COLUMNS, f"{len(labels)} test images from {data.source}", chart)
    for row in shown:
        if row["against_base"]:
            print(f"{row['model']}: {row['against_base']} ({row['images_gained']} test images gained, "
                  f"{row['images_lost']} lost against the base)")
    print(f"\nthe page: {page.resolve().as_uri()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"data": data.source, "test_images": len(labels), "models": rows},
                                              indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return rows


def against(right: np.ndarray, base_right: np.ndarray) -> dict:
    """A model against the base on the same test images: the images one gets right and the other
    wrong, and whether either side's share of them is more than chance gives (McNemar's exact test)."""
    lost, gained = lost_and_gained(right, base_right)
    if worse_by_chance(gained, lost) < SIGNIFICANCE:
        verdict = "better, beyond chance"
    elif worse_by_chance(lost, gained) < SIGNIFICANCE:
        verdict = "worse, beyond chance: ship the base"
    else:
        verdict = "the same within chance"
    return {"against_base": verdict, "images_gained": gained, "images_lost": lost}
