"""The fusion as a registry model: its manifest (``brats train fusion --cv OUT``), loading, checks and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support import write_fusion_cv

from brats_app.cli import main as brats
from brats_app.registry import load_segmenter
from brats_core.config import REPO_ROOT
from brats_core.errors import CheckpointError
from brats_core.postprocess import PostprocessConfig
from brats_core.provenance import cv_record
from brats_core.synth import make_synthetic_case
from Deep_Learning_Model.export import read_export, write_random_export
from Deep_Learning_Model.fusion import FusionSegmenter
from Deep_Learning_Model.model import ModelConfig
from Deep_Learning_Model.predictor import Predictor
from Deep_Learning_Model.serialization import save_atomic

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"base_width": 4, "input_size": 64, "sspp_windows": (1, 2, 4), "sspp_dim": 8, "sspp_heads": 2}


@pytest.fixture()
def members(tmp_path: Path) -> Path:
    folder = tmp_path / "checkpoints"
    write_random_export(folder / "unet.pt", ModelConfig(arch="unet", **TINY), seed=1)
    write_random_export(folder / "sspp.pt", ModelConfig(arch="sspp", head="regions", **TINY), seed=2)
    return folder


def _train(members: Path, cv_out: Path, *extra: str) -> int:
    return brats(["train", "fusion", "--cv", str(cv_out), "--members", str(members / "unet.pt"),
                  str(members / "sspp.pt"), *extra])


def test_brats_train_fusion_writes_a_manifest_the_registry_loads(members: Path, tmp_path: Path) -> None:
    cv_out = write_fusion_cv(tmp_path / "cv")
    assert _train(members, cv_out) == 0
    manifest = json.loads((members / "fusion.json").read_text())
    assert [(m["model"], m["file"]) for m in manifest["members"]] == [("unet", "unet.pt"), ("sspp", "sspp.pt")]
    tuning = json.loads((cv_out / "fusion" / "cv" / "postprocess.json").read_text())
    assert tuning["chosen"]["min_component_mm3"] > 0  # the blob: the tuned setting is not the identity
    assert manifest["postprocess"] == PostprocessConfig.from_dict(tuning["chosen"]).to_dict()

    fused = load_segmenter("fusion", members / "fusion.json", device="cpu")
    assert isinstance(fused, FusionSegmenter) and fused.weights == [0.5, 0.5]
    assert fused.postprocess == PostprocessConfig.from_dict(tuning["chosen"])
    scores = fused.provenance.cv_scores
    assert scores["cv_n_cases"] == 27 and scores["cv_TC_dice_mean"] == pytest.approx(0.81)  # post-processed
    assert manifest["info"]["cv"]["scores_without_postprocess"]["TC"]["dice"]["mean"] == pytest.approx(0.8)
    assert fused.provenance.created == manifest["info"]["created"]
    # the same fusion by hand, with the tuned post-processing: the same labels
    by_hand = FusionSegmenter([Predictor.from_export(members / f"{m}.pt", device="cpu") for m in ("unet", "sspp")],
                              postprocess=fused.postprocess)
    case = make_synthetic_case("synth", shape=(40, 40, 24), seed=4)
    np.testing.assert_array_equal(fused.predict(case), by_hand.predict(case))
    # the folder that holds the manifest loads it; moved together, the members are found again
    assert load_segmenter("fusion", members, device="cpu").postprocess == fused.postprocess
    moved = shutil.copytree(members, tmp_path / "elsewhere")
    assert load_segmenter("fusion", moved / "fusion.json", device="cpu").predictors[1].meta["path"] == str(
        moved / "sspp.pt")


def test_test_time_flips_share_the_networks(members: Path) -> None:
    fused = load_segmenter("fusion", members, device="cpu")
    assert not fused.tta and fused.with_tta(False) is fused
    flipped = fused.with_tta(True)
    assert flipped.tta and not fused.tta
    assert all(a.model is b.model for a, b in zip(flipped.predictors, fused.predictors, strict=True))
    assert flipped.postprocess == fused.postprocess


def test_members_already_loaded_are_shared_when_they_match(members: Path) -> None:
    sspp = Predictor.from_export(members / "sspp.pt", device="cpu")
    loaded = {str((members / "sspp.pt").resolve()): sspp}
    fused = load_segmenter("fusion", members, device="cpu", loaded=loaded)
    assert fused.predictors[1] is sspp and fused.predictors[0].model_config.arch == "unet"
    flipped = load_segmenter("fusion", members, device="cpu", tta=True, loaded=loaded)  # other flips: its own
    assert flipped.predictors[1] is not sspp and flipped.predictors[1].tta


def test_a_member_that_changed_is_refused(members: Path, tmp_path: Path) -> None:
    assert _train(members, write_fusion_cv(tmp_path / "cv")) == 0
    write_random_export(members / "sspp.pt", ModelConfig(arch="sspp", head="regions", **TINY), seed=3)
    with pytest.raises(CheckpointError, match=r"fusion\.json: member export .*sspp\.pt is not the one its CV scored"):
        load_segmenter("fusion", members / "fusion.json", device="cpu")
    (members / "unet.pt").unlink()
    with pytest.raises(CheckpointError, match=r"fusion\.json: member export unet\.pt not found"):
        load_segmenter("fusion", members / "fusion.json", device="cpu")


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", r"not a readable fusion manifest \(JSONDecodeError"),
    (json.dumps({"format": "brats-seg-export", "version": 1}), "not a fusion manifest"),
    (json.dumps({"format": "brats-fusion", "version": 7}), "fusion manifest version 7, this code reads 1"),
    (json.dumps({"format": "brats-fusion", "version": 1, "weights": [1, 1]}), r"invalid fusion manifest \(KeyError"),
    (json.dumps({"format": "brats-fusion", "version": 1, "members": [], "weights": [],
                 "postprocess": {"min_component_mm3": -5}}), "invalid fusion manifest"),
])
def test_bad_manifests_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "fusion.json"
    path.write_text(content)
    with pytest.raises(CheckpointError, match=rf"fusion\.json: {message}"):
        load_segmenter("fusion", path, device="cpu")


def test_writing_a_manifest_needs_a_fusion_cv_of_the_same_cases(members: Path, tmp_path: Path, capsys) -> None:
    assert _train(members, tmp_path / "nothing") == 1
    err = capsys.readouterr().err
    assert "nothing/fusion/cv/summary.json: no fusion CV there" in err and "--model fusion" in err
    cv_out = write_fusion_cv(tmp_path / "cv")
    assert _train(members, cv_out, "--weights", "1") == 1
    assert "one non-negative number per member" in capsys.readouterr().err
    assert brats(["train", "fusion", "--cv", str(cv_out), "--members", str(members / "unet.pt")]) == 1
    assert "at least two member exports, got 1" in capsys.readouterr().err
    payload = read_export(members / "unet.pt")
    payload["info"]["cv"] = {"cases": 20}
    save_atomic(payload, members / "unet.pt")
    assert _train(members, cv_out) == 1
    assert "unet.pt: its CV covers 20 cases, the fusion's CV" in capsys.readouterr().err
    (cv_out / "fusion" / "cv" / "postprocess.json").write_text("{}")
    assert _train(members, cv_out) == 1
    assert "not a fusion CV of Deep_Learning_Model.cv (KeyError" in capsys.readouterr().err
    assert not (members / "fusion.json").exists()


def test_the_shipped_manifest_records_the_committed_fusion_cv() -> None:
    """``Deep_Learning_Model/checkpoints/fusion.json`` = ``brats train fusion --cv results/cv27_cpu``."""
    manifest = json.loads((REPO_ROOT / "Deep_Learning_Model" / "checkpoints" / "fusion.json").read_text())
    cv = REPO_ROOT / "results" / "cv27_cpu" / "fusion" / "cv"
    served = json.loads((cv / "postprocessed" / "summary.json").read_text())
    tuning = json.loads((cv / "postprocess.json").read_text())
    assert manifest["postprocess"] == PostprocessConfig.from_dict(tuning["chosen"]).to_dict()
    assert manifest["info"]["cv"] == cv_record(cv) and manifest["info"]["cv"]["cases"] == 27
    assert manifest["info"]["cv"]["scores"]["WT"]["dice"] == served["WT"]["dice"]  # as served: post-processed
    fused = load_segmenter("fusion", device="cpu")  # the checksums match the shipped unet.pt and sspp.pt
    assert [p.model_config.arch for p in fused.predictors] == ["unet", "sspp"]
