"""Test-time mirroring (export.py --mirror): each test image's probabilities averaged with its
mirror image's, against the model alone; the accuracy it adds and the time it costs.

    python -m bench.bench_finetune && python -m bench.bench_photos ...   # first: the models
    python -m bench.bench_mirror

CIFAR-10: bench_finetune's base and fine-tuned models (alpha 0.35) on the 10,000 test images, and
the time of a pass over them at batch 128 (each pass run twice, the faster kept). Photo sets:
bench_photos' stage-1 model of each width, set and seed, and its fine-tuned model where that ran
with the kit's recipe (its weights are the average of the schedule's last quarter). Each model is
mirrored with tinynet.model.mirrored, as export.py does. Results go to bench/results/mirror.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bench.bench_app import cpu
from bench.bench_photos import MODELS, PHOTO_SETS
from bench.common import RESULTS, in_fresh_process, save

CIFAR_MODELS = RESULTS / "models"
RECIPE = ("unfreeze", "layer_decay", "learning_rate", "keep", "label_smoothing", "l2_sp", "augment")  # stage 2's


def scored(model_path: str, timed: bool = False) -> dict:
    """Test accuracy of a model alone and mirrored; with timed, seconds of a pass of each."""
    import keras

    from tinynet.data import load_recorded
    from tinynet.model import mirrored

    info = json.loads(Path(model_path).with_suffix(".json").read_text())
    _, splits = load_recorded(info["data"])
    images, labels = splits.images["test"], splits.labels["test"]
    model = keras.models.load_model(model_path, compile=False)
    result = {}
    for name, net in (("alone", model), ("mirrored", mirrored(model))):
        seconds = []
        for _ in range(2 if timed else 1):
            start = time.perf_counter()
            probabilities = net.predict(images, batch_size=128, verbose=0)
            seconds.append(time.perf_counter() - start)
        result[name] = round(float(np.mean(probabilities.argmax(1) == labels)), 4)
        if timed:
            result[f"{name}_seconds"] = round(min(seconds), 2)
    return {**result, "test_images": len(labels)}


def kit_recipe(sidecar: Path) -> bool:
    """Whether a fine-tuned model ran with stage 2's default recipe (flags older runs did not
    have count as their default)."""
    from tinynet.stage2 import parse_args

    defaults, settings = vars(parse_args([])), json.loads(sidecar.read_text())["settings"]
    return all(settings.get(key, defaults[key]) == defaults[key] for key in RECIPE)


def main() -> None:
    result: dict = {"hardware": cpu(), "cifar10": {}, "photos": []}
    for stage, name in (("stage 1", "cifar10_lilTinyNet.h5"), ("stage 2", "cifar10_finetuned_lilTinyNet.h5")):
        if (CIFAR_MODELS / name).exists():
            result["cifar10"][stage] = in_fresh_process(scored, str(CIFAR_MODELS / name), True)
            print(stage, result["cifar10"][stage], flush=True)
    for base in sorted(MODELS.glob("*_seed[0-9].h5")):
        name, alpha, seed = base.stem.rsplit("_", 2)
        if name not in PHOTO_SETS:
            continue
        tuned = base.with_name(f"{base.stem}_finetuned.h5")
        for stage, path in (("stage 1", base), ("stage 2", tuned)):
            if path.exists() and (stage == "stage 1" or kit_recipe(path.with_suffix(".json"))):
                row = {"set": name, "alpha": float(alpha.removeprefix("alpha")), "seed": int(seed.removeprefix("seed")),
                       "stage": stage, **in_fresh_process(scored, str(path))}
                result["photos"].append(row)
                print(json.dumps(row), flush=True)
    result["summary"] = summary(result["photos"])
    save("mirror", result)


def summary(rows: list[dict]) -> dict:
    """Per width and stage: the mean over sets (each a mean over its seeds) of the accuracy alone
    and mirrored, the sets where mirroring lost on average, and the runs counted."""
    table = {}
    for alpha in sorted({row["alpha"] for row in rows}):
        for stage in ("stage 1", "stage 2"):
            here = [row for row in rows if row["alpha"] == alpha and row["stage"] == stage]
            by_set = {s: [row for row in here if row["set"] == s] for s in sorted({row["set"] for row in here})}
            gains = {s: float(np.mean([r["mirrored"] - r["alone"] for r in runs])) for s, runs in by_set.items()}
            if by_set:
                table[f"alpha {alpha}, {stage}"] = {
                    **{key: round(float(np.mean([np.mean([r[key] for r in runs]) for runs in by_set.values()])), 4)
                       for key in ("alone", "mirrored")},
                    "gain_by_set": {s: round(g, 4) for s, g in gains.items()},
                    "sets_below": sum(g < 0 for g in gains.values()), "sets": len(by_set), "runs": len(here)}
    return table


if __name__ == "__main__":
    main()
