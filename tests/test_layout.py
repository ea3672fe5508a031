"""The import contract of the layout: which package may import which, checked by walking every module's imports.

features imports nothing else of ours; models and simworld build only on features; training and serving never
import each other (the registry is the only handoff) nor the simulator; nothing imports the folders under their
bare names (`features`, `serving`, ...): everything lives under `offerlift`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"features": "features", "models": "models", "simworld": "simworld", "training": "training",
            "serving": "serving", "offerlift": "offerlift"}  # fmt: skip
ALLOWED = {
    "features": {"features"},
    "models": {"features", "models"},
    "simworld": {"features", "simworld"},
    "training": {"features", "models", "training"},
    "serving": {"features", "models", "serving"},
    "offerlift": set(PACKAGES),
}
BARE = {"features", "models", "simworld", "training", "serving"}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every absolute module name a file imports (at any depth, also inside functions), with its line."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            if node.module == "offerlift":
                out += [(node.lineno, f"offerlift.{a.name}") for a in node.names]
    return out


def owner(module: str) -> str | None:
    """The package of ours a module name belongs to (None for third-party)."""
    parts = module.split(".")
    if parts[0] != "offerlift":
        return None
    if len(parts) > 1 and parts[1] in BARE:
        return parts[1]
    return "offerlift"


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((REPO / PACKAGES[package]).rglob("*.py")):
        for line, module in imported_modules(path):
            where = f"{path.relative_to(REPO)}:{line} imports {module}"
            if module.split(".")[0] in BARE:
                found.append(f"{where} (bare name: import it as offerlift.{module})")
            elif (dep := owner(module)) is not None and dep not in ALLOWED[package]:
                found.append(f"{where} ({package} may import only {sorted(ALLOWED[package])})")
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_package_imports_follow_the_layout(package):
    assert violations(package) == []


def test_tests_and_benchmarks_use_the_namespace():
    bad = [
        f"{p.relative_to(REPO)}:{line} imports {m}"
        for folder in ("tests", "benchmarks")
        for p in sorted((REPO / folder).rglob("*.py"))
        for line, m in imported_modules(p)
        if m.split(".")[0] in BARE
    ]
    assert bad == []


def test_the_walker_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from offerlift.training import train\n    import serving.x\n")
    assert imported_modules(f) == [(2, "offerlift.training"), (3, "serving.x")]
    assert owner("offerlift.training.train") == "training" and owner("offerlift.api") == "offerlift"
    assert owner("numpy") is None


# -- nothing heavy at import time ------------------------------------------------------------------------------

HEAVY = ("mlflow", "bentoml", "optuna", "dask", "distributed", "matplotlib")
#: module -> third-party packages importing it must not load (besides HEAVY). LightGBM loads scikit-learn itself.
LIGHT = {
    "offerlift.cli": ("lightgbm", "sklearn", "pandas"),
    "offerlift.serving.decider": (),
    "offerlift.serving.decide_many": (),
    "offerlift.serving.batch": (),
    "offerlift.serving.rules": ("lightgbm", "sklearn"),
    "offerlift.serving.settings": ("lightgbm", "sklearn"),
    "offerlift.models.model_io": (),
    "offerlift.models.scoring": (),
    **{f"offerlift.features.{p.stem}": ("lightgbm", "sklearn") for p in sorted((REPO / "features").glob("[!_]*.py"))},
}


def loaded_by(modules: list[str], packages: tuple[str, ...]) -> dict[str, list[str]]:
    """Import `modules` in this order in a fresh interpreter; for each, the packages of `packages` in sys.modules
    right after it (cumulative: the first module that shows a package is the one that imported it)."""
    import json
    import subprocess
    import sys

    code = (
        "import importlib, json, sys\n"
        f"out = {{}}\nfor m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        f"    out[m] = sorted(p for p in {packages!r} if p in sys.modules)\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("forbidden", sorted({(*HEAVY, *extra) for extra in LIGHT.values()}))
def test_nothing_heavy_is_imported_at_module_import_time(forbidden):
    modules = sorted(m for m, extra in LIGHT.items() if (*HEAVY, *extra) == forbidden)
    found = loaded_by(modules, forbidden)
    assert {m: v for m, v in found.items() if v} == {}


def test_the_import_check_sees_a_heavy_import():
    found = loaded_by(["offerlift.features.catalog", "offerlift.models.pyfunc"], ("mlflow",))
    assert found == {"offerlift.features.catalog": [], "offerlift.models.pyfunc": ["mlflow"]}


# -- every folder says what it holds ---------------------------------------------------------------------------


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_the_package_docstring_names_every_module(package):
    folder = REPO / PACKAGES[package]
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
    modules = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    assert [m for m in modules if f"`{m}`" not in doc and f"({m})" not in doc] == []
