"""Model configuration and construction: U-Net and U-Net + Swin Spatial Pyramid Pooling (SSPP)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from brats_core.config import check_known_fields
from brats_core.errors import BratsError
from Deep_Learning_Model.model.sspp import SwinSPP
from Deep_Learning_Model.model.unet import DOWNSAMPLING, UNet

ARCHS: tuple[str, ...] = ("unet", "sspp")
#: BraTS label written for the tumour class of a binary (whole-tumour) model: its largest component, edema.
BINARY_TUMOUR_LABEL = 2


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved in every export as plain data.

    Input: ``channels = in_channels * (2 * context + 1)`` (the four modalities of the slice and of its ``context``
    neighbours on each side). Output: logits over ``num_classes`` classes, 4 (background, NCR/NET, ED, ET, as
    :func:`brats_core.labels.labels_to_classes`) or 2 (binary whole tumour: class 1 = any tumour label, written
    as :data:`BINARY_TUMOUR_LABEL`).

    SSPP: one Swin branch per entry of ``sspp_windows``, each window dividing the ``input_size / 16`` bottleneck
    map (2, 4, 8 on the 8x8 map of a 128 input; 8 is global attention). ``sspp_dim`` is the embedding width of
    the branches: 128 by default (a 1x1 projection from the ``16 * base_width`` bottleneck channels), which
    keeps SSPP at about 1.5M parameters and its CPU cost small; ``None`` uses the bottleneck channels themselves
    (about 21M extra parameters at base width 32).
    """

    arch: str = "sspp"
    in_channels: int = 4
    context: int = 0
    num_classes: int = 4
    base_width: int = 32
    input_size: int = 128
    sspp_windows: tuple[int, ...] = (2, 4, 8)
    sspp_heads: int = 4
    sspp_dim: int | None = 128
    sspp_mlp_ratio: float = 4.0
    sspp_reduction: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "sspp_windows", tuple(int(w) for w in self.sspp_windows))
        self.validate()

    @property
    def channels(self) -> int:
        """Number of input channels of the network."""
        return self.in_channels * (2 * self.context + 1)

    @property
    def bottleneck_channels(self) -> int:
        return self.base_width * DOWNSAMPLING

    @property
    def bottleneck_size(self) -> int:
        return self.input_size // DOWNSAMPLING

    @property
    def embed_dim(self) -> int:
        """Width of the SSPP branches."""
        return self.sspp_dim if self.sspp_dim is not None else self.bottleneck_channels

    def validate(self) -> None:
        """Raise :class:`BratsError` naming the bad field."""
        problems = []
        if self.arch not in ARCHS:
            problems.append(f"arch {self.arch!r} is not one of {ARCHS}")
        if self.num_classes not in (2, 4):
            problems.append(f"num_classes must be 4 (BraTS classes) or 2 (whole tumour), got {self.num_classes}")
        if self.in_channels < 1 or self.context < 0 or self.base_width < 1:
            problems.append("in_channels and base_width must be >= 1 and context >= 0")
        if self.input_size < DOWNSAMPLING or self.input_size % DOWNSAMPLING:
            problems.append(f"input_size {self.input_size} is not a positive multiple of {DOWNSAMPLING}")
        if self.arch == "sspp":
            size = self.bottleneck_size
            if len(self.sspp_windows) < 3 or len(set(self.sspp_windows)) != len(self.sspp_windows):
                problems.append(f"sspp_windows {self.sspp_windows} must be at least 3 distinct window sizes")
            bad = [w for w in self.sspp_windows if w < 1 or size % w]
            if bad:
                problems.append(
                    f"SSPP windows {bad} do not divide the {size}x{size} bottleneck map of input_size "
                    f"{self.input_size}"
                )
            if self.sspp_heads < 1 or self.embed_dim % self.sspp_heads:
                problems.append(f"SSPP width {self.embed_dim} is not divisible by sspp_heads {self.sspp_heads}")
        if problems:
            raise BratsError("invalid model config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["sspp_windows"] = list(self.sspp_windows)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        check_known_fields(cls, data, "model config")
        return cls(**data)


def build_model(config: ModelConfig) -> nn.Module:
    """The network of ``config``: (N, config.channels, H, W) -> logits (N, config.num_classes, H, W).

    The SSPP model needs ``H = W = config.input_size`` (its attention windows are laid out for that grid).
    ``config`` is valid by construction (frozen, checked in ``__post_init__``).
    """
    bottleneck = None
    if config.arch == "sspp":
        bottleneck = SwinSPP(
            channels=config.bottleneck_channels,
            resolution=config.bottleneck_size,
            windows=config.sspp_windows,
            dim=config.embed_dim,
            heads=config.sspp_heads,
            mlp_ratio=config.sspp_mlp_ratio,
            reduction=config.sspp_reduction,
        )
    return UNet(config.channels, config.num_classes, config.base_width, bottleneck)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
