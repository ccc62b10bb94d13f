"""Which epoch should stage 2 return on a small set? Every epoch's test accuracy on flowers5.

    python -m bench.bench_stage2_epochs                                  # seeds 0 to 4
    python -m bench.bench_stage2_epochs --seeds 0 --finetune "--unfreeze block_13"

For each seed, stage 1 with its defaults (as bench_own_data runs it), then lilTinyNet_finetuner.py
through its whole schedule (--patience past its epochs) in a fresh process, with every epoch's
weights kept; then each epoch's accuracy and cross-entropy on validation and test, epoch 0 being
the base. From these, the test accuracy that each way of choosing the epoch returns:
- kit: what the finetuner returned (best validation accuracy, kept only beyond chance), with no
  early stopping;
- last: the end of the schedule, whatever validation says;
- val_loss: the lowest validation cross-entropy;
- val_loss_no_worse: the same among epochs whose validation accuracy is at least the base's.
Results go to bench/results/stage2_epochs[_<flags>].json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from bench.bench_own_data import FLOWERS, run_stage1
from bench.common import RESULTS, flags_tag, in_fresh_process, save

RULES = ("kit", "last", "val_loss", "val_loss_no_worse")


def every_epoch(base: str, output: str, finetune: list[str]) -> list[dict]:
    """Stage 2 run to the end of its schedule; each epoch's scores, epoch 0 the base."""
    import lilTinyNet_finetuner
    from tinynet.data import load_recorded
    from tinynet.model import load_saved_model
    from tinynet.runfiles import read_sidecar
    from tinynet.training import RunCheckpoint

    kept: list[dict[str, np.ndarray]] = []
    end_of_epoch = RunCheckpoint.on_epoch_end

    def keeping(self, epoch, logs=None):  # the finetuner keeps the best epoch only: keep them all
        kept.append({variable.path: variable.numpy() for variable in self.model.weights})
        end_of_epoch(self, epoch, logs)

    RunCheckpoint.on_epoch_end = keeping
    lilTinyNet_finetuner.main(["--base", base, "--output", output, "--patience", "1000", *finetune])
    data, splits = load_recorded(read_sidecar(base)["data"])
    model = load_saved_model(base)
    rows = [scores(model, splits)]
    for weights in kept:
        for variable in model.weights:
            variable.assign(weights[variable.path])
        rows.append(scores(model, splits))
    return rows


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
            "val_loss_no_worse": min(no_worse, key=lambda epoch: rows[epoch]["val_loss"])}


def bench(seed: int, work: Path, finetune: list[str]) -> dict:
    base, tuned = work / f"seed{seed}.h5", work / f"seed{seed}_finetuned.h5"
    logs = RESULTS / "stage2_epochs"
    run_stage1(FLOWERS, seed, base, logs / f"seed{seed}_base.log")
    rows = in_fresh_process(every_epoch, str(base), str(tuned), finetune)
    kit_epoch = json.loads(tuned.with_suffix(".json").read_text())["best_epoch"]
    epochs = chosen(rows, kit_epoch)
    result = {"seed": seed, "epochs": rows, "chosen": epochs,
              "test_accuracy": {rule: rows[epoch]["test_accuracy"] for rule, epoch in epochs.items()}}
    print(json.dumps({key: result[key] for key in ("seed", "chosen", "test_accuracy")}), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4],
                        help="lilTinyNet.py --seed of each run")
    parser.add_argument("--finetune", default="", metavar="FLAGS", help="more flags for lilTinyNet_finetuner.py")
    args = parser.parse_args()
    finetune = args.finetune.split()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [bench(seed, Path(tmp), finetune) for seed in args.seeds]
    base = [run["epochs"][0]["test_accuracy"] for run in runs]
    tests = {rule: [run["test_accuracy"][rule] for run in runs] for rule in RULES}
    means = {rule: {"test_accuracy": round(float(np.mean(test)), 4),
                    "minus_stage1": round(float(np.mean(np.subtract(test, base))), 4)} for rule, test in tests.items()}
    save(f"stage2_epochs{flags_tag(finetune)}", {"dataset": "flowers5", "alpha": 0.35, "seeds": args.seeds,
                                                 "finetune": finetune, "stage1_test_accuracy": base,
                                                 "means": means, "runs": runs})


if __name__ == "__main__":
    main()
