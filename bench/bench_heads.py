"""Bench the heads on one set of cached features: validation and test accuracy, and training time.

    python -m bench.bench_heads

One forward pass of the frozen alpha-0.35 base at 128 pixels gives every feature map the heads
read; each head then trains as lilTinyNet.py trains it, with its defaults (10 epochs, batch 256,
Adam from 2e-3 on a cosine, patience 3, best validation epoch kept), once per seed: a few tenths of
a point separate some heads, about what one seed moves them. "BatchNorm" is the default head's,
with no scale and offset of its own (the Dense layer after it has them) unless a row says so.
Results go to bench/results/heads.json.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import keras
import numpy as np
from keras import layers

from bench.common import DATA, WEIGHTS, save
from tinynet.data import load_dataset, one_hot, split_data
from tinynet.features import PASS_BATCH_SIZE
from tinynet.model import TAPS, build_base, classifier_layers, pooled_cells, scale_and_resize
from tinynet.optimizers import compile_model, cosine_schedule
from tinynet.training import HEAD_STEPS_PER_CALL, evaluate_splits, steps_per_call, train

IMAGE_SIZE, EPOCHS, BATCH_SIZE, LEARNING_RATE, PATIENCE = 128, 10, 256, 2e-3, 3  # lilTinyNet.py's on CIFAR-10
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
    norm, _, dropout, predictions = classifier_layers("blocks", 10)
    return [norm, layers.Dense(units, activation="relu"), dropout, predictions]


def blocks_with_affine_norm() -> list[keras.Layer]:
    """The default classifier with BatchNormalization's own scale and offset, as before."""
    return [layers.BatchNormalization(), *classifier_layers("blocks", 10)[1:]]


def without_norm() -> list[keras.Layer]:
    """The default classifier without its BatchNormalization."""
    return classifier_layers("blocks", 10)[1:]


FIXED_NORM = "blocks 13 and 16, 2x2, fixed normalization + Dense(512)"  # on features standardized once

# name: (feature maps read, classifier)
HEADS = {
    "gap: global pool of the base's output, linear": (["out_relu_global"], lambda: classifier_layers("linear", 10)),
    "the base's output, 2x2, BatchNorm + Dense(512)": (["out_relu"], lambda: classifier_layers("blocks", 10)),
    "blocks 13 and 16, 2x2, BatchNorm + Dense(512) (default)": (list(TAPS), lambda: classifier_layers("blocks", 10)),
    "the same, BatchNorm with its own scale and offset": (list(TAPS), blocks_with_affine_norm),
    FIXED_NORM: (list(TAPS), without_norm),
    "blocks 13 and 16, 2x2, BatchNorm + Dense(384)": (list(TAPS), lambda: blocks_with_width(384)),
    "blocks 13 and 16, 2x2, BatchNorm + Dense(256)": (list(TAPS), lambda: blocks_with_width(256)),
    "blocks 13 and 16, 2x2, Dense(512) without BatchNorm": (list(TAPS), without_norm),
    "blocks 12, 13, 15 and 16, 2x2, BatchNorm + Dense(512)": (list(MAPS[:4]), lambda: classifier_layers("blocks", 10)),
}


def standardize(inputs: dict) -> None:
    """In place, each feature by its mean and variance over the training features, plus
    BatchNormalization's epsilon: the statistics a Normalization layer would fix before training,
    in place of the per-batch ones BatchNormalization computes in every step."""
    mean, std = inputs["train"].mean(0), np.sqrt(inputs["train"].var(0) + 1e-3)
    for x in inputs.values():
        x -= mean
        x /= std


def train_head(inputs: dict, labels: dict, make_layers, seed: int) -> dict:
    keras.utils.set_random_seed(seed)
    net = keras.Sequential([keras.Input(inputs["train"].shape[1:]), *make_layers()])
    steps = math.ceil(len(labels["train"]) / BATCH_SIZE)
    schedule = cosine_schedule(LEARNING_RATE, EPOCHS * steps)
    compile_model(net, schedule, steps_per_call(steps, HEAD_STEPS_PER_CALL), jit_compile=False)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = train(net, inputs, labels, epochs=EPOCHS, batch_size=BATCH_SIZE, seed=seed, output=f"{tmp}/h.h5",
                    resume=False, log_dir=None, patience=PATIENCE)
        seconds = time.perf_counter() - start
    metrics = evaluate_splits(net, inputs, labels, BATCH_SIZE)
    return {"seed": seed, "train_seconds": round(seconds, 1), "best_epoch": run.best_epoch,
            "val_accuracy": metrics["val"]["accuracy"], "test_accuracy": metrics["test"]["accuracy"]}


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    data = load_dataset(str(DATA), IMAGE_SIZE)
    splits = split_data(data, None, None, 0)
    labels = {split: one_hot(y, data.num_classes) for split, y in splits.labels.items()}
    extractor = feature_maps()
    start = time.perf_counter()
    features = {split: extractor.predict(x, batch_size=PASS_BATCH_SIZE, verbose=0)
                for split, x in splits.images.items()}
    result = {"forward_pass_seconds": round(time.perf_counter() - start, 1), "heads": []}
    for name, (maps, make_layers) in HEADS.items():
        inputs = {split: np.concatenate([f[m] for m in maps], axis=1) for split, f in features.items()}
        if name == FIXED_NORM:
            standardize(inputs)
        runs = [train_head(inputs, labels, make_layers, seed) for seed in SEEDS]
        means = {key: round(float(np.mean([r[key] for r in runs])), 4)
                 for key in ("train_seconds", "val_accuracy", "test_accuracy")}
        result["heads"].append({"head": name, "features": inputs["train"].shape[1], **means, "runs": runs})
    save("heads", result)


if __name__ == "__main__":
    main()
