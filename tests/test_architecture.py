"""The layers of the architecture (docs/ARCHITECTURE.md): ``brats_core`` imports nothing above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from brats_core.config import REPO_ROOT

#: Packages above the ground floor: no module of brats_core may import them.
UPPER: tuple[str, ...] = (
    "Deep_Learning_Model", "Machine_Learning_Model", "Naive_Model", "sspp_unet_api", "streamlit_app", "brats_app",
)  # fmt: skip


def imported_modules(source: str) -> set[str]:
    """Every module a source imports: ``import x``, ``from x import y`` and ``importlib.import_module("x")``
    string literals, at the top level or inside functions (relative imports are within the package)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
    return found


def _is_import_module(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in {"import_module", "__import__"}


def _upward(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in UPPER)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import Naive_Model.naive_mean_model", ["Naive_Model.naive_mean_model"]),
        ("from sspp_unet_api.app import main", ["sspp_unet_api.app"]),
        ("def f():\n    from Deep_Learning_Model.predictor import Predictor\n", ["Deep_Learning_Model.predictor"]),
        ("import importlib\nimportlib.import_module('Machine_Learning_Model.models')", ["Machine_Learning_Model.models"]),
        ("from importlib import import_module\nimport_module('streamlit_app.app')", ["streamlit_app.app"]),
        ("import brats_app.registry as r", ["brats_app.registry"]),
        ("from brats_core.cases import load_case\nimport numpy", []),
    ],
)
def test_the_checker_sees_every_kind_of_import(source: str, expected: list[str]) -> None:
    assert _upward(imported_modules(source)) == expected


def test_brats_core_imports_no_upper_layer() -> None:
    modules = sorted((REPO_ROOT / "brats_core").rglob("*.py"))
    assert len(modules) > 15
    offenders = {
        str(path.relative_to(REPO_ROOT)): found
        for path in modules
        if (found := _upward(imported_modules(path.read_text())))
    }
    assert offenders == {}, f"brats_core is the ground floor; these modules import upward: {offenders}"


FIRST_PARTY: tuple[str, ...] = ("brats_core", *UPPER)


def _python_files() -> list[Path]:
    skip = {".venv", ".git", ".tmp", ".cache", "node_modules"}
    return [p for p in REPO_ROOT.rglob("*.py") if not skip & set(p.relative_to(REPO_ROOT).parts)]


def test_every_imported_project_module_exists() -> None:
    """An import of a moved or removed module fails here (an editable install elsewhere could hide it)."""
    missing = {}
    for path in _python_files():
        for module in imported_modules(path.read_text()):
            if module.split(".")[0] not in FIRST_PARTY:
                continue
            base = REPO_ROOT.joinpath(*module.split("."))
            if not (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
                missing.setdefault(str(path.relative_to(REPO_ROOT)), []).append(module)
    assert missing == {}


MAX_LINES = 400


def test_no_module_is_over_400_lines() -> None:
    """Modules stay small (tests are exempt: one test file per module under test)."""
    long = {
        name: lines
        for path in _python_files()
        if (name := path.relative_to(REPO_ROOT).as_posix()).split("/")[0] != "tests"
        and (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these modules by concern: {long}"
