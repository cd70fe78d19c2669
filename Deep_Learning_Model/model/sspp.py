"""Swin Spatial Pyramid Pooling (SSPP) for the U-Net bottleneck.

M parallel branches, each a Swin Transformer stage (a regular-window block then a shifted-window block,
window self-attention with relative position bias, timm's ``SwinTransformerBlock``) with its own window size,
look at the bottleneck map at M scales. Their token outputs are concatenated into ``z_all`` (P tokens x M*D
channels) and re-weighted by cross-contextual attention:

- scale attention ``w_scale = sigmoid(W2 relu(W1 GAP(z_all)))`` (GAP over the tokens), ``z' = w_scale * z_all``;
- token attention ``w_tokens = sigmoid(W3 relu(W4 pool(z')))`` (mean over the channels), ``z'' = w_tokens * z'``.

``z''`` is projected back to the bottleneck channels and added to the bottleneck input (residual).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from timm.models.swin_transformer import SwinTransformerBlock
from torch import nn


class SwinBranch(nn.Sequential):
    """One Swin stage on a ``resolution`` x ``resolution`` token grid: W-MSA block then SW-MSA block.

    The second block shifts by ``window // 2``; when the window covers the whole map (global attention) timm
    sets the shift to 0, as a cyclic shift of a single window changes nothing.
    """

    def __init__(self, dim: int, resolution: int, window: int, heads: int, mlp_ratio: float) -> None:
        grid = (resolution, resolution)
        super().__init__(
            SwinTransformerBlock(dim, grid, num_heads=heads, window_size=window, shift_size=0, mlp_ratio=mlp_ratio),
            SwinTransformerBlock(
                dim, grid, num_heads=heads, window_size=window, shift_size=window // 2, mlp_ratio=mlp_ratio
            ),
        )
        self.window = window


class CrossContextualAttention(nn.Module):
    """Scale (channel) attention then token attention on ``z_all`` of shape (B, P, M*D)."""

    def __init__(self, channels: int, tokens: int, reduction: int = 4) -> None:
        super().__init__()
        hidden_c, hidden_t = max(channels // reduction, 1), max(tokens // reduction, 1)
        self.scale = nn.Sequential(nn.Linear(channels, hidden_c), nn.ReLU(inplace=True), nn.Linear(hidden_c, channels))
        self.token = nn.Sequential(nn.Linear(tokens, hidden_t), nn.ReLU(inplace=True), nn.Linear(hidden_t, tokens))

    def scale_weights(self, z_all: torch.Tensor) -> torch.Tensor:
        """``w_scale`` (B, M*D) from the tokens' mean (GAP) of ``z_all``."""
        return torch.sigmoid(self.scale(z_all.mean(dim=1)))

    def token_weights(self, z_scaled: torch.Tensor) -> torch.Tensor:
        """``w_tokens`` (B, P) from the channels' mean of the scale-weighted ``z'``."""
        return torch.sigmoid(self.token(z_scaled.mean(dim=2)))

    def forward(self, z_all: torch.Tensor) -> torch.Tensor:
        z_scaled = z_all * self.scale_weights(z_all)[:, None, :]
        return z_scaled * self.token_weights(z_scaled)[:, :, None]


class SwinSPP(nn.Module):
    """SSPP on a (B, C, R, R) bottleneck map: returns ``x + proj_out(CCA(concat(branches(proj_in(x)))))``.

    ``dim`` is the embedding width of the Swin branches (``proj_in`` maps the C bottleneck channels to it,
    an identity when equal); every window must divide ``resolution``.
    """

    def __init__(
        self,
        channels: int,
        resolution: int,
        windows: Sequence[int],
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        reduction: int = 4,
    ) -> None:
        super().__init__()
        self.proj_in = nn.Linear(channels, dim) if dim != channels else nn.Identity()
        self.branches = nn.ModuleList(SwinBranch(dim, resolution, w, heads, mlp_ratio) for w in windows)
        self.attention = CrossContextualAttention(dim * len(windows), resolution * resolution, reduction)
        self.proj_out = nn.Linear(dim * len(windows), channels)

    @property
    def windows(self) -> tuple[int, ...]:
        return tuple(branch.window for branch in self.branches)

    def pyramid(self, x: torch.Tensor) -> torch.Tensor:
        """``z_all``: the branch outputs concatenated, shape (B, P = R*R, M*D)."""
        grid = self.proj_in(rearrange(x, "b c h w -> b h w c"))
        z_all = torch.cat([branch(grid) for branch in self.branches], dim=-1)
        return rearrange(z_all, "b h w c -> b (h w) c")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.proj_out(self.attention(self.pyramid(x)))
        return x + rearrange(z, "b (h w) c -> b c h w", h=x.shape[-2])
