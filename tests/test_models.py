"""U-Net and U-Net + SSPP: shapes, sizes, the Swin pyramid's structure, and the inference export format."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.models.swin_transformer import SwinTransformerBlock

from brats_core.config import PreprocessConfig
from brats_core.errors import BratsError, CheckpointError
from Deep_Learning_Model.export import load_export, save_export
from Deep_Learning_Model.model import ModelConfig, build_model, count_parameters
from Deep_Learning_Model.model.sspp import CrossContextualAttention, SwinBranch, SwinSPP

pytestmark = pytest.mark.usefixtures("one_torch_thread")
#: A shipped export must stay below this (GitHub-friendly, and the issue's limit).
MAX_EXPORT_BYTES = 25 * 1024**2


def tiny(arch: str = "sspp", **overrides) -> ModelConfig:
    """A small fast config: base width 4; SSPP at 64 px uses windows (1, 2, 4) on its 4x4 bottleneck map."""
    defaults = {"base_width": 4, "input_size": 64, "sspp_windows": (1, 2, 4), "sspp_dim": 16, "sspp_heads": 2}
    return ModelConfig(arch=arch, **{**defaults, **overrides})


@pytest.mark.parametrize(
    ("config", "low", "high"),
    [
        (ModelConfig("unet", base_width=64), 30.5e6, 31.5e6),  # the original project's 64..1024 U-Net
        (ModelConfig("unet", base_width=32), 7.5e6, 8.0e6),  # shipped
        (ModelConfig("sspp", base_width=32), 8.5e6, 10.0e6),  # shipped: SSPP adds about 1.5M
    ],
)
def test_parameter_counts(config: ModelConfig, low: float, high: float) -> None:
    params = count_parameters(build_model(config))
    assert low < params < high
    if config.base_width == 32:
        assert 2 * params < MAX_EXPORT_BYTES  # fp16 export of a shipped model


@pytest.mark.parametrize(
    ("config", "size", "channels"),
    [
        (tiny("unet"), 32, 4),
        (tiny("unet", num_classes=2), 32, 4),  # binary whole tumour
        (tiny("unet", context=1), 48, 12),  # 4 modalities x 3 slices
        (tiny("unet"), 40, 4),  # not a multiple of 16: padded, then cropped back
        (tiny("sspp"), 64, 4),
        (tiny("sspp", context=2, num_classes=2), 64, 20),
    ],
)
def test_output_shapes(config: ModelConfig, size: int, channels: int) -> None:
    assert config.channels == channels
    model = build_model(config).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, config.num_classes, size, size)
    assert torch.isfinite(out).all()


def test_sspp_is_a_three_scale_swin_pyramid() -> None:
    config = ModelConfig("sspp", base_width=4, sspp_dim=16, sspp_heads=2)  # 128 px input: 8x8 bottleneck
    model = build_model(config)
    sspp = model.bottleneck
    assert isinstance(sspp, SwinSPP) and sspp.windows == (2, 4, 8)
    assert len(sspp.branches) == 3
    for branch, window in zip(sspp.branches, (2, 4, 8), strict=True):
        assert isinstance(branch, SwinBranch) and len(branch) == 2
        assert all(isinstance(block, SwinTransformerBlock) for block in branch)
        regular, shifted = branch
        assert regular.window_size == shifted.window_size == (window, window)
        assert regular.shift_size == (0, 0)
        # the second block is shifted by half a window, except for the global window (one window, nothing to shift)
        assert shifted.shift_size == ((0, 0) if window == 8 else (window // 2, window // 2))
        assert regular.attn.relative_position_bias_table.shape == ((2 * window - 1) ** 2, 2)
    with torch.no_grad():
        assert model(torch.randn(1, 4, 128, 128)).shape == (1, 4, 128, 128)


def test_cross_contextual_attention_shapes_and_residual() -> None:
    sspp = SwinSPP(channels=32, resolution=8, windows=(2, 4, 8), dim=16, heads=2).eval()
    x = torch.randn(3, 32, 8, 8)
    with torch.no_grad():
        z_all = sspp.pyramid(x)
        assert z_all.shape == (3, 64, 3 * 16)  # P tokens x M*C channels
        w_scale = sspp.attention.scale_weights(z_all)
        w_tokens = sspp.attention.token_weights(z_all * w_scale[:, None, :])
        assert w_scale.shape == (3, 48) and w_tokens.shape == (3, 64)
        assert ((w_scale > 0) & (w_scale < 1)).all() and ((w_tokens > 0) & (w_tokens < 1)).all()
        expected = z_all * w_scale[:, None, :] * w_tokens[:, :, None]
        torch.testing.assert_close(sspp.attention(z_all), expected)
        assert sspp(x).shape == x.shape
        torch.nn.init.zeros_(sspp.proj_out.weight)
        torch.nn.init.zeros_(sspp.proj_out.bias)
        torch.testing.assert_close(sspp(x), x)  # the pyramid is added to the bottleneck input


def test_token_attention_uses_scale_weighted_tokens() -> None:
    """Scale attention first (GAP over the tokens), then token attention on ``z'`` (mean over the channels)."""
    attention = CrossContextualAttention(channels=6, tokens=4, reduction=2)
    z_all = torch.randn(2, 4, 6)
    w_scale = torch.sigmoid(attention.scale(z_all.mean(dim=1)))
    z_scaled = z_all * w_scale[:, None, :]
    w_tokens = torch.sigmoid(attention.token(z_scaled.mean(dim=2)))
    torch.testing.assert_close(attention(z_all), z_scaled * w_tokens[:, :, None])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sspp_windows": (2, 3, 8)}, "do not divide the 8x8 bottleneck"),
        ({"sspp_windows": (2, 4)}, "at least 3 distinct"),
        ({"sspp_windows": (2, 2, 4)}, "at least 3 distinct"),
        ({"input_size": 120}, "not a positive multiple of 16"),
        ({"sspp_heads": 3}, "not divisible by sspp_heads"),
        ({"num_classes": 3}, "num_classes"),
        ({"arch": "resnet"}, "arch 'resnet'"),
        ({"context": -1}, "context >= 0"),
    ],
)
def test_invalid_configs_raise(overrides: dict, message: str) -> None:
    with pytest.raises(BratsError, match=message):
        ModelConfig(**overrides)


def test_config_round_trip() -> None:
    config = ModelConfig("sspp", context=1, num_classes=2, sspp_windows=[1, 2, 8])
    assert config.sspp_windows == (1, 2, 8)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(BratsError, match="unknown model config fields"):
        ModelConfig.from_dict({**config.to_dict(), "depth": 5})


# --- export -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, ModelConfig]:
    config = tiny("sspp", context=1)
    torch.manual_seed(0)
    model = build_model(config).eval()
    for module in model.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("export") / "sspp.pt"
    metrics = {"val_mean_dice": np.float64(0.75), "per_region": {"WT": np.float32(0.9)}}
    save_export(path, model, config, PreprocessConfig(size=64), metrics, {"epochs": 2, "data": Path("/data")})
    return path, model, config


def test_export_round_trip(export) -> None:
    path, model, config = export
    payload = torch.load(path, map_location="cpu", weights_only=True)  # plain data: no code is unpickled
    assert all(t.dtype == torch.float16 for t in payload["state_dict"].values() if t.is_floating_point())
    loaded, loaded_config, preprocess, meta = load_export(path)
    assert loaded_config == config and preprocess == PreprocessConfig(size=64)
    assert meta["metrics"] == {"val_mean_dice": 0.75, "per_region": {"WT": pytest.approx(0.9)}}
    assert meta["info"] == {"epochs": 2, "data": "/data"}
    assert not loaded.training
    for (name, original), restored in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        expected = original.half().float() if original.is_floating_point() else original
        torch.testing.assert_close(restored, expected, msg=name)
    x = torch.randn(2, config.channels, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=2e-2, rtol=2e-2)


def test_export_rejects_non_plain_metadata(tmp_path: Path) -> None:
    config = tiny("unet")
    with pytest.raises(BratsError, match=r"export field info\.run holds a object"):
        save_export(tmp_path / "x.pt", build_model(config), config, PreprocessConfig(), {}, {"run": object()})
    assert not list(tmp_path.iterdir())


def _rewrite(source: Path, target: Path, **changes) -> Path:
    payload = torch.load(source, map_location="cpu", weights_only=True)
    for key, value in changes.items():
        if value is None:
            del payload[key]
        else:
            payload[key] = value(payload[key]) if callable(value) else value
    torch.save(payload, target)
    return target


class _Code:
    """An arbitrary class: a pickle of it would run code on load."""


def test_export_errors_name_the_file(export, tmp_path: Path) -> None:
    path, _, config = export
    cases: list[tuple[Path, str]] = []

    cases.append((tmp_path / "absent.pt", "model export not found"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file" * 10)
    cases.append((garbage, "not a readable model export"))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    cases.append((truncated, "not a readable model export"))
    code = tmp_path / "code.pt"
    torch.save({"format": "brats-seg-export", "payload": _Code()}, code)
    cases.append((code, "not a readable model export"))  # weights_only refuses to unpickle classes
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    cases.append((foreign, "not a model export"))
    cases.append((_rewrite(path, tmp_path / "version.pt", version=99), "export version 99"))
    cases.append((_rewrite(path, tmp_path / "nostate.pt", state_dict=None), "lacks state_dict"))
    listed = _rewrite(path, tmp_path / "listed.pt", state_dict=lambda d: {**d, "head.bias": [0.0, 1.0]})
    cases.append((listed, r"state_dict entries \['head.bias'\] are not tensors"))
    bad_windows = _rewrite(
        path, tmp_path / "windows.pt", model_config=lambda c: {**c, "sspp_windows": [1, 3, 4]}
    )
    cases.append((bad_windows, "invalid configuration in export"))
    cases.append((_rewrite(path, tmp_path / "size.pt", preprocess=lambda p: {**p, "size": 128}), "preprocessing size"))
    other_arch = _rewrite(path, tmp_path / "arch.pt", model_config=lambda c: {**c, "arch": "unet"})
    cases.append((other_arch, "weights do not match the model configuration"))
    wider = _rewrite(path, tmp_path / "wider.pt", model_config=lambda c: {**c, "base_width": 8})
    cases.append((wider, "weights do not match the model configuration"))
    with zipfile.ZipFile(tmp_path / "zip.pt", "w") as handle:
        handle.writestr("archive/data.pkl", b"junk")
    cases.append((tmp_path / "zip.pt", "not a readable model export"))

    for bad, message in cases:
        with pytest.raises(CheckpointError, match=message) as info:
            load_export(bad)
        assert str(bad) in str(info.value)
    assert config.context == 1
