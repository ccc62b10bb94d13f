"""lilTinyNet's detailed look at each saved model: a report page, per-class scores, pictures.

    python evaluator_lilTinyNet_finetuned.py            # both standard models: reports/index.html
    python evaluator_lilTinyNet_finetuned.py --models my.h5 --data-dir PATH --out-dir my_reports

Writes one page to open in a browser, reports/index.html, which needs no server and no network:
for each model its settings and data (from the sidecar), test accuracy with its 95% interval,
top-3 accuracy, precision, recall and F1 per class, the confusion matrix (counts and shares),
the most confused pairs, a reliability diagram with the expected calibration error, and its most
confident mistakes beside Grad-CAM's heat maps; and the learning curves of both stages. The
pictures are also written beside it as PNGs, and the terminal prints the short version.

Every number and picture of a model comes from one prefetched pass over the test set (and
Grad-CAM's pass over the few mistakes shown).
"""

from __future__ import annotations

from pathlib import Path

from tinynet import cli, plots, report
from tinynet.gradcam import GradCam, explained
from tinynet.metrics import add_eval_args, evaluate, load_test_data, pass_runner, report_files, table
from tinynet.model import check_num_classes, load_saved_model
from tinynet.runfiles import read_sidecar
from tinynet.streaming import take


def parse_args(argv: list[str] | None = None):
    parser = cli.make_parser(__doc__)
    add_eval_args(parser)
    group = parser.add_argument_group("output")
    group.add_argument("--out-dir", default="reports", help="where the pictures and summaries go")
    group.add_argument("--grid", type=cli.positive_int, default=25, help="test images in the predictions picture")
    group.add_argument("--show", type=int, default=5, help="predictions printed per model")
    group.add_argument("--mistakes", type=int, default=8, help="most confident mistakes shown with Grad-CAM")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    out_dir = cli.make_folder(args.out_dir, "--out-dir")
    models = {path: load_saved_model(path) for path in args.models}  # every file checked before any work
    data = load_test_data(args.models, args.data_dir)
    written: list[Path] = []
    sections = []

    for path, model in models.items():
        check_num_classes(model, data.num_classes, path)
        print(f"\n=== {path}")
        model.summary()

        # One pass over the test set; every number and picture below comes from it.
        forward = pass_runner(model, data.images, args.batch_size, args.runtime)
        result = evaluate(path, model, data.images, data.labels, data.class_names, args.batch_size, forward)
        low, high = result.accuracy_interval()
        print(f"test loss {result.loss:.4f}, accuracy {result.accuracy:.4f} (95% interval {low:.3f} to {high:.3f}), "
              f"top-3 accuracy {result.top3_accuracy:.4f}, calibration error {result.calibration()[1]:.3f}")
        print(table(result.per_class(), [("class", "class", ""), ("precision", "precision", ".3f"),
                                         ("recall", "recall", ".3f"), ("f1", "F1", ".3f"), ("support", "n", "d")]))
        print("most confused (true -> predicted):")
        for true, predicted, count in result.most_confused():
            print(f"  {true} -> {predicted}: {count}")
        print("first predictions:")
        for i in range(min(args.show, len(result.labels))):
            guess = result.predicted[i]
            print(f"  #{i}: {data.class_names[guess]} ({result.probabilities[i, guess]:.0%}), "
                  f"true {data.class_names[result.labels[i]]}")

        # Pictures, then the model's part of the page.
        name = Path(path).stem
        pictures = {
            "confusion": plots.confusion_matrix(result, out_dir / f"{name}_confusion.png"),
            "calibration": plots.reliability_diagram(result, out_dir / f"{name}_calibration.png"),
            "mistakes": plots.mistakes_grid(explained_mistakes(model, result, data.images, args.mistakes),
                                            out_dir / f"{name}_mistakes.png"),
            "predictions": plots.prediction_grid(result, data.images, out_dir / f"{name}_predictions.png", args.grid),
            "architecture": plots.architecture(model, out_dir / f"{name}_architecture.png"),
        }
        written += [picture for picture in pictures.values() if picture]
        info = read_sidecar(path)
        sections.append(report.model_section(path, info, read_sidecar(info["base"]) if info.get("base") else {},
                                             result, {k: v for k, v in pictures.items() if v and v.suffix == ".png"}))

    curves = plots.learning_curves(args.models, out_dir / "learning_curves.png")
    written += [curves] if curves else []
    written.append(report.write_page(out_dir / "index.html", "lilTinyNet report",
                                     f"{len(data.labels)} test images from {data.source}", sections,
                                     [Path(path).name for path in models], curves))
    report_files(written)
    print(f"open the report: {(out_dir / 'index.html').resolve().as_uri()}")
    return written


def explained_mistakes(model, result, images, count: int) -> list:
    """The most confident mistakes, each beside Grad-CAM's heat map of the class it predicted."""
    worst = result.worst_mistakes(count)
    if not len(worst):
        return []
    chosen = take(images, worst)
    heat_maps = GradCam(model).heat_maps(chosen, result.predicted[worst])
    names = result.class_names
    return [explained(image, heat_map, f"{names[result.predicted[i]]} {result.probabilities[i].max():.0%}, "
                                       f"true: {names[result.labels[i]]}", mistake=True)
            for i, image, heat_map in zip(worst, chosen, heat_maps, strict=True)]
