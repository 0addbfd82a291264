"""The test suite's own guarantees: no network, no user cache, also for module-scoped fixtures
(they are set up before the per-test environment)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def env_at_module_setup() -> dict[str, str]:
    return dict(os.environ)


def test_module_fixtures_get_an_offline_home_of_their_own(
    env_at_module_setup: dict[str, str],
) -> None:
    import platformdirs

    assert env_at_module_setup.get("DHR_OFFLINE") == "1"
    home = env_at_module_setup.get("DHR_HOME")
    assert home and Path(home) != Path(platformdirs.user_cache_dir("dhr"))


def test_the_network_is_out_of_reach() -> None:
    with pytest.raises(OSError, match="tests must not use the network"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1
    with pytest.raises(OSError, match="tests must not use the network"):
        socket.getaddrinfo("github.com", 443)
    assert socket.getaddrinfo(b"localhost", 80) and socket.getaddrinfo(None, 80)  # passive: bind
    # loopback stays usable: the download tests' local HTTP server lives there
    srv = socket.create_server(("127.0.0.1", 0))
    with srv, socket.create_connection(srv.getsockname(), timeout=1):
        pass
