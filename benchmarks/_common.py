"""Helpers shared by the benchmark scripts (imported as ``_common``: a script's folder is ``sys.path[0]``)."""

from __future__ import annotations

import os

from brats_core.allocator import keep_freed_memory

#: What :func:`pin_cores` got from :func:`keep_freed_memory` (reported in the JSON lines).
_malloc_tuned = False


def pin_cores(cores: int) -> int:
    """Restrict this process, and the OpenMP/BLAS pools created later, to its first ``cores`` CPU cores.

    Call it before importing torch, numpy or scikit-learn. Sets ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``
    and ``MKL_NUM_THREADS`` to the number of cores, and ``OMP_WAIT_POLICY=PASSIVE`` unless set: on a shared,
    busy machine, OpenMP threads spinning while they wait for a descheduled peer make 2-thread runs several
    times slower. Also sets glibc's allocator up as the commands do (:mod:`brats_core.allocator`; off with
    ``BRATS_MALLOC_TUNING=0``). Returns the number of cores actually pinned (fewer when fewer are available).
    """
    chosen = sorted(os.sched_getaffinity(0))[:cores]
    os.sched_setaffinity(0, chosen)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(len(chosen))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    global _malloc_tuned
    _malloc_tuned = keep_freed_memory()
    return len(chosen)


def malloc_tuning() -> bool:
    """Whether :func:`pin_cores` fixed glibc's mmap and trim thresholds (reported in the JSON line)."""
    return _malloc_tuned
