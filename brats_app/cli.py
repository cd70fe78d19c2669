"""The ``brats`` command (``python -m brats_app.cli``). Each subcommand lives in the module that owns it and is
imported lazily: the data commands in :mod:`brats_core`, the model commands in :mod:`brats_app`."""

from __future__ import annotations

import os
import sys

from brats_app.registry import families, resolve
from brats_core.allocator import keep_freed_memory
from brats_core.errors import BratsError
from brats_core.files import describe_os_error

#: subcommand -> ("module:function", help). Each function takes the remaining argv list.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("brats_core.synth:main", "write synthetic BraTS-like cases"),
    "split": ("brats_core.split:main", "write a patient-level train/val/test (+ k-fold) split"),
    "cache": ("brats_core.cache:main", "preprocess cases into the on-disk slice cache"),
    "evaluate": ("brats_app.evaluate:main", "score predicted label maps against references"),
    "train": ("brats_app.train:main", f"train a model: {' | '.join(families())}"),
    "predict": ("brats_app.predict:main", "predict label maps with a trained model"),
    "compare": ("brats_app.compare.cli:main", "train/load every model and write the comparison table"),
    "paired": ("brats_core.paired:main", "per-case differences between two reports of the same cases"),
    "serve": ("sspp_unet_api.app.main:main", "start the FastAPI service"),
}


def _usage() -> str:
    lines = ["usage: brats <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("\nRun `brats <command> --help` for the options of one command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    # Spinning OpenMP threads make 2-thread inference several times slower on a shared CPU.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"brats: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if name != "serve":  # a server keeps glibc's thresholds (sspp_unet_api/app/memory.py)
        keep_freed_memory()
    func = resolve(COMMANDS[name][0])
    try:
        return int(func(rest) or 0)
    except BratsError as exc:
        message = str(exc)
    except (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:  # a path given
        message = describe_os_error(exc)
    _close_progress_bars()
    print(f"brats {name}: error: {message}", file=sys.stderr)
    return 1


def _close_progress_bars() -> None:
    """End the progress bars an error interrupted, so that its message starts on a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


if __name__ == "__main__":
    sys.exit(main())
