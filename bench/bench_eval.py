"""Bench the evaluators' test pass: images per second of the one prefetched pass that gives every
metric, against model.predict on the same tensors already in memory, for both bench models.

    python -m bench.bench_eval        # after bench.bench_finetune made bench/results/models/
"""

from __future__ import annotations

import argparse
import time

from bench.common import DATA, RESULTS, in_fresh_process, save
from tinynet.data import CIFAR10_CLASSES as CLASSES


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    models = [str(RESULTS / "models" / name) for name in ("cifar10_lilTinyNet.h5", "cifar10_finetuned_lilTinyNet.h5")]
    save("eval", in_fresh_process(passes, models))


def passes(models: list[str]) -> dict:
    import keras

    from tinynet.data import load_dataset
    from tinynet.metrics import evaluate

    test = load_dataset(str(DATA), 128).parts["test"]
    rows = []
    for path in models:
        model = keras.models.load_model(path)
        # Alternate the two, 3 times each, and keep each one's best: the first passes in a fresh
        # process pay one-off costs (memory pools, kernel set-up) that neither way should be charged.
        one_pass, in_memory = [], []
        for _ in range(3):
            result = evaluate(path, model, test.images, test.labels, CLASSES, 128)
            one_pass.append(result.images_per_second)
            start = time.perf_counter()
            model.predict(test.images, batch_size=128, verbose=0)
            in_memory.append(len(test.images) / (time.perf_counter() - start))
        rows.append({"model": path, "accuracy": result.accuracy, "pass_images_per_s": one_pass,
                     "predict_in_memory_images_per_s": in_memory, "ratio": max(one_pass) / max(in_memory)})
    return {"models": rows}


if __name__ == "__main__":
    main()
