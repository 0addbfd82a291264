"""ArcFace IR-SE50 identity encoder: loader round trip, crop convention, normalisation, devices."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dhr_cli.errors import BadData
from dhr_cli.nets.identity import (
    ARCFACE_INPUT_SIZE,
    EMBEDDING_DIM,
    IdentityEncoder,
    cosine_similarity,
    load_identity,
)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    net = IdentityEncoder().net
    with torch.no_grad():  # non-trivial BatchNorm statistics so the round trip means something
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    path = tmp_path_factory.mktemp("identity") / "recognition_arcface_ir_se50.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def encoder(weights: tuple[Path, dict]) -> IdentityEncoder:
    return load_identity(weights[0])


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_loader_round_trip(weights: tuple[Path, dict], encoder: IdentityEncoder) -> None:
    _, state = weights
    for key, value in encoder.net.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training and not encoder.net.training


def test_embeddings_are_unit_length_and_similarity_is_cosine(encoder: IdentityEncoder) -> None:
    a, b = _images(1, 128, 1), _images(1, 128, 2)
    with torch.no_grad():
        e = encoder(torch.cat([a, b]))
        sim_self = encoder.similarity(a, a)
        sim_ab = encoder.similarity(a, b)
    assert e.shape == (2, EMBEDDING_DIM)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(sim_self, torch.ones(1))
    assert sim_ab.shape == (1,) and sim_ab.item() < 1 - 1e-4
    torch.testing.assert_close(sim_ab, (e[:1] * e[1:]).sum(dim=1))
    torch.testing.assert_close(cosine_similarity(e[1:], e[:1]), sim_ab)
    with pytest.raises(ValueError):
        encoder.similarity(a, torch.cat([a, b]))


def test_ffhq_crop_convention(encoder: IdentityEncoder) -> None:
    img = _images(1, 256, 3)
    x = encoder.preprocess(img)
    assert x.shape == (1, 3, ARCFACE_INPUT_SIZE, ARCFACE_INPUT_SIZE)
    # pSp's ID metric: rows 35:223, columns 32:220 of the 256-px frame, pooled to 112
    torch.testing.assert_close(x, F.adaptive_avg_pool2d(img[:, :, 35:223, 32:220], 112))
    # a 1024-px crop is pooled to 256 first: same result as the pooled image itself
    big = img.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    torch.testing.assert_close(encoder.preprocess(big), x)
    assert encoder.preprocess(_images(1, 64, 4)).shape == (1, 3, 112, 112)
    with pytest.raises(ValueError):
        encoder.preprocess(torch.zeros(1, 3, 256, 200))


def test_arcface_crop_takes_an_aligned_112_crop(weights: tuple[Path, dict]) -> None:
    enc = IdentityEncoder(crop="arcface")
    img = _images(1, 112, 5)
    assert enc.preprocess(img) is img
    assert enc.preprocess(_images(1, 224, 6)).shape == (1, 3, 112, 112)
    with pytest.raises(ValueError):
        IdentityEncoder(crop="center")


def test_devices(weights: tuple[Path, dict]) -> None:
    meta = IdentityEncoder(device="meta")  # facexlib's own initialiser would force CUDA
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    assert meta.embed(torch.zeros(2, 3, 256, 256, device="meta")).shape == (2, EMBEDDING_DIM)
    cpu = load_identity(weights[0], device="cpu", crop="arcface")
    assert {p.device.type for p in cpu.parameters()} == {"cpu"} and cpu.crop == "arcface"
    if torch.cuda.is_available():
        cuda = load_identity(weights[0], device="cuda")
        assert cuda.embed(torch.zeros(1, 3, 256, 256, device="cuda")).device.type == "cuda"


def test_wrong_weights_are_refused(tmp_path: Path, weights: tuple[Path, dict]) -> None:
    _, state = weights
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(BadData, match="ArcFace IR-SE50"):
        load_identity(tmp_path / "other.pth")
    wrong = dict(state)
    wrong["output_layer.3.weight"] = torch.zeros(512, 512 * 8 * 8)  # a 128-px model
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(BadData, match="wrong shape"):
        load_identity(tmp_path / "wrong.pth")
    with pytest.raises(Exception) as info:
        load_identity(tmp_path / "missing.pth")
    assert info.value.__class__.__name__ == "InputMissing"


def test_from_hub_offline_without_weights_says_so(tmp_path: Path) -> None:
    from dhr_cli.errors import ModelUnavailable
    from dhr_cli.packs.shared import identity_encoder

    with pytest.raises(ModelUnavailable, match="recognition_arcface_ir_se50.pth"):
        identity_encoder(models_dir=tmp_path, offline=True)
