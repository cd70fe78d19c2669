"""``make demo``: start the API and the UI together, print both URLs, stop both on Ctrl-C.

``make demo API_PORT=8100 UI_PORT=8600`` or ``python -m streamlit_app.demo [--api-port 8000] [--ui-port 8501]
[--host 127.0.0.1]``; the ports also come from the environment (``API_PORT`` or ``BRATS_PORT``, ``UI_PORT``).
The API serves the deep models and their fusion (``BRATS_ALLOWED_MODELS`` overrides that; ``BRATS_CHECKPOINT`` the
default model's checkpoint; the fusion is left out when a member's checkpoint is not the shipped one, since its
manifest names the shipped members) and the bundled sample; the UI talks to that API.
Both run as child processes; Ctrl-C or SIGTERM stops them (terminate, wait, then kill).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from brats_app.registry import models_of, spec
from brats_core.config import REPO_ROOT
from brats_core.errors import BratsError
from sspp_unet_api.app.cleanup import PURGE_ON_EXIT_ENV
from sspp_unet_api.app.config import Settings
from streamlit_app.api_client import API_URL_ENV

APP = Path(__file__).resolve().parent / "app.py"
#: Seconds both services get to answer after start (loading torch and the model takes a few seconds).
START_TIMEOUT_S = 120.0
#: Seconds a child gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0
#: Environment variables giving the ports (the first one set wins), and the defaults.
API_PORT_ENV, UI_PORT_ENV = ("API_PORT", "BRATS_PORT"), ("UI_PORT",)
DEFAULT_API_PORT, DEFAULT_UI_PORT = 8000, 8501


class _Stop(Exception):
    """Raised by the signal handler to leave the wait loop."""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _url_host(host: str) -> str:
    """Host to put in a URL: a wildcard bind address is reachable on loopback; IPv6 literals get brackets."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def _port_in_use(host: str, port: int) -> bool:
    try:
        with socket.create_server((host, port)):
            return False
    except OSError:
        return True


def _env_port(names: tuple[str, ...], default: int) -> int:
    """The port from the first of ``names`` set in the environment, else ``default``; BratsError names a bad one."""
    for name in names:
        raw = os.environ.get(name, "").strip()
        if raw:
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise BratsError(f"{name}={raw!r} is not a TCP port (1-65535)")
            return int(raw)
    return default


def _free_port_from(host: str, port: int, avoid: set[int]) -> int:
    """The first port from ``port`` + 100 upwards (in steps of 100, then 1) that is free on ``host``."""
    candidates = [*range(port + 100, 65536, 100), *range(1024, 65536)]
    return next(p for p in candidates if p not in avoid and not _port_in_use(host, p))


def _busy_message(host: str, api_port: int, ui_port: int) -> str | None:
    """None when both ports are free, else the error, with a ``make demo`` line using free ports."""
    busy = [f"{name} port {port}" for name, port in (("API", api_port), ("UI", ui_port)) if _port_in_use(host, port)]
    if not busy:
        return None
    api = _free_port_from(host, api_port, {ui_port}) if _port_in_use(host, api_port) else api_port
    ui = _free_port_from(host, ui_port, {api, api_port}) if _port_in_use(host, ui_port) else ui_port
    return (
        f"{' and '.join(busy)} already in use; pick free ones with `make demo API_PORT={api} UI_PORT={ui}` "
        f"(or the environment variables API_PORT and UI_PORT, or python -m streamlit_app.demo --api-port {api} "
        f"--ui-port {ui})"
    )


def _missing_checkpoint(settings: Settings) -> str | None:
    """None when every served model has its checkpoint, else what is missing and how to get it."""
    for model in settings.allowed_models:
        checkpoint = settings.checkpoint(model)
        if not checkpoint.is_file():
            variable = "BRATS_CHECKPOINT" + ("" if model == settings.model else f"_{model.upper()}")
            export = f" --export {checkpoint}" if model in models_of("Deep_Learning_Model") else ""
            how = f"--cv CV_OUT --out {checkpoint}" if spec(model).members else f"--data DATA_DIR{export}"
            return (
                f"{checkpoint} is missing (the checkpoint of model {model}).\n"
                f"Train one with `.venv/bin/brats train {spec(model).family} {how}`, "
                f"point {variable} at an existing export, or serve fewer models (BRATS_ALLOWED_MODELS)."
            )
    return None


def served_models(environ: dict[str, str]) -> list[str]:
    """The models the demo serves unless ``BRATS_ALLOWED_MODELS`` says: the default one, then every deep model,
    but not a fusion one of whose members has a checkpoint other than the shipped one (``BRATS_CHECKPOINT*``)."""
    default = environ.get("BRATS_MODEL", "").strip() or Settings.model
    overridden = {key[len("BRATS_CHECKPOINT_"):].lower() for key, value in environ.items()
                  if key.startswith("BRATS_CHECKPOINT_") and value.strip()}
    if environ.get("BRATS_CHECKPOINT", "").strip():
        overridden.add(default)
    deep = [m for m in models_of("Deep_Learning_Model") if m != default and not set(spec(m).members) & overridden]
    return [default, *deep]


def _commands(host: str, api_port: int, ui_port: int) -> tuple[list[str], list[str]]:
    api = [sys.executable, "-m", "sspp_unet_api.app.main", "--host", host, "--port", str(api_port)]
    ui = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.headless", "true", "--server.address", host, "--server.port", str(ui_port),
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
        "--server.fileWatcherType", "none",
    ]  # fmt: skip
    return api, ui


def stop(processes: list[subprocess.Popen]) -> None:
    """Terminate every child, wait up to :data:`STOP_TIMEOUT_S`, kill what is left."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(processes: dict[str, subprocess.Popen], urls: dict[str, str]) -> None:
    """Poll the health URLs until both answer; raise BratsError if a child exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    pending = dict(urls)
    while pending:
        for name, url in list(pending.items()):
            code = processes[name].poll()
            if code is not None:
                raise BratsError(
                    f"the {name} exited with code {code} while starting (see its messages above)"
                )
            if _answers(url):
                del pending[name]
        if pending and time.monotonic() > deadline:
            raise BratsError(f"{' and '.join(pending)} did not answer within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description="Start the segmentation API and the UI.")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface both services bind (default 127.0.0.1)"
    )
    parser.add_argument("--api-port", type=int, help="default: $API_PORT, else $BRATS_PORT, else 8000")
    parser.add_argument("--ui-port", type=int, help="default: $UI_PORT, else 8501")
    args = parser.parse_args(argv)

    # The deep models unless the user chose: the UI then offers a model switch and a side-by-side comparison.
    served = served_models(dict(os.environ))
    env = {**os.environ, "BRATS_ALLOWED_MODELS": os.environ.get("BRATS_ALLOWED_MODELS", "").strip() or ",".join(served)}
    try:
        settings = Settings.from_env(env)
        api_port = args.api_port or _env_port(API_PORT_ENV, DEFAULT_API_PORT)
        ui_port = args.ui_port or _env_port(UI_PORT_ENV, DEFAULT_UI_PORT)
    except BratsError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    try:
        missing = _missing_checkpoint(settings)
    except BratsError as exc:  # e.g. an unknown model in BRATS_ALLOWED_MODELS
        missing = str(exc)
    if missing:
        print(f"demo: error: {missing}", file=sys.stderr)
        return 2

    busy = _busy_message(args.host, api_port, ui_port)
    if busy:
        print(f"demo: error: {busy}", file=sys.stderr)
        return 2
    host = _url_host(args.host)
    api_url, ui_url = f"http://{host}:{api_port}", f"http://{host}:{ui_port}"
    env.update({API_URL_ENV: api_url, **PURGE_ON_EXIT_ENV})  # the demo deletes its uploads on exit
    api_cmd, ui_cmd = _commands(args.host, api_port, ui_port)

    def on_signal(signum: int, frame: object) -> None:
        raise _Stop

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    processes: dict[str, subprocess.Popen] = {}
    code = 0
    try:
        # Own process groups: a Ctrl-C reaches only this script, which then stops the children in order.
        processes["API"] = subprocess.Popen(api_cmd, cwd=REPO_ROOT, env=env, start_new_session=True)
        processes["UI"] = subprocess.Popen(ui_cmd, cwd=REPO_ROOT, env=env, start_new_session=True)
        _wait_until_up(processes, {"API": f"{api_url}/", "UI": f"{ui_url}/_stcore/health"})
        print(
            f"\nAPI: {api_url}  (docs: {api_url}/docs)\nUI:  {ui_url}\nPress Ctrl-C to stop both.\n",
            flush=True,
        )
        while all(p.poll() is None for p in processes.values()):
            time.sleep(0.5)
        exited = next(name for name, p in processes.items() if p.poll() is not None)
        print(
            f"demo: the {exited} stopped (exit code {processes[exited].returncode}); stopping the rest.",
            file=sys.stderr,
        )
        code = 1
    except _Stop:
        print("\ndemo: stopping the API and the UI…", flush=True)
    except BratsError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop(list(processes.values()))
    return code


if __name__ == "__main__":
    sys.exit(main())
