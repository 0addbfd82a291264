"""Project file: round trip of every field, clear errors for bad files, atomic writes."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dhr_cli import __version__, project
from dhr_cli.errors import BadData, ExitCode, InputMissing, OutputError
from dhr_cli.project import Project, default_path, project_path_for, read_metadata


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    p = tmp_path / "portrait.jpg"
    p.write_bytes(b"\xff\xd8 stand-in photo bytes")
    return p


def full_project(photo: Path) -> Project:
    g = torch.Generator().manual_seed(0)
    p = Project.for_photo(
        photo,
        wplus=torch.randn(1, 18, 512, generator=g),
        pack="ffhq",
        models={"e4e-ffhq": "a" * 64, "stylegan2-ffhq-1024": "b" * 64},
    )
    p.mask = (torch.rand(1, 1, 32, 32, generator=g) > 0.5).float()
    p.feature = torch.randn(1, 64, 16, 16, generator=g)
    p.deltas = {
        "convs.0.conv.weight": torch.randn(1, 8, 8, 3, 3, generator=g).half(),
        "to_rgbs.1.bias": torch.randn(1, 3, 1, 1, generator=g),
    }
    p.quad = torch.tensor([[0.0, 0.0], [0.0, 10.5], [10.5, 10.5], [10.5, 0.0]], dtype=torch.float64)
    p.crop_to_photo = torch.eye(3, dtype=torch.float64) * 2
    p.tensors["extra.noise"] = torch.arange(6, dtype=torch.int32)
    p.extra["note"] = "kept"
    p.record_step("invert", {"encoder": "e4e-ffhq", "size": 1024})
    p.record_step("mask", {"threshold": {"skin": 0.2}, "superpixels": 400})
    p.record_step("invert", {"encoder": "lsap-ffhq", "size": 1024})
    return p


def test_default_path(photo: Path) -> None:
    assert default_path(photo) == photo.parent / "portrait.jpg.dhr"
    assert project_path_for(photo) == default_path(photo)
    assert project_path_for(default_path(photo)) == default_path(photo)


def test_round_trip_every_field(photo: Path) -> None:
    p = full_project(photo)
    out = p.save()
    assert out == default_path(photo)
    q = Project.load(out)
    assert set(q.tensors) == set(p.tensors)
    for name, t in p.tensors.items():
        assert q.tensors[name].dtype == t.dtype, name
        assert torch.equal(q.tensors[name], t), name
    assert q.deltas["convs.0.conv.weight"].dtype == torch.float16
    assert torch.equal(q.wplus, p.wplus) and torch.equal(q.mask, p.mask)
    assert torch.equal(q.feature, p.feature) and torch.equal(q.quad, p.quad)
    assert torch.equal(q.crop_to_photo, p.crop_to_photo)
    assert q.source_path == str(photo) and q.source_sha256 == p.source_sha256
    assert q.pack == "ffhq" and q.models == p.models
    assert q.params == {
        "invert": {"encoder": "lsap-ffhq", "size": 1024},
        "mask": {"threshold": {"skin": 0.2}, "superpixels": 400},
    }
    assert [s.step for s in q.history] == ["invert", "mask", "invert"]
    assert q.history == p.history
    # its binary mask is stored bit-packed: format 2.0
    assert q.dhr_version == __version__ and q.format_version == project.FORMAT_VERSION
    assert q.extra == {"note": "kept"}
    q.check_source(photo)
    meta = read_metadata(out)
    assert meta["format"] == "dhr-project" and json.loads(meta["models"]) == p.models


def test_minimal_project_and_optional_tensors(tmp_path: Path) -> None:
    p = Project(tensors={project.WPLUS: torch.zeros(1, 14, 512)})
    out = p.save(tmp_path / "x.dhr")
    q = Project.load(out)
    assert q.mask is None and q.feature is None and q.deltas == {} and q.quad is None
    assert q.history == [] and q.source_path is None


def test_check_source_detects_another_photo(photo: Path, tmp_path: Path) -> None:
    p = full_project(photo)
    other = tmp_path / "other.jpg"
    other.write_bytes(b"different")
    with pytest.raises(BadData, match="not the photo"):
        p.check_source(other)


# --- bad files: each a clear BadData (exit 4) or InputMissing (exit 3) -------------------------


def expect_bad(path: Path, match: str) -> None:
    with pytest.raises(BadData, match=match) as exc:
        Project.load(path)
    assert exc.value.exit_code == ExitCode.BAD_DATA == 4
    assert str(path) in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputMissing, match="no such project file") as exc:
        Project.load(tmp_path / "nope.jpg.dhr")
    assert exc.value.exit_code == ExitCode.INPUT_MISSING == 3


def test_truncated(photo: Path, tmp_path: Path) -> None:
    good = full_project(photo).save(tmp_path / "a.dhr").read_bytes()
    for cut in (len(good) - 1, len(good) // 2, 200, 5):
        bad = tmp_path / f"cut{cut}.dhr"
        bad.write_bytes(good[:cut])
        with pytest.raises(BadData, match="truncated|not a dhr project") as exc:
            Project.load(bad)
        assert exc.value.exit_code == 4


def test_random_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "random.dhr"
    bad.write_bytes(os.urandom(4096))
    expect_bad(bad, "not a dhr project file")
    text = tmp_path / "text.dhr"
    text.write_bytes(b"hello, this is not a project at all")
    expect_bad(text, "not a dhr project file")


def test_foreign_safetensors_wrong_magic(tmp_path: Path) -> None:
    bad = tmp_path / "model.dhr"
    save_file({"latent.wplus": torch.zeros(1, 18, 512)}, str(bad))
    expect_bad(bad, "not a dhr project file")
    save_file(
        {"latent.wplus": torch.zeros(1, 18, 512)},
        str(bad),
        metadata={"format": "something-else", "format_version": "1.0"},
    )
    expect_bad(bad, "something-else")


def rewrite_meta(src: Path, dst: Path, **changes: str | None) -> None:
    p = Project.load(src)
    meta = p.metadata()
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    save_file({k: v.contiguous() for k, v in p.tensors.items()}, str(dst), metadata=meta)


def test_newer_major_version_refused_newer_minor_read(photo: Path, tmp_path: Path) -> None:
    src = full_project(photo).save(tmp_path / "a.dhr")
    newer = tmp_path / "newer.dhr"
    rewrite_meta(src, newer, format_version="3.0", dhr_version="9.0.0")
    with pytest.raises(BadData, match="newer dhr") as exc:
        Project.load(newer)
    assert "upgrade dhr" in str(exc.value) and exc.value.exit_code == 4
    minor = tmp_path / "minor.dhr"
    rewrite_meta(src, minor, format_version="1.7")
    assert Project.load(minor).format_version == "1.7"
    rewrite_meta(src, minor, format_version="2.3")
    assert Project.load(minor).format_version == "2.3"
    garbled = tmp_path / "garbled.dhr"
    rewrite_meta(src, garbled, format_version="one")
    expect_bad(garbled, "format version")


def test_missing_required_tensor(tmp_path: Path) -> None:
    bad = tmp_path / "nolatent.dhr"
    meta = Project(tensors={project.WPLUS: torch.zeros(1, 18, 512)}).metadata()
    save_file({"mask.in_domain": torch.ones(1, 1, 8, 8)}, str(bad), metadata=meta)
    expect_bad(bad, "latent.wplus")


@pytest.mark.parametrize(
    ("name", "tensor", "match"),
    [
        ("latent.wplus", torch.zeros(18, 512), r"\[1, n, d\]"),
        ("latent.wplus", torch.zeros(1, 18, 512, dtype=torch.int64), r"\[1, n, d\]"),
        ("latent.wplus", torch.full((1, 18, 512), float("nan")), "finite"),
        ("mask.in_domain", torch.ones(1, 3, 8, 8), r"\[1, 1, H, W\]"),
        ("mask.in_domain", torch.full((1, 1, 8, 8), 2.0), r"\[0, 1\]"),
        ("feature.f", torch.zeros(2, 8, 4, 4), r"\[1, C, h, w\]"),
        ("align.quad", torch.zeros(4, 2), "float64"),
        ("align.crop_to_photo", torch.zeros(2, 3, dtype=torch.float64), "float64"),
        ("delta.convs.0.conv.weight", torch.zeros(3, dtype=torch.int8), "float16"),
        # non-finite or singular values made NaN images or an internal error downstream
        ("feature.f", torch.full((1, 8, 4, 4), float("inf")), "finite"),
        ("delta.convs.0.conv.weight", torch.full((3,), float("nan")), "finite"),
        ("align.crop_to_photo", torch.zeros(3, 3, dtype=torch.float64), "invertible"),
    ],
)
def test_wrong_shapes_and_dtypes(tmp_path: Path, name: str, tensor, match: str) -> None:
    tensors = {project.WPLUS: torch.zeros(1, 18, 512), name: tensor}
    bad = tmp_path / "bad.dhr"
    save_file(tensors, str(bad), metadata=Project().metadata())
    expect_bad(bad, match)
    with pytest.raises(BadData, match=match):  # the writer refuses too
        Project(tensors=tensors).save(tmp_path / "w.dhr")


def test_malformed_metadata_json(photo: Path, tmp_path: Path) -> None:
    src = full_project(photo).save(tmp_path / "a.dhr")
    bad = tmp_path / "meta.dhr"
    rewrite_meta(src, bad, history="[{not json")
    expect_bad(bad, "history")
    # valid JSON of the wrong shape: the edit read params["invert"].get(...) (internal error)
    rewrite_meta(src, bad, params='{"invert": "x"}')
    expect_bad(bad, "params of step 'invert' must be a JSON object")


def test_trailing_garbage(photo: Path, tmp_path: Path) -> None:
    path = full_project(photo).save(tmp_path / "a.dhr")
    with open(path, "ab") as f:
        f.write(b"junk")
    expect_bad(path, "trailing")


def test_header_length_beyond_file(tmp_path: Path) -> None:
    bad = tmp_path / "hdr.dhr"
    bad.write_bytes(struct.pack("<Q", 1000) + b"{}")
    expect_bad(bad, "truncated")


# --- atomic writes ----------------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_interrupted_write_keeps_old_file(
    photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupt: type
) -> None:
    path = full_project(photo).save(tmp_path / "a.dhr")
    before = path.read_bytes()

    def broken_write(f, data, chunk=1 << 10):
        f.write(data[: len(data) // 2])  # half the new file is on disk ...
        raise interrupt()  # ... when Ctrl-C (or a bug) strikes

    monkeypatch.setattr(project, "_write_all", broken_write)
    changed = full_project(photo)
    changed.wplus = torch.ones(1, 18, 512)
    with pytest.raises(interrupt):
        changed.save(path)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    assert torch.equal(Project.load(path).wplus, full_project(photo).wplus)


def test_interrupt_before_replace_keeps_old_file(
    photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = full_project(photo).save(tmp_path / "a.dhr")
    before = path.read_bytes()

    def interrupted_fsync(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        full_project(photo).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and leftovers(tmp_path) == []


def test_unwritable_destination_is_output_error(photo: Path, tmp_path: Path) -> None:
    with pytest.raises(OutputError) as exc:
        full_project(photo).save(tmp_path / "no" / "such" / "folder" / "a.dhr")
    assert exc.value.exit_code == ExitCode.OUTPUT_ERROR == 6


def test_file_mode_follows_umask(photo: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = full_project(photo).save(tmp_path / "a.dhr")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_missing_photo_is_input_missing(tmp_path: Path) -> None:
    with pytest.raises(InputMissing):
        Project.for_photo(tmp_path / "missing.jpg")


# ------------------------------------------------------------ compact storage (format 2.0)


@pytest.mark.parametrize(
    ("delta_dtype", "int8_from", "feature_storage"),
    [
        ("int8", None, "int8-masked"),
        ("int4", None, "float16-masked"),
        ("int4", None, "int8"),
        ("int8", None, "float16"),
        ("int4", 16, "int8-masked"),  # the ffhq pack's kind: int4, int8 from a resolution up
    ],
)
def test_compact_storage_reproduces_the_refinement_exactly(
    photo: Path, delta_dtype: str, int8_from: int | None, feature_storage: str
) -> None:
    from dhr_cli.method.refine import RefineConfig, storable_deltas, storable_feature

    g = torch.Generator().manual_seed(3)
    cfg = RefineConfig(
        delta_dtype=delta_dtype,
        delta_group=16,
        delta_int8_from=int8_from,
        feature_storage=feature_storage,
    )
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 8:40, 16:56] = 1.0
    raw = {
        "convs.0.conv.weight": torch.randn(1, 96, 96, 3, 3, generator=g) * 1e-3,
        "to_rgbs.1.bias": torch.randn(1, 3, 1, 1, generator=g) * 1e-3,
    }
    p = Project.for_photo(photo, wplus=torch.randn(1, 18, 512, generator=g), pack="ffhq")
    p.mask = mask
    p.deltas = storable_deltas(raw, cfg)
    p.feature = storable_feature(torch.randn(1, 32, 16, 16, generator=g) * 5, mask, cfg)
    p.record_step("invert", {"method": "dhr", "feature_mask": "in_domain", **cfg.params()})
    saved = p.save()
    q = Project.load(saved)
    assert q.format_version == project.FORMAT_VERSION == "2.0"  # dhr 0.1.0 refuses it
    # a file of float tensors only stays format 1.0, which dhr 0.1.0 reads too
    plain = Project(tensors={project.WPLUS: torch.zeros(1, 18, 512)})
    assert Project.load(plain.save(photo.parent / "plain.dhr")).format_version == "1.0"
    assert torch.equal(q.mask, mask) and q.mask.dtype == torch.float32
    assert torch.equal(q.feature, p.feature) and q.feature.dtype == torch.float32
    assert q.deltas.keys() == raw.keys()
    # convs.0 is an 8-px layer, to_rgbs.1 a 16-px one (and a small tensor)
    bits = {"convs.0.conv.weight": 4 if delta_dtype == "int4" else 8}
    bits["to_rgbs.1.bias"] = 8 if int8_from == 16 else bits["convs.0.conv.weight"]
    for k, v in p.deltas.items():
        assert torch.equal(q.deltas[k], v)
        assert (q.deltas[k] - raw[k]).abs().max() <= raw[k].abs().max() / (
            3 if bits[k] == 4 else 60
        )
    with safe_open(saved, "pt") as f:  # the codes: 4-bit ones two to a byte
        for k, b in bits.items():
            assert f.get_tensor(f"deltaq.{k}").numel() == -(-raw[k].numel() * b // 8)
    # only the out-of-domain part of a masked feature is kept (the rest is never read)
    pooled = torch.nn.functional.adaptive_avg_pool2d(mask, (16, 16))
    if feature_storage.endswith("-masked"):
        assert bool((q.feature[:, :, pooled[0, 0] == 1] == 0).all())
    # a second save of what was read writes the same tensors
    r = Project.load(q.save(photo.parent / "again.dhr"))
    assert all(torch.equal(r.deltas[k], q.deltas[k]) for k in q.deltas)
    assert torch.equal(r.feature, q.feature)


def test_compact_storage_is_smaller(photo: Path) -> None:
    from dhr_cli.method.refine import RefineConfig, storable_deltas

    g = torch.Generator().manual_seed(4)
    raw = {"convs.0.conv.weight": torch.randn(1, 64, 64, 3, 3, generator=g) * 1e-3}
    sizes = {}
    for dd in ("float16", "int8", "int4"):
        p = Project.for_photo(photo, wplus=torch.zeros(1, 18, 512), pack="ffhq")
        p.deltas = storable_deltas(raw, RefineConfig(delta_dtype=dd))
        p.record_step("invert", {"method": "dhr", "delta_dtype": dd, "delta_group": 64})
        sizes[dd] = p.save(photo.parent / f"{dd}.dhr").stat().st_size
    n = 64 * 64 * 9
    assert sizes["int8"] < sizes["float16"] - n * 0.9
    assert sizes["int4"] < sizes["int8"] - n * 0.45


def test_format_1_0_files_are_still_read(photo: Path) -> None:
    """A format 1.0 file: float tensors only (float16 deltas, float32 mask and feature)."""
    g = torch.Generator().manual_seed(5)
    tensors = {
        "latent.wplus": torch.randn(1, 18, 512, generator=g),
        "mask.in_domain": (torch.rand(1, 1, 32, 32, generator=g) > 0.5).float(),
        "feature.f": torch.randn(1, 8, 16, 16, generator=g),
        "delta.convs.0.conv.weight": torch.randn(1, 8, 8, 3, 3, generator=g).half(),
    }
    meta = {
        "format": "dhr-project",
        "format_version": "1.0",
        "dhr_version": "0.9.0",
        "pack": "ffhq",
        "params": json.dumps({"invert": {"method": "dhr", "layer": 11}}),
    }
    path = photo.parent / "old.dhr"
    save_file(tensors, str(path), metadata=meta)
    q = Project.load(path)
    assert q.format_version == "1.0"
    assert torch.equal(q.mask, tensors["mask.in_domain"])
    assert torch.equal(q.feature, tensors["feature.f"])
    assert torch.equal(q.deltas["convs.0.conv.weight"], tensors["delta.convs.0.conv.weight"])


def test_compact_files_with_power_of_two_scales_are_still_read(photo: Path) -> None:
    """Format 2.0 files written before the quarter-octave scales: one bit width for all deltas
    and power-of-two exponents (no ``scale_steps`` in the storage entry)."""
    from dhr_cli.nets.weight_delta import dequantize, quantize

    g = torch.Generator().manual_seed(6)
    delta = torch.randn(1, 8, 8, 3, 3, generator=g) * 1e-3
    values = torch.randn(8, 40, generator=g)
    codes, e = quantize(delta, 4, 64, steps=1)
    fcodes, fe = quantize(values, 8, 64, steps=1)
    where = torch.zeros(16, 16, dtype=torch.uint8)
    where.view(-1)[:40] = 1
    tensors = {
        "latent.wplus": torch.randn(1, 18, 512, generator=g),
        "deltaq.convs.0.conv.weight": codes,
        "deltae.convs.0.conv.weight": e,
        "featureq.values": fcodes,
        "featureq.exp": fe,
        "featureq.where": where,
    }
    storage = {
        "delta": {"bits": 4, "group": 64, "shapes": {"convs.0.conv.weight": [1, 8, 8, 3, 3]}},
        "feature": {
            "dtype": "int8",
            "group": 64,
            "masked": True,
            "shape": [1, 8, 16, 16],
            "values": [8, 40],
        },
    }
    meta = {
        "format": "dhr-project",
        "format_version": "2.0",
        "dhr_version": "0.2.0.dev0",
        "pack": "ffhq",
        "params": json.dumps({"invert": {"method": "dhr", "layer": 11, "delta_dtype": "int4"}}),
        "storage": json.dumps(storage),
    }
    path = photo.parent / "pow2.dhr"
    save_file(tensors, str(path), metadata=meta)
    q = Project.load(path)
    want = dequantize(codes, e, delta.shape, 4, 64, steps=1)
    assert torch.equal(q.deltas["convs.0.conv.weight"], want)
    assert float((want - delta).abs().max()) <= float(delta.abs().max()) / 7
    feature = q.feature[0].reshape(8, -1)[:, :40]
    assert torch.equal(feature, dequantize(fcodes, fe, values.shape, 8, 64, steps=1))
    assert float((feature - values).abs().max()) <= float(values.abs().max()) / 127
