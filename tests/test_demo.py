"""``make demo`` (``python -m streamlit_app.demo``): both services answer, Ctrl-C stops both, clear errors."""

from __future__ import annotations

import socket
import time

import pytest
import requests
from streamlit_support import Demo, is_running
from support import free_port

from streamlit_app import demo


@pytest.mark.slow
def test_demo_serves_api_and_ui_and_stops_both_on_ctrl_c(random_export, tmp_path):
    stack = Demo(random_export, tmp_path / "api")
    try:
        assert f"API: {stack.api_url}" in stack.output() and f"UI:  {stack.ui_url}" in stack.output()
        health = requests.get(f"{stack.api_url}/", timeout=10).json()
        assert health["status"] == "ok" and health["checkpoint"] == random_export.name
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


def test_demo_refuses_a_busy_port(random_export, monkeypatch, capsys):
    monkeypatch.setenv("BRATS_CHECKPOINT", str(random_export))
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert demo.main(["--api-port", str(port), "--ui-port", str(free_port())]) == 2
    assert f"API port {port} already in use" in capsys.readouterr().err


def test_demo_url_host():
    assert demo._url_host("0.0.0.0") == "127.0.0.1"
    assert demo._url_host("::1") == "[::1]"
    assert demo._url_host("127.0.0.1") == "127.0.0.1"
