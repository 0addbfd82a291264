"""BiSeNet face parser: loader round trip, shapes, preprocessing, DHR's class-sum rule, devices."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dhr_cli.errors import BadData
from dhr_cli.nets.parsing import (
    CELEBAMASK_HQ_CLASSES,
    DHR_OUT_OF_DOMAIN_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    FaceParser,
    class_indices,
    in_domain_mask,
    load_parser,
)


def _random_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = FaceParser().net
    with torch.no_grad():  # non-trivial BatchNorm statistics so the round trip means something
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = _random_state()
    path = tmp_path_factory.mktemp("parsing") / "parsing_bisenet.pth"
    torch.save(state, path)
    return path, state


def test_class_table_is_celebamask_hq() -> None:
    assert len(CELEBAMASK_HQ_CLASSES) == 19
    expected = {0: "background", 1: "skin", 6: "eye_g", 9: "ear_r", 10: "nose", 15: "neck_l"}
    expected |= {16: "cloth", 17: "hair", 18: "hat"}
    assert {i: CELEBAMASK_HQ_CLASSES[i] for i in expected} == expected
    # background, cloth, necklace, earring, hat
    assert class_indices(DHR_OUT_OF_DOMAIN_CLASSES) == [0, 16, 15, 9, 18]
    assert class_indices([3, "hair"]) == [3, 17]
    with pytest.raises(ValueError, match="unknown parsing class"):
        class_indices(["sunglasses"])
    with pytest.raises(ValueError):
        class_indices([19])


def test_loader_round_trip_and_shapes(weights: tuple[Path, dict]) -> None:
    path, state = weights
    parser = load_parser(path)
    for key, value in parser.net.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not any(p.requires_grad for p in parser.parameters())
    parser.train()
    assert not parser.training and not parser.net.training
    assert parser.input_size == 512  # facexlib's; the forward below uses a small one (fast)
    small = FaceParser(input_size=32)
    small.net.load_state_dict(state)
    img = torch.rand(3, 3, 24, 20, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        probs, labels = small(img), small.labels(img)
    assert probs.shape == (3, 19, 24, 20)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3, 24, 20))
    assert labels.shape == (3, 24, 20) and labels.dtype == torch.int64
    assert torch.equal(labels, probs.argmax(dim=1))


def test_preprocessing_is_imagenet_normalised_rgb(weights: tuple[Path, dict]) -> None:
    path, state = weights
    parser = FaceParser(input_size=32)  # small internal size keeps the test fast
    parser.net.load_state_dict(state)
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = parser.net(((img + 1) / 2 - mean) / std)[0]
        torch.testing.assert_close(parser.logits(img), expected)
        # other sizes go through the network's input size and come back at their own
        assert parser.logits(torch.zeros(1, 3, 64, 64)).shape == (1, 19, 64, 64)
    assert FaceParser().input_size == 512


def test_in_domain_mask_sums_the_out_of_domain_classes() -> None:
    probs = torch.zeros(1, 19, 1, 4)
    # pixel 0: background 0.3 + hat 0.25 -> 0.55 >= 0.5: out-of-domain
    probs[0, [0, 18, 1], 0, 0] = torch.tensor([0.3, 0.25, 0.45])
    # pixel 1: cloth 0.2 + earring 0.2 -> 0.4: in-domain
    probs[0, [16, 9, 1], 0, 1] = torch.tensor([0.2, 0.2, 0.6])
    # pixel 2: necklace exactly 0.5: out-of-domain (>=)
    probs[0, [15, 14], 0, 2] = torch.tensor([0.5, 0.5])
    # pixel 3: hair and eyeglasses are in-domain classes
    probs[0, [17, 6], 0, 3] = torch.tensor([0.7, 0.3])
    mask = in_domain_mask(probs)
    assert mask.shape == (1, 1, 1, 4) and mask.dtype == probs.dtype
    assert mask.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    # other classes / threshold
    assert in_domain_mask(probs, ["hair"], threshold=0.6).flatten().tolist() == [1, 1, 1, 0]
    # a pack with its own class map
    names = ("bg", "face", "occluder")
    own = torch.tensor([[0.6, 0.4, 0.0], [0.2, 0.5, 0.3], [0.1, 0.9, 0.0]]).T.reshape(1, 3, 1, 3)
    got = in_domain_mask(own, ("bg", "occluder"), class_names=names)
    assert got.flatten().tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        in_domain_mask(own)  # 3 channels but the CelebAMask-HQ table has 19


def test_devices(weights: tuple[Path, dict]) -> None:
    path, _ = weights
    meta = FaceParser(device="meta")  # built where asked: no CPU copy, nothing downloaded
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    assert meta.mean.device.type == "meta"
    assert meta.probabilities(torch.zeros(1, 3, 40, 40, device="meta")).shape == (1, 19, 40, 40)
    cpu = load_parser(path, device=torch.device("cpu"))
    assert {b.device.type for b in cpu.buffers()} == {"cpu"}
    if torch.cuda.is_available():
        cuda = load_parser(path, device="cuda")
        out = cuda.probabilities(torch.zeros(1, 3, 64, 64, device="cuda"))
        assert out.device.type == "cuda"


def test_bad_weight_files(tmp_path: Path, weights: tuple[Path, dict]) -> None:
    _, state = weights
    partial = dict(state)
    partial.pop("conv_out.conv_out.weight")
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(BadData, match="1 missing"):
        load_parser(tmp_path / "partial.pth")
    wrong = dict(state)
    wrong["conv_out.conv_out.weight"] = torch.zeros(11, 256, 1, 1)  # another class count
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(BadData, match="wrong shape"):
        load_parser(tmp_path / "wrong.pth")
    (tmp_path / "junk.pth").write_bytes(b"garbage")
    with pytest.raises(BadData):
        load_parser(tmp_path / "junk.pth")
    # the same weights wrapped the way training scripts save them, and as safetensors
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pth")
    save_file(state, str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "w.safetensors"):
        loaded = load_parser(tmp_path / name).net.state_dict()
        assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_from_hub_offline_without_weights_says_so(tmp_path: Path) -> None:
    from dhr_cli.errors import ModelUnavailable
    from dhr_cli.packs import Pack, pack_settings

    # the ffhq pack resolves its parser through the hub (the net itself only takes a path)
    pack = Pack(pack_settings("ffhq"), models_dir=tmp_path, offline=True)
    with pytest.raises(ModelUnavailable, match="parsing_bisenet.pth"):
        _ = pack.parser
