"""Device and numeric precision of a training run: autocast dtype, gradient scaler, memory layout.

The autocast dtype is inference's too (:func:`brats_core.device.autocast_dtype`):

- CUDA: bf16 autocast when the GPU supports it (no scaler needed), else fp16 autocast with a ``GradScaler``.
- CPU: bf16 autocast when oneDNN has native bf16 kernels (AVX512-BF16/AMX), else fp32.
- ``amp=False``: fp32 everywhere. channels_last is the fast convolution layout of both oneDNN and cuDNN.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from brats_core.device import autocast_dtype, resolve_device
from Deep_Learning_Model.training.distributed import DistContext


def select_device(name: str, ctx: DistContext = DistContext()) -> torch.device:
    """``auto``: CUDA when available, else CPU. Under torchrun each process takes GPU ``LOCAL_RANK``."""
    device = resolve_device(name)  # BratsError for a CUDA device torch cannot find
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    return device


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: ``dtype`` is the autocast dtype (``None``: fp32)."""

    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A scaler that is active only for fp16 (bf16 has fp32's exponent range and needs none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def describe(self) -> str:
        dtype = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + GradScaler"}
        layout = ", channels_last" if self.channels_last else ""
        return f"{self.device} {dtype[self.dtype]}{layout}"


def select_precision(device: torch.device, amp: bool, channels_last: bool) -> Precision:
    """The mixed precision policy of the module docstring."""
    return Precision(device=device, dtype=autocast_dtype(device) if amp else None, channels_last=channels_last)
