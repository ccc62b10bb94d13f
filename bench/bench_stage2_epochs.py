"""Which epoch should stage 2 return? Every epoch's test accuracy, on flowers5 or another set.

    python -m bench.bench_stage2_epochs                                  # flowers5, seeds 0 to 9
    python -m bench.bench_stage2_epochs --seeds 0 --finetune "--unfreeze block_13"
    python -m bench.bench_stage2_epochs --only cifar10x50 grey5 --seeds 0 1 2
    python -m bench.bench_stage2_epochs --only cifar10 --seeds 0           # all of CIFAR-10, about 1.5 h
    python -m bench.bench_stage2_epochs --alpha 1.0 --seeds 0 1 2           # the users' default width

For each dataset (bench_own_data's, or cifar10: the whole shared set) and seed, stage 1 with its
defaults (as bench_own_data runs it), then lilTinyNet_finetuner.py through its whole schedule in a
fresh process, with every epoch's weights kept; then each epoch's accuracy and cross-entropy on
validation and test, epoch 0 being the base. From these, the test accuracy that each way of
choosing the epoch returns:
- kit: what the finetuner returned;
- last: the end of the schedule, whatever validation says;
- val_loss: the lowest validation cross-entropy;
- val_loss_no_worse: the same among epochs whose validation accuracy is at least the base's;
- best_latest: the best validation accuracy, a tie going to the later epoch, the base only when
  every epoch is below it;
- accuracy_then_loss: the best validation accuracy, a tie going to the lower validation
  cross-entropy, the base included: the kit's rule since it replaced a sign test ("kit" in runs of
  earlier code), except that the kit's loss adds the linear head's L2 penalty, as Keras's does.
And weights no single epoch has ("mixes"), scored the same way: the average of the last quarter or
half of the epochs, and the base interpolated with the last epoch or with that average.
Results go to bench/results/stage2_epochs_<dataset>[_alpha1.0][_<flags>].json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from bench.bench_own_data import DATASETS, run_stage1, write_sources
from bench.common import DATA, RESULTS, flags_tag, in_fresh_process, save

EMA_MOMENTA = (0.98, 0.99, 0.995)  # Keras's default 0.99, and either side of it
RULES = ("kit", "last", "val_loss", "val_loss_no_worse", "best_latest", "accuracy_then_loss")


def every_epoch(base: str, output: str, finetune: list[str]) -> tuple[list[dict], dict[str, dict]]:
    """Stage 2 run to the end of its schedule; each epoch's scores, epoch 0 the base, and each mix's."""
    from tinynet import stage2
    from tinynet.data import load_recorded
    from tinynet.model import load_saved_model
    from tinynet.runfiles import read_sidecar
    from tinynet.training import epoch_steps

    kept: list[dict[str, np.ndarray]] = []  # stage 2 keeps its best epoch only: keep them all
    stage2.main(["--base", base, "--output", output, *finetune],
                on_epoch=lambda epoch, model: kept.append({v.path: v.numpy() for v in model.weights}))
    if not kept:
        raise ValueError(f"stage 2 ({' '.join(finetune) or 'its defaults'}) returned the base without training an "
                         "epoch (stage 1 cross-validated at --skip-from or more): give the recipe --no-give-up")
    data, splits = load_recorded(read_sidecar(base)["data"])
    steps_per_epoch = epoch_steps(len(splits.labels["train"]), read_sidecar(output)["batch_size"])
    model = load_saved_model(base)
    kept.insert(0, {variable.path: variable.numpy() for variable in model.weights})
    rows = []
    for weights in kept:
        set_weights(model, weights)
        rows.append(scores(model, splits))
    mixed = {}
    for name, weights in mixes(kept, steps_per_epoch).items():
        set_weights(model, weights)
        mixed[name] = scores(model, splits)
    return rows, mixed


def mixes(kept: list[dict[str, np.ndarray]], steps_per_epoch: int) -> dict[str, dict[str, np.ndarray]]:
    """Weights made from several epochs' (kept[0] the base): averages of the last epochs, the
    base interpolated with the last epoch or with an average, and exponential moving averages.
    BatchNormalization is frozen, so its statistics are the same in every epoch, and no mix needs
    them recomputed."""
    def combined(weights: list[dict[str, np.ndarray]], shares: list[float]) -> dict[str, np.ndarray]:
        return {path: sum(share * w[path] for share, w in zip(shares, weights, strict=True))
                if np.issubdtype(value.dtype, np.floating) else value for path, value in weights[-1].items()}

    def average(count: int) -> dict[str, np.ndarray]:
        return combined(kept[-count:], [1 / count] * count)

    epochs = len(kept) - 1
    quarter, half = average(max(2, epochs // 4)), average(epochs // 2)
    result = {"average_last_quarter": quarter, "average_last_half": half}
    for share in (0.25, 0.5, 0.75):  # the fine-tuned weights' share
        result[f"base_last_{share}"] = combined([kept[0], kept[-1]], [1 - share, share])
        result[f"base_quarter_{share}"] = combined([kept[0], quarter], [1 - share, share])
    for momentum in EMA_MOMENTA:  # Keras's use_ema moves it every step: each epoch's end weights stand for its steps
        decay = momentum**steps_per_epoch
        moving = kept[0]
        for weights in kept[1:]:
            moving = combined([moving, weights], [decay, 1 - decay])
        result[f"ema_{momentum}"] = moving
    return result


def set_weights(model, weights: dict[str, np.ndarray]) -> None:
    for variable in model.weights:
        variable.assign(weights[variable.path])


def scores(model, splits) -> dict:
    """Accuracy and mean cross-entropy on validation and test."""
    row = {}
    for split in ("val", "test"):
        probabilities = model.predict(splits.images[split], batch_size=64, verbose=0)
        labels = splits.labels[split]
        row[f"{split}_accuracy"] = round(float(np.mean(probabilities.argmax(1) == labels)), 4)
        row[f"{split}_loss"] = round(float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels] + 1e-7))), 4)
    return row


def chosen(rows: list[dict], kit_epoch: int) -> dict[str, int]:
    """The epoch each rule returns."""
    no_worse = [epoch for epoch, row in enumerate(rows) if row["val_accuracy"] >= rows[0]["val_accuracy"]]
    return {"kit": kit_epoch, "last": len(rows) - 1,
            "val_loss": min(range(len(rows)), key=lambda epoch: rows[epoch]["val_loss"]),
            "val_loss_no_worse": min(no_worse, key=lambda epoch: rows[epoch]["val_loss"]),
            "best_latest": max(range(1, len(rows)), key=lambda epoch: (rows[epoch]["val_accuracy"], epoch))
            if len(no_worse) > 1 else 0,
            "accuracy_then_loss": max(range(len(rows)), key=lambda epoch: (rows[epoch]["val_accuracy"],
                                                                            -rows[epoch]["val_loss"]))}


def bench(name: str, source: Path, seed: int, work: Path, finetune: list[str], alpha: float) -> dict:
    base, tuned = work / f"{name}_seed{seed}.h5", work / f"{name}_seed{seed}_finetuned.h5"
    run_stage1(source, seed, base, RESULTS / "stage2_epochs" / f"{name}_seed{seed}_base.log", alpha)
    rows, mixed = in_fresh_process(every_epoch, str(base), str(tuned), finetune)
    kit_epoch = json.loads(tuned.with_suffix(".json").read_text())["best_epoch"]
    epochs = chosen(rows, kit_epoch)
    result = {"seed": seed, "epochs": rows, "chosen": epochs, "mixes": mixed,
              "test_accuracy": {rule: rows[epoch]["test_accuracy"] for rule, epoch in epochs.items()}}
    print(json.dumps({key: result[key] for key in ("seed", "chosen", "test_accuracy", "mixes")}), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=[*DATASETS, "cifar10"], default=["flowers5"],
                        help="these datasets (default flowers5)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(10)),
                        help="lilTinyNet.py --seed of each run")
    parser.add_argument("--finetune", default="", metavar="FLAGS", help="more flags for lilTinyNet_finetuner.py")
    parser.add_argument("--alpha", type=float, choices=(0.35, 1.0), default=0.35,
                        help="MobileNetV2's width (the shared weights of 1.0 are rebuilt: see ../shared/README.md)")
    args = parser.parse_args()
    finetune = args.finetune.split()
    with tempfile.TemporaryDirectory() as tmp:
        sources = {**write_sources([name for name in args.only if name != "cifar10"], Path(tmp)), "cifar10": DATA}
        for name in args.only:
            runs = [bench(name, sources[name], seed, Path(tmp), finetune, args.alpha) for seed in args.seeds]
            width = "" if args.alpha == 0.35 else f"_alpha{args.alpha}"
            save(f"stage2_epochs_{name}{width}{flags_tag(finetune)}", summary(name, runs, finetune, args.alpha))


def summary(name: str, runs: list[dict], finetune: list[str], alpha: float = 0.35) -> dict:
    """The runs of one dataset, with each rule's mean test accuracy and its gain over stage 1."""
    base = [run["epochs"][0]["test_accuracy"] for run in runs]
    tests = {rule: [run["test_accuracy"][rule] for run in runs] for rule in RULES}
    tests |= {mix: [run["mixes"][mix]["test_accuracy"] for run in runs] for mix in runs[0]["mixes"]}
    means = {rule: {"test_accuracy": round(float(np.mean(test)), 4),
                    "minus_stage1": round(float(np.mean(np.subtract(test, base))), 4)} for rule, test in tests.items()}
    gains = {split: last_quarter_gain(runs, split) for split in ("val", "test")}
    return {"dataset": name, "alpha": alpha, "seeds": [run["seed"] for run in runs], "finetune": finetune,
            "stage1_test_accuracy": base, "means": means, "last_quarter_gain": gains, "runs": runs}


def last_quarter_gain(runs: list[dict], split: str) -> float:
    """The accuracy of the last quarter of the epochs minus the base's, averaged over epochs and
    seeds: what fine-tuning brings, with less of one epoch's noise, on validation or on test."""
    gains = []
    for run in runs:
        rows = run["epochs"]
        tail = rows[len(rows) - (len(rows) - 1) // 4:]
        gains.append(np.mean([row[f"{split}_accuracy"] for row in tail]) - rows[0][f"{split}_accuracy"])
    return round(float(np.mean(gains)), 4)


if __name__ == "__main__":
    main()
