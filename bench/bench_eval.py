"""Bench the evaluators' test pass: images per second of the one prefetched pass that gives every
metric, against model.predict on the same tensors already in memory, for both bench models.

    python bench/bench_eval.py        # after bench/bench_finetune.py made bench/results/models/
"""

from __future__ import annotations

from common import DATA, RESULTS, python_json, save


def main() -> None:
    models = [str(RESULTS / "models" / name) for name in ("cifar10_lilTinyNet.h5", "cifar10_finetuned_lilTinyNet.h5")]
    code = f"""
import json, time
import keras
from lilTinyNet import preprocess_data
from tinynet.data import load_dataset
from tinynet.evaluation import evaluate
data = load_dataset({str(DATA)!r}, 128)
x, y = preprocess_data(data.parts["test"].images, data.parts["test"].labels)
rows = []
def predict_rate(model):
    start = time.perf_counter()
    model.predict(x, batch_size=128, verbose=0)
    return len(x) / (time.perf_counter() - start)
for path in {models!r}:
    model = keras.models.load_model(path)
    # Alternate the two, 3 times each, and keep each one's best: the first passes in a fresh
    # process pay one-off costs (memory pools, kernel set-up) that neither way should be charged.
    passes, in_memory = [], []
    for _ in range(3):
        result = evaluate(path, model, x, y.argmax(1), data.class_names, 128)
        passes.append(result.images_per_second)
        in_memory.append(predict_rate(model))
    rows.append({{"model": path, "accuracy": result.accuracy, "pass_images_per_s": passes,
                 "predict_in_memory_images_per_s": in_memory, "ratio": max(passes) / max(in_memory)}})
print(json.dumps({{"models": rows}}))
"""
    save("eval", python_json(code))


if __name__ == "__main__":
    main()
