"""Shared pytest fixtures (session-scoped; treat the folders they return as read-only).

``synthetic_root``
    A folder holding 4 synthetic cases ``synth_000`` .. ``synth_003`` (48 x 48 x 32 voxels, 1 mm, BraTS 2020
    naming ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``, int16 images, labels 0/1/2/4), written once per
    session by ``brats_core.synth.write_dataset(root, n=4, seed=0, shape=(48, 48, 32))``.

``real_or_synthetic_root``
    ``brats_core.config.SHARED_DATA_DIR`` (20 real cases, 240 x 240 x 155) when that folder exists, else
    ``synthetic_root``, so tests never skip. Real cases take ~0.5 s each to load: mark such tests
    ``@pytest.mark.real_data`` and load only one or two cases.

``random_export``
    A randomly initialised sspp export of base width 8 (``sspp.pt``: small and fast on a CPU, meaningless
    predictions), written once per session by :func:`Deep_Learning_Model.export.write_random_export`.

``random_unet_export``
    The same for the plain U-Net (``unet.pt``, base width 8), for the tests that serve both deep models.

``server_factory``
    ``server_factory(**settings)`` starts ``brats serve`` on a loopback port (``BRATS_<NAME>=value`` for each
    keyword, ``extra=[...]`` options, ``data=`` a shared storage folder) serving ``random_export``; every server
    is stopped at teardown and must have shut down cleanly.

``one_torch_thread``
    Limits torch to one thread for the tests of a module (``pytestmark = pytest.mark.usefixtures(...)``),
    restoring the previous count after: the tests share a few CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from brats_core.config import SHARED_DATA_DIR
from brats_core.synth import write_dataset

SYNTHETIC_CASES = 4
SYNTHETIC_SHAPE = (48, 48, 32)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_brats")
    write_dataset(root, n=SYNTHETIC_CASES, seed=0, shape=SYNTHETIC_SHAPE)
    return root


@pytest.fixture(scope="session")
def real_or_synthetic_root(request: pytest.FixtureRequest) -> Path:
    if SHARED_DATA_DIR.is_dir():
        return SHARED_DATA_DIR
    return request.getfixturevalue("synthetic_root")


@pytest.fixture(scope="session")
def random_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from Deep_Learning_Model.export import write_random_export
    from Deep_Learning_Model.model import ModelConfig

    return write_random_export(tmp_path_factory.mktemp("export") / "sspp.pt", ModelConfig(base_width=8))


@pytest.fixture(scope="session")
def random_unet_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from Deep_Learning_Model.export import write_random_export
    from Deep_Learning_Model.model import ModelConfig

    return write_random_export(tmp_path_factory.mktemp("export") / "unet.pt", ModelConfig(arch="unet", base_width=8))


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def server_factory(tmp_path: Path, random_export: Path) -> Iterator[Callable[..., object]]:
    from api_support import Server

    servers: list[Server] = []

    def start(**kwargs: object) -> Server:
        servers.append(Server(tmp_path, random_export, name=f"server{len(servers)}", **kwargs))
        return servers[-1]

    yield start
    results = [(s, s.stop()) for s in servers]
    assert all(clean for _, clean in results), [s.log.read_text() for s, clean in results if not clean]
