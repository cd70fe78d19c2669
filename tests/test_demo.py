"""``make demo`` (``python -m streamlit_app.demo``): both services answer, Ctrl-C stops both, clear errors."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
import requests
from streamlit_support import Demo, is_running
from support import free_port

from brats_core.config import REPO_ROOT
from streamlit_app import demo


@pytest.mark.slow
def test_demo_serves_api_and_ui_and_stops_both_on_ctrl_c(random_export, random_unet_export, tmp_path):
    stack = Demo(random_export, tmp_path / "api", unet_export=random_unet_export)
    try:
        assert f"API: {stack.api_url}" in stack.output() and f"UI:  {stack.ui_url}" in stack.output()
        health = requests.get(f"{stack.api_url}/", timeout=10).json()
        assert health["status"] == "ok" and health["checkpoint"] == random_export.name
        assert health["models"] == ["sspp", "unet"]  # both deep models; no fusion of the shipped members
        assert requests.get(f"{stack.ui_url}/_stcore/health", timeout=10).text == "ok"
        children = stack.children()
        assert len(children) == 2
    finally:
        started = time.monotonic()
        code = stack.stop()
    assert code == 0, stack.output()
    assert time.monotonic() - started < 30
    assert not [pid for pid in children if is_running(pid)]
    assert "stopping the API and the UI" in stack.output()


def test_demo_explains_a_missing_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BRATS_CHECKPOINT", str(tmp_path / "missing.pt"))
    assert demo.main(["--api-port", str(free_port()), "--ui-port", str(free_port())]) == 2
    message = capsys.readouterr().err
    assert "missing.pt is missing" in message and "brats train sspp --data DATA_DIR --export" in message


def test_demo_names_the_missing_checkpoint_of_the_second_model(tmp_path, random_export, monkeypatch, capsys):
    monkeypatch.setenv("BRATS_CHECKPOINT", str(random_export))
    monkeypatch.setenv("BRATS_CHECKPOINT_UNET", str(tmp_path / "unet_missing.pt"))
    monkeypatch.delenv("BRATS_ALLOWED_MODELS", raising=False)
    assert demo.main(["--api-port", str(free_port()), "--ui-port", str(free_port())]) == 2
    message = capsys.readouterr().err
    assert "unet_missing.pt is missing (the checkpoint of model unet)" in message
    assert "BRATS_CHECKPOINT_UNET" in message and "BRATS_ALLOWED_MODELS" in message


def test_demo_serves_the_fusion_only_with_its_shipped_members() -> None:
    assert demo.served_models({}) == ["sspp", "unet", "fusion"]
    assert demo.served_models({"BRATS_MODEL": "unet"}) == ["unet", "sspp", "fusion"]
    assert demo.served_models({"BRATS_CHECKPOINT": "my_sspp.pt"}) == ["sspp", "unet"]
    assert demo.served_models({"BRATS_CHECKPOINT_UNET": "my_unet.pt"}) == ["sspp", "unet"]
    assert demo.served_models({"BRATS_CHECKPOINT_UNET": " "}) == ["sspp", "unet", "fusion"]


def test_demo_explains_a_missing_fusion_manifest(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BRATS_ALLOWED_MODELS", "sspp,fusion")
    monkeypatch.setenv("BRATS_CHECKPOINT_FUSION", str(tmp_path / "fusion.json"))
    assert demo.main(["--api-port", str(free_port()), "--ui-port", str(free_port())]) == 2
    message = capsys.readouterr().err
    assert "fusion.json is missing (the checkpoint of model fusion)" in message
    assert f"brats train fusion --cv CV_OUT --out {tmp_path / 'fusion.json'}" in message


def test_demo_names_an_unknown_model(random_export, monkeypatch, capsys):
    monkeypatch.setenv("BRATS_CHECKPOINT", str(random_export))
    monkeypatch.setenv("BRATS_ALLOWED_MODELS", "sspp,nope")
    assert demo.main(["--api-port", str(free_port()), "--ui-port", str(free_port())]) == 2
    assert "demo: error: unknown model 'nope'" in capsys.readouterr().err


def test_demo_refuses_a_busy_port_and_names_the_make_form(random_export, monkeypatch, capsys):
    monkeypatch.setenv("BRATS_CHECKPOINT", str(random_export))
    ui_port = free_port()
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert demo.main(["--api-port", str(port), "--ui-port", str(ui_port)]) == 2
    message = capsys.readouterr().err
    assert f"API port {port} already in use" in message
    suggested = int(message.split("make demo API_PORT=")[1].split()[0])
    assert suggested != port and f"UI_PORT={ui_port}`" in message
    assert "environment variables API_PORT and UI_PORT" in message


def test_demo_takes_the_ports_from_the_environment(random_export, monkeypatch, capsys):
    monkeypatch.setenv("BRATS_CHECKPOINT", str(random_export))
    monkeypatch.delenv("API_PORT", raising=False)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        monkeypatch.setenv("BRATS_PORT", str(port))  # the API's own variable is honoured too
        monkeypatch.setenv("UI_PORT", str(free_port()))
        assert demo.main([]) == 2
        assert f"API port {port} already in use" in capsys.readouterr().err
        monkeypatch.setenv("API_PORT", str(port))
        monkeypatch.setenv("BRATS_PORT", "1")  # API_PORT wins
        assert demo.main([]) == 2
        assert f"API port {port} already in use" in capsys.readouterr().err
    monkeypatch.setenv("UI_PORT", "eighty")
    assert demo.main([]) == 2
    assert "UI_PORT='eighty' is not a TCP port" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["arguments", "environment"])
def test_make_demo_passes_the_ports_on(how, tmp_path):
    make = shutil.which("make")
    assert make, "make is needed for this test"
    variables = ["API_PORT=8100", "UI_PORT=8600"]
    env = {"PATH": "/usr/bin:/bin", **(dict(v.split("=") for v in variables) if how == "environment" else {})}
    command = [make, "-n", "-C", str(REPO_ROOT), "demo", *(variables if how == "arguments" else [])]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    [line] = [line for line in out.splitlines() if "streamlit_app.demo" in line]
    assert line.split("streamlit_app.demo")[1].split() == ["--api-port", "8100", "--ui-port", "8600"]


def test_demo_url_host():
    assert demo._url_host("0.0.0.0") == "127.0.0.1"
    assert demo._url_host("::1") == "[::1]"
    assert demo._url_host("127.0.0.1") == "127.0.0.1"
