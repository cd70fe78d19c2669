"""Which torch device ``auto`` means here and the mixed precision it runs at.

Used by the deep models' inference and training and by the API.
"""

from __future__ import annotations

import contextlib

import torch

from brats_core.errors import BratsError


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when available, else CPU; anything else as given.

    :class:`BratsError` for a name torch does not know and for a CUDA device this machine does not have.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise BratsError(f"unknown device {str(device)!r} ({exc}); use auto, cpu or cuda") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BratsError(f"device {str(device)!r} asked for, but torch finds no CUDA GPU on this machine "
                             "(no NVIDIA driver or GPU, or a CPU-only torch build); use --device cpu, or leave --device out")
        if resolved.index is not None and resolved.index >= count:
            raise BratsError(f"device {str(device)!r} asked for, but this machine has {count} CUDA GPU(s)")
    return resolved


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype of ``device`` (``None``: fp32), for inference and training alike.

    CUDA: bf16 where the GPU supports it, else fp16. CPU: bf16 where oneDNN has native bf16 kernels
    (AVX512-BF16/AMX); emulated bf16 is slower than fp32, so other CPUs run fp32.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to :func:`autocast_dtype` of ``device``, or nothing where that is fp32."""
    dtype = autocast_dtype(device)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
