"""What a new user meets first on the command line: complete plain-text --help, `brats train <family>` that fixes
its model, an unknown family named with the list of models, a missing --checkpoint reported before any input
is read, and `brats evaluate` on a folder that holds predictions for only some cases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from brats_app.cli import COMMANDS
from brats_app.cli import main as brats
from brats_app.registry import REGISTRY, families
from brats_core.cases import find_cases
from brats_core.helptext import description, plain
from Deep_Learning_Model.train import build_parser

HELPS = [[name] for name in COMMANDS if name != "train"] + [["train", family] for family in families()]


def _help(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        brats([*argv, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", HELPS, ids=" ".join)
def test_every_help_is_plain_text_and_its_description_a_whole_sentence(argv, capsys):
    text = _help(capsys, argv)
    assert "``" not in text and not any(role in text for role in (":mod:", ":func:", ":class:", ":data:"))
    paragraphs = text.split("\n\n")
    assert paragraphs[0].startswith(f"usage: brats {' '.join(argv)}")
    assert paragraphs[1].rstrip().endswith("."), paragraphs[1]  # the description, not cut mid-sentence


def test_brats_train_ml_help_gives_the_whole_first_paragraph(capsys):
    text = " ".join(_help(capsys, ["train", "ml"]).split())
    assert "save the checkpoints and score them on its test cases with the shared harness." in text


def test_plain_and_description():
    assert plain("see :mod:`brats_core.cases` and :func:`~brats_core.cases.load_case`, ``brats x``") == (
        "see brats_core.cases and load_case, brats x"
    )
    assert description("\nFirst line\n  goes on.\n\nSecond paragraph.\n") == "First line goes on."


@pytest.mark.parametrize("model", ["unet", "sspp"])
def test_brats_train_deep_fixes_its_model(model, capsys):
    text = _help(capsys, ["train", model])
    assert text.startswith(f"usage: brats train {model} ") and "--model" not in text
    assert build_parser(model).parse_args([]).model == model
    with pytest.raises(SystemExit):  # the network is fixed: no --model to change it
        build_parser(model).parse_args(["--model", "unet"])
    assert "unrecognized arguments: --model" in capsys.readouterr().err
    assert "--model" in build_parser().format_help()  # Deep_Learning_Model/train.py itself still takes it


def test_brats_train_names_an_unknown_family_and_lists_the_models(capsys):
    assert brats(["train", "foo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("brats train: unknown model family 'foo'; choose one of naive, ml, unet, sspp")
    assert all(name in err for name in REGISTRY)
    assert brats(["train", "ridge"]) == 2
    assert "'ridge' is trained by `brats train ml --model ridge`" in capsys.readouterr().err
    assert brats(["train"]) == 2 and "families:" in capsys.readouterr().err
    assert brats(["train", "--help"]) == 0 and "ml       trains ridge, tree, knn, ensemble" in capsys.readouterr().out


def test_predict_checks_the_checkpoint_before_reading_any_input(tmp_path, capsys):
    broken = tmp_path / "cases.zip"
    broken.write_bytes(b"not a zip at all")  # reading the input would fail differently, and later
    (tmp_path / "folder").mkdir()  # a folder is a checkpoint only for the fusion: the sspp loader refuses it
    for checkpoint, message in ((tmp_path / "missing.pt", "checkpoint not found (--checkpoint)"),
                                (tmp_path / "folder", "model export not found")):
        assert brats(["predict", "--model", "sspp", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                      str(broken)]) == 1
        assert f"{checkpoint}: {message}" in capsys.readouterr().err
    assert brats(["predict", "--model", "nope", "--out", str(tmp_path / "o"), str(broken)]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.fixture()
def half_predicted(synthetic_root: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A prediction folder holding (perfect) predictions for the first two synthetic cases only."""
    cases = find_cases(synthetic_root)
    pred = tmp_path / "pred"
    pred.mkdir()
    for files in cases[:2]:
        shutil.copy(files.seg, pred / f"{files.case_id}.nii.gz")
    return pred, [files.case_id for files in cases]


def test_evaluate_is_strict_by_default_and_names_the_option(half_predicted, synthetic_root, tmp_path, capsys):
    pred, ids = half_predicted
    assert brats(["evaluate", "--pred", str(pred), "--ref", str(synthetic_root), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert f"missing prediction for 2 of the 4 reference cases ({ids[2]}, {ids[3]})" in err
    assert f"expected {pred / ids[2]}.nii.gz, and one <case_id>.nii.gz for each of the others" in err
    assert "To score only the 2 predicted case(s), add --only-predicted" in err
    assert not (tmp_path / "r").exists()


def test_evaluate_only_predicted_scores_them_and_lists_the_rest(half_predicted, synthetic_root, tmp_path, capsys):
    pred, ids = half_predicted
    out = tmp_path / "r"
    argv = ["evaluate", "--pred", str(pred), "--ref", str(synthetic_root), "--out", str(out), "--only-predicted"]
    assert brats(argv) == 0
    captured = capsys.readouterr()
    assert f"scored 2 of 4 reference cases; no prediction for: {ids[2]}, {ids[3]}" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 2 and summary["n_references"] == 4
    assert summary["missing_predictions"] == ids[2:] and summary["WT"]["dice"]["mean"] == 1.0
    assert f"Not scored, no prediction (2 of 4 references): {ids[2]}, {ids[3]}." in captured.out
    assert (out / "per_case.csv").read_text().count("\n") == 3  # header + the two scored cases


def test_evaluate_only_predicted_with_no_prediction_at_all(synthetic_root, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = ["evaluate", "--pred", str(tmp_path / "empty"), "--ref", str(synthetic_root), "--out", str(tmp_path / "r")]
    assert brats([*argv, "--only-predicted"]) == 1
    assert "none of the reference cases has a prediction" in capsys.readouterr().err
