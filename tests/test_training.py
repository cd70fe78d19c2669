"""Training of the U-Net / U-Net + SSPP on tiny synthetic caches: pieces, overfitting, resume, training state, CLI."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from brats_app.cli import main as brats_main
from brats_core.cache import build_cache, cache_path, open_cache
from brats_core.cases import find_cases
from brats_core.config import PreprocessConfig
from brats_core.dataset import SliceDataset
from brats_core.errors import BratsError, CheckpointError
from brats_core.split import save_split
from Deep_Learning_Model import predictor as predictor_module
from Deep_Learning_Model.export import load_export
from Deep_Learning_Model.train import main as train_main
from Deep_Learning_Model.training.config import PRESETS, TrainConfig, make_config
from Deep_Learning_Model.training.data import TrainingData
from Deep_Learning_Model.training.distributed import DistContext
from Deep_Learning_Model.training.loop import Trainer, train_step
from Deep_Learning_Model.training.losses import DiceCELoss
from Deep_Learning_Model.training.optim import lr_factor
from Deep_Learning_Model.training.precision import Precision, select_device
from Deep_Learning_Model.training.runlog import LOG_COLUMNS
from Deep_Learning_Model.training.sampler import SliceSampler
from Deep_Learning_Model.training.state import load_training_state, save_training_state

SIZE = 32
CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class Cached:
    cache: Path  # the cache folder of one preprocessing config (what --from-cache takes)
    split: Path
    data: Path


@pytest.fixture(scope="module")
def cached(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Cached:
    """Three synthetic cases cached at 32 px; split: two train cases, one val case."""
    root = tmp_path_factory.mktemp("training")
    cases = find_cases(synthetic_root)[:3]
    ids = [c.case_id for c in cases]
    build_cache(cases, PreprocessConfig(size=SIZE), cache_root=root / "cache", progress=False)
    split = {"seed": 0, "train": ids[:2], "val": ids[2:], "test": [], "folds": [ids[:2], ids[2:]]}
    split_path = save_split(split, root / "split.json")
    return Cached(cache=cache_path(PreprocessConfig(size=SIZE), root / "cache"), split=split_path, data=synthetic_root)


def tiny_args(cached: Cached, out: Path, *extra: str) -> list[str]:
    return [
        "--model", "unet", "--from-cache", str(cached.cache), "--split", str(cached.split), "--out", str(out),
        "--base-width", "4", "--batch-size", "4", "--max-steps-per-epoch", "3", "--workers", "0",
        "--device", "cpu", *extra,
    ]


# ------------------------------------------------------------------------------------------------ config
def test_presets_and_json_round_trip():
    original = make_config("original", model="sspp")
    assert (original.batch_size, original.lr, original.epochs) == (16, 1e-5, 20)
    assert original.schedule == "constant" and original.oversample is None and original.augment is None
    for name in PRESETS:
        cfg = make_config(name, model="unet")
        data = json.loads(json.dumps(cfg.to_dict()))
        assert TrainConfig.from_dict(data) == cfg
    assert cfg.model_config().channels == 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"oversample": 1.5}, "oversample"),
        ({"model": "vit"}, "model"),
        ({"device": "tpu"}, "device"),
        ({"ce_weight": 0.0, "dice_weight": 0.0}, "ce_weight"),
        ({"learning_rate": 1.0}, "unknown"),
        ({"model": "sspp", "size": 32}, "SSPP windows"),
        ({"snapshot_every": -1}, "snapshot_every must be >= 1"),
    ],
)
def test_invalid_config_raises(overrides, message):
    with pytest.raises(BratsError, match=message):
        make_config("default", **overrides)


def test_unknown_fields_in_saved_configs_raise():
    data = make_config("default").to_dict()
    with pytest.raises(BratsError, match=r"unknown training config fields \['lr_max'\]"):
        TrainConfig.from_dict({**data, "lr_max": 1.0})
    with pytest.raises(BratsError, match=r"unknown augmentation config fields \['mirror'\]"):
        TrainConfig.from_dict({**data, "augment": {**data["augment"], "mirror": True}})


def test_unknown_preset_raises():
    with pytest.raises(BratsError, match="unknown preset"):
        make_config("fastest")


# ------------------------------------------------------------------------------------------------ sampler
def test_sampler_oversamples_tumour_but_keeps_empty_slices():
    has_tumour = np.zeros(1000, dtype=bool)
    has_tumour[:100] = True  # 10% tumour slices
    indices = np.fromiter(SliceSampler(has_tumour, 4000, oversample=0.5, seed=1), dtype=int)
    fraction = has_tumour[indices].mean()
    assert 0.50 < fraction < 0.60  # 0.5 + 0.5 * 0.1 expected
    assert (~has_tumour[indices]).sum() > 1000


def test_sampler_shards_are_disjoint_parts_of_one_draw():
    has_tumour = np.arange(50) % 3 == 0
    single = SliceSampler(has_tumour, 40, oversample=0.5, seed=3, world_size=1)
    ranks = [SliceSampler(has_tumour, 20, oversample=0.5, seed=3, rank=r, world_size=2) for r in range(2)]
    for sampler in (single, *ranks):
        sampler.set_epoch(5)
    shards = [list(r) for r in ranks]
    assert len(shards[0]) == len(shards[1]) == 20
    interleaved = [index for pair in zip(*shards, strict=True) for index in pair]
    assert interleaved == list(single)  # positions r, r + 2, ... of the one global draw
    single.set_epoch(6)
    assert list(single) != interleaved  # a new draw each epoch


def test_sampler_without_oversampling_is_a_permutation():
    sampler = SliceSampler(np.zeros(10, dtype=bool), 10, oversample=None, seed=0)
    assert sorted(sampler) == list(range(10))


# ------------------------------------------------------------------------------------------------ loss and schedule
def test_loss_is_small_for_a_perfect_prediction_and_dice_is_over_regions():
    target = torch.zeros(2, 16, 16, dtype=torch.int64)
    target[:, 4:12, 4:12] = 2
    target[:, 6:10, 6:10] = 3
    perfect = 20.0 * nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float()
    loss = DiceCELoss()
    assert loss(perfect, target).item() < 1e-3
    wrong = perfect.roll(shifts=1, dims=1)
    assert loss(wrong, target).item() > 1.0
    regions = DiceCELoss().soft_dice(perfect, target)
    assert regions.shape == (3,) and torch.allclose(regions, torch.ones(3), atol=1e-4)
    # predicting edema where the reference says ET is right for WT, wrong for TC and ET
    edema = 20.0 * nn.functional.one_hot(torch.where(target == 3, 2, target), 4).permute(0, 3, 1, 2).float()
    wt, tc, et = DiceCELoss().soft_dice(edema, target).tolist()
    assert wt > 0.99 and tc < 0.01 and et < 0.01
    classes = DiceCELoss(dice_over="classes").soft_dice(edema, target)
    assert classes.shape == (3,) and classes[2] < 0.01  # ET missed
    assert classes[1].item() == pytest.approx(2 * 48 / (48 + 64), abs=1e-3)  # ED: 48 px true, 64 predicted


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    factors = [lr_factor(s, warmup_steps=4, total_steps=20, min_ratio=0.1, cosine=True) for s in range(25)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))
    assert math.isclose(factors[20], 0.1) and math.isclose(factors[24], 0.1)
    assert lr_factor(10, warmup_steps=0, total_steps=20, min_ratio=0.1, cosine=False) == 1.0


# ------------------------------------------------------------------------------------------------ precision
def test_gradient_clipping_acts_on_unscaled_fp16_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    images, targets = torch.randn(2, 4, 16, 16), torch.randint(0, 4, (2, 16, 16))
    norms = {}
    for name, dtype in (("fp32", None), ("fp16", torch.float16)):
        model = copy.deepcopy(net)
        precision = Precision(CPU, dtype, channels_last=False)
        scaler = precision.grad_scaler()
        assert scaler.is_enabled() == (name == "fp16")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        _, norm = train_step(model, images, targets, optimizer, scaler, DiceCELoss(), precision, grad_clip=1e-3)
        norms[name] = norm.item()
        clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
        assert clipped.item() <= 1e-3 * 1.01  # the stored gradients are unscaled and clipped
    assert math.isfinite(norms["fp16"])
    assert norms["fp16"] == pytest.approx(norms["fp32"], rel=0.05)  # not 65536 times larger


def test_cuda_requested_without_cuda_raises(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BratsError, match="device 'cuda' asked for, but torch finds no CUDA GPU"):
        select_device("cuda")
    assert select_device("auto") == CPU


# ------------------------------------------------------------------------------------------------ trainer
def _trainer(cached: Cached, tmp_path: Path, case_ids: list[str], val_ids: list[str], **overrides) -> Trainer:
    settings = {"model": "unet", "size": SIZE, "base_width": 8, "batch_size": 8, "workers": 0, "device": "cpu"}
    cfg = make_config("default", **{**settings, "out": str(tmp_path / "run"), **overrides})
    train = open_cache(cached.cache, case_ids)
    data = TrainingData(
        train=SliceDataset(train, slices="brain"), val=open_cache(cached.cache, val_ids),
        preprocess=train[0].config, split_path=cached.split,
    )
    return Trainer(cfg, data, DistContext(), CPU)


def test_overfits_one_synthetic_case(cached, tmp_path):
    """On one case (validated on itself), the loss falls and the 3D Dice rises within 36 steps."""
    trainer = _trainer(
        cached, tmp_path, ["synth_000"], ["synth_000"], epochs=6, batch_size=4, lr=1e-2, warmup_epochs=0.5,
        augment=None,
    )
    assert trainer.steps_per_epoch == len(trainer.data.train) // 4 == 6  # an epoch is one pass here
    trainer.fit()
    history = trainer.history
    assert len(history) == 6 and trainer.global_step == 36
    assert history[-1]["train_loss"] < 0.75 * history[0]["train_loss"]
    assert history[-1]["val_mean_dice"] > history[0]["val_mean_dice"] + 0.3
    assert history[-1]["val_WT_dice"] > 0.8
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"last.pt", "best.pt", "log.csv"}


def test_cuda_out_of_memory_becomes_a_clear_error(cached, tmp_path):
    trainer = _trainer(cached, tmp_path, ["synth_000"], [], epochs=1, max_steps_per_epoch=1)

    def out_of_memory(logits, target):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    trainer.loss_fn = out_of_memory
    with pytest.raises(BratsError, match="out of memory.*smaller --batch-size") as info:
        trainer.train_epoch(0)
    assert "--amp" not in str(info.value)  # already on: only an fp32 run is told to turn it on
    trainer = _trainer(cached, tmp_path, ["synth_000"], [], epochs=1, max_steps_per_epoch=1, amp=False)
    trainer.loss_fn = out_of_memory
    with pytest.raises(BratsError, match="smaller --batch-size.*or --amp"):
        trainer.train_epoch(0)


def test_validation_follows_the_amp_setting(cached, tmp_path, monkeypatch):
    trainer = _trainer(cached, tmp_path, ["synth_000"], ["synth_001"], amp=False)
    monkeypatch.setattr(predictor_module, "autocast", lambda device: pytest.fail("autocast in an fp32 run"))
    assert 0.0 <= trainer._validate()["mean_dice"] <= 1.0


def test_training_state_round_trip(cached, tmp_path):
    first = _trainer(cached, tmp_path, ["synth_000"], [], epochs=1, max_steps_per_epoch=2)
    first.fit()
    path = save_training_state(tmp_path / "copy.pt", first.state_dict())
    state = load_training_state(path)  # weights_only: plain data and tensors
    second = _trainer(cached, tmp_path, ["synth_000"], [], epochs=1, max_steps_per_epoch=2)
    second.load_state_dict(state)
    for a, b in zip(first.state_dict()["model"].values(), second.state_dict()["model"].values(), strict=True):
        assert torch.equal(a, b)
    assert second.optimizer.state_dict()["state"].keys() == first.optimizer.state_dict()["state"].keys()
    assert second.scheduler.state_dict() == first.scheduler.state_dict()
    assert (second.epoch, second.global_step, second.history) == (first.epoch, first.global_step, first.history)
    assert TrainConfig.from_dict(state["config"]) == first.cfg
    # a bf16/fp32 run saves a disabled scaler ({}); continuing it under fp16 starts a fresh GradScaler
    assert state["scaler"] == {}
    second.scaler = Precision(CPU, torch.float16, channels_last=False).grad_scaler()
    second.load_state_dict(state)
    assert second.scaler.is_enabled()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "not found"), (b"not a checkpoint", "not a readable"), ({"format": "other"}, "not a training")],
)
def test_bad_training_state_raises(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_training_state(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------------------------ CLI runs
def _same_state(a: dict, b: dict) -> None:
    for key in ("model",):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), name
    state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert state_a.keys() == state_b.keys()
    for index in state_a:
        for name, value in state_a[index].items():
            assert torch.equal(value, state_b[index][name]), (index, name)
    assert a["scheduler"] == b["scheduler"] and a["scaler"] == b["scaler"]
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])


def test_resume_continues_exactly(cached, tmp_path):
    """Two epochs in one go == one epoch, stop, --resume, one more (weights, optimiser, log, validation)."""
    full, part = tmp_path / "full", tmp_path / "part"
    assert brats_main(["train", "unet", *tiny_args(cached, full, "--epochs", "2")[2:]]) == 0
    assert train_main(tiny_args(cached, part, "--epochs", "2", "--stop-after", "1")) == 0
    stopped = load_training_state(part / "last.pt")
    assert stopped["epoch"] == 1
    assert train_main(["--resume", str(part / "last.pt")]) == 0
    a, b = load_training_state(full / "last.pt"), load_training_state(part / "last.pt")
    _same_state(a, b)
    assert not all(torch.equal(stopped["model"][k], b["model"][k]) for k in b["model"])  # it trained on

    def untimed(metrics: dict) -> list[dict]:
        return [{k: v for k, v in row.items() if "seconds" not in k and k != "slices_per_s"} for row in
                metrics["history"]]

    assert untimed(a["metrics"]) == untimed(b["metrics"]) and a["metrics"]["best"] == b["metrics"]["best"]
    assert (full / "log.csv").read_text().splitlines()[0].split(",") == list(LOG_COLUMNS)
    rows_a = [line.split(",")[:5] + line.split(",")[7:14] for line in (full / "log.csv").read_text().splitlines()]
    rows_b = [line.split(",")[:5] + line.split(",")[7:14] for line in (part / "log.csv").read_text().splitlines()]
    assert rows_a == rows_b and len(rows_a) == 3  # header + 2 epochs; timing columns left out

    summary = json.loads((full / "train_summary.json").read_text())
    assert summary["epochs_trained"] == 2 and summary["best_epoch"] in (1, 2)
    assert summary["val_cases"] == ["synth_002"]
    config = json.loads((full / "config.json").read_text())
    assert config["base_width"] == 4 and config["size"] == SIZE  # the cache's size was adopted
    model, model_config, preprocess, meta = load_export(full / "export.pt")
    assert model_config.base_width == 4 and preprocess.size == SIZE
    assert meta["info"]["best_epoch"] == summary["best_epoch"]
    assert meta["info"]["train_cases"] == summary["train_cases"] and meta["info"]["train_seconds"] > 0
    best = load_training_state(full / "best.pt")["model"]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, best[name].to(tensor.dtype), atol=1e-2, rtol=1e-2)  # fp16 export


def test_resume_refuses_changed_hyperparameters(cached, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(tiny_args(cached, out, "--epochs", "1", "--max-steps-per-epoch", "1")) == 0
    assert train_main(["--resume", str(out / "last.pt"), "--lr", "0.5"]) == 1
    assert "cannot change lr" in capsys.readouterr().err
    assert train_main(["--resume", str(out / "last.pt"), "--preset", "original"]) == 1
    assert "--preset cannot be combined with --resume" in capsys.readouterr().err
    assert train_main(tiny_args(cached, out, "--epochs", "1")) == 1  # the folder already holds a run
    assert "already holds a run" in capsys.readouterr().err


def test_trains_from_nifti_through_the_cache(cached, tmp_path):
    args = tiny_args(cached, tmp_path / "run", "--epochs", "1", "--max-steps-per-epoch", "1", "--size", "128")
    args[args.index("--from-cache") : args.index("--from-cache") + 2] = ["--data", str(cached.data)]
    args += ["--cache-dir", str(tmp_path / "cache"), "--model", "sspp"]
    assert train_main(args) == 0
    assert (tmp_path / "run" / "export.pt").is_file()
    assert load_training_state(tmp_path / "run" / "last.pt")["model_config"]["arch"] == "sspp"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a, c, t: [x for x in a if x not in ("--from-cache", str(c.cache))], "no training data"),
        (lambda a, c, t: a[2:], "--model unet|sspp is required"),
        (lambda a, c, t: [str(t / "nowhere") if x == str(c.cache) else x for x in a], "no slice cache"),
        (lambda a, c, t: a + ["--size", "64"], "cached slices are 32px"),
        (lambda a, c, t: [str(c.cache.parent) if x == str(c.cache) else x for x in a], "this is a cache root"),
        (lambda a, c, t: [str(t / "split.json") if x == str(c.split) else x for x in a], "split"),
    ],
    ids=["no-data", "no-model", "missing-cache", "size-mismatch", "cache-root", "missing-split"],
)
def test_bad_command_lines_fail_with_a_message(cached, tmp_path, capsys, change, message):
    args = change(tiny_args(cached, tmp_path / "run", "--epochs", "1"), cached, tmp_path)
    assert train_main(args) == 1
    assert message in capsys.readouterr().err


def test_an_export_path_under_a_file_fails_before_training(cached, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    args = tiny_args(cached, tmp_path / "run", "--epochs", "1") + ["--export", str(tmp_path / "afile" / "e.pt")]
    assert train_main(args) == 1
    assert f"--export {tmp_path / 'afile' / 'e.pt'}: {tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_split_case_missing_from_cache_fails(cached, tmp_path, capsys):
    split = json.loads(cached.split.read_text())
    split["val"], split["folds"][1] = ["synth_009"], ["synth_009"]
    other = save_split(split, tmp_path / "split.json")
    args = tiny_args(cached, tmp_path / "run", "--epochs", "1")
    args[args.index("--split") + 1] = str(other)
    assert train_main(args) == 1
    assert "synth_009" in capsys.readouterr().err
