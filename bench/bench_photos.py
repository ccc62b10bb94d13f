"""Both stages on real photo sets, over seeds, beside a logistic regression and TensorFlow's tutorial.

    python -m bench.photo_sets --out /work/data/photo_sets            # once: build the sets
    python -m bench.bench_photos --alpha 0.35 --seeds 0 1 2 3 4 --peer
    python -m bench.bench_photos --alpha 1.0 --recipe=--no-give-up --recipe="--learning-rate 1e-4 --no-give-up"
    python -m bench.bench_photos --summary                             # the tables from what ran

The sets are bench/photo_sets.py's (eight kinds of photos, each with a test folder) and flowers5.
For each width, set and seed: stage 1 with its defaults (lilTinyNet.py --seed S, the shared
weights), kept in bench/results/models/photos/ so that every stage-2 recipe starts from the same
base; a logistic regression on the same base's pooled features (bench_own_data); with --peer,
TensorFlow's tutorial on the same split (bench/tutorial_peer.py); and for each --recipe (flags for
lilTinyNet_finetuner.py, "" for its defaults) stage 2 through its schedule with every epoch scored
on validation and test (bench_stage2_epochs), so that any rule for choosing what to return can be
judged afterwards from the same runs. Each result is appended to bench/results/photos/runs.jsonl.gz
(gzip: every epoch's scores make it large) as it comes, and a run already there is not run again:
the bench can be stopped and started.
--summary writes bench/results/photos_alpha<width>.json: per set, the mean and spread of each.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

from bench.bench_app import cpu
from bench.bench_own_data import FLOWERS, logistic_regression, run_stage1
from bench.bench_stage2_epochs import every_epoch
from bench.common import RESULTS, in_fresh_process, save, weights
from bench.photo_sets import SETS, build
from bench.tutorial_peer import tutorial

PHOTO_SETS = [*SETS, "flowers5"]
MACHINE = "AMD EPYC, 2 cores"  # where the runs that do not name their hardware ran
LOG = RESULTS / "photos" / "runs.jsonl.gz"
MODELS = RESULTS / "models" / "photos"


def source(name: str, sets_dir: Path) -> Path:
    """Where a set is; built from its repository when missing."""
    if name == "flowers5":
        return FLOWERS
    folder = sets_dir / name
    return folder if folder.is_dir() else build(name, sets_dir)


def read_log() -> list[dict]:
    if not LOG.exists():
        return []
    with gzip.open(LOG, "rt") as lines:
        return [json.loads(line) for line in lines]


def append(record: dict) -> None:
    record["hardware"] = cpu()
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG, "ab") as out:  # one gzip member per run, in one write: the file reads as one stream
        out.write(gzip.compress((json.dumps(record) + "\n").encode()))
    print(json.dumps({key: value for key, value in record.items() if key not in ("epochs", "mixes")}), flush=True)


def key(record: dict) -> tuple:
    return record["kind"], record["set"], record["alpha"], record["seed"], record.get("recipe", "")


def stage1_model(name: str, alpha: float, seed: int) -> Path:
    """Where the bench keeps a set's stage-1 model of this width and seed (its sidecar beside it)."""
    return MODELS / f"{name}_alpha{alpha}_seed{seed}.h5"


def stage1(name: str, data: Path, alpha: float, seed: int) -> tuple[Path, dict]:
    """Stage 1 with its defaults, or the model an earlier run of the bench left."""
    base = stage1_model(name, alpha, seed)
    run = {}
    if not base.with_suffix(".json").exists():
        run = run_stage1(data, seed, base, MODELS / f"{base.stem}.log", alpha)
    info = json.loads(base.with_suffix(".json").read_text())
    return base, {"test_accuracy": round(info["metrics"]["test"]["accuracy"], 4),
                  "val_accuracy": round(info["metrics"]["val"]["accuracy"], 4), "head": info["head"],
                  "penalty": info.get("penalty"), "cross_validated_accuracy": info.get("cross_validated_accuracy"),
                  "train": info["data"]["train"], "val": info["data"]["val"],
                  "test": info["data"]["test"], "seconds": info["times"]["total"], **run}


def cross_validated(base: str) -> dict:
    """Stage 1's cross-validated accuracy (tinynet.linear_head), for a model of a version of
    stage 1 that did not record it: the same features, penalty and seed."""
    from tinynet.data import load_recorded, one_hot
    from tinynet.features import extract_features
    from tinynet.linear_head import cross_validated_accuracy
    from tinynet.model import feature_extractor, load_saved_model

    info = json.loads(Path(base).with_suffix(".json").read_text())
    data, splits = load_recorded(info["data"])
    extractor = feature_extractor(load_saved_model(base))
    features = {split: extract_features(extractor, splits.images[split], 64) for split in ("train", "val")}
    labels = {split: one_hot(splits.labels[split], data.num_classes) for split in ("train", "val")}
    accuracy = cross_validated_accuracy(features, labels, data.num_classes, info["penalty"], info["data"]["seed"])
    return {"cross_validated_accuracy": round(accuracy, 4)}


def stage2(base: Path, recipe: str) -> dict:
    """Stage 2 with the recipe's flags; every epoch's scores and the finetuner's own record."""
    tuned = base.with_name(f"{base.stem}_finetuned.h5")
    rows, mixed = in_fresh_process(every_epoch, str(base), str(tuned), recipe.split())
    info = json.loads(tuned.with_suffix(".json").read_text())
    return {"test_accuracy": round(info["metrics"]["test"]["accuracy"], 4),
            "val_accuracy": round(info["metrics"]["val"]["accuracy"], 4), "kit_epoch": info["best_epoch"],
            "returned": info.get("returned"), "give_up": info.get("give_up"), "peak_rate": info.get("peak_rate"),
            "kit_val_accuracy": [row["val_accuracy"] for row in info["history"]],
            "epoch_seconds": [row["seconds"] for row in info["history"]], "seconds": info["times"]["total"],
            "train_seconds": info["times"]["train"], "epochs": rows, "mixes": mixed}


def run(args: argparse.Namespace) -> None:
    done = {key(record) for record in read_log()}
    sources = {name: source(name, args.sets_dir) for name in args.only}
    for alpha in args.alpha:
        for seed in args.seeds:  # every set at one seed before the next seed: a stopped run still covers them all
            for name, data in sources.items():
                where = {"set": name, "alpha": alpha, "seed": seed}
                base, first = stage1(name, data, alpha, seed)
                if ("stage1", name, alpha, seed, "") not in done:
                    append({"kind": "stage1", **where, **first})
                if first["cross_validated_accuracy"] is None and ("crossval", name, alpha, seed, "") not in done:
                    append({"kind": "crossval", **where, **in_fresh_process(cross_validated, str(base))})
                if ("regression", name, alpha, seed, "") not in done:
                    append({"kind": "regression", **where,
                            **in_fresh_process(logistic_regression, base.with_suffix(".json"), alpha)})
                if args.peer and ("tutorial", name, alpha, seed, "") not in done:
                    append({"kind": "tutorial", **where,
                            **in_fresh_process(tutorial, str(base.with_suffix(".json")), alpha, str(weights(alpha)),
                                               seed)})
                for recipe in args.recipe:
                    if ("stage2", name, alpha, seed, recipe) not in done:
                        append({"kind": "stage2", **where, "recipe": recipe, **stage2(base, recipe)})


# Runs through the whole schedule, from which what stage 2's defaults return is read. At alpha
# 0.35 the earlier code's defaults ("") trained exactly as today's (the same rate and augmentation).
KIT_RUNS = {1.0: ("--no-give-up",), 0.35: ("--no-give-up", "")}
RERUN = "--no-give-up --keep average"  # the defaults' training again, for mixes their runs did not keep
PREVIOUS = ""  # the earlier defaults: 3e-4 at every width, the epoch best on validation returned


def spread(values: list[float]) -> dict:
    return {"mean": round(float(np.mean(values)), 4), "sd": round(float(np.std(values, ddof=1)), 4)
            if len(values) > 1 else None, "min": round(float(np.min(values)), 4), "n": len(values)}


def median_seconds(seconds: list[float]) -> float:
    """Stage 2's training time over the seeds that fine-tuned: the median, which a run slowed by
    another process on the machine does not move; 0 when every seed returned the base untouched."""
    return round(float(np.median(seconds)), 1) if seconds else 0.0


def as_the_kit_returns(run: dict, first: dict, skip_from: float | None = None) -> dict:
    """What stage 2's defaults return, read from a run through its whole schedule: the base, not
    fine-tuned, if stage 1's cross-validated accuracy is at least skip_from (default: the
    stage's SKIP_FROM); the base if no epoch
    up to the give-up epoch came within the margin of the base's validation accuracy (the run
    then stops there: the share of the schedule's time it took); else the average of the last
    quarter of the epochs, which the run itself returned (the mix of that name for earlier runs)."""
    from tinynet.stage2 import SKIP_FROM, chance_margin, give_up_epoch

    epochs, base = run["epochs"], run["epochs"][0]
    if first["cross_validated_accuracy"] >= (SKIP_FROM if skip_from is None else skip_from):
        return {"test_accuracy": base["test_accuracy"], "skipped": True, "gave_up": False, "time_share": 0.0}
    epoch = give_up_epoch(len(epochs) - 1)
    margin = (run.get("give_up") or {}).get("margin") or chance_margin(base["val_accuracy"], first["val"])
    val = max((run.get("kit_val_accuracy") or [row["val_accuracy"] for row in epochs[1:]])[:epoch])
    if base["val_accuracy"] - val > margin:
        seconds = run["epoch_seconds"]
        return {"test_accuracy": base["test_accuracy"], "skipped": False, "gave_up": True,
                "time_share": round(seconds[epoch - 1] / seconds[-1], 3)}
    average = run["test_accuracy"] if run.get("returned", "").startswith("average") else \
        run["mixes"]["average_last_quarter"]["test_accuracy"]
    return {"test_accuracy": average, "skipped": False, "gave_up": False, "time_share": 1.0}


# What else stage 2 could return, read from the same runs (bench_stage2_epochs' mixes of weights).
RULES = {
    "the kit: the base if stage 1's cross-validated accuracy reaches --skip-from or if it gave up, else the "
    "average of the last quarter": as_the_kit_returns,
    **{f"the same, skipping from a cross-validated accuracy of {level}" if level <= 1 else
       "the same, never skipping": lambda run, first, level=level: as_the_kit_returns(run, first, level)
       for level in (0.9, 0.93, 0.97, 2)},
    "the average of the last quarter, never giving up": lambda run, _: run["mixes"]["average_last_quarter"],
    "the average of the last half": lambda run, _: run["mixes"]["average_last_half"],
    "the base and the last quarter's average, half each (WiSE-FT)": lambda run, _: run["mixes"]["base_quarter_0.5"],
    "the average of the last quarter, or the base if it is below the base on validation":
        lambda run, _: run["epochs"][0] if run["mixes"]["average_last_quarter"]["val_accuracy"] <
        run["epochs"][0]["val_accuracy"] else run["mixes"]["average_last_quarter"],
    "the last epoch": lambda run, _: run["epochs"][-1],
    "the epoch best on validation, ties to the lower loss (the earlier rule)":
        lambda run, _: run["epochs"][run["kit_epoch"]],
}


def kit_runs(here: list[dict], alpha: float) -> dict[tuple[str, int], dict]:
    """The runs through the whole schedule that the kit's defaults are read from, by (set, seed):
    the first recipe of KIT_RUNS that ran there."""
    return {(r["set"], r["seed"]): r for recipe in reversed(KIT_RUNS[alpha]) for r in here
            if r["kind"] == "stage2" and r["recipe"] == recipe}


def rules(kit: dict[str, dict[int, dict]], first: dict[str, dict[int, dict]]) -> dict[str, dict]:
    """Each rule's gain over stage 1: the mean over sets of each set's mean over seeds, the sets
    where that mean is below stage 1, and the worst single run."""
    table = {}
    for rule, pick in RULES.items():
        gains = {name: [pick(run, first[name][seed])["test_accuracy"] - first[name][seed]["test_accuracy"]
                        for seed, run in runs.items()] for name, runs in kit.items()}
        means = [float(np.mean(values)) for values in gains.values()]
        table[rule] = {"mean_gain": round(float(np.mean(means)), 4), "sets_below_stage1": sum(m < 0 for m in means),
                       "worst_run": round(min(min(values) for values in gains.values()), 4),
                       "runs": sum(map(len, gains.values()))}
    return table


def recipes(here: list[dict], first: dict[tuple, dict]) -> dict[str, dict]:
    """Each recipe screened beside the kit's runs: the gain over stage 1 of its last quarter's
    average (and of each moving average of its weights, where the run has them) and of the kit's
    runs' on the same sets and seeds: the mean and the worst run."""
    def gain(run: dict, mix: str = "average_last_quarter") -> float:
        return run["mixes"][mix]["test_accuracy"] - first[run["set"], run["seed"]]["test_accuracy"]

    kit = kit_runs(here, here[0]["alpha"])
    table = {}
    for recipe in sorted({r["recipe"] for r in here if r["kind"] == "stage2"} - set(KIT_RUNS[here[0]["alpha"]])):
        runs = [r for r in here if r["kind"] == "stage2" and r["recipe"] == recipe and (r["set"], r["seed"]) in kit]
        if not runs:
            continue
        theirs = [gain(kit[r["set"], r["seed"]]) for r in runs]
        moving = sorted(mix for mix in runs[0]["mixes"] if mix.startswith("ema_"))
        for mix in ("average_last_quarter", *moving):
            mine = [gain(r, mix) for r in runs]
            momentum = float(mix.removeprefix("ema_")) if mix in moving else None
            table[recipe if momentum is None else f"{recipe}, {mix}"] = {
                "flags": recipe, "rerun": recipe == RERUN, "ema_momentum": momentum, "runs": len(runs),
                "sets": sorted({r["set"] for r in runs}),
                "mean_gain": round(float(np.mean(mine)), 4), "kit_mean_gain": round(float(np.mean(theirs)), 4),
                "worst_run": round(min(mine), 4), "kit_worst_run": round(min(theirs), 4)}
    return table


def summary(records: list[dict]) -> dict[float, dict]:
    """Per width and set, over seeds: each method's test accuracy, stage 2's (as its defaults
    return it, and as the earlier defaults did) and its gain over stage 1, and the aims."""
    tables = {}
    for alpha in sorted({record["alpha"] for record in records}):
        table, firsts = {}, {}
        for name in PHOTO_SETS:
            here = [r for r in records if r["alpha"] == alpha and r["set"] == name]
            first = with_cross_validation(here)
            kit = {seed: run for (_, seed), run in kit_runs(here, alpha).items()}  # here: this set's runs
            if not kit:
                continue
            row = {kind: spread([r["test_accuracy"] for r in here if r["kind"] == kind])
                   for kind in ("stage1", "regression", "tutorial") if any(r["kind"] == kind for r in here)}
            returned = {seed: as_the_kit_returns(run, first[seed]) for seed, run in kit.items()}
            row["stage2"] = {**spread([r["test_accuracy"] for r in returned.values()]),
                             "gain": spread([r["test_accuracy"] - first[seed]["test_accuracy"]
                                             for seed, r in returned.items()]),
                             "skipped": sum(r["skipped"] for r in returned.values()),
                             "gave_up": sum(r["gave_up"] for r in returned.values()),
                             "time_share_when_gave_up": max([r["time_share"] for r in returned.values()
                                                             if r["gave_up"]], default=None),
                             "seconds": median_seconds([kit[seed]["train_seconds"] * r["time_share"]
                                                        for seed, r in returned.items() if not r["skipped"]]),
                             "seeds": sorted(kit)}
            previous = [r for r in here if r["kind"] == "stage2" and r["recipe"] == PREVIOUS and
                        not r.get("returned")]  # runs of the earlier code: the epoch it chose
            if previous and alpha == 1.0:
                row["stage2_previous"] = {**spread([r["test_accuracy"] for r in previous]),
                                          "seeds": sorted(r["seed"] for r in previous)}
            elif previous:
                row["stage2_previous"] = {**spread([r["epochs"][r["kit_epoch"]]["test_accuracy"] for r in previous]),
                                          "seeds": sorted(r["seed"] for r in previous)}
            row["images"] = {part: first[min(first)][part] for part in ("train", "val", "test")}
            table[name], firsts[name] = row, first
        if table:
            here = [r for r in records if r["alpha"] == alpha]
            hardware = sorted({r.get("hardware", MACHINE) for r in here})
            runs = kit_runs(here, alpha)
            kit = {name: {seed: run for (where, seed), run in runs.items() if where == name} for name in table}
            tables[alpha] = {"hardware": ", and ".join(hardware), "sets": table, "aims": aims(table, alpha),
                             "rules": rules(kit, firsts),
                             "recipes": recipes(here, {(name, seed): r for name, first in firsts.items()
                                                       for seed, r in first.items()})}
    return tables


def with_cross_validation(here: list[dict]) -> dict[int, dict]:
    """One set's stage-1 records by seed, each with its cross-validated accuracy (from the stage-1
    run, or from the crossval record the bench made for an older one)."""
    crossed = {r["seed"]: r["cross_validated_accuracy"] for r in here if r["kind"] == "crossval"}
    return {r["seed"]: {**r, "cross_validated_accuracy": r.get("cross_validated_accuracy") or crossed[r["seed"]]}
            for r in here if r["kind"] == "stage1"}


def aims(table: dict, alpha: float) -> dict:
    """The issue's aims on this bench, each true or false, with what they were judged by."""
    gains = {name: row["stage2"]["gain"]["mean"] for name, row in table.items()}
    worst = {name: row["stage2"]["gain"]["min"] for name, row in table.items()}
    return {
        "stage2_at_least_stage1_on_every_set": all(gain >= 0 for gain in gains.values()),
        "mean_gain_over_sets": round(float(np.mean(list(gains.values()))), 4),
        "no_seed_more_than_2_points_below_stage1": all(gain >= -0.02 for gain in worst.values()),
        "worst_seed": min(worst.values()),
        "gave_up_within_a_third_of_the_time": all((row["stage2"]["time_share_when_gave_up"] or 0) <= 0.34
                                                  for row in table.values()),
        "stage1_at_least_regression_minus_1_point": all(
            row["stage1"]["mean"] >= row["regression"]["mean"] - 0.01 for row in table.values() if "regression" in row),
        **({"mean_gain_at_least_3_points": bool(np.mean(list(gains.values())) >= 0.03)} if alpha == 1.0 else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets-dir", type=Path, default=Path("/work/data/photo_sets"),
                        help="where bench.photo_sets built the sets (built there if missing)")
    parser.add_argument("--only", nargs="+", choices=PHOTO_SETS, default=PHOTO_SETS, help="these sets")
    parser.add_argument("--alpha", nargs="+", type=float, choices=(0.35, 1.0), default=[0.35])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--recipe", action="append", default=None, metavar="FLAGS",
                        help='flags for lilTinyNet_finetuner.py ("" for its defaults); repeat for several')
    parser.add_argument("--peer", action="store_true", help="also TensorFlow's tutorial on the same split")
    parser.add_argument("--summary", action="store_true", help="only write the summaries of what ran")
    args = parser.parse_args()
    args.recipe = [" ".join(recipe.split()) for recipe in (args.recipe if args.recipe is not None else [""])]
    if not args.summary:
        run(args)
    for alpha, table in summary(read_log()).items():
        save(f"photos_alpha{alpha}", table)


if __name__ == "__main__":
    main()
