"""The evaluator's report: one HTML page that opens from disk, every picture inside it.

Nothing on the page is fetched: no server, no network, no script; pictures are embedded as data
URIs, so the page can be mailed or archived alone. Each number a test compares with the sidecar
carries a data-key attribute.
"""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

from PIL import Image

from tinynet.metrics import Evaluation

LARGE = 300_000  # bytes of PNG above which a picture is embedded as a JPEG

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1d2330; margin: 0; background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 26px; margin: 8px 0 2px; } h2 { font-size: 21px; margin: 40px 0 8px; border-bottom: 2px solid #d9dde5; }
h3 { font-size: 16px; margin: 22px 0 6px; color: #3a4358; }
.lead { color: #566077; margin: 0 0 18px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 10px 0 6px; }
.card { background: white; border: 1px solid #e1e4ea; border-radius: 10px; padding: 10px 16px; min-width: 150px; }
.card b { display: block; font-size: 24px; } .card span { color: #566077; font-size: 13px; }
table { border-collapse: collapse; background: white; font-size: 14px; margin: 6px 0; }
th, td { border: 1px solid #e1e4ea; padding: 4px 10px; text-align: right; } th { background: #eef0f4; }
td:first-child, th:first-child, .settings td { text-align: left; }
img { max-width: 100%; background: white; border: 1px solid #e1e4ea; border-radius: 6px; }
nav a { margin-right: 14px; } .note { color: #566077; font-size: 13px; }
"""


def embedded(picture: Path, alt: str) -> str:
    """An <img> holding the picture itself: the PNG, or for a large one (photos) a JPEG of it."""
    data, kind = Path(picture).read_bytes(), "png"
    if len(data) > LARGE:
        buffer = io.BytesIO()
        with Image.open(picture) as image:
            image.convert("RGB").save(buffer, "JPEG", quality=85)
        data, kind = buffer.getvalue(), "jpeg"
    return f'<img alt="{html.escape(alt)}" src="data:image/{kind};base64,{base64.b64encode(data).decode()}">'


def key_number(key: str, value: str) -> str:
    return f'<b data-key="{key}">{value}</b>'


def fine_tuning(info: dict) -> str:
    """How long stage 2 trained and what it returned."""
    give_up = info.get("give_up") or {}
    if give_up.get("fine_tuned") is False:
        return (f"not fine-tuned: stage 1's cross-validated accuracy {give_up['cross_validated_accuracy']:.4f} "
                f"is at least {give_up['skip_from']:g}, too little left to gain")
    return f"{len(info.get('history', []))} epochs, returned {info.get('returned', '-')}"


def settings_table(path: str, info: dict, base_info: dict) -> str:
    """What made the model, from its sidecar (and its base's, for a fine-tuned model)."""
    settings, data = info.get("settings", {}), info.get("data", {})
    base_settings = base_info.get("settings", {})
    history = info.get("history", [])
    rows = [
        ("stage", {"base": "1: a head on the frozen base", "finetune": "2: fine-tuned"}.get(info.get("stage"), "-")),
        ("data", f"{data.get('source', '-')} ({data.get('layout', '-')})"),
        ("classes", ", ".join(info.get("class_names", []))),
        ("images", f"{data.get('train', '-')} train, {data.get('val', '-')} validation, {data.get('test', '-')} test"),
        ("model input", f"{data.get('image_size', '-')} px, photos made square by {data.get('square', '-')}"),
        ("MobileNetV2 width (alpha)", settings.get("alpha", base_settings.get("alpha", "-"))),
        ("head", info.get("head") or base_info.get("head") or "-"),
    ]
    if info.get("stage") == "base":
        if info.get("penalty") is not None:
            rows.append(("training", f"linear head, L2 penalty {info['penalty']} chosen on validation"))
        else:
            rows.append(("training", f"{len(history)} epochs, best {info.get('best_epoch', '-')}"))
    elif info.get("stage") == "finetune":
        rows += [("unfrozen from", settings.get("unfreeze", "-")),
                 ("augmentation", f"flip and {info.get('augment', '-')}"),
                 ("training", fine_tuning(info))]
    times = info.get("times", {})
    if times.get("total") is not None:
        rows.append(("training time", f"{times['total']:.0f} s"))
    rows.append(("saved", time.strftime("%Y-%m-%d %H:%M", time.localtime(Path(path).stat().st_mtime))))
    versions = info.get("versions", {})
    if versions:
        rows.append(("versions", ", ".join(f"{name} {version}" for name, version in versions.items())))
    return table(["setting", "value"], [[name, value] for name, value in rows], "settings")


def table(header: list[str], rows: list[list], kind: str = "") -> str:
    """An HTML table; a cell given as (text, key) carries the key as its data-key."""
    def cell(value) -> str:
        text, key = value if isinstance(value, tuple) else (value, "")
        keyed = f' data-key="{html.escape(key)}"' if key else ""
        return f"<td{keyed}>{html.escape(str(text))}</td>"

    head = "".join(f"<th>{html.escape(str(name))}</th>" for name in header)
    body = "".join("<tr>" + "".join(cell(value) for value in row) + "</tr>" for row in rows)
    return f'<table class="{kind}"><tr>{head}</tr>{body}</table>'


def model_section(path: str, info: dict, base_info: dict, evaluation: Evaluation, pictures: dict[str, Path]) -> str:
    """A model's part of the page: settings, headline numbers, per-class scores, pictures."""
    name = Path(path).name
    low, high = evaluation.accuracy_interval()
    _, calibration_error = evaluation.calibration()
    cards = "".join(f'<div class="card">{value}<span>{label}</span></div>' for value, label in [
        (key_number("test-accuracy", f"{evaluation.accuracy:.4f}"),
         f"test accuracy, 95% interval {low:.3f} to {high:.3f} for {len(evaluation.labels)} images"),
        (key_number("top3-accuracy", f"{evaluation.top3_accuracy:.4f}"), "top-3 accuracy"),
        (key_number("test-loss", f"{evaluation.loss:.4f}"), "test loss"),
        (key_number("calibration-error", f"{calibration_error:.3f}"), "expected calibration error"),
    ])
    per_class = table(["class", "precision", "recall", "F1", "images"],
                      [[row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                        row["support"]] for row in evaluation.per_class()])
    confused = evaluation.most_confused()
    confused_html = (table(["true class", "predicted as", "images"], [list(row) for row in confused])
                     if confused else "<p>No mistakes on the test set.</p>")
    figures = {
        "confusion": ("Confusion matrix", "Rows are the true classes; the right panel shows each row as shares."),
        "calibration": ("Calibration", "Whether a probability of 80% is right 80% of the time."),
        "mistakes": ("Most confident mistakes", "The test images with the highest loss: each as the model saw "
                     "it, and with Grad-CAM's heat map of where it looked for the class it predicted."),
        "predictions": ("Test images", "Spread over the test set; red: wrong."),
        "architecture": ("Architecture", ""),
    }
    shown = "".join(f"<h3>{title}</h3><p class='note'>{note}</p>{embedded(pictures[key], title)}"
                    for key, (title, note) in figures.items() if pictures.get(key))
    return (f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2><div class="cards">{cards}</div>'
            f"<h3>Settings and data</h3>{settings_table(path, info, base_info)}"
            f"<h3>Per class</h3>{per_class}<h3>Most confused pairs</h3>{confused_html}{shown}")


def write_page(path: Path, title: str, lead: str, sections: list[str], names: list[str],
               curves: Path | None) -> Path:
    """The evaluator's page: links to each model, the learning curves, then each model's section."""
    nav = "".join(f'<a href="#{html.escape(name)}">{html.escape(name)}</a>' for name in names)
    training = (f"<h2 id='training'>Training</h2><p class='note'>Both stages on one axis: stage 1's epochs, or "
                f"for a linear head its penalty grid, then fine-tuning.</p>{embedded(curves, 'learning curves')}"
                if curves else "")
    return write_html(path, title, lead, f"<nav>{nav}</nav>{training}{''.join(sections)}")


def write_html(path: Path, title: str, lead: str, body: str) -> Path:
    """A whole page with the house style, written atomically."""
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style></head>"
            f"<body><main><h1>{html.escape(title)}</h1><p class='lead'>{html.escape(lead)}</p>{body}</main>"
            "</body></html>\n")
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(page)
    partial.replace(path)
    return path


def comparison_page(path: Path, rows: list[dict], columns: list[tuple[str, str, str]], source: str,
                    chart: Path) -> Path:
    """megaTest's side-by-side page: its table, and the accuracies with their intervals as a chart;
    linked to the evaluator's page when that is beside it."""
    cells = [[(format(row[key], fmt) if row.get(key) is not None else "-",
               f"{key}-{Path(row['model']).name}" if key in ("accuracy", "against_base") else "")
              for key, _, fmt in columns] for row in rows]
    evaluator = path.parent / "index.html"
    link = f'<p><a href="{evaluator.name}">Each model in detail</a></p>' if evaluator.exists() else ""
    return write_html(path, "lilTinyNet side by side", source,
                      f"{link}{table([heading for _, heading, _ in columns], cells)}"
                      f"<h3>Test accuracy and its 95% interval</h3>{embedded(chart, 'accuracy')}")
