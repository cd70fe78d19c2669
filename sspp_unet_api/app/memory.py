"""Keeping the server's resident memory flat across requests (glibc's allocator; a no-op elsewhere).

Every request's volumes are allocated and freed in worker threads (anyio's pool, whose idle threads exit after
10 s, so the next request often runs in a new thread). glibc gives threads their own arenas (up to 8 per core)
and raises its mmap threshold up to 32 MiB once large blocks are freed, after which arrays of a few MiB come
from those arenas and stay there, fragmented, when freed: the RSS creeps up with the requests. Here, once at
start-up, the mmap threshold is fixed at 1 MiB (large arrays always come from, and go back to, the kernel) and
the arenas are capped; after each prediction, upload validation or overlay ``malloc_trim`` hands the free pages
of every arena back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD_BYTES = 1 << 20
ARENA_MAX = 4


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def configure_allocator() -> bool:
    """Fix glibc's mmap threshold and cap its arenas; True when glibc took the settings."""
    libc = _libc()
    if libc is None:
        return False
    return all(libc.mallopt(option, value) == 1 for option, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_BYTES),
        (M_ARENA_MAX, ARENA_MAX)))


def release_memory() -> None:
    """Return the free pages of every malloc arena to the kernel (a few ms)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def trimmed(func: Callable[..., T]) -> Callable[..., T]:
    """``func``, followed by :func:`release_memory` in the same thread, whether it returns or raises."""

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> T:
        try:
            return func(*args, **kwargs)
        finally:
            release_memory()

    return wrapper
