"""The DataLoader's default worker count fits the machine: the cores available, at most 4 (no torch warning
about more workers than cores on a 2-core machine)."""

from __future__ import annotations

import os
import warnings

import torch

from Deep_Learning_Model.training import config
from Deep_Learning_Model.training.config import TrainConfig, default_workers, make_config


def test_default_workers_are_the_cores_available_at_most_four(monkeypatch):
    available = len(os.sched_getaffinity(0))
    assert TrainConfig().workers == make_config("default").workers == min(4, available)
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0, 1})
    assert default_workers() == TrainConfig().workers == 2
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert default_workers() == 4
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set())
    assert default_workers() == 1
    assert make_config("cpu-fast").workers == 1 and TrainConfig(workers=0).workers == 0


def test_a_dataloader_with_the_default_workers_does_not_warn():
    dataset = torch.utils.data.TensorDataset(torch.arange(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=TrainConfig().workers)
        assert [batch[0].tolist() for batch in loader] == [[0, 1], [2, 3]]
