"""glibc's allocator set up for large short-lived arrays (brats_core.allocator): freed blocks are reused instead
of mapped and zeroed again, it can be turned off, and every command but ``serve`` sets it up."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from brats_app import cli
from brats_core import allocator

#: Allocate, touch and free a 48 MiB array 10 times; print the page faults of the last 9 and the setting taken.
CHURN = """
import json, resource
import numpy as np
from brats_core.allocator import keep_freed_memory
taken = keep_freed_memory()
np.ones(12 * 2**20, dtype=np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    np.ones(12 * 2**20, dtype=np.float32)
print(json.dumps({"taken": taken, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _churn(setting: str) -> dict:
    env = {"BRATS_MALLOC_TUNING": setting, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", CHURN], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    tuned, default = _churn("1"), _churn("0")
    assert tuned["taken"] is True and default["taken"] is False  # glibc (Linux) takes the setting
    # Default glibc maps each 48 MiB array afresh and the kernel faults its pages in again (4,824 faults here,
    # with transparent huge pages); tuned, the freed block stays in the heap and is reused (0 here).
    assert tuned["faults"] < 1_000 and tuned["faults"] * 10 < default["faults"]


def test_it_is_skipped_with_the_environment_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(allocator, "mallopt", lambda param, value: calls.append((param, value)) or True)
    assert allocator.keep_freed_memory({"BRATS_MALLOC_TUNING": "0"}) is False and calls == []
    assert allocator.keep_freed_memory({}) is True
    assert calls == [(allocator.M_MMAP_THRESHOLD, 2**31 - 1), (allocator.M_TRIM_THRESHOLD, 2**31 - 1)]


def test_without_glibc_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert allocator.mallopt(allocator.M_ARENA_MAX, 4) is True  # glibc here
    monkeypatch.setattr(allocator, "libc", lambda: None)  # e.g. musl or macOS
    assert allocator.mallopt(allocator.M_ARENA_MAX, 4) is False
    assert allocator.keep_freed_memory({}) is False


@pytest.mark.parametrize(("command", "tuned"), [("evaluate", True), ("train", True), ("serve", False)])
def test_every_command_but_serve_sets_it_up(monkeypatch: pytest.MonkeyPatch, command: str, tuned: bool) -> None:
    calls: list[int] = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(cli, "resolve", lambda target: lambda argv: 0)
    assert cli.main([command]) == 0
    assert calls == ([1] if tuned else [])
