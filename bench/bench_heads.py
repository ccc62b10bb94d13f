"""Bench the heads on one set of cached features: validation and test accuracy, and training time.

    python bench/bench_heads.py

One forward pass of the frozen alpha-0.35 base at 128 pixels gives every feature map the heads
read; each head then trains as lilTinyNet.py trains it, with its defaults (10 epochs, batch 256, Adam
from 2e-3 on a cosine, patience 3, best validation epoch kept). Results go to bench/results/heads.json.
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
from tinynet.model import TAPS, build_base, classifier_layers, compile_model, pooled_cells
from tinynet.training import cosine_schedule, evaluate_splits, split_data, steps_per_call, train

DEFAULTS = parse_args([])
IMAGE_SIZE, EPOCHS, BATCH_SIZE = DEFAULTS.image_size, DEFAULTS.epochs, DEFAULTS.batch_size
MAPS = (*TAPS, "block_12_add", "block_15_add", "out_relu")  # out_relu: the base's own output, after Conv_1


def feature_maps() -> keras.Model:
    """uint8 images to each map of MAPS averaged over 2x2 cells, and out_relu globally averaged."""
    image = keras.Input((None, None, 3), dtype="uint8")
    x = layers.Rescaling(1 / 127.5, offset=-1)(layers.Resizing(IMAGE_SIZE, IMAGE_SIZE)(image))
    maps = build_base(0.35, str(WEIGHTS), MAPS)(x, training=False)
    pooled = {name: pooled_cells(m, IMAGE_SIZE, name) for name, m in zip(MAPS, maps, strict=True)}
    pooled["out_relu_global"] = layers.GlobalAveragePooling2D()(maps[-1])
    return keras.Model(image, pooled)


# name: (feature maps read, classifier)
HEADS = {
    "gap: global pool of the base's output, linear": (["out_relu_global"], lambda: classifier_layers("gap", 10)),
    "the base's output, 2x2, BatchNorm + Dense(512)": (["out_relu"], lambda: classifier_layers("blocks", 10)),
    "blocks 13 and 16, 2x2, BatchNorm + Dense(512) (default)": (list(TAPS), lambda: classifier_layers("blocks", 10)),
    "blocks 13 and 16, 2x2, Dense(512) without BatchNorm": (list(TAPS), lambda: classifier_layers("blocks", 10)[1:]),
    "blocks 12, 13, 15 and 16, 2x2, BatchNorm + Dense(512)": (list(MAPS[:4]), lambda: classifier_layers("blocks", 10)),
}


def main() -> None:
    data = load_dataset(str(DATA), IMAGE_SIZE)
    splits = split_data(data, 0.1, 0)
    labels = {split: y for split, (_, y) in splits.items()}
    extractor = feature_maps()
    start = time.perf_counter()
    features = {split: extractor.predict(x, batch_size=PASS_BATCH_SIZE, verbose=0) for split, (x, _) in splits.items()}
    result = {"forward_pass_seconds": round(time.perf_counter() - start, 1), "heads": []}
    steps = math.ceil(len(labels["train"]) / BATCH_SIZE)
    for name, (maps, make_layers) in HEADS.items():
        inputs = {split: np.concatenate([f[m] for m in maps], axis=1) for split, f in features.items()}
        keras.utils.set_random_seed(0)
        net = keras.Sequential([keras.Input(inputs["train"].shape[1:]), *make_layers()])
        schedule = cosine_schedule(DEFAULTS.learning_rate, EPOCHS * steps)
        compile_model(net, schedule, steps_per_call(steps, HEAD_STEPS_PER_CALL), jit_compile=False)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            run = train(net, inputs, labels, epochs=EPOCHS, batch_size=BATCH_SIZE, seed=0, output=f"{tmp}/h.h5",
                        resume=False, log_dir=None, patience=DEFAULTS.patience)
            seconds = time.perf_counter() - start
        metrics = evaluate_splits(net, inputs, labels, BATCH_SIZE)
        result["heads"].append({"head": name, "features": inputs["train"].shape[1], "train_seconds": round(seconds, 1),
                                "best_epoch": run.best_epoch, "val_accuracy": metrics["val"]["accuracy"],
                                "test_accuracy": metrics["test"]["accuracy"]})
    save("heads", result)


if __name__ == "__main__":
    main()
