"""lilTinyNet's detailed look at each saved model: metrics, per-class scores, pictures.

    python evaluator_lilTinyNet_finetuned.py            # both standard models, reports/ folder
    python evaluator_lilTinyNet_finetuned.py --models my.h5 --data-dir PATH --out-dir my_reports

For each model: its summary, test loss, accuracy and top-3 accuracy, precision, recall and F1 per
class, the most confused pairs, and PNGs of predictions, the confusion matrix and the architecture;
then the learning curves of both stages from the training sidecars.

Every number and picture of a model comes from one prefetched pass over the test set, which runs
as fast as model.predict on the same images (`python -m bench.bench_eval`: 1.00x and 1.02x for
the two CIFAR-10 models, best of three passes each).
"""

from __future__ import annotations

from pathlib import Path

from tinynet import cli, plots
from tinynet.evaluation import add_eval_args, evaluate, load_test_data, report_files, table
from tinynet.model import check_num_classes, load_saved_model


def parse_args(argv: list[str] | None = None):
    parser = cli.make_parser(__doc__)
    add_eval_args(parser)
    group = parser.add_argument_group("output")
    group.add_argument("--out-dir", default="reports", help="where the pictures and summaries go")
    group.add_argument("--grid", type=cli.positive_int, default=25, help="test images in the predictions picture")
    group.add_argument("--show", type=int, default=5, help="predictions printed per model")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    out_dir = cli.make_folder(args.out_dir, "--out-dir")
    models = {path: load_saved_model(path) for path in args.models}  # every file checked before any work
    data = load_test_data(args.models, args.data_dir)
    written: list[Path] = []

    for path, model in models.items():
        check_num_classes(model, data.num_classes, path)
        print(f"\n=== {path}")
        model.summary()

        # One pass over the test set; every number and picture below comes from it.
        result = evaluate(path, model, data.images, data.labels, data.class_names, args.batch_size)
        print(f"test loss {result.loss:.4f}, accuracy {result.accuracy:.4f}, top-3 accuracy {result.top3_accuracy:.4f}")
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

        # Pictures.
        name = Path(path).stem
        written += [plots.prediction_grid(result, data.images, out_dir / f"{name}_predictions.png", args.grid),
                    plots.confusion_matrix(result, out_dir / f"{name}_confusion.png"),
                    plots.architecture(model, out_dir / f"{name}_architecture.png")]

    curves = plots.learning_curves(args.models, out_dir / "learning_curves.png")
    written += [curves] if curves else []
    report_files(written)
    return written


if __name__ == "__main__":
    cli.run(main)
