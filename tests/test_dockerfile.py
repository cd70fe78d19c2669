"""The API image copies every package of this repository that the served app imports (no Docker engine here:
the check reads the Dockerfile and imports the app in a fresh interpreter)."""

from __future__ import annotations

import re
import subprocess
import sys

from brats_core.config import REPO_ROOT

DOCKERFILE = REPO_ROOT / "sspp_unet_api" / "Dockerfile"


def test_api_image_copies_every_repository_package_the_app_imports() -> None:
    # the app, plus every model it may serve loaded the way it loads them (through the registry)
    probe = ("import sys, sspp_unet_api.app.main\n"
             "from brats_app.registry import load_segmenter, pickle_free_models\n"
             "for name in pickle_free_models(): load_segmenter(name, device='cpu')\n"
             "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    ours = {name for name in loaded if (REPO_ROOT / name / "__init__.py").is_file()}
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", DOCKERFILE.read_text(), flags=re.MULTILINE))
    assert {"sspp_unet_api", "brats_core", "brats_app", "Deep_Learning_Model"} <= ours | copied
    assert ours - copied == set(), f"{DOCKERFILE}: add COPY lines for {sorted(ours - copied)}"


def test_every_copied_path_is_in_the_build_context() -> None:
    """BuildKit reads ``<Dockerfile>.dockerignore``: everything is excluded (``*``) but the paths let back in
    (``!path``), so a COPY of a path not let back in fails the build (brats_app/ once was missing)."""
    ignore = DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore").read_text().splitlines()
    assert "*" in ignore
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {source.rstrip("/") for source in re.findall(r"^COPY (\S+) \S+$", DOCKERFILE.read_text(), flags=re.MULTILINE)}
    assert copied and copied - allowed == set(), f"add !{sorted(copied - allowed)} to {DOCKERFILE.name}.dockerignore"
