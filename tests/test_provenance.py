"""One provenance record on every model family, read from its checkpoint (shipped ones included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from brats_app.registry import REGISTRY, load_segmenter
from brats_core.provenance import Provenance
from brats_core.synth import make_synthetic_case
from Naive_Model.naive_mean_model import NaiveMeanSegmenter


def test_seen_cases_are_the_training_and_validation_cases() -> None:
    record = Provenance(("a", "b"), ("c",), {"val_mean_dice": 0.5}, 12.5, "1x GPU", "2026-01-02")
    assert record.seen_cases == ("a", "b", "c")
    assert Provenance().seen_cases == ()


@pytest.mark.parametrize("name", list(REGISTRY))
def test_shipped_checkpoints_carry_their_record(name: str) -> None:
    """A final model (every naive and classical checkpoint, and a deep one from the cv27 CV) is trained on all 27
    shared cases and carries its CV's out-of-fold scores. A deep checkpoint of 2026-11-28 predates the record
    (12 training + 3 validation cases on an H200): its own fields are mapped."""
    record = load_segmenter(name, device="cpu").provenance
    assert isinstance(record, Provenance)
    assert not set(record.train_cases) & set(record.val_cases)
    assert record.train_seconds is not None and record.train_seconds > 0
    assert record.cv_scores
    if "cv_n_cases" not in record.cv_scores:
        assert REGISTRY[name].family in ("unet", "sspp")
        assert len(record.train_cases) == 12 and all(case.startswith("Brats18_") for case in record.train_cases)
        assert len(record.val_cases) == 3 and "H200" in record.hardware
        assert all(0.0 <= score <= 1.0 for score in record.cv_scores.values())
    else:
        assert len(record.train_cases) == 27 and not record.val_cases
        assert record.cv_scores["cv_n_cases"] == 27
        assert all(0.0 <= record.cv_scores[f"cv_{r}_dice_mean"] <= 1.0 for r in ("WT", "TC", "ET"))


def test_a_new_checkpoint_records_where_and_when(tmp_path) -> None:
    cases = [make_synthetic_case(f"c{i}", shape=(24, 24, 12), seed=i) for i in range(3)]
    path = NaiveMeanSegmenter.fit(cases).save(tmp_path / "naive.npz")
    record = load_segmenter("naive", path).provenance
    assert record.train_cases == ("c0", "c1", "c2") and record.val_cases == ()
    assert record.hardware and "CPUs" in record.hardware and record.created
    assert record.train_seconds > 0 and set(record.cv_scores) == {"loo_WT_dice", "loo_TC_dice", "loo_ET_dice"}


def test_cv_scores_read_a_pooled_summary_and_name_a_bad_one(tmp_path: Path) -> None:
    import json

    from brats_core.errors import BratsError
    from brats_core.provenance import cv_scores

    stats = {"mean": 0.5, "sd": 0.1, "median": 0.5}
    summary = {"n_cases": 27, **{r: {"dice": stats, "hd95": {**stats, "mean": 9.0}} for r in ("WT", "TC", "ET")}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    scores = cv_scores(tmp_path / "summary.json")
    assert scores["cv_TC_dice_mean"] == 0.5 and scores["cv_ET_hd95_mean"] == 9.0 and scores["cv_n_cases"] == 27
    with pytest.raises(BratsError, match=r"missing\.json: no cross-validation summary"):
        cv_scores(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"n_cases": 3, "WT": {}}))
    with pytest.raises(BratsError, match=r"bad\.json: not a cross-validation summary"):
        cv_scores(tmp_path / "bad.json")
