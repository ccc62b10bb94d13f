"""Bench the fine-tuning stage: accuracy curve over time, wall time, peak memory, pipeline cost.

    python -m bench.bench_finetune                  # bench configuration; trains the base first if needed
    python -m bench.bench_finetune --alpha 1.0 --stop-after 3   # the users' width: its first epochs

Models go to bench/results/models/ (not committed); numbers to bench/results/finetune[_TAG].json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.bench_app import cpu
from bench.common import DATA, RESULTS, ROOT, contract_accuracy, in_fresh_process, run_child, save, weights

MODELS = RESULTS / "models"


def throughput(base: str, steps: int, batch_size: int, unfreeze: str) -> dict:
    """Training images per second of the same fine-tuning step, fed by the augmenting tf.data
    pipeline or by uint8 tensors already in memory with no augmentation, in one fresh process."""
    return in_fresh_process(_throughput, base, steps, batch_size, unfreeze)


def _throughput(base: str, steps: int, batch_size: int, unfreeze: str) -> dict:
    import keras

    from tinynet import model as tiny_model
    from tinynet.batches import epoch_batches
    from tinynet.data import load_dataset, one_hot, split_data
    from tinynet.optimizers import compile_model

    splits = split_data(load_dataset(str(DATA), 128), None, None, 0)
    x, y = splits.images["train"], one_hot(splits.labels["train"], 10)
    model = keras.models.load_model(base)
    tiny_model.unfreeze(model, tiny_model.first_trainable_layer(unfreeze))
    compile_model(model, 1e-5)

    def rate(fit) -> float:
        fit(5)  # warm-up: trace and fill the pipeline
        start = time.perf_counter()
        fit(steps)
        return steps * batch_size / (time.perf_counter() - start)

    batches = epoch_batches(x, y, batch_size, 0, 0, 1000, augment="shift")
    pipeline = rate(lambda s: model.fit(batches, steps_per_epoch=s, epochs=1, verbose=0))
    memory = rate(lambda s: model.fit(x[:s * batch_size], y[:s * batch_size], batch_size=batch_size, epochs=1,
                                      shuffle=False, verbose=0))
    return {"pipeline_images_per_s": pipeline, "in_memory_images_per_s": memory, "ratio": pipeline / memory}


def first_epochs(command: list[str], state: Path, epochs: int, log: Path) -> list[dict]:
    """Run the fine-tuner with its own schedule, stop it once its state folder holds `epochs`
    epochs, and return their history rows: the curve of a run too long to finish here."""
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, *command], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        while child.poll() is None:
            time.sleep(10)
            if (state / "state.json").exists():
                rows = json.loads((state / "state.json").read_text())["rows"]
                if len(rows) >= epochs:
                    child.terminate()
                    child.wait()
                    return rows
    raise SystemExit(f"the fine-tuner ended before {epochs} epochs; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alpha", type=float, default=0.35, choices=(0.35, 1.0),
                        help="MobileNetV2's width; 1.0 is the users' default (its shared weights are rebuilt)")
    parser.add_argument("--stop-after", type=int, metavar="EPOCHS",
                        help="stop after this many epochs of the default schedule and report their curve")
    parser.add_argument("--tag", default="", help="added to the result's name")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for the fine-tuner")
    args = parser.parse_args()
    width = f"_alpha{args.alpha}" if args.alpha != 0.35 else ""
    name = "_".join(["finetune" + width, *([args.tag] if args.tag else [])])
    base, output = MODELS / f"cifar10{width}_lilTinyNet.h5", MODELS / f"cifar10{width}_finetuned_lilTinyNet.h5"
    if not base.exists():
        MODELS.mkdir(parents=True, exist_ok=True)
        run_child(["lilTinyNet.py", "--data-dir", str(DATA), "--alpha", str(args.alpha),
                   "--weights", str(weights(args.alpha)), "--output", str(base)], RESULTS / f"{name}_base.log")
    command = ["lilTinyNet_finetuner.py", "--base", str(base), "--output", str(output), *args.extra]
    if args.stop_after:
        start = time.perf_counter()
        rows = first_epochs(command, output.with_suffix(".state"), args.stop_after, RESULTS / f"{name}.log")
        save(name, {"command": "python " + " ".join(command), "stopped_after_epochs": args.stop_after,
                    "wall_seconds": round(time.perf_counter() - start, 1),
                    "base_metrics": json.loads(base.with_suffix(".json").read_text())["metrics"],
                    "curve": [{k: row[k] for k in ("epoch", "seconds", "accuracy", "val_accuracy")} for row in rows]})
        return
    result = {"command": "python " + " ".join(command), **run_child(command, RESULTS / f"{name}.log")}
    info = json.loads(output.with_suffix(".json").read_text())
    result.update(hardware=cpu(), returned=info.get("returned"), give_up=info.get("give_up"),
                  times=info["times"], metrics=info["metrics"], base_metrics=info["base_metrics"],
                  curve=[{k: row[k] for k in ("epoch", "seconds", "accuracy", "val_accuracy")}
                         for row in info["history"]])
    result["contract_test"] = contract_accuracy(output)
    result["contract_test_base"] = contract_accuracy(base)
    result["throughput"] = throughput(str(base), 60, info["batch_size"], info["settings"]["unfreeze"])
    save(name, result)


if __name__ == "__main__":
    main()
