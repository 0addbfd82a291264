"""Shared test fixtures: paths to ../shared, a clean environment per test."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    # The golden fixtures must be there (in CI too): a missing folder is a failure, not a skip.
    assert SHARED.is_dir(), f"../shared not found beside the checkout ({SHARED})"
    return SHARED


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
