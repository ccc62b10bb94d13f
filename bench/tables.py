"""README's and docs/results.md's tables of results, written from bench/results/*.json.

    python -m bench.tables            # rewrite every table between its markers
    python -m bench.tables --check    # exit 1 if a table differs from what the results give

A table sits between `<!-- table:NAME -->` and `<!-- /table -->`; only what is between the
markers is replaced, so the prose around a table is written by hand and its numbers are not.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PAGES = [ROOT / "README.md", ROOT / "docs" / "results.md", ROOT / "docs" / "using-the-model.md"]
MARKED = re.compile(r"(<!-- table:(?P<name>[a-z0-9_]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
RUNTIME_NAMES = {"litert": "LiteRT", "tensorflow": "TensorFlow"}
XEON = "2-core Intel Xeon, 2.1 GHz"  # where the results that name no hardware were measured (bench/README.md)
KINDS = {"hymenoptera": "insects, 2 classes", "trashnet": "waste objects", "rsscn7": "aerial scenes",
         "brain_mri": "brain MRI, 2 classes", "food5": "food dishes", "cats_dogs": "pets, 2 classes",
         "neu_steel": "steel surface textures", "weather4": "weather scenes", "flowers5": "flowers"}


def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def pm(spread: dict, digits: int = 3) -> str:
    """mean ± sd (n) of a bench_photos spread."""
    sd = f" ± {spread['sd']:.{digits}f}" if spread.get("sd") is not None else ""
    return f"{spread['mean']:.{digits}f}{sd}"


def points(value: float) -> str:
    return f"{100 * value:+.1f}"


def photos(alpha: float) -> str:
    """One row per photo set: both stages, the regression and the tutorial, over seeds."""
    if not (RESULTS / f"photos_alpha{alpha}.json").exists():
        return f"Not measured yet: `python -m bench.bench_photos --alpha {alpha}`.\n"
    result = load(f"photos_alpha{alpha}")
    rows = []
    for name, row in result["sets"].items():
        two = row["stage2"]
        images = row["images"]
        rows.append([f"{name} ({KINDS.get(name, '')})", f"{images['train']} / {images['val']} / {images['test']}",
                     pm(row["stage1"]), pm(row["regression"]) if "regression" in row else "-",
                     pm(row["tutorial"]) if "tutorial" in row else "-", f"**{pm(two)}**",
                     f"{points(two['gain']['mean'])} ({points(two['gain']['min'])})",
                     f"{two['skipped'] + two['gave_up']} of {two['n']}", f"{two['seconds']:.0f} s"])
    aims = result["aims"]
    rows.append(["**mean over the sets**", "", "", "", "", "", f"**{points(aims['mean_gain_over_sets'])}** "
                 f"({points(aims['worst_seed'])})", "", ""])
    header = ["set", "train / val / test", "stage 1", "logistic regression", "TF tutorial", "stage 2",
              "stage 2 - stage 1, points: mean (worst seed)", "returned the base", "stage 2 training, when it runs"]
    seeds = sorted({row["stage2"]["n"] for row in result["sets"].values()})
    counts = f"{seeds[0]} to {seeds[-1]} seeds" if len(seeds) > 1 else f"{seeds[0]} seed{'s' * (seeds[0] > 1)}"
    note = (f"\nTest accuracy, mean ± sd over {counts} (each its own carved validation "
            f"split); returned the base: not fine-tuned (stage 1 cross-validated at `--skip-from` or more) or gave "
            f"up; training: median over the seeds that fine-tuned, up to the give-up where it gave up; "
            f"alpha {alpha}{' (rebuilt ImageNet weights)' if alpha == 1.0 else ''}; "
            f"{result.get('hardware', 'AMD EPYC, 2 cores')}; `python -m bench.bench_photos --alpha {alpha}`.\n")
    return markdown(header, rows) + note


def photos_1() -> str:
    return photos(1.0)


def photos_035() -> str:
    return photos(0.35)


def photo_rules() -> str:
    """What stage 2 could return, each rule scored on the same runs at both widths."""
    results = {alpha: load(f"photos_alpha{alpha}") for alpha in (1.0, 0.35)
               if (RESULTS / f"photos_alpha{alpha}.json").exists()}
    rows = []
    for rule in next(iter(results.values()))["rules"]:
        rows.append([rule] + [f"{points(r['rules'][rule]['mean_gain'])}, {r['rules'][rule]['sets_below_stage1']} of "
                              f"{len(r['sets'])}, {points(r['rules'][rule]['worst_run'])}" for r in results.values()])
    runs = ", ".join(f"alpha {alpha}: {next(iter(r['rules'].values()))['runs']} runs" for alpha, r in results.items())
    header = ["returned", *(f"alpha {alpha}: mean gain, sets below stage 1, worst run" for alpha in results)]
    note = f"\nPoints over stage 1 on test; {runs}; `python -m bench.bench_photos --summary`.\n"
    return markdown(header, rows) + note


def photo_recipes() -> str:
    """Recipes screened beside the kit's, on the same sets and seeds."""
    rows = []
    for alpha in (1.0, 0.35):
        if (RESULTS / f"photos_alpha{alpha}.json").exists():
            for run in load(f"photos_alpha{alpha}")["recipes"].values():
                if run["rerun"]:
                    flags = f"the defaults, run again (`{run['flags']}`)"
                else:
                    flags = f"`{run['flags']}`" if run["flags"] else "the earlier defaults (3e-4 at every width)"
                if run["ema_momentum"]:
                    flags += f", returning an EMA of the weights (momentum {run['ema_momentum']:g})"
                rows.append([flags, str(alpha),
                             f"{run['runs']} ({', '.join(run['sets'])})",
                             f"{points(run['mean_gain'])} ({points(run['worst_run'])})",
                             f"{points(run['kit_mean_gain'])} ({points(run['kit_worst_run'])})"])
    header = ["stage 2 flags", "alpha", "runs (sets)", "what it returns: gain (worst run)",
              "the defaults' on the same runs"]
    note = ("\nPoints over stage 1 on test, mean over the runs; a run returns the average of its last quarter, "
            "or the exponential moving average of its weights that Keras's `use_ema` keeps (with the weights "
            "each epoch ended with standing for its steps).\n")
    return markdown(header, rows) + note


def tiny_images() -> str:
    """A logistic regression on the base's features of small images, at each input size."""
    result = load("tiny_images")
    sizes = sorted({int(size) for means in result["means"].values() for size in means})
    rows = [[name] + [pm(means[str(size)]) if str(size) in means else "-" for size in sizes]
            for name, means in result["means"].items()]
    return markdown(["set", *(f"{size} px" for size in sizes)], rows) + (
        f"\nTest accuracy (mean ± sd over seeds); alpha {result['alpha']}; {result['note']}; "
        "`python -m bench.bench_tiny_images`.\n")


def cifar10() -> str:
    """Both stages on all of CIFAR-10, at both widths, each from its bench file."""
    wide, tuned, first_epochs, runtime = (load("base_128_alpha1.0"), load("finetune"), load("finetune_alpha1.0"),
                                          load("runtime"))
    stage1 = runtime["cifar10"]
    per_epoch = first_epochs["curve"][-1]["seconds"] / len(first_epochs["curve"])  # its seconds add up
    on = {name: stage1[f"stage1_{name}"] for name in ("litert", "tensorflow")}
    rows = [
        [f"1, features on {RUNTIME_NAMES[name]}{' (the default)' if name == 'litert' else ''}", "0.35",
         f"{run['test_accuracy']:.4f}", f"{run['wall_seconds']:.0f} s", runtime["hardware"],
         "`python -m bench.bench_runtime`"] for name, run in on.items()] + [
        [f"2, {tuned.get('returned') or 'the epoch best on validation (the earlier default)'}", "0.35",
         f"**{tuned['contract_test']['accuracy']:.4f}**", f"{tuned['wall_seconds'] / 60:.0f} min",
         tuned.get("hardware", XEON), "`python -m bench.bench_finetune`"],
        ["1, features on TensorFlow", "1.0", f"{wide['contract_test']['accuracy']:.4f}",
         f"{wide['wall_seconds']:.0f} s", XEON, "`python -m bench.bench_base --alpha 1.0 --no-floor`"],
        ["2, its first 3 of 30 epochs", "1.0", f"validation {first_epochs['curve'][-1]['val_accuracy']:.4f}",
         f"{per_epoch / 60:.0f} min an epoch", XEON, "`python -m bench.bench_finetune --alpha 1.0 --stop-after 3`"],
    ]
    return markdown(["stage", "alpha", "test accuracy", "wall time", "hardware", "command"], rows)


def runtimes() -> str:
    """TensorFlow against LiteRT on each pass that trains nothing (bench_runtime)."""
    result = load("runtime")
    rows = []
    for name in ("cifar10", "flowers5"):
        if name not in result:
            continue
        run, passes = result[name], result[name]["passes"]
        label = f"{name} (alpha {run['alpha']}, {run['image_size']} px)"
        rows += [
            [label, "stage 1's feature pass", f"{run['front']['tensorflow_seconds']} s",
             f"{run['front']['litert_seconds']} s", f"{run['front']['litert_speed_up']:.2f}x"],
            [label, "stage 1 with --runtime litert, end to end (conversion included)",
             f"{run['stage1_tensorflow']['wall_seconds']} s",
             f"{run['stage1_litert']['wall_seconds']} s",
             f"{run['stage1_tensorflow']['wall_seconds'] / run['stage1_litert']['wall_seconds']:.2f}x"],
            [label, "the evaluators' pass, batch 128", f"{passes['tensorflow']['evaluator_images_per_s']:.0f} images/s",
             f"{passes['litert']['evaluator_images_per_s']:.0f} images/s",
             f"{passes['evaluator_images_per_s_ratio']:.2f}x"],
            [label, "one image (predict.py, app.py)", f"{passes['keras_call_ms']:.1f} ms (a Keras call)",
             f"{passes['litert']['batch_1_ms']:.2f} ms", f"{passes['batch_1_latency_ratio']:.0f}x"],
        ]
    same = min(result[name]["passes"]["same_top_class"] for name in ("cifar10", "flowers5") if name in result)
    note = f"\nSame top class on {same:.1%} of the test images; {result['hardware']}; `python -m bench.bench_runtime`\n"
    return markdown(["data", "pass", "TensorFlow", "LiteRT", "speed-up"], rows) + note


def app() -> str:
    result = load("app")
    rows = [[label, f"{run['requests']}", f"{run['failures']}", f"{run['requests_per_second']:.0f}",
             f"{run['p50_ms']:.1f} ms", f"{run['p99_ms']:.1f} ms"]
            for label, run in (("1 client, one after another", result["one_client"]),
                               ("4 clients for 30 s", result["4_clients_30_s"]))]
    note = (f"\n{result['model']}; every answer equal to predict.py's; {result['hardware']}; "
            f"`python -m bench.bench_app`.\n")
    return markdown(["load", "requests", "failed", "requests/s", "p50", "p99"], rows) + note


def exports() -> str:
    result = load("export")
    rows = [[run["runtime"], f"{run['accuracy']:.4f}", f"{run['top_class_agreement']:.1%}",
             f"{run['images_per_s_batch_1']:.0f}", f"{run['images_per_s_batch_128']:.0f}",
             f"{run['speed_over_keras_batch_128']:.2f}x"] for run in result["runtimes"]]
    note = (f"\nThe CIFAR-10 model at alpha 0.35, fine-tuned 3 epochs, on all {result['test_images']:,} test images; "
            f"{XEON}; `python -m bench.bench_export`.\n")
    return markdown(["runtime", "test accuracy", "same top class as Keras", "images/s, batch 1",
                     "images/s, batch 128", "batch 128 against Keras"], rows) + note


def penalty() -> str:
    """Stage 1's penalty chosen on validation or by cross-validation, against the regression (bench_penalty)."""
    result = load("penalty")["summary"]
    rules = [rule for rule in next(iter(result.values())) if rule != "regression"]
    rows = [[rule] + [f"{points(by_width[rule]['mean_over_regression'])} "
                      f"({points(by_width[rule]['worst_set_over_regression'])})" for by_width in result.values()]
            for rule in rules]
    runs = ", ".join(f"alpha {alpha}: {by_width[rules[0]]['runs']} runs" for alpha, by_width in result.items())
    header = ["penalty chosen by", *(f"alpha {alpha}: mean over the regression (worst set)" for alpha in result)]
    return markdown(header, rows) + (f"\nPoints of test accuracy over the logistic regression on the same features "
                                     f"and split, mean over sets of each set's mean over seeds; {runs}; "
                                     "`python -m bench.bench_penalty`.\n")


def mirror() -> str:
    """Test-time mirroring (export.py --mirror) against each model alone (bench_mirror)."""
    result = load("mirror")
    rows = []
    for stage, run in result["cifar10"].items():
        rows.append([f"CIFAR-10, {stage} (alpha 0.35)", f"{run['alone']:.4f}", f"{run['mirrored']:.4f}",
                     points(run["mirrored"] - run["alone"]), "-",
                     f"{run['mirrored_seconds'] / run['alone_seconds']:.1f}x"])
    for name, run in result["summary"].items():
        rows.append([f"photo sets, {name} (mean over {run['sets']} sets, {run['runs']} models)", f"{run['alone']:.4f}",
                     f"{run['mirrored']:.4f}", points(run["mirrored"] - run["alone"]),
                     f"{run['sets_below']} of {run['sets']}", "-"])
    header = ["models", "alone", "mirrored", "points", "sets where it lost", "time of a pass"]
    return markdown(header, rows) + (f"\nTest accuracy; the time of a pass over CIFAR-10's test images at batch "
                                     f"128 against the model alone ({result.get('hardware', XEON)}); "
                                     "`python -m bench.bench_mirror`.\n")


TABLES = {"mirror": mirror, "penalty": penalty, "photos_1": photos_1, "photos_035": photos_035,
          "photo_rules": photo_rules, "photo_recipes": photo_recipes,
          "tiny_images": tiny_images, "cifar10": cifar10, "runtimes": runtimes, "app": app, "exports": exports}


def rewritten(text: str) -> str:
    return MARKED.sub(lambda match: match.group(1) + TABLES[match.group("name")]() + match.group(4), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only say whether every table is up to date")
    args = parser.parse_args()
    stale = []
    for page in PAGES:
        text = page.read_text()
        new = rewritten(text)
        if new != text:
            stale.append(page.relative_to(ROOT))
            if not args.check:
                page.write_text(new)
    if args.check and stale:
        print(f"out of date with bench/results: {', '.join(map(str, stale))}; run python -m bench.tables")
        return 1
    print("tables " + ("checked" if args.check else f"written: {', '.join(map(str, stale)) or 'none changed'}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
