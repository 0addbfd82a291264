"""The pipeline: option parsing, output naming, batches, and project contents per method
(random-weight pack of the synthetic pack's shapes; a few optimisation steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dhr_cli.app.batch import about_input, run_batch, shard_items
from dhr_cli.app.engine import Engine, landmarks_for_quad
from dhr_cli.app.invert import import_mask, invert_photo, mask_overlay, mask_photo
from dhr_cli.app.naming import (
    drop_own_outputs,
    drop_repeats,
    output_collisions,
    output_paths,
    recon_extension,
)
from dhr_cli.app.options import EngineOptions, TauSpec
from dhr_cli.cli.app import flag_for
from dhr_cli.cli.args import parse_shard, parse_tau
from dhr_cli.errors import (
    BadData,
    InputMissing,
    OutputError,
    ParameterError,
    PartialFailure,
    UsageError,
)
from dhr_cli.faces import ffhq_quad
from dhr_cli.project import Project


@pytest.fixture(scope="module")
def pack():
    from dhr_cli.packs import random_pack

    return random_pack(1)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dhr_cli.synthetic.benchset import make_sample

    folder = tmp_path_factory.mktemp("photos")
    s = make_sample(3, "occluded", 99)
    path = folder / "face.png"
    Image.fromarray(s.image).save(path)
    return path


FAST = dict(steps=2, coarse_steps=2, pivot_steps=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_parse_shard_and_split() -> None:
    assert parse_shard(None) is None
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "1/0", "a/b", "3"):
        with pytest.raises(UsageError):
            parse_shard(bad)
    items = list(range(7))
    parts = [shard_items(items, (k, 3)) for k in (1, 2, 3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(parts, [])) == items


def test_parse_tau() -> None:
    names = ("background", "skin", "l_eye", "r_eye")
    assert parse_tau(None) is None
    assert TauSpec().table(names, {"skin": 0.7}, 0.6) == ({"skin": 0.7}, 0.6)
    assert parse_tau("0.5").table(names, {"skin": 0.7}, 0.6) == ({}, 0.5)
    spec = parse_tau("skin=0.75, eyes=0.9, default=0.5")
    table, default = spec.table(names, {"skin": 0.7}, 0.6)
    assert table == {"skin": 0.75, "l_eye": 0.9, "r_eye": 0.9} and default == 0.5
    with pytest.raises(UsageError, match="tau: unknown class"):
        parse_tau("nose=0.8").table(names, {}, 0.6)
    with pytest.raises(UsageError, match="not a number"):
        parse_tau("skin=high")
    with pytest.raises(UsageError, match="'skin' is given twice"):
        parse_tau("skin=0.7, eyes=0.8, skin=0.9")


def test_output_paths(tmp_path: Path) -> None:
    photo = tmp_path / "a" / "portrait.jpg"
    o = output_paths(photo, None, many=False, fmt_ext=".jpg")
    assert o.project == tmp_path / "a" / "portrait.jpg.dhr"
    assert o.recon == tmp_path / "a" / "portrait.recon.jpg"
    assert o.overlay == tmp_path / "a" / "portrait.mask.png"
    o = output_paths(photo, tmp_path / "out", many=True, fmt_ext=".png", face_index=2)
    assert o.project == tmp_path / "out" / "portrait.jpg.face2.dhr"
    assert o.recon == tmp_path / "out" / "portrait.face2.recon.png"
    o = output_paths(photo, tmp_path / "x.dhr", many=False, fmt_ext=".jpg")
    assert o.project == tmp_path / "x.dhr" and o.recon.parent == tmp_path
    with pytest.raises(UsageError):
        output_paths(photo, tmp_path / "x.dhr", many=True, fmt_ext=".jpg")


def test_recon_extension_keeps_the_photos_suffix_only_for_formats_dhr_writes(
    tmp_path: Path,
) -> None:
    from dhr_cli.faces import load_image

    rgb = np.zeros((8, 8, 3), np.uint8)
    for name, fmt, expect in [
        ("a.JPG", "JPEG", ".JPG"),
        ("a.jpeg", "JPEG", ".jpeg"),
        ("a.png", "PNG", ".png"),
        ("a.gif", "GIF", ".png"),  # written as PNG: named so, not a PNG called .gif
    ]:
        Image.fromarray(rgb).save(tmp_path / name, format=fmt)
        photo = load_image(tmp_path / name)
        assert recon_extension(photo, None) == expect, name
        assert recon_extension(photo, "webp") == ".webp"


def test_drop_own_outputs(tmp_path: Path) -> None:
    names = [
        "a.jpg", "a.jpg.dhr", "a.jpg.face2.dhr", "a.recon.jpg", "a.mask.png", "a.face2.recon.jpg",
        "a.face2.mask.png", "a.smile+1.5_age-1.jpg", "a.sweep-smile-3to+3x7.jpg",
        "a.2024-05-01.jpg",  # a photo of its own, not a tag
        "b.jpg", "b.recon.jpg",  # b was never inverted: b.recon.jpg is a photo
        "c.d.png", "c.d.png.dhr", "c.d.recon.png", "c.recon.png",  # stem with a dot
        "e.recon.jpg", "e.recon.jpg.dhr", "e.jpg", "e.jpg.dhr",  # inverted on purpose: kept
    ]  # fmt: skip
    for n in names:
        (tmp_path / n).write_bytes(b"")
    inputs = [tmp_path / n for n in names if not n.endswith(".dhr")]
    kept, dropped = drop_own_outputs(inputs)
    assert [p.name for p in dropped] == [
        "a.recon.jpg", "a.mask.png", "a.face2.recon.jpg", "a.face2.mask.png",
        "a.smile+1.5_age-1.jpg", "a.sweep-smile-3to+3x7.jpg", "c.d.recon.png",
    ]  # fmt: skip
    assert [p.name for p in kept] == [
        "a.jpg", "a.2024-05-01.jpg", "b.jpg", "b.recon.jpg", "c.d.png", "c.recon.png",
        "e.recon.jpg", "e.jpg",
    ]  # fmt: skip
    # a project written with -o elsewhere does not make its photo's neighbours outputs
    assert drop_own_outputs([tmp_path / "b.jpg", tmp_path / "b.recon.jpg"])[1] == []
    # `photos/*` names a photo and its projects: the photo stands for them
    everything = [tmp_path / n for n in ("a.jpg", "a.jpg.dhr", "a.jpg.face2.dhr", "c.d.png.dhr")]
    assert drop_own_outputs(everything) == (
        [tmp_path / "a.jpg", tmp_path / "c.d.png.dhr"],
        [tmp_path / "a.jpg.dhr", tmp_path / "a.jpg.face2.dhr"],
    )


def test_drop_repeats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    a, b = tmp_path / "a.jpg", Path("b.jpg")
    assert drop_repeats([a, b, Path("a.jpg"), Path("./b.jpg"), a]) == (
        [a, b],
        [Path("a.jpg"), Path("./b.jpg"), a],
    )


def test_stored_quad_recreates_the_alignment() -> None:
    lm = np.array([[420.0, 300.0], [520.0, 310.0], [470.0, 370.0], [430.0, 420.0], [510.0, 428.0]])
    quad = ffhq_quad(lm)
    np.testing.assert_allclose(ffhq_quad(landmarks_for_quad(quad)), quad, atol=1e-9)


def test_mask_overlay_tints_out_of_domain() -> None:
    rgb = np.full((8, 8, 3), 100, np.uint8)
    m = np.ones((8, 8), np.float32)
    m[2:6, 2:6] = 0
    out = mask_overlay(rgb, m)
    assert (out[0, 0] == 100).all()  # in-domain untouched
    assert out[3, 3, 0] > 150 and out[3, 3, 1] < 100  # red inside


def test_run_batch_continues_past_failures(tmp_path: Path) -> None:
    def work(p: Path) -> dict:
        if p.name == "bad":
            raise BadData("not a face", hint="try --min-face 24")
        return {"input": str(p)}

    res = run_batch([Path("a"), Path("bad"), Path("c")], work)
    assert [r["input"] for r in res.done] == ["a", "c"] and len(res.failed) == 1
    # --json keeps what stderr says, the hint included
    assert res.to_json()["failed"] == [
        {"input": "bad", "error": "not a face", "exit_code": 4, "hint": "try --min-face 24"}
    ]
    with pytest.raises(PartialFailure, match="1 of 3 inputs failed"):
        res.raise_for_failures()
    with pytest.raises(BadData):  # a single input raises its own error (and exit code)
        run_batch([Path("bad")], work)
    assert run_batch([Path("a"), Path("c")], work, shard=(2, 2)).done == [{"input": "c"}]


def test_ctrl_c_in_a_batch_says_where_it_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    def work(p: Path) -> dict:
        if p.name == "c":
            raise KeyboardInterrupt
        return {"input": str(p)}

    with pytest.raises(KeyboardInterrupt):
        run_batch([Path("a"), Path("b"), Path("c"), Path("d")], work)
    err = capsys.readouterr().err
    assert "stopped at c, 2 of 4 inputs finished" in err and "--skip-existing" in err


def test_a_failure_names_its_input_once(capsys: pytest.CaptureFixture[str]) -> None:
    # errors meant for a single input often name it already; the batch line must not repeat it
    assert about_input("x/w.png", "w.png: not square") == "x/w.png: not square"
    assert about_input("x/w.png", "x/w.png: not square") == "x/w.png: not square"
    assert about_input("x/w.png", "x/w.png is not an image") == "x/w.png is not an image"
    assert about_input("x/w.png", "no face found") == "x/w.png: no face found"

    def work(p: Path) -> dict:
        raise BadData(f"{p.name}: not square")

    res = run_batch([Path("x/w.png"), Path("x/v.png")], work)
    with pytest.raises(PartialFailure) as e:
        res.raise_for_failures()
    assert "x/w.png: not square; x/v.png: not square" in e.value.message
    err = capsys.readouterr().err
    assert "x/w.png: not square" in err and "w.png: w.png" not in err


def test_inputs_that_would_overwrite_each_other_fail_not_the_first(tmp_path: Path) -> None:
    x, y, z = Path("x/a.jpg"), Path("y/a.jpg"), Path("y/b.jpg")
    assert output_collisions([x, y, z], None) == {}  # each beside its photo
    assert output_collisions([x, y, z], "out/") == {y: x}
    same_folder = [Path("p/a.jpg"), Path("p/a.png"), Path("p/a.jpg.face2.dhr"), Path("p/a.jpg")]
    assert output_collisions(same_folder, None) == {
        Path("p/a.png"): Path("p/a.jpg"),
        Path("p/a.jpg.face2.dhr"): Path("p/a.jpg"),
    }  # a.mask.png is shared; the same path twice is no clash
    # `dhr edit` writes only a.<tag>.jpg and a.<tag>.png, unless --format makes both one suffix
    assert output_collisions(same_folder, None, per_suffix=True) == {
        Path("p/a.jpg.face2.dhr"): Path("p/a.jpg")  # the same photo's edit
    }
    assert output_collisions(same_folder, None, per_suffix=True, forced_suffix=".png") == {
        Path("p/a.png"): Path("p/a.jpg"),
        Path("p/a.jpg.face2.dhr"): Path("p/a.jpg"),
    }

    done: list[Path] = []

    def work(p: Path) -> dict:
        done.append(p)
        return {"input": str(p)}

    clashes = output_collisions([x, y, z], "out/")
    res = run_batch([x, y, z], work, clashes=clashes)
    assert done == [x, z] and [f for f, _ in res.failed] == [str(y)]
    assert isinstance(res.failed[0][1], OutputError) and "x/a.jpg" in res.failed[0][1].message
    # shards agree: shard 2 of 2 holds only y, which still clashes with x of shard 1
    with pytest.raises(OutputError):
        run_batch([x, y, z], work, clashes=clashes, shard=(2, 2))


@pytest.mark.parametrize("method", ["encoder", "pti", "feature", "dhr"])
def test_project_contents_per_method(pack, photo: Path, tmp_path: Path, method: str) -> None:
    engine = Engine(pack, EngineOptions(method=method, **FAST))
    rec = invert_photo(engine, photo, output=tmp_path)
    p = Project.load(rec["project"])
    assert p.pack == "synthetic" and p.wplus.shape == (1, 10, 64)
    assert p.quad is not None and p.crop_to_photo is not None
    inv = p.params["invert"]
    assert (
        inv["method"] == method and "metrics" in inv and [h.step for h in p.history][-1] == "invert"
    )
    has = {"mask": p.mask is not None, "feature": p.feature is not None, "deltas": bool(p.deltas)}
    expected = {
        "encoder": {"mask": False, "feature": False, "deltas": False},
        "pti": {"mask": False, "feature": False, "deltas": True},
        "feature": {"mask": False, "feature": True, "deltas": False},
        "dhr": {"mask": True, "feature": True, "deltas": True},
    }[method]
    assert has == expected
    if method == "dhr":
        assert inv["feature_mask"] == "in_domain" and inv["layer"] == pack.settings.feature_layer
        assert "mask" in p.params and Path(rec["mask_overlay"]).is_file()
    if method == "feature":
        assert inv["feature_mask"] == "none"
    # the reconstruction file is exactly what the stored project renders
    from dhr_cli.method.render import render_stored, to_uint8

    img = np.asarray(Image.open(rec["recon"]).convert("RGB"))
    np.testing.assert_array_equal(img, to_uint8(render_stored(pack.generator, p)))


@pytest.mark.parametrize(
    ("method", "threshold", "released"),
    [("encoder", 0, False), ("dhr", 0, True), ("dhr", None, False)],
)
def test_a_large_encoder_is_released_while_refining_on_cpu(
    pack, photo: Path, method: str, threshold: int | None, released: bool, monkeypatch
) -> None:
    # e4e (1.1 GB) is idle through segmentation and refinement, the RSS peak: a method that
    # refines drops it after embedding and gets it back for the next face; the encoder-only
    # method, and a small encoder (this 64-px pack's, below RELEASE_BYTES), keep it
    from dhr_cli.app import engine as engine_module
    from dhr_cli.faces import load_image
    from dhr_cli.packs.pack import Pack

    if threshold is not None:
        monkeypatch.setattr(engine_module, "RELEASE_BYTES", threshold)
    built: list[int] = []

    def build():
        built.append(1)
        return pack.encoder

    mods = {k: v for k, v in pack._modules.items() if k != "encoder"}
    own = Pack(pack.settings, modules=mods, builders={"encoder": build})
    engine = Engine(own, EngineOptions(method=method, **FAST))
    aligned = engine.align(load_image(photo))[0]
    first = engine.invert_face(aligned)
    assert ("encoder" in own._modules) != released
    second = engine.invert_face(aligned)
    assert len(built) == (2 if released else 1)
    torch.testing.assert_close(first.encoder_wplus, second.encoder_wplus, rtol=0, atol=0)


def test_invert_reuses_stored_and_imported_masks(
    pack, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = Engine(pack, EngineOptions(method="dhr", **FAST))
    m = mask_photo(engine, photo, output=tmp_path)
    assert m["mask_source"] == "computed" and Path(m["mask_overlay"]).is_file()
    stored = Project.load(m["project"]).mask
    reuse = Engine(pack, EngineOptions(method="dhr", steps=2))
    rec = invert_photo(reuse, photo, output=tmp_path)
    assert rec["faces"][0]["mask_source"] == "stored (computed)"
    assert torch.equal(Project.load(rec["project"]).mask, stored)
    # segmentation options ask for a new mask
    again = invert_photo(
        Engine(pack, EngineOptions(method="dhr", steps=2, coarse_steps=2, tau=parse_tau("0.01"))),
        photo,
        output=tmp_path,
    )
    assert again["faces"][0]["mask_source"] == "computed"
    assert again["faces"][0]["in_domain_fraction"] < 0.5  # a tiny tau marks nearly all out

    painted = np.full((64, 64), 255, np.uint8)
    painted[:, :16] = 0  # left quarter out-of-domain
    Image.fromarray(painted).save(tmp_path / "hand.png")
    imp = mask_photo(engine, Path(rec["project"]), from_mask=tmp_path / "hand.png")
    assert imp["mask_source"] == "imported" and imp["in_domain_fraction"] == 0.75
    # the user is told the refinement is gone, not only that the mask changed
    assert "refinement was removed" in " ".join(capsys.readouterr().err.split())
    p = Project.load(rec["project"])
    assert p.params["mask"]["source"] == "imported"
    # the refinement fitted to the old mask is dropped (history kept)
    assert p.feature is None and not p.deltas and "invert" not in p.params
    assert [h.step for h in p.history].count("invert") == 2
    rec2 = invert_photo(reuse, photo, output=tmp_path)
    assert rec2["faces"][0]["mask_source"] == "stored (imported)"


def test_import_mask_shapes(pack, photo: Path, tmp_path: Path) -> None:
    from dhr_cli.faces import identity_alignment, load_image

    ph = load_image(photo)
    al = identity_alignment(ph.rgb)
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(BadData, match="square"):
        import_mask(tmp_path / "bad.png", al, ph, 64)
    Image.fromarray(np.full((128, 128), 255, np.uint8)).save(tmp_path / "big.png")
    assert float(import_mask(tmp_path / "big.png", al, ph, 64).mean()) == 1.0
    with pytest.raises(InputMissing):
        import_mask(tmp_path / "none.png", al, ph, 64)
    # soft edges are fine; a picture (the photo itself, or dhr's tinted overlay) is no mask
    soft = np.zeros((64, 64), np.uint8)
    soft[:, 30:] = 255
    soft[:, 28:30] = 128
    Image.fromarray(soft).save(tmp_path / "soft.png")
    assert float(import_mask(tmp_path / "soft.png", al, ph, 64).mean()) == pytest.approx(
        36 / 64
    )  # 128 counts as white
    half = np.zeros(ph.rgb.shape[:2], np.float32)
    half[:, : half.shape[1] // 2] = 1
    overlay = mask_overlay(ph.rgb, half)
    Image.fromarray(overlay).save(tmp_path / "overlay.png")
    for picture in (photo, tmp_path / "overlay.png"):
        with pytest.raises(BadData, match="not a black-and-white mask"):
            import_mask(picture, al, ph, 64)


def _as_flags(e: ParameterError) -> str:
    return str(e.for_names(flag_for))


def test_engine_rejects_bad_layer_and_work_res(pack) -> None:
    # the engine names its parameters; the command line shows them as its flags
    with pytest.raises(ParameterError, match="^layer 12 is out of range") as e:
        Engine(pack, EngineOptions(layer=12))
    assert _as_flags(e.value).startswith("--layer 12 is out of range")
    with pytest.raises(ParameterError, match="^work_res 100") as e:
        Engine(pack, EngineOptions(work_res=100))
    assert _as_flags(e.value).startswith("--work-res 100")
    with pytest.raises(UsageError, match="beyond the working resolution") as e:
        Engine(pack, EngineOptions(layer=7, work_res=16))
    assert "raise --work-res or choose a lower --layer" in _as_flags(e.value)
    # weights are tuned in the first --weight-steps of --steps: more cannot be done
    with pytest.raises(UsageError, match="weight_steps 5 is more than the 2 refinement") as e:
        Engine(pack, EngineOptions(steps=2, weight_steps=5))
    assert "--weight-steps 5 is more than the 2 refinement" in _as_flags(e.value)
    with pytest.raises(UsageError, match="weight_steps 101 is more than the 100"):
        Engine(pack, EngineOptions(weight_steps=101))
    Engine(pack, EngineOptions(steps=2, weight_steps=2))
    with pytest.raises(UsageError, match="tau and tau_quantile"):
        Engine(pack, EngineOptions(tau=parse_tau("0.7"), tau_quantile=0.5))
    Engine(pack, EngineOptions(method="feature", steps=2, weight_steps=5))  # unused there


def test_options_a_method_does_not_read_are_named() -> None:
    tau = parse_tau("0.5")
    assert EngineOptions(method="dhr", steps=3, tau=tau, layer=4).unused_options() == []
    assert EngineOptions(method="encoder", steps=3, work_res=32).unused_options() == [
        "steps",
        "work_res",
    ]
    pti = EngineOptions(method="pti", weight_steps=5, lr_feature=0.1, coarse_steps=3, layer=4)
    assert pti.unused_options() == ["weight_steps", "layer", "lr_feature", "coarse_steps"]
    assert EngineOptions(method="pti", pivot="e4e", pivot_steps=9).unused_options() == [
        "pivot_steps"
    ]
    assert EngineOptions(method="feature", pivot="e4e", tau_quantile=0.5).unused_options() == [
        "pivot",
        "tau_quantile",
    ]


def test_photo_is_detected_aligned_and_pasted_back(tmp_path: Path) -> None:
    """The real-photo path (detection, FFHQ alignment, paste-back) on skimage's astronaut, with a
    64-px random pack that takes photos like the ffhq pack does (MTCNN weights are local)."""
    from dataclasses import replace

    from skimage.data import astronaut

    from dhr_cli.app.options import FaceOptions
    from dhr_cli.packs import random_pack, synthetic_settings

    pack = random_pack(2, settings=replace(synthetic_settings({}), aligned_input=False))
    rgb = astronaut()
    Image.fromarray(rgb).save(tmp_path / "astro.png")
    engine = Engine(pack, EngineOptions(method="encoder", faces=FaceOptions(detector="mtcnn")))
    rec = invert_photo(engine, tmp_path / "astro.png")
    assert rec["recon"] == str(tmp_path / "astro.recon.png")
    out = np.asarray(Image.open(rec["recon"]).convert("RGB"))
    assert out.shape == rgb.shape
    changed = np.any(out != rgb, axis=2)
    assert changed[50:250, 120:320].mean() > 0.5  # the face region was replaced
    assert not changed[400:, :100].any() and not changed[:, 480:].any()  # far away: untouched
    p = Project.load(rec["project"])
    quad = p.quad.clone()
    assert not torch.equal(p.crop_to_photo, torch.eye(3, dtype=torch.float64))
    # a second run re-creates the crop from the stored quad (no drift)
    invert_photo(engine, tmp_path / "astro.png")
    assert torch.allclose(Project.load(rec["project"]).quad, quad, atol=1e-9)

    # a mask painted on the photo itself is warped into the aligned crop
    painted = np.full(rgb.shape[:2], 255, np.uint8)
    painted[:, :215] = 0  # keep everything left of the nose
    Image.fromarray(painted).save(tmp_path / "painted.png")
    m = mask_photo(engine, Path(rec["project"]), from_mask=tmp_path / "painted.png")
    crop_mask = Project.load(m["project"]).mask[0, 0]
    assert crop_mask[:, :8].mean() == 0 and crop_mask[:, -8:].mean() == 1


def test_invert_accepts_the_project_file(pack, photo: Path, tmp_path: Path) -> None:
    import shutil

    local = tmp_path / "face.png"
    shutil.copy(photo, local)
    engine = Engine(pack, EngineOptions(method="encoder"))
    first = invert_photo(engine, local)
    again = invert_photo(engine, Path(first["project"]))
    assert again["project"] == first["project"] and again["input"] == str(local)
    assert [h.step for h in Project.load(first["project"]).history] == ["invert", "invert"]

    # a project that `-o out/` put elsewhere: its reconstruction is rewritten beside it, in
    # out/, not into the photo's folder
    out = tmp_path / "out"
    moved = invert_photo(engine, local, output=out)
    before = sorted(p.name for p in tmp_path.iterdir())
    redo = invert_photo(engine, Path(moved["project"]))
    assert redo["project"] == str(out / "face.png.dhr")
    assert redo["recon"] == str(out / "face.recon.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_aligned_inputs_are_taken_as_they_are(tmp_path: Path) -> None:
    """--aligned: a square crop (FFHQ / CelebA-HQ test images) is neither detected nor aligned;
    it is resized to the generator's size and pasted back as the identity."""
    from dataclasses import replace

    from dhr_cli.app.options import FaceOptions
    from dhr_cli.packs import random_pack, synthetic_settings

    photo_pack = replace(synthetic_settings({}), aligned_input=False, input_size_exact=False)
    pack = random_pack(2, settings=photo_pack)
    rng = np.random.default_rng(1)
    crop = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)  # no face: detection would fail
    Image.fromarray(crop).save(tmp_path / "crop.png")
    faces = FaceOptions(aligned=True, detector="mtcnn")
    engine = Engine(pack, EngineOptions(method="encoder", faces=faces))
    rec = invert_photo(engine, tmp_path / "crop.png")
    out = np.asarray(Image.open(rec["recon"]).convert("RGB"))
    assert out.shape == crop.shape  # the reconstruction, at the crop's own size
    p = Project.load(rec["project"])
    assert torch.equal(p.crop_to_photo, torch.eye(3, dtype=torch.float64))
    assert p.recipe.identity_alignment is True and p.wplus.shape[1] == 10
    Image.fromarray(crop[:, :80]).save(tmp_path / "wide.png")
    with pytest.raises(BadData, match="--aligned takes square aligned images"):
        invert_photo(engine, tmp_path / "wide.png")
