"""The one model registry: every entry resolves, ships its checkpoint, and is the only list of model names."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest

from brats_app.cli import main as brats
from brats_app.registry import (
    REGISTRY,
    families,
    load_segmenter,
    models_of,
    pickle_free_models,
    resolve,
    spec,
)
from brats_core.config import REPO_ROOT
from brats_core.errors import BratsError, CheckpointError

#: Where a model may be spelled out next to another: the registry, and the packages that implement them.
IMPLEMENTATIONS = ("brats_app/registry.py", "Naive_Model/", "Machine_Learning_Model/", "Deep_Learning_Model/")


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_entry_resolves_and_ships_its_checkpoint(name: str) -> None:
    entry = spec(name)
    assert entry.name == name and entry.display
    for target in (entry.loader, entry.trainer, entry.fit):
        assert callable(resolve(target)), target
    assert entry.default_checkpoint.is_file() and entry.default_checkpoint.is_relative_to(REPO_ROOT)
    assert entry.pickle_free == (entry.default_checkpoint.suffix != ".joblib")


def test_families_and_lists_come_from_the_entries() -> None:
    assert list(families()) == ["naive", "ml", "unet", "sspp", "fusion"]
    assert [s.name for s in families()["ml"]] == ["ridge", "tree", "knn", "ensemble"]
    assert pickle_free_models() == ("naive", "unet", "sspp", "fusion")
    assert models_of("Deep_Learning_Model") == ("unet", "sspp", "fusion")
    assert models_of("Deep_Learning_Model", composites=False) == ("unet", "sspp")


def test_a_composite_model_comes_after_its_members() -> None:
    from Deep_Learning_Model.fusion import FUSED

    order = list(REGISTRY)
    assert spec("fusion").members == FUSED
    for entry in REGISTRY.values():
        assert all(order.index(m) < order.index(entry.name) for m in entry.members), entry.name


def test_unknown_model_and_missing_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    with pytest.raises(BratsError, match="unknown model 'nope'; choose one of naive, ridge"):
        load_segmenter("nope")
    monkeypatch.setitem(REGISTRY, "naive", replace(REGISTRY["naive"], default_checkpoint=tmp_path / "x.npz"))
    with pytest.raises(CheckpointError, match=r"x\.npz: no shipped naive checkpoint; train one with `brats train naive`"):
        load_segmenter("naive")
    assert brats(["train", "nope"]) == 2
    assert "unknown model family 'nope'; choose one of naive, ml, unet, sspp, fusion" in capsys.readouterr().err


def _literals_naming_models(tree: ast.AST) -> list[tuple[int, list[str]]]:
    """(line, names) of each tuple/list/set literal or dict that spells out two or more registered models."""
    found = []
    for node in ast.walk(tree):
        items = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
        if not isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)) or items is None:
            continue
        names = [i.value for i in items if isinstance(i, ast.Constant) and i.value in REGISTRY]
        if len(names) >= 2:
            found.append((node.lineno, names))
    return found


def test_model_names_are_spelled_out_in_one_place() -> None:
    """CLI, compare, API, UI and benchmarks read the registry instead of listing models themselves."""
    skip = {".venv", ".git", ".tmp", ".cache", "tests"}
    offenders = {}
    for path in REPO_ROOT.rglob("*.py"):
        name = path.relative_to(REPO_ROOT).as_posix()
        if skip & set(path.relative_to(REPO_ROOT).parts) or name.startswith(IMPLEMENTATIONS):
            continue
        if found := _literals_naming_models(ast.parse(path.read_text())):
            offenders[name] = found
    assert offenders == {}
    assert _literals_naming_models(ast.parse("MODELS = ('naive', 'unet')\nX = {'sspp': 1, 'knn': 2}")) == [
        (1, ["naive", "unet"]), (2, ["sspp", "knn"])]
