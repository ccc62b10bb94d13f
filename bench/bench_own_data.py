"""Bench the kit on data unlike CIFAR-10: few images, few classes, real photos, tiny grey images.

    python -m bench.bench_own_data                   # every dataset below
    python -m bench.bench_own_data --only flowers5 grey5
    python -m bench.bench_own_data --only flowers5 --seeds 0 1 2 3 4
    python -m bench.bench_own_data --only flowers5 --seeds 0 1 2 3 4 --finetune "--unfreeze block_13"

For each dataset, both stages with their defaults (only --alpha 0.35 and the shared weights
given), and a logistic regression (scikit-learn) on the same base's globally pooled features at
the same image size and split, its C tuned on the validation split: test accuracy and wall time.
The datasets are built in a temporary folder from the shared CIFAR-10 JPEGs and flowers5, each
in a different layout and container. Then, on flowers5, the same regression for each way of
making a photo square and for three image sizes: what chose --square's and --image-size's
defaults for photos. Results go to bench/results/own_data.json; with several --seeds (each a
different carved validation split, head and shuffling), every dataset runs once per seed and the
results, with their means, go to own_data_seeds.json. --finetune tries a stage-2 recipe: its
flags are given to lilTinyNet_finetuner.py, and the results go to own_data_seeds_<flags>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import DATA, RESULTS, SHARED, flags_tag, run_child, save, weights

FLOWERS = SHARED / "data" / "flowers5.tar.gz"
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# name: (classes, training images per class, test images per class); train/ and test/ folders
CIFAR_SUBSETS = {
    "cifar10x10": (CIFAR, 10, 100),
    "cifar10x50": (CIFAR, 50, 100),
    "cifar10x500": (CIFAR, 500, 100),
    "cifar2x100": (["cat", "dog"], 100, 500),
    "cifar5x100": (["airplane", "bird", "cat", "ship", "truck"], 100, 200),
}
DATASETS = [*CIFAR_SUBSETS, "flowers5", "grey5", "flowers5-large"]


def cifar_members() -> dict[tuple[str, str], list[tuple[str, bytes]]]:
    """The shared CIFAR-10 JPEGs by (split, class), in archive order."""
    members: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    with tarfile.open(DATA) as archive:
        for member in archive:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3:
                members.setdefault((parts[0], parts[1]), []).append((parts[2], archive.extractfile(member).read()))
    return members


def write_cifar_subset(root: Path, members: dict, classes: list[str], train: int, test: int) -> Path:
    """train/<class>/ and test/<class>/ with the first images of each class."""
    for split, count in (("train", train), ("test", test)):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for file, data in members[split, name][:count]:
                (folder / file).write_bytes(data)
    return root


def write_grey(root: Path, members: dict) -> Path:
    """grey5/<class>/*.png: 100 CIFAR-10 training images of each of five classes, grey, at 24 pixels,
    as one folder of class folders (validation and test are carved from it)."""
    for name in ("airplane", "automobile", "frog", "horse", "ship"):
        folder = root / name
        folder.mkdir(parents=True)
        for file, data in members["train", name][1000:1100]:
            image = Image.open(io.BytesIO(data)).convert("L").resize((24, 24), Image.BILINEAR)
            image.save(folder / file.replace(".jpg", ".png"))
    return root


def write_large_flowers(target: Path) -> Path:
    """flowers5's photos upscaled to 2048 pixels on their long side, as a .zip of train/ and val/."""
    with tarfile.open(FLOWERS) as source, zipfile.ZipFile(target, "w") as out:
        for member in source:
            if member.isfile() and member.name.lower().endswith((".jpg", ".jpeg", ".png")):
                image = Image.open(source.extractfile(member)).convert("RGB")
                scale = 2048 / max(image.size)
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=90)
                out.writestr(member.name, buffer.getvalue())
    return target


def logistic_regression(sidecar: Path, alpha: float = 0.35) -> dict:
    """Test accuracy of scikit-learn's logistic regression on the globally pooled output of the
    same base, at the run's image size, on its split; C chosen on validation accuracy."""
    from tinynet.data import load_recorded

    start = time.perf_counter()
    data, splits = load_recorded(json.loads(sidecar.read_text())["data"])
    return {**pooled_regression(data, splits, alpha), "seconds": round(time.perf_counter() - start, 1)}


def pooled_regression(data, splits, alpha: float = 0.35) -> dict:
    from sklearn.linear_model import LogisticRegression

    from tinynet.features import extract_features
    from tinynet.model import build_model, feature_extractor

    extractor = feature_extractor(build_model(data.num_classes, data.image_size, alpha, str(weights(alpha)), "linear",
                                              data.square))
    x = {split: extract_features(extractor, images, 128) for split, images in splits.images.items()}
    y = splits.labels
    scores = {C: LogisticRegression(C=C, max_iter=5000).fit(x["train"], y["train"]).score(x["val"], y["val"])
              for C in np.logspace(-4, 2, 13)}
    best = max(scores, key=scores.get)
    test = LogisticRegression(C=best, max_iter=5000).fit(x["train"], y["train"]).score(x["test"], y["test"])
    return {"test_accuracy": round(float(test), 4), "C": float(best), "val_accuracy": round(scores[best], 4)}


def photo_settings() -> list[dict]:
    """How to make flowers5's photos square, and at what size: the logistic regression's test
    accuracy for each way at 224 pixels, and for centre crops at 128, 160 and 224."""
    from tinynet.data import load_dataset, split_data

    rows = []
    for square, size in (("crop", 224), ("pad", 224), ("stretch", 224), ("crop", 160), ("crop", 128)):
        data = load_dataset(str(FLOWERS), size, square)
        rows.append({"square": square, "image_size": size,
                     **pooled_regression(data, split_data(data, None, None, 0))})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def run_stage1(source: Path, seed: int, output: Path, log: Path, alpha: float = 0.35) -> dict:
    """lilTinyNet.py with its defaults, only --alpha (0.35 unless given) and the shared weights given."""
    return run_child(["lilTinyNet.py", "--data-dir", str(source), "--alpha", str(alpha), "--weights",
                      str(weights(alpha)), "--seed", str(seed), "--output", str(output)], log)


def bench(name: str, source: Path, work: Path, seed: int = 0, tag: str = "", finetune: tuple[str, ...] = ()) -> dict:
    run = name + tag
    base, tuned = work / f"{run}.h5", work / f"{run}_finetuned.h5"
    first = run_stage1(source, seed, base, RESULTS / "own_data" / f"{run}_base.log")
    second = run_child(["lilTinyNet_finetuner.py", "--base", str(base), "--output", str(tuned), *finetune],
                       RESULTS / "own_data" / f"{run}_finetune.log")
    stage1, stage2 = (json.loads(path.with_suffix(".json").read_text()) for path in (base, tuned))
    record = stage1["data"]
    row = {
        "dataset": name, "seed": seed, "layout": record["layout"], "classes": len(stage1["class_names"]),
        **{split: record[split] for split in ("train", "val", "test")}, "image_size": record["image_size"],
        "head": stage1["head"], "penalty": stage1.get("penalty"),
        "stage1": {"test_accuracy": round(stage1["metrics"]["test"]["accuracy"], 4),
                   "val_accuracy": round(stage1["metrics"]["val"]["accuracy"], 4), **first},
        "stage2": {"test_accuracy": round(stage2["metrics"]["test"]["accuracy"], 4),
                   "val_accuracy": round(stage2["metrics"]["val"]["accuracy"], 4),
                   "best_epoch": stage2["best_epoch"], "epochs": len(stage2["history"]), **second},
        "logistic_regression": logistic_regression(base.with_suffix(".json")),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=DATASETS, default=DATASETS, help="these datasets only")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="run each dataset once per seed (lilTinyNet.py --seed): its split, head and shuffling")
    parser.add_argument("--finetune", default="", metavar="FLAGS",
                        help='more flags for lilTinyNet_finetuner.py, a stage-2 recipe to try: "--unfreeze block_13"')
    args = parser.parse_args()
    finetune = tuple(args.finetune.split())
    recipe = flags_tag(finetune)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sources = write_sources(args.only, work)
        for name in args.only:
            rows += [bench(name, sources[name], work, seed, (f"_seed{seed}" if len(args.seeds) > 1 else "") + recipe,
                           finetune) for seed in args.seeds]
    if len(args.seeds) > 1 or finetune:
        save(f"own_data_seeds{recipe}", {"seeds": args.seeds, "alpha": 0.35, "finetune": finetune,
                                         "means": seed_means(rows), "datasets": rows})
        return
    result = {"datasets": rows, "heads": dict(Counter(row["head"] for row in rows)), "alpha": 0.35,
              "aims": aims(rows)}
    save("own_data", result)
    if "flowers5" in args.only:
        save("own_data", {**result, "flowers5_square_and_size": photo_settings()})


def write_sources(names: list[str], work: Path) -> dict[str, Path]:
    """Each named dataset built in `work`, as a path to give lilTinyNet.py --data-dir."""
    members = cifar_members() if set(names) - {"flowers5", "flowers5-large"} else {}
    sources = {name: write_cifar_subset(work / name, members, *CIFAR_SUBSETS[name])
               for name in names if name in CIFAR_SUBSETS}
    sources["flowers5"] = FLOWERS  # as it ships: train/ and val/ under one top folder, in a .tar.gz
    if "grey5" in names:
        sources["grey5"] = write_grey(work / "grey5", members)
    if "flowers5-large" in names:
        sources["flowers5-large"] = write_large_flowers(work / "flowers5-large.zip")
    return sources


def seed_means(rows: list[dict]) -> dict:
    """Per dataset, over its seeds: the mean and standard deviation of each test accuracy and of
    stage 2's gain over stage 1, and on how many seeds stage 2 kept a fine-tuned epoch."""
    means = {}
    for name in dict.fromkeys(row["dataset"] for row in rows):
        runs = [row for row in rows if row["dataset"] == name]
        values = {"stage1": [row["stage1"]["test_accuracy"] for row in runs],
                  "stage2": [row["stage2"]["test_accuracy"] for row in runs],
                  "logistic_regression": [row["logistic_regression"]["test_accuracy"] for row in runs]}
        values["stage2_minus_stage1"] = list(np.subtract(values["stage2"], values["stage1"]))
        means[name] = {key: {"mean": round(float(np.mean(v)), 4), "sd": round(float(np.std(v, ddof=1)), 4)}
                       for key, v in values.items()}
        means[name]["fine_tuned_kept"] = sum(row["stage2"]["best_epoch"] > 0 for row in runs)
    return means


def aims(rows: list[dict]) -> dict:
    """The issue's aims, each true or false, with the margins they were judged by."""
    margins = {row["dataset"]: {
        "stage1_minus_lr": round(row["stage1"]["test_accuracy"] - row["logistic_regression"]["test_accuracy"], 4),
        "stage2_minus_stage1": round(row["stage2"]["test_accuracy"] - row["stage1"]["test_accuracy"], 4)}
        for row in rows}
    return {"margins": margins,
            "stage1_at_least_lr_minus_1_point": all(m["stage1_minus_lr"] >= -0.01 for m in margins.values()),
            "stage2_at_least_stage1": all(m["stage2_minus_stage1"] >= 0 for m in margins.values()),
            "stage2_flowers5_2_points_above": margins.get("flowers5", {}).get("stage2_minus_stage1", 0) >= 0.02}


if __name__ == "__main__":
    main()
