"""Cross-entropy plus soft Dice on the tumour, computed in fp32 from softmax logits.

The Dice term is a batch Dice (sums over every slice of the batch before the ratio, as nnU-Net's
``batch_dice``): most slices have little or no tumour, and a per-slice Dice would be undefined or noisy there.
By default it is taken over the nested BraTS regions (WT = NCR+ED+ET, TC = NCR+ET, ET), whose probabilities are
sums of the softmax class probabilities, so the loss optimises the quantities the evaluation scores while the
network keeps one softmax output (argmax gives the labels); ``dice_over="classes"`` uses the three tumour
classes instead. Background never enters the Dice.

:class:`RegionBCEDiceLoss` trains the ``regions`` head (three sigmoid channels WT, TC, ET; nnU-Net's
region-based BraTS training): binary cross-entropy per region plus the same soft batch Dice on the sigmoids.
:func:`build_loss` picks the loss of a head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from brats_core.config import LABELS
from Deep_Learning_Model.heads import REGION_CLASSES, region_probabilities

#: Tumour classes NCR/NET, ED, ET (each its own Dice target with ``dice_over="classes"``).
TUMOUR_CLASSES: tuple[tuple[int, ...], ...] = tuple((index,) for index in range(1, len(LABELS)))
#: The Dice targets of each ``dice_over`` setting.
DICE_GROUPS: dict[str, tuple[tuple[int, ...], ...]] = {"regions": REGION_CLASSES, "classes": TUMOUR_CLASSES}


def batch_dice(pred: torch.Tensor, ref: torch.Tensor, smooth: float) -> torch.Tensor:
    """Soft Dice per channel of (N, K, H, W) probabilities and references, summed over the batch: shape (K,)."""
    dims = (0, 2, 3)
    intersection = (pred * ref).sum(dims)
    total = pred.sum(dims) + ref.sum(dims)
    return (2.0 * intersection + smooth) / (total + smooth)


def region_targets(target: torch.Tensor) -> torch.Tensor:
    """WT, TC, ET masks (N, 3, H, W) float32 of class indices (N, H, W) 0..3 (no host-to-device copy)."""
    one_hot = F.one_hot(target, len(LABELS)).permute(0, 3, 1, 2).float()
    return region_probabilities(one_hot, "softmax")


class DiceCELoss(nn.Module):
    """``ce_weight * CE + dice_weight * (1 - mean soft batch Dice over the targets)``."""

    def __init__(
        self, ce_weight: float = 1.0, dice_weight: float = 1.0, dice_over: str = "regions", smooth: float = 1e-5
    ) -> None:
        super().__init__()
        if dice_over not in DICE_GROUPS:
            raise ValueError(f"dice_over must be one of {tuple(DICE_GROUPS)}, got {dice_over!r}")
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.groups = DICE_GROUPS[dice_over]
        self.smooth = smooth

    def soft_dice(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Soft batch Dice per target group, shape (len(groups),), from logits (N, 4, H, W) and classes (N, H, W)."""
        probs = torch.softmax(logits.float(), dim=1)
        one_hot = F.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
        pred = torch.stack([probs[:, list(group)].sum(dim=1) for group in self.groups], dim=1)
        ref = torch.stack([one_hot[:, list(group)].sum(dim=1) for group in self.groups], dim=1)
        return batch_dice(pred, ref, self.smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        loss = logits.new_zeros(())
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(logits, target)
        if self.dice_weight:
            loss = loss + self.dice_weight * (1.0 - self.soft_dice(logits, target).mean())
        return loss


class RegionBCEDiceLoss(nn.Module):
    """``bce_weight * BCE + dice_weight * (1 - mean soft batch Dice)`` over the sigmoid WT, TC, ET channels."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1e-5) -> None:
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        ref = region_targets(target)
        loss = logits.new_zeros(())
        if self.bce_weight:
            loss = loss + self.bce_weight * F.binary_cross_entropy_with_logits(logits, ref)
        if self.dice_weight:
            loss = loss + self.dice_weight * (1.0 - batch_dice(torch.sigmoid(logits), ref, self.smooth).mean())
        return loss


def build_loss(head: str, ce_weight: float = 1.0, dice_weight: float = 1.0, dice_over: str = "regions") -> nn.Module:
    """The training loss of ``head``: CE + Dice for ``softmax``, BCE + Dice (``ce_weight`` weighs the BCE) for
    ``regions`` (whose Dice is always over the regions)."""
    if head == "regions":
        return RegionBCEDiceLoss(ce_weight, dice_weight)
    return DiceCELoss(ce_weight, dice_weight, dice_over)
