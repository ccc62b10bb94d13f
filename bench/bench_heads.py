"""Bench the heads on one set of cached features: validation and test accuracy, and training time.

    python bench/bench_heads.py

One forward pass of the frozen alpha-0.35 base at 128 pixels gives every feature map the heads
read; each head then trains as lilTinyNet.py trains it, with its defaults (10 epochs, batch 256,
Adam from 2e-3 on a cosine, patience 3, best validation epoch kept), once per seed: a few tenths of
a point separate some heads, about what one seed moves them. "BatchNorm" is the earlier default
head's, with no scale and offset of its own (the Dense layer after it has them) unless a row says so.
Results go to bench/results/heads.json.
"""

from __future__ import annotations

import math
import tempfile
import time

import keras
import numpy as np
from common import DATA, WEIGHTS, save
from keras import layers

from lilTinyNet import HEAD_STEPS_PER_CALL, PASS_BATCH_SIZE, parse_args
from tinynet.data import load_dataset
from tinynet.model import (
    TAPS,
    build_base,
    classifier_layers,
    compile_model,
    pooled_cells,
    scale_and_resize,
    set_feature_statistics,
)
from tinynet.training import cosine_schedule, evaluate_splits, normalize_in_place, split_data, steps_per_call, train

DEFAULTS = parse_args([])
IMAGE_SIZE, EPOCHS, BATCH_SIZE = DEFAULTS.image_size, DEFAULTS.epochs, DEFAULTS.batch_size
SEEDS = (0, 1)
MAPS = (*TAPS, "block_12_add", "block_15_add", "out_relu")  # out_relu: the base's own output, after Conv_1


def feature_maps() -> keras.Model:
    """uint8 images to each map of MAPS averaged over 2x2 cells, and out_relu globally averaged."""
    image = keras.Input((None, None, 3), dtype="uint8")
    maps = build_base(0.35, str(WEIGHTS), MAPS)(scale_and_resize(image, IMAGE_SIZE), training=False)
    pooled = {name: pooled_cells(m, IMAGE_SIZE, name) for name, m in zip(MAPS, maps, strict=True)}
    pooled["out_relu_global"] = layers.GlobalAveragePooling2D()(maps[-1])
    return keras.Model(image, pooled)


def blocks_with_width(units: int) -> list[keras.Layer]:
    """The default classifier with a narrower hidden layer."""
    _, dropout, predictions = classifier_layers("blocks", 10)
    return [layers.Dense(units, activation="relu"), dropout, predictions]


def blocks() -> list[keras.Layer]:
    return classifier_layers("blocks", 10)


# How the features are normalized before the classifier: "fixed" as lilTinyNet.py does (the training
# features' mean and variance, applied once to the cache), "batch" by a BatchNormalization layer in
# the classifier (no scale and offset of its own, the earlier default), "batch+affine" (with them), or not.
FIXED, BATCH, BATCH_AFFINE, NONE = "fixed", "batch", "batch+affine", "none"

# name: (feature maps read, normalization, classifier)
HEADS = {
    "gap: global pool of the base's output, linear": (["out_relu_global"], NONE, lambda: classifier_layers("gap", 10)),
    "the base's output, 2x2, BatchNorm + Dense(512)": (["out_relu"], BATCH, blocks),
    "blocks 13 and 16, 2x2, fixed normalization + Dense(512) (default)": (list(TAPS), FIXED, blocks),
    "blocks 13 and 16, 2x2, BatchNorm + Dense(512) (the earlier default)": (list(TAPS), BATCH, blocks),
    "the same, BatchNorm with its own scale and offset": (list(TAPS), BATCH_AFFINE, blocks),
    "blocks 13 and 16, 2x2, BatchNorm + Dense(384)": (list(TAPS), BATCH, lambda: blocks_with_width(384)),
    "blocks 13 and 16, 2x2, BatchNorm + Dense(256)": (list(TAPS), BATCH, lambda: blocks_with_width(256)),
    "blocks 13 and 16, 2x2, Dense(512) without normalization": (list(TAPS), NONE, blocks),
    "blocks 12, 13, 15 and 16, 2x2, BatchNorm + Dense(512)": (list(MAPS[:4]), BATCH, blocks),
}


def standardize(inputs: dict) -> None:
    """Standardize the features in place, as lilTinyNet.py standardizes its cache."""
    norm = layers.Normalization()
    norm.build(inputs["train"].shape)
    set_feature_statistics(norm, inputs["train"])
    for x in inputs.values():
        normalize_in_place(norm, x)


def batch_norm(normalization: str) -> list[keras.Layer]:
    """The BatchNormalization to put before the classifier, if the row has one."""
    if normalization in (BATCH, BATCH_AFFINE):
        affine = normalization == BATCH_AFFINE
        return [layers.BatchNormalization(center=affine, scale=affine)]
    return []


def train_head(inputs: dict, labels: dict, normalization: str, make_layers, seed: int) -> dict:
    keras.utils.set_random_seed(seed)
    net = keras.Sequential([keras.Input(inputs["train"].shape[1:]), *batch_norm(normalization), *make_layers()])
    steps = math.ceil(len(labels["train"]) / BATCH_SIZE)
    schedule = cosine_schedule(DEFAULTS.learning_rate, EPOCHS * steps)
    compile_model(net, schedule, steps_per_call(steps, HEAD_STEPS_PER_CALL), jit_compile=False)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = train(net, inputs, labels, epochs=EPOCHS, batch_size=BATCH_SIZE, seed=seed, output=f"{tmp}/h.h5",
                    resume=False, log_dir=None, patience=DEFAULTS.patience)
        seconds = time.perf_counter() - start
    metrics = evaluate_splits(net, inputs, labels, BATCH_SIZE)
    return {"seed": seed, "train_seconds": round(seconds, 1), "best_epoch": run.best_epoch,
            "val_accuracy": metrics["val"]["accuracy"], "test_accuracy": metrics["test"]["accuracy"]}


def main() -> None:
    data = load_dataset(str(DATA), IMAGE_SIZE)
    splits = split_data(data, 0.1, 0)
    labels = {split: y for split, (_, y) in splits.items()}
    extractor = feature_maps()
    start = time.perf_counter()
    features = {split: extractor.predict(x, batch_size=PASS_BATCH_SIZE, verbose=0) for split, (x, _) in splits.items()}
    result = {"forward_pass_seconds": round(time.perf_counter() - start, 1), "heads": []}
    for name, (maps, normalization, make_layers) in HEADS.items():
        inputs = {split: np.concatenate([f[m] for m in maps], axis=1) for split, f in features.items()}
        if normalization == FIXED:
            standardize(inputs)
        runs = [train_head(inputs, labels, normalization, make_layers, seed) for seed in SEEDS]
        means = {key: round(float(np.mean([r[key] for r in runs])), 4)
                 for key in ("train_seconds", "val_accuracy", "test_accuracy")}
        result["heads"].append({"head": name, "features": inputs["train"].shape[1], **means, "runs": runs})
    save("heads", result)


if __name__ == "__main__":
    main()
