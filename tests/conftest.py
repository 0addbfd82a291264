"""Shared test fixtures: the copied fixtures folder, a clean environment per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def _loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    return isinstance(host, str) and (host.startswith("127.") or host in ("::1", "localhost"))


@pytest.fixture(scope="session", autouse=True)
def _no_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never touch the network: only loopback addresses resolve and connect (the local
    HTTP server below). Session-wide, because module-scoped fixtures are set up before the
    per-test environment of `_isolated_home`; they get an offline home of their own here."""
    import socket

    real_connect, real_connect_ex, real_getaddrinfo = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.getaddrinfo,
    )

    def refuse(address: object) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and not _loopback(host):
            raise OSError(f"tests must not use the network (tried {host})")

    def connect(self: socket.socket, address: object) -> None:
        refuse(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        refuse(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        refuse((host,))
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        mp.setenv("DHR_HOME", str(tmp_path_factory.mktemp("dhr_home_session")))
        mp.setenv("DHR_OFFLINE", "1")
        yield


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    # Copied into the repository (tests/fixtures/README.md), so a bare clone has them.
    return FIXTURES


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The 64-px nets run fastest on one intra-op thread (the synthetic pack's cpu_threads);
    restored afterwards so other tests see torch's default."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never touch the user's cache or the network: every test gets its own DHR_HOME."""
    home = tmp_path_factory.mktemp("dhr_home")
    monkeypatch.setenv("DHR_HOME", str(home))
    monkeypatch.setenv("DHR_OFFLINE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")


# --- a local HTTP server for download tests (never the network) --------------------------------


class LocalServer:
    """Serves files from `root` on 127.0.0.1, with switches to misbehave like real servers.

    - `html`: answer every GET with an HTML page (as a login/quota page would);
      `html_content_type` False sends it as application/octet-stream (only sniffing can tell)
    - `cut_after` / `cut_times`: send only the first `cut_after` body bytes of the next
      `cut_times` responses, then drop the connection
    - `honour_range`: answer `Range: bytes=N-` with 206 (else a full 200)
    - `delay`: seconds to sleep between 4 kB chunks (to make downloads overlap)
    - `requests`: (path, Range header or None) of every request, in order
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = ""
        self.html = False
        self.html_content_type = True
        self.cut_after: int | None = None
        self.cut_times = 1
        self.honour_range = True
        self.delay = 0.0
        self.requests: list[tuple[str, str | None]] = []

    def count(self, name: str) -> int:
        return sum(1 for p, _ in self.requests if p.lstrip("/") == name)

    def add(self, name: str, data: bytes) -> str:
        """Serve `data` as /name; returns its URL."""
        (self.root / name).write_bytes(data)
        return f"{self.url}/{name}"


@pytest.fixture
def http_server(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalServer]:
    import re
    import socket
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    state = LocalServer(tmp_path_factory.mktemp("served"))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            rng = self.headers.get("Range")
            with lock:
                state.requests.append((self.path, rng))
            if state.html:
                body = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>quota exceeded</body></html>\n"
                self.send_response(200)
                ctype = (
                    "text/html; charset=utf-8"
                    if state.html_content_type
                    else "application/octet-stream"
                )
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            target = (state.root / self.path.lstrip("/")).resolve()
            if state.root.resolve() not in target.parents or not target.is_file():
                self.send_error(404)
                return
            data = target.read_bytes()
            start = 0
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if m and state.honour_range:
                start = int(m.group(1))
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with lock:
                cut = (
                    state.cut_after if state.cut_after is not None and state.cut_times > 0 else None
                )
                if cut is not None:
                    state.cut_times -= 1
            if cut is not None:
                body = body[:cut]
            for i in range(0, len(body), 4096):
                self.wfile.write(body[i : i + 4096])
                if state.delay:
                    self.wfile.flush()
                    time.sleep(state.delay)
            if cut is not None:
                # drop the connection mid-body, as a flaky network would
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
