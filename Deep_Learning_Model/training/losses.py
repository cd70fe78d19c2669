"""Cross-entropy plus soft Dice on the tumour, computed in fp32 from softmax logits.

The Dice term is a batch Dice (sums over every slice of the batch before the ratio, as nnU-Net's
``batch_dice``): most slices have little or no tumour, and a per-slice Dice would be undefined or noisy there.
By default it is taken over the nested BraTS regions (WT = NCR+ED+ET, TC = NCR+ET, ET), whose probabilities are
sums of the softmax class probabilities, so the loss optimises the quantities the evaluation scores while the
network keeps one softmax output (argmax gives the labels); ``dice_over="classes"`` uses the three tumour
classes instead. Background never enters the Dice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from brats_core.config import LABELS, REGIONS

#: Class indices (0..3, see ``brats_core.labels.labels_to_classes``) making up each region WT, TC, ET.
REGION_CLASSES: tuple[tuple[int, ...], ...] = tuple(
    tuple(LABELS.index(label) for label in labels) for labels in REGIONS.values()
)
#: Tumour classes NCR/NET, ED, ET (each its own Dice target with ``dice_over="classes"``).
TUMOUR_CLASSES: tuple[tuple[int, ...], ...] = tuple((index,) for index in range(1, len(LABELS)))
#: The Dice targets of each ``dice_over`` setting.
DICE_GROUPS: dict[str, tuple[tuple[int, ...], ...]] = {"regions": REGION_CLASSES, "classes": TUMOUR_CLASSES}


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
        dims = (0, 2, 3)
        intersection = (pred * ref).sum(dims)
        total = pred.sum(dims) + ref.sum(dims)
        return (2.0 * intersection + self.smooth) / (total + self.smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        loss = logits.new_zeros(())
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(logits, target)
        if self.dice_weight:
            loss = loss + self.dice_weight * (1.0 - self.soft_dice(logits, target).mean())
        return loss
