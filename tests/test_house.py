"""The house rules the code keeps: modules import only below themselves, nothing imports a script,
and no measured figure is written into a docstring or a flag's help (the numbers live in README's
tables, generated from bench/results)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

SCRIPTS = {"lilTinyNet", "lilTinyNet_finetuner", "evaluator_lilTinyNet_finetuned", "megaTest", "predict", "export",
           "app"}
# The package from the bottom up: each module may import only those before it.
ORDER = [
    "errors", "backend", "cli", "calibration", "images", "sources", "distributed",  # foundations
    "streaming", "data", "batches",  # data
    "model", "optimizers", "linear_head", "gradcam", "formats", "runtime",  # the model and its runtimes
    "runfiles", "checkpoint", "features", "training", "devices", "metrics",  # runs
    "plots", "report", "image_inputs", "service",  # what people see
    "stage1", "stage2", "evaluate", "compare", "predict", "export", "app",  # the commands the scripts run
]
# A result, not a setting: an accuracy to 3 or more places, a duration, a gain in points, a ratio.
MEASURED = re.compile(r"\b0\.\d{3,}\b|\b\d+(\.\d+)? ?(seconds|minutes|hours|ms|s)\b|\b\d+(\.\d+)? points\b"
                      r"|\b\d+\.\d+x\b")


def imports(path: Path) -> set[str]:
    """Modules a file imports, as written in import statements (code in strings does not count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "tinynet":
                found |= {f"tinynet.{alias.name}" for alias in node.names}
    return found


def python_files() -> list[Path]:
    return [path for folder in ("tinynet", "tests", "bench") for path in (ROOT / folder).glob("*.py")] + [
        ROOT / f"{name}.py" for name in SCRIPTS]


def test_every_module_of_the_package_is_placed_and_imports_only_below_itself():
    modules = {path.stem for path in (ROOT / "tinynet").glob("*.py")} - {"__init__"}
    assert modules == set(ORDER), f"place new modules in ORDER: {modules ^ set(ORDER)}"
    for position, name in enumerate(ORDER):
        above = {f"tinynet.{module}" for module in ORDER[position:]}
        assert not imports(ROOT / "tinynet" / f"{name}.py") & above, f"tinynet/{name}.py imports upward"


def test_no_file_imports_a_script():
    for path in python_files():
        assert not imports(path) & SCRIPTS, f"{path.relative_to(ROOT)} imports a script"


def test_no_measured_figure_in_a_docstring_or_a_flags_help():
    found = []
    for path in [*(ROOT / "tinynet").glob("*.py"), *(ROOT / f"{name}.py" for name in SCRIPTS)]:
        tree = ast.parse(path.read_text())
        texts = [ast.get_docstring(node) for node in ast.walk(tree)
                 if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))]
        texts += [ast.unparse(keyword.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
                  and getattr(node.func, "attr", "") == "add_argument" for keyword in node.keywords
                  if keyword.arg == "help"]
        found += [f"{path.name}: {match.group()}" for text in texts if text for match in MEASURED.finditer(text)]
    assert found == []


def test_readme_and_results_tables_are_what_bench_results_give():
    """Every table between markers is bench.tables' rendering of bench/results (python -m bench.tables)."""
    from bench import tables

    for page in tables.PAGES:
        text = page.read_text()
        assert tables.MARKED.search(text) or page.name != "README.md", "README has its tables"
        assert tables.rewritten(text) == text, f"{page.name} is out of date: python -m bench.tables"


def test_readme_is_short_enough_to_read():
    assert (ROOT / "README.md").stat().st_size <= 15 * 1024
