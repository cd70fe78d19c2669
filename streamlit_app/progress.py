"""Progress while the API works: each slow call runs in a worker thread while the page shows a status box, a
progress bar and the seconds elapsed, refreshed every :data:`POLL_S` seconds.

The bar moves by steps (for example: segment, then download the label map, for each model). Within a step it
advances by the time elapsed over the time the same step took last time in this session, when that is known,
and never fills before the step has ended; otherwise it waits at the step's start and only the seconds move.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import streamlit as st

T = TypeVar("T")
#: Seconds between two refreshes of the bar.
POLL_S = 0.25
#: Largest fraction of a step shown before the step has ended.
STEP_CAP = 0.9


class Progress:
    """A status box with a progress bar over ``steps`` steps; :meth:`run` runs one step's call."""

    def __init__(self, label: str, steps: int) -> None:
        self.steps, self.done = max(1, steps), 0
        self.started = time.monotonic()
        self.box = st.status(label, expanded=True)
        with self.box:
            self.bar = st.progress(0.0, text="Starting…")

    def run(self, text: str, func: Callable[[], T], expected_s: float | None = None) -> T:
        """``func()`` in a worker thread; meanwhile the bar shows ``text`` and the seconds elapsed."""
        start = time.monotonic()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="brats-ui-call")
        try:
            future = pool.submit(func)
            while True:
                elapsed = time.monotonic() - start
                within = min(elapsed / expected_s, STEP_CAP) if expected_s else 0.0
                hint = f" (last time {expected_s:.0f} s)" if expected_s else ""
                self.bar.progress(
                    min(1.0, (self.done + within) / self.steps), text=f"{text} {elapsed:.0f} s{hint}"
                )
                if wait([future], timeout=POLL_S).done:
                    break
        finally:  # a rerun (the user clicked meanwhile) stops this script here: the call ends on its own
            pool.shutdown(wait=False)
        try:
            result = future.result()  # raises what func raised
        except Exception:
            fraction = min(1.0, self.done / self.steps)
            self.bar.progress(fraction, text=f"{text} failed after {time.monotonic() - start:.1f} s")
            raise
        self.done += 1
        self.bar.progress(min(1.0, self.done / self.steps), text=f"{text} done in {time.monotonic() - start:.1f} s")
        return result

    def finish(self, label: str, ok: bool = True) -> None:
        """Close the box: ``label`` with the total seconds, collapsed when ``ok``, open and red otherwise."""
        total = time.monotonic() - self.started
        self.box.update(
            label=f"{label} ({total:.1f} s)", state="complete" if ok else "error", expanded=not ok
        )
