"""2D U-Net: four down-sampling stages, BN+ReLU double convolutions, transposed-convolution up-sampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Total down-sampling factor of the encoder (four 2x2 max-pools): inputs are padded to a multiple of it.
DOWNSAMPLING = 16


class DoubleConv(nn.Sequential):
    """(3x3 conv, BatchNorm, ReLU) twice; the convolutions have no bias (BatchNorm supplies it)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """2x2 max-pool then a double convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))


class Up(nn.Module):
    """2x2 transposed convolution halving the channels, concatenation with the skip, double convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels // 2 + out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """U-Net with encoder widths ``w, 2w, 4w, 8w, 16w`` (``w = base_width``) and an optional bottleneck module.

    ``base_width=64`` is the classic 64..1024 U-Net (about 31M parameters); ``bottleneck`` (for example the
    Swin Spatial Pyramid Pooling of :mod:`Deep_Learning_Model.model.sspp`) maps the ``16w``-channel map at
    1/16 resolution to a map of the same shape. Inputs whose sides are not multiples of 16 are zero-padded
    and the logits cropped back, so ``forward`` maps (N, C, H, W) to (N, num_classes, H, W).
    """

    def __init__(
        self, in_channels: int, num_classes: int, base_width: int, bottleneck: nn.Module | None = None
    ) -> None:
        super().__init__()
        widths = [base_width * 2**i for i in range(5)]
        self.inc = DoubleConv(in_channels, widths[0])
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1]) for i in range(4))
        self.bottleneck = bottleneck if bottleneck is not None else nn.Identity()
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i]) for i in reversed(range(4)))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % DOWNSAMPLING, -width % DOWNSAMPLING
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = self.bottleneck(skips.pop())
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)[..., :height, :width]
