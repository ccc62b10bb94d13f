"""Pictures of a model: predictions, confusion matrix, learning curves, architecture."""

from __future__ import annotations

from pathlib import Path

import keras
import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only: no screen needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from tinynet.metrics import Evaluation  # noqa: E402
from tinynet.runfiles import read_sidecar  # noqa: E402
from tinynet.streaming import ImageFiles, take  # noqa: E402


def prediction_grid(evaluation: Evaluation, images: np.ndarray | ImageFiles, path: Path, count: int = 25) -> Path:
    """`count` test images, spread evenly over the test set (which is often sorted by class), with
    true and predicted class and confidence; mistakes in red."""
    shown = np.linspace(0, len(images) - 1, min(count, len(images))).astype(int)
    columns = int(np.ceil(np.sqrt(len(shown))))
    rows = int(np.ceil(len(shown) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows + 0.4), squeeze=False)
    for axis in np.ravel(axes):
        axis.axis("off")
    for axis, i, image in zip(np.ravel(axes), shown, take(images, shown), strict=False):
        true, predicted = evaluation.labels[i], evaluation.predicted[i]
        axis.imshow(image)
        axis.set_title(f"{evaluation.class_names[predicted]} {evaluation.probabilities[i, predicted]:.0%}\n"
                       f"true: {evaluation.class_names[true]}", fontsize=9,
                       color="black" if true == predicted else "red")
    figure.suptitle(f"{Path(evaluation.path).name}: predictions (red: wrong)")
    return save(figure, path)


def confusion_matrix(evaluation: Evaluation, path: Path) -> Path:
    """Two panels: the count in each cell, and each true class's row as shares (recall on the diagonal)."""
    counts = evaluation.confusion
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(5, 0.6 * len(counts))
    figure, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size + 0.5))
    ticks = range(len(counts))
    for axis, values, title, text in ((axes[0], counts, "counts", "{:d}"),
                                      (axes[1], shares, "share of each true class", "{:.0%}")):
        axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        axis.set_xticks(ticks, evaluation.class_names, rotation=45, ha="right")
        axis.set_yticks(ticks, evaluation.class_names)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(title)
        for (i, j), value in np.ndenumerate(values):
            axis.text(j, i, text.format(value), ha="center", va="center", fontsize=8,
                      color="white" if shares[i, j] > 0.5 else "black")
    figure.suptitle(f"{Path(evaluation.path).name}: accuracy {evaluation.accuracy:.4f}")
    return save(figure, path)


def reliability_diagram(evaluation: Evaluation, path: Path) -> Path:
    """How far the model's confidence can be trusted: in each bin of the top class's probability,
    the share of the images it got right, against the diagonal of perfect calibration; below, how
    many test images fall in each bin."""
    rows, error = evaluation.calibration()
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6), height_ratios=(3, 1), sharex=True)
    middles = [(row["low"] + row["high"]) / 2 for row in rows]
    top.bar(middles, [row["accuracy"] for row in rows], width=0.09, color="tab:blue", label="accuracy in the bin")
    top.plot([row["confidence"] for row in rows], [row["accuracy"] for row in rows], "o", color="tab:orange",
             label="mean confidence in the bin")
    top.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(fontsize=8, loc="upper left")
    top.set_title(f"{Path(evaluation.path).name}: expected calibration error {error:.3f}")
    bottom.bar(middles, [row["count"] for row in rows], width=0.09, color="gray")
    bottom.set_xlabel("probability of the predicted class")
    bottom.set_ylabel("images")
    bottom.set_xlim(0, 1)
    return save(figure, path)


def accuracy_chart(rows: list[dict], path: Path) -> Path:
    """Each model's test accuracy as a bar, with its 95% interval (megaTest's rows)."""
    figure, axis = plt.subplots(figsize=(max(5, 1.6 * len(rows) + 2), 4))
    names = [row["model"] for row in rows]
    accuracies = [row["accuracy"] for row in rows]
    errors = [[a - row["accuracy_low"] for a, row in zip(accuracies, rows, strict=True)],
              [row["accuracy_high"] - a for a, row in zip(accuracies, rows, strict=True)]]
    axis.bar(names, accuracies, yerr=errors, capsize=6, color="tab:blue")
    for k, accuracy in enumerate(accuracies):
        axis.annotate(f"{accuracy:.3f}", (k, accuracy), xytext=(12, 4), textcoords="offset points", fontsize=9)
    axis.set_ylim(max(0.0, min(row["accuracy_low"] for row in rows) - 0.1), 1)
    axis.set_ylabel("test accuracy")
    axis.grid(axis="y", alpha=0.3)
    return save(figure, path)


def mistakes_grid(pictures: list[Image.Image], path: Path, columns: int = 2) -> Path | None:
    """Side-by-side Grad-CAM pictures (tinynet.gradcam.explained) in a grid, as one PNG; None if none."""
    if not pictures:
        return None
    width, height = pictures[0].size
    rows = -(-len(pictures) // columns)
    sheet = Image.new("RGB", (columns * width + (columns - 1) * 16, rows * (height + 16)), "white")
    for k, picture in enumerate(pictures):
        sheet.paste(picture, ((k % columns) * (width + 16), (k // columns) * (height + 16)))
    sheet.save(path)
    return path


def learning_curves(model_paths: list[str], path: Path) -> Path | None:
    """Loss and accuracy per epoch from the sidecars, each base stage followed by its fine-tuning
    on one epoch axis, with a line where fine-tuning starts. A linear head has no epochs: its
    stage 1 is the point at epoch 0, and a third panel shows the penalties it chose among.
    None when no sidecar has a history."""
    chains = []
    infos = {path: read_sidecar(path) for path in model_paths}
    bases = {info.get("base") for info in infos.values()}
    for model_path, info in infos.items():
        if model_path in bases:  # a base is drawn as the start of its fine-tuning
            continue
        base = read_sidecar(info["base"]) if info.get("base") else {}
        if is_penalty_grid(info.get("history")):  # a linear stage 1 on its own
            base, info = info, {}
        if not info.get("history") and not base.get("history"):
            continue
        chains.append((Path(model_path).name, base, info.get("history", [])))
    if not chains:
        return None
    grids = [(name, base["history"], base.get("penalty")) for name, base, _ in chains
             if is_penalty_grid(base.get("history"))]
    figure, axes = plt.subplots(1, 2 + bool(grids), figsize=(6 * (2 + bool(grids)), 4.5))
    for name, base, history in chains:
        before = [] if is_penalty_grid(base.get("history")) else base.get("history", [])
        start = linear_start(base) if not before else None  # (loss, accuracy) at epoch 0
        for axis, metric in zip(axes, ("loss", "accuracy"), strict=False):
            epochs = np.arange(1, len(before) + len(history) + 1)
            rows = before + history
            color = None
            if rows:
                line, = axis.plot(epochs, [r[metric] for r in rows], "--", label=f"{name} train")
                color = line.get_color()
                axis.plot(epochs, [r[f"val_{metric}"] for r in rows], "-", color=color, label=f"{name} validation")
            if start:
                axis.plot([0], [start[metric]], "o", color=color, label=f"{name} stage 1 (linear head), validation")
            if before and history:
                axis.axvline(len(before) + 0.5, color="gray", linestyle=":")
                axis.annotate("fine-tuning starts", (len(before) + 0.6, 0.95), xycoords=("data", "axes fraction"),
                              fontsize=8, color="gray")
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=False):
        axis.set_xlabel("epoch (stage 1, then fine-tuning)")
        axis.set_ylabel(metric)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    if grids:
        penalty_grid(axes[2], grids)
    return save(figure, path)


def is_penalty_grid(history: list[dict] | None) -> bool:
    """Whether a stage-1 history is the linear head's penalty grid rather than epochs."""
    return bool(history) and "penalty" in history[0]


def linear_start(base: dict) -> dict[str, float] | None:
    """A linear stage 1's validation loss and accuracy, as model.evaluate() gave them (and as stage
    2 compares its epochs with)."""
    return (base.get("metrics") or {}).get("val")


def penalty_grid(axis, grids: list[tuple[str, list[dict], float | None]]) -> None:
    """The linear head's stage 1: validation loss (with its standard error) for each L2 penalty."""
    for name, rows, kept in grids:
        penalties = [row["penalty"] for row in rows]
        container = axis.errorbar(penalties, [row["val_loss"] for row in rows],
                                  yerr=[row["val_loss_error"] for row in rows], marker="o", capsize=3, label=name)
        if kept is not None:
            chosen = next(row for row in rows if row["penalty"] == kept)
            axis.plot([kept], [chosen["val_loss"]], "*", markersize=14, color=container.lines[0].get_color())
    axis.set_xscale("log")
    axis.set_xlabel("L2 penalty of the linear head (star: kept)")
    axis.set_ylabel("validation loss")
    axis.set_title("stage 1: the penalty chosen on validation")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)


def architecture(model: keras.Model, path: Path) -> Path:
    """keras.utils.plot_model to PNG; without pydot or Graphviz, the text summary instead."""
    try:
        keras.utils.plot_model(model, to_file=str(path), show_shapes=True, show_layer_names=True, dpi=96)
        return path
    except ImportError as error:
        text = path.with_suffix(".txt")
        print(f"note: no architecture picture ({str(error).splitlines()[0]}); wrote the summary to {text}")
        lines: list[str] = []
        model.summary(expand_nested=True, print_fn=lambda line, line_break=True: lines.append(line))
        text.write_text("\n".join(lines) + "\n")
        return text


def save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
