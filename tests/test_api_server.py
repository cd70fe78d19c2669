"""The API's defences that live in the server, against a real ``brats serve`` process on a loopback port.

Raw sockets play the hostile clients: a body announced but never sent, an aborted upload, slowloris heads,
stalled bodies, too many connections. Every wait is a bounded loop, every server is stopped in teardown.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import httpx
import pytest
from api_support import multipart, wait_until, zero_volume_gz
from support import case_paths

from brats_core.cases import CaseFiles, find_cases

KEY = "s3cret-key"
BOUNDARY = "brats-test-boundary"


@pytest.fixture(scope="module")
def case(synthetic_root: Path) -> CaseFiles:
    return find_cases(synthetic_root)[0]


def read_response(sock: socket.socket, seconds: float) -> bytes:
    """What the server sends until it closes the connection or ``seconds`` pass."""
    sock.settimeout(0.2)
    data, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def is_closed(sock: socket.socket) -> bool:
    """True once the server closed the connection (EOF or reset)."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def upload_head(length: int, key: str | None = None, path: str = "/upload") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
             f"Content-Length: {length}", *([f"X-API-Key: {key}"] if key else [])]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def file_part_head(name: str = "case.zip") -> bytes:
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/zip\r\n\r\n").encode()


# ------------------------------------------------------------------------------------ refuse before reading
def test_key_and_size_are_checked_before_the_body_is_read(server_factory) -> None:
    server = server_factory(api_key=KEY, max_request_bytes=str(100 << 20))
    for head, status in ((upload_head(300 << 20), b"401"), (upload_head(300 << 20, KEY), b"413"),
                         (upload_head(50 << 20, "wrong"), b"401"), (upload_head(50 << 20, path="/predict"), b"401")):
        with server.connect() as sock:
            started = time.monotonic()
            sock.sendall(head)  # the body is announced, never sent
            answer = read_response(sock, 5.0)
            assert answer.startswith(b"HTTP/1.1 " + status), answer
            assert time.monotonic() - started < 3.0
    assert server.uploads() == [] and list(server.tmp.iterdir()) == []


# ---------------------------------------------------------------------------------------- aborted uploads
def test_an_aborted_upload_frees_its_spool_in_the_storage_folder(server_factory) -> None:
    server = server_factory()
    sent = 8 << 20
    with server.connect() as sock:
        sock.sendall(upload_head(200 << 20) + file_part_head())
        for _ in range(sent // (1 << 20)):
            sock.sendall(b"\0" * (1 << 20))

        def spooled() -> int:
            return sum(p.stat().st_size for u in server.uploads() for p in u.rglob("*") if p.is_file())

        assert wait_until(lambda: spooled() >= sent - (2 << 20), 20), spooled()
        assert [p.name for u in server.uploads() for p in u.glob("spool/*")] == ["part-0"]
        assert list(server.tmp.iterdir()) == [], "nothing may be spooled outside the storage folder"
    # the client is gone: the spool is deleted and no deleted file stays open
    assert wait_until(lambda: server.uploads() == [], 20), server.uploads()
    assert wait_until(lambda: server.open_deleted_files() == [], 10), server.open_deleted_files()
    assert httpx.get(server.url + "/").status_code == 200


def test_the_spool_counts_against_the_disk_limit(server_factory, case: CaseFiles) -> None:
    server = server_factory(max_disk_bytes=str(2 << 20))
    with server.connect() as sock:  # announced beyond the room left: refused before reading
        sock.sendall(upload_head(3 << 20) + file_part_head())
        assert read_response(sock, 5.0).startswith(b"HTTP/1.1 503")
    chunked = (f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
               "Transfer-Encoding: chunked\r\n\r\n").encode()
    with server.connect() as sock:  # no length announced: cut off once the spool reaches the limit
        sock.sendall(chunked)
        body = file_part_head()
        sock.sendall(f"{len(body):x}\r\n".encode() + body + b"\r\n")
        answer = b""
        for _ in range(6):
            try:
                sock.sendall(b"100000\r\n" + b"\0" * (1 << 20) + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = read_response(sock, 5.0)
        assert answer.startswith(b"HTTP/1.1 503") and b"storage is full" in answer, answer
    assert wait_until(lambda: server.uploads() == [], 10)
    with httpx.Client(base_url=server.url, timeout=30) as client:  # a real upload still fits
        assert client.post("/upload", files=multipart(case_paths(case))).status_code == 201


# ----------------------------------------------------------------------------------- slow clients and caps
def test_slowloris_heads_are_cut_off(server_factory) -> None:
    server = server_factory(header_timeout_seconds="1.5")
    socks = [server.connect() for _ in range(60)]
    try:
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # keep trickling header bytes, as slowloris does
            for index, sock in enumerate(socks):
                sock.sendall(f"X-Slow-{index}: 1\r\n".encode())
            time.sleep(0.25)
        assert wait_until(lambda: all(is_closed(s) for s in socks), 10), "slow heads were not cut off"
        assert time.monotonic() - started < 6.0
    finally:
        for sock in socks:
            sock.close()
    assert httpx.get(server.url + "/").status_code == 200


def test_stalled_and_slow_bodies_get_408(server_factory) -> None:
    server = server_factory(body_idle_timeout_seconds="1", body_timeout_seconds="3")
    with server.connect() as sock:  # stalls after a few bytes
        sock.sendall(upload_head(1 << 20) + file_part_head())
        answer = read_response(sock, 6.0)
        assert answer.startswith(b"HTTP/1.1 408") and b"BRATS_BODY_IDLE_TIMEOUT_SECONDS" in answer, answer
    with server.connect() as sock:  # a byte every 0.5 s: never idle for 1 s, but over 3 s in all
        sock.sendall(upload_head(1 << 20) + file_part_head())
        started, answer = time.monotonic(), b""
        while time.monotonic() - started < 8 and not answer:
            try:
                sock.sendall(b"\0")
            except (BrokenPipeError, ConnectionResetError):
                break
            answer = read_response(sock, 0.5)
        answer += read_response(sock, 1.0)
        assert answer.startswith(b"HTTP/1.1 408") and b"BRATS_BODY_TIMEOUT_SECONDS" in answer, answer
    assert wait_until(lambda: server.uploads() == [], 10)


def test_connections_are_capped(server_factory) -> None:
    server = server_factory(max_connections="4", header_timeout_seconds="30")
    idle = [server.connect() for _ in range(4)]
    try:
        assert wait_until(lambda: httpx.get(server.url + "/").status_code == 503, 5)
    finally:
        for sock in idle:
            sock.close()
    assert wait_until(lambda: httpx.get(server.url + "/").status_code == 200, 5)


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def test_huge_zero_volumes_cost_no_memory(server_factory) -> None:
    """Four 400^3 zero volumes (0.5 MB sent) once took +1 GiB of RSS: now refused from their headers."""
    server = server_factory()
    before = peak_rss_mib(server.process.pid)
    volume = zero_volume_gz((400, 400, 400))
    files = [("files", (f"big_{m}.nii.gz", volume)) for m in ("t1", "t1ce", "t2", "flair")]
    started = time.monotonic()
    response = httpx.post(server.url + "/upload", files=files, timeout=60)
    assert response.status_code == 422 and "BRATS_MAX_VOXELS_PER_VOLUME" in response.text, response.text
    assert time.monotonic() - started < 10
    assert peak_rss_mib(server.process.pid) - before < 64, (before, peak_rss_mib(server.process.pid))
