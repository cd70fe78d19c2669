"""glibc's allocator set up for the large, short-lived arrays of training and inference (a no-op elsewhere).

Each training step frees activations of a few to tens of MiB and allocates them again. By default glibc
serves blocks above its mmap threshold (dynamic, at most 32 MiB) with fresh mmaps and hands the top of the heap
back above its trim threshold, so the kernel maps and zeroes the same memory again at every step: a U-Net
training step at batch 32 on two cores took about 120,000 page faults per second, a tenth of its CPU time in
the kernel. :func:`keep_freed_memory` fixes both thresholds at their maximum, so freed blocks are reused:
bf16 training at batch 32 went from 16.4 to 19.0 slices/s (U-Net) and from 15.0 to 17.0 (U-Net + SSPP), the
network part of one case's prediction from 2.70 to 2.56 s (README, "Performance"). The price is that a process
keeps its peak memory until it ends, which suits a command and not a server: the API keeps glibc's thresholds
(``sspp_unet_api/app/memory.py`` says why). ``BRATS_MALLOC_TUNING=0`` leaves glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
#: ``mallopt`` takes a C int: the largest threshold it can set (2 GiB; larger blocks are still mmapped).
MAX_THRESHOLD = 2**31 - 1
ENV = "BRATS_MALLOC_TUNING"


@functools.cache
def libc() -> ctypes.CDLL | None:
    """glibc, when this process runs on it (``mallopt`` and ``malloc_trim``); None elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None


def mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt``; True when glibc took the setting (False without glibc)."""
    lib = libc()
    return lib is not None and lib.mallopt(param, value) == 1


def keep_freed_memory(environ: dict[str, str] | None = None) -> bool:
    """Let freed blocks be reused instead of unmapped (see the module); True when glibc took it. Call it once
    at the start of a command; ``BRATS_MALLOC_TUNING=0`` in ``environ`` (default ``os.environ``) skips it."""
    if (os.environ if environ is None else environ).get(ENV, "1").strip() == "0":
        return False
    taken = [mallopt(M_MMAP_THRESHOLD, MAX_THRESHOLD), mallopt(M_TRIM_THRESHOLD, MAX_THRESHOLD)]
    return all(taken)
