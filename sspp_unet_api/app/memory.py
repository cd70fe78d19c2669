"""Keeping the server's resident memory flat across requests (glibc's allocator; a no-op elsewhere).

Every request's volumes are allocated and freed in worker threads (anyio's pool, whose idle threads exit after
10 s, so after a pause the next request runs in a new thread). glibc gives threads their own arenas (up to 8
per core) and raises its mmap threshold up to 32 MiB once large blocks are freed, after which arrays of a few
MiB come from those arenas and stay there, free but resident, when the thread is gone: the RSS creeps up with
the requests (measured in-process, a prediction per new thread: +150 to +350 MiB over 8 predictions). Here the
arenas are capped once at start-up and, after each prediction, upload validation or overlay, ``malloc_trim``
hands the free pages of every arena back. (Fixing the mmap threshold at 1 or 8 MiB also kept the RSS flat but
made a prediction 35-140% slower: every large temporary then costs an mmap and fresh page faults. Fixing it
and the trim threshold at their maximum, as the training commands do (:mod:`brats_core.allocator`), made the
RSS grow by 56-92 MiB over 8 predictions in new threads, against 1-43 MiB with glibc's thresholds, for about
5% less network time: the server keeps glibc's thresholds.) ``BRATS_RELEASE_MEMORY=0`` turns both off.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from brats_core.allocator import M_ARENA_MAX, libc, mallopt

T = TypeVar("T")
ARENA_MAX = 4
_enabled = True


def configure_allocator(enabled: bool = True) -> bool:
    """Cap glibc's arenas (``enabled``) or turn :func:`release_memory` off; True when glibc took the setting."""
    global _enabled
    _enabled = enabled
    return enabled and mallopt(M_ARENA_MAX, ARENA_MAX)


def release_memory() -> None:
    """Return the free pages of every malloc arena to the kernel (a few ms)."""
    lib = libc()
    if lib is not None and _enabled:
        lib.malloc_trim(0)


def trimmed(func: Callable[..., T]) -> Callable[..., T]:
    """``func``, followed by :func:`release_memory` in the same thread, whether it returns or raises."""

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> T:
        try:
            return func(*args, **kwargs)
        finally:
            release_memory()

    return wrapper
