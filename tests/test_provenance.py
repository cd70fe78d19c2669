"""One provenance record on every model family, read from its checkpoint (shipped ones included)."""

from __future__ import annotations

import pytest

from brats_app.registry import REGISTRY, load_segmenter
from brats_core.provenance import Provenance
from brats_core.synth import make_synthetic_case
from Naive_Model.naive_mean_model import NaiveMeanSegmenter


def test_to_dict_and_back() -> None:
    record = Provenance(("a", "b"), ("c",), {"WT": 0.5}, 12.5, "1x GPU", "2026-01-02")
    assert Provenance.from_dict(record.to_dict()) == record
    assert record.seen_cases == ("a", "b", "c")
    assert Provenance.from_dict({}) == Provenance()


@pytest.mark.parametrize("name", list(REGISTRY))
def test_shipped_checkpoints_translate_their_records(name: str) -> None:
    """The shipped checkpoints predate the record: their own fields are mapped to it, nothing is rewritten."""
    record = load_segmenter(name, device="cpu").provenance
    assert isinstance(record, Provenance)
    assert len(record.train_cases) == 12 and all(case.startswith("Brats18_") for case in record.train_cases)
    assert not set(record.train_cases) & set(record.val_cases)
    assert record.train_seconds is not None and record.train_seconds > 0
    assert record.cv_scores and all(0.0 <= score <= 1.0 for score in record.cv_scores.values())
    if REGISTRY[name].family in ("unet", "sspp"):
        assert len(record.val_cases) == 3 and "H200" in record.hardware


def test_a_new_checkpoint_records_where_and_when(tmp_path) -> None:
    cases = [make_synthetic_case(f"c{i}", shape=(24, 24, 12), seed=i) for i in range(3)]
    path = NaiveMeanSegmenter.fit(cases).save(tmp_path / "naive.npz")
    record = load_segmenter("naive", path).provenance
    assert record.train_cases == ("c0", "c1", "c2") and record.val_cases == ()
    assert record.hardware and "CPUs" in record.hardware and record.created
    assert record.train_seconds > 0 and set(record.cv_scores) == {"WT", "TC", "ET"}
