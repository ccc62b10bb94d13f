"""How stage 1's linear head chooses its L2 penalty on a small set: on the validation images (the
kit) or by cross-validation over the training and validation images together.

    python -m bench.bench_photos --alpha 1.0 0.35 ...   # first: the stage-1 models
    python -m bench.bench_penalty
    python -m bench.bench_penalty --summary              # the rules again, from penalty.json's rows

For each width and photo set, the pooled features of every image are computed once with the
saved stage-1 model's frozen front (the base is the same for every seed); then for each seed, on
its recorded split, and each penalty of tinynet.linear_head.PENALTIES: the head fitted on the
training images (tinynet.linear_head.fitted), its validation loss, standard error and test
accuracy, and the same penalty fitted on each of the kit's cross-validation folds of the
training and validation images, each image's held-out loss. Each rule then picks a penalty, and
the head fitted on the training images with it is scored on test, beside bench_photos'
logistic regression on the same split. Results go to bench/results/penalty.json.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace

import numpy as np

from bench.bench_photos import LOG, MODELS, PHOTO_SETS, read_log, stage1_model
from bench.common import RESULTS, save


def one_standard_error(rows: list[dict], loss: str, images: float) -> dict:
    """The kit's rule (tinynet.linear_head), imported when used: TensorFlow stays out of this process until then."""
    from tinynet.linear_head import one_standard_error as rule

    return rule(rows, loss, images)


RULES = {  # each picks a row of a run
    "validation, one standard error and at least one image (the kit)":
        lambda run: one_standard_error(run["rows"], "val_loss", run["val_images"]),
    "validation, one standard error": lambda run: one_standard_error(run["rows"], "val_loss", math.inf),
    "validation, lowest loss": lambda run: min(run["rows"], key=lambda row: row["val_loss"]),
    "cross-validation, one standard error and at least one image":
        lambda run: one_standard_error(run["rows"], "cv_loss", run["cv_images"]),
    "cross-validation, lowest loss": lambda run: min(run["rows"], key=lambda row: row["cv_loss"]),
}


def held_out_loss(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:  # per image
    return -np.log(np.maximum(probabilities[np.arange(len(labels)), labels], 1e-12))


def penalty_rows(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_classes: int,
                 seed: int) -> list[dict]:
    """Per penalty: the training-only fit on validation and test, and the cross-validated loss."""
    import keras

    from tinynet.linear_head import PENALTIES, fitted, held_out_probabilities, quiet_retracing

    def probabilities(classifier, x):
        return keras.ops.convert_to_numpy(classifier(x, training=False))

    hot = {split: np.eye(num_classes, dtype=np.float32)[y] for split, y in labels.items()}
    rows = []
    with quiet_retracing():
        for penalty in PENALTIES:
            classifier = fitted(features["train"], hot["train"], num_classes, penalty, seed)
            val = held_out_loss(probabilities(classifier, features["val"]), labels["val"])
            crossed, classes = held_out_probabilities(features, hot, num_classes, penalty, seed)
            cv = held_out_loss(crossed, classes)
            rows.append({"penalty": penalty,
                         "val_loss": float(val.mean()), "val_loss_error": float(val.std() / np.sqrt(len(val))),
                         "cv_loss": float(cv.mean()), "cv_loss_error": float(cv.std() / np.sqrt(len(cv))),
                         "cv_accuracy": float(np.mean(crossed.argmax(1) == classes)),
                         "test_accuracy": float(np.mean(probabilities(classifier, features["test"]).argmax(1)
                                                        == labels["test"]))})
    return rows


def one_set(name: str, alpha: float, seeds: list[int]) -> list[dict]:
    """bench_penalty's rows for one set and width, each seed's on its recorded split."""
    import keras

    from tinynet.data import Part, load_recorded_data, split_recorded
    from tinynet.features import PASS_BATCH_SIZE, extract_features
    from tinynet.model import feature_extractor

    sidecars = {seed: sidecar(name, alpha, seed) for seed in seeds}
    data = load_recorded_data(sidecars[seeds[0]]["data"])
    extractor = feature_extractor(keras.models.load_model(stage1_model(name, alpha, seeds[0])))
    as_features = replace(data, parts={part: Part(extract_features(extractor, images.images, PASS_BATCH_SIZE),
                                                  images.labels, images.files) for part, images in data.parts.items()})
    results = []
    for seed in seeds:
        splits = split_recorded(as_features, sidecars[seed]["data"])
        rows = penalty_rows(splits.images, splits.labels, data.num_classes, seed)
        results.append({"set": name, "alpha": alpha, "seed": seed, **recorded(sidecars[seed]), "rows": rows})
        print(json.dumps({key: results[-1][key] for key in ("set", "alpha", "seed", "kit_penalty")}), flush=True)
    return results


def sidecar(name: str, alpha: float, seed: int) -> dict:
    """The stage-1 model's sidecar that bench_photos left."""
    return json.loads(stage1_model(name, alpha, seed).with_suffix(".json").read_text())


def recorded(info: dict) -> dict:
    """What stage 1 recorded of a run: its penalty and the images each rule's loss is a mean over."""
    return {"kit_penalty": info["penalty"], "val_images": info["data"]["val"],
            "cv_images": info["data"]["train"] + info["data"]["val"]}


def summary(runs: list[dict], regressions: dict[tuple, float]) -> dict:
    """Per width and rule: each set's mean test accuracy over seeds, and over sets its mean and
    worst difference from the logistic regression."""
    table = {}
    for alpha in sorted({run["alpha"] for run in runs}, reverse=True):
        here = [run for run in runs if run["alpha"] == alpha]
        sets = sorted({run["set"] for run in here}, key=PHOTO_SETS.index)
        regression = {s: float(np.mean([regressions[s, alpha, r["seed"]] for r in here if r["set"] == s]))
                      for s in sets}
        table[str(alpha)] = {"regression": {s: round(v, 4) for s, v in regression.items()}}
        for rule, pick in RULES.items():
            by_set = {s: float(np.mean([pick(r)["test_accuracy"] for r in here if r["set"] == s]))
                      for s in sets}
            below = [by_set[s] - regression[s] for s in sets]
            table[str(alpha)][rule] = {"by_set": {s: round(v, 4) for s, v in by_set.items()},
                                       "mean_over_regression": round(float(np.mean(below)), 4),
                                       "worst_set_over_regression": round(float(min(below)), 4),
                                       "runs": len(here)}
    return table


def main() -> None:
    from bench.common import in_fresh_process

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--summary", action="store_true",
                        help="only the summary again, from penalty.json's rows and the stage-1 models' sidecars")
    if parser.parse_args().summary:
        written = json.loads((RESULTS / "penalty.json").read_text())["runs"]
        runs = [{**run, **recorded(sidecar(run["set"], run["alpha"], run["seed"]))} for run in written]
    else:
        runs = []
        for alpha in (1.0, 0.35):
            for name in PHOTO_SETS:
                seeds = sorted(int(path.stem.rsplit("seed", 1)[1])
                               for path in MODELS.glob(f"{name}_alpha{alpha}_seed?.h5"))
                if seeds:
                    runs += in_fresh_process(one_set, name, alpha, seeds)
    regressions = {(r["set"], r["alpha"], r["seed"]): r["test_accuracy"]
                   for r in read_log() if r["kind"] == "regression"}
    save("penalty", {"source": str(LOG.relative_to(LOG.parents[3])), "summary": summary(runs, regressions),
                     "runs": runs})


if __name__ == "__main__":
    main()
