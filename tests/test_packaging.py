"""pyproject.toml as setuptools reads it: the licence is an SPDX expression, read without deprecation warnings."""

from __future__ import annotations

import warnings

from setuptools.config.pyprojecttoml import apply_configuration, read_configuration
from setuptools.dist import Distribution

from brats_core.config import REPO_ROOT


def test_the_licence_is_the_spdx_string_mit_and_setuptools_reads_it_without_warnings(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old `license = { text = "MIT" }` table raises a deprecation here
        dist = apply_configuration(Distribution(), REPO_ROOT / "pyproject.toml")
    assert dist.metadata.license_expression == "MIT"
    assert dist.metadata.license_files == ["LICENSE"] and (REPO_ROOT / "LICENSE").is_file()
    assert dist.metadata.name == "brats-sspp" and dist.metadata.license is None


def test_the_build_backend_understands_spdx_expressions():
    requires = read_configuration(REPO_ROOT / "pyproject.toml")["build-system"]["requires"]
    [setuptools] = [r for r in requires if r.startswith("setuptools")]
    assert setuptools == "setuptools>=77", "PEP 639 license expressions need setuptools 77 or later"
