"""Edit directions, W+ arithmetic, GANSpace (e4e convention) and the file-level edit session
(random-weight pack of the synthetic pack's shapes; published FFHQ directions from tests/fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dhr_cli.app.directions import DirectionLibrary, load_direction_file, rows_in
from dhr_cli.app.edit import EditSession, latest_project, strip_image
from dhr_cli.app.naming import edit_tag, is_edit_tag
from dhr_cli.app.request import GANSPACE_PRESETS, EditRequest
from dhr_cli.cli.args import (
    parse_direction_arg,
    parse_ganspace,
    parse_layers,
    parse_named,
    parse_sweep,
)
from dhr_cli.errors import BadData, InputMissing, UsageError
from dhr_cli.method.edits import (
    Direction,
    GanspaceEdit,
    GanspacePCA,
    LinearEdit,
    apply_edits,
    as_rows,
)
from dhr_cli.method.render import edit_blend_mask, render_edit

# --------------------------------------------------------------------------------- parsing


def test_parse_named_and_layers() -> None:
    assert parse_named("hair_length=1") == ("hair_length", 1.0)
    assert parse_named(" smile = -1.5 ") == ("smile", -1.5)
    for bad in ("smile", "=1", "smile=abc", "smile=nan"):
        with pytest.raises(UsageError):
            parse_named(bad)
    assert parse_layers(None) is None and rows_in(None, 10) is None
    assert rows_in(parse_layers("2:5"), 10) == (2, 5)
    assert rows_in(parse_layers("4:"), 10) == (4, 10)
    assert rows_in(parse_layers(":3"), 10) == (0, 3)
    for bad in ("5:3", "3:3", "a:b", ":", "1-4"):
        with pytest.raises(UsageError):
            parse_layers(bad)
    with pytest.raises(UsageError, match="only 10 rows"):
        rows_in(parse_layers("0:11"), 10)


def test_parse_ganspace_presets_and_raw() -> None:
    eyes = parse_ganspace("eyes")
    assert (eyes.component, eyes.start, eyes.end, eyes.strength) == (54, 7, 8, 20.0)
    assert parse_ganspace("beard").strength == -20.0
    assert parse_ganspace("lip:-5").strength == -5.0 and parse_ganspace("lip:-5").preset == "lip"
    raw = parse_ganspace("23:3:6:-4.5")
    assert (raw.component, raw.start, raw.end, raw.strength, raw.preset) == (23, 3, 6, -4.5, None)
    for bad in ("1:2:3", "x:1:2:3", "1:5:5:1", "1:2:3:big", "eyes:1:2", "nose"):
        with pytest.raises(UsageError):
            parse_ganspace(bad)


def test_parse_direction_arg_and_sweep() -> None:
    assert parse_direction_arg("d.npy") == (Path("d.npy"), 1.0)
    assert parse_direction_arg("dirs/d.pt:-2.5") == (Path("dirs/d.pt"), -2.5)
    assert parse_direction_arg("C:\\dirs\\d.pt") == (Path("C:\\dirs\\d.pt"), 1.0)
    with pytest.raises(UsageError):
        parse_direction_arg("d.pt:strong")
    sw = parse_sweep("smile=-3:3:7")
    assert sw.values == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    assert sw.tag == "sweep-smile-3to+3x7"
    assert parse_sweep("age=0:1:3").values == [0.0, 0.5, 1.0]
    for bad in ("smile", "smile=1:2", "smile=a:1:3", "smile=0:1:x", "smile=0:1:0", "=0:1:3"):
        with pytest.raises(UsageError):
            parse_sweep(bad)


def test_request_rejects_duplicates() -> None:
    with pytest.raises(UsageError, match="twice"):
        EditRequest(named=[("smile", 1.0), ("smile", 2.0)])
    with pytest.raises(UsageError, match="by --sweep"):  # the sweep would drop the fixed value
        EditRequest(named=[("smile", 1.0)], sweep=parse_sweep("smile=-1:1:3"))
    assert EditRequest(named=[("age", 1.0)], sweep=parse_sweep("smile=-1:1:3")).sweep
    with pytest.raises(UsageError):
        EditRequest(named=[("smile", 1.0)], layers=parse_layers("x"))
    assert EditRequest().empty and not EditRequest(named=[("age", 0.0)]).empty


# --------------------------------------------------------------------------------- arithmetic


def _direction(rows: int = 1, dim: int = 8, seed: int = 0, name: str = "d") -> Direction:
    g = torch.Generator().manual_seed(seed)
    return Direction(name, torch.randn(rows, dim, generator=g), "test")


def test_linear_edits_add_strength_times_direction() -> None:
    w = torch.randn(1, 6, 8)
    d1, d2 = _direction(seed=1), _direction(rows=6, seed=2)
    out = apply_edits(w, [LinearEdit(d1, 1.5), LinearEdit(d2, -0.5)])
    torch.testing.assert_close(out, w + 1.5 * d1.vector[None] - 0.5 * d2.vector[None])
    # --layers: only rows 2..3 move
    out = apply_edits(w, [LinearEdit(d1, 2.0, rows=(2, 4))])
    assert torch.equal(out[:, :2], w[:, :2]) and torch.equal(out[:, 4:], w[:, 4:])
    torch.testing.assert_close(out[:, 2:4], w[:, 2:4] + 2.0 * d1.vector)
    # strength 0 leaves the code bit-identical (negative zeros included)
    w[0, 0, 0] = -0.0
    same = apply_edits(w, [LinearEdit(d1, 0.0), LinearEdit(d2, 0.0)])
    assert torch.equal(same, w) and torch.signbit(same[0, 0, 0])


def test_as_rows_accepts_published_shapes_and_rejects_others() -> None:
    for shape in ([8], [1, 8], [6, 8], [1, 6, 8], [1, 1, 8]):
        v = as_rows(torch.ones(shape), n_latent=6, style_dim=8, name="x")
        assert v.shape in ((1, 8), (6, 8))
    with pytest.raises(BadData, match="needs"):
        as_rows(torch.ones(3, 8), n_latent=6, style_dim=8, name="x")
    with pytest.raises(BadData, match="another pack"):
        as_rows(torch.ones(1, 512), n_latent=6, style_dim=8, name="x", pack="synthetic")
    with pytest.raises(BadData, match="NaN"):
        as_rows(torch.full((1, 8), float("nan")), n_latent=6, style_dim=8, name="x")
    with pytest.raises(BadData, match="floating"):
        as_rows(torch.ones(1, 8, dtype=torch.int64), n_latent=6, style_dim=8, name="x")
    # a .npy of strings reached torch.as_tensor: an internal error (exit 1)
    with pytest.raises(BadData, match="not numbers"):
        as_rows(np.array(["a"] * 8), n_latent=6, style_dim=8, name="x")


def test_ganspace_follows_the_e4e_convention(fixtures_dir: Path) -> None:
    from dhr_cli.nets.checkpoints import torch_load

    state = torch_load(fixtures_dir / "directions/ffhq/ganspace_ffhq_pca.pt")
    pca = GanspacePCA.from_state(state, 512)
    assert pca.comp.shape == (80, 512) and pca.std.shape == (80,)
    g = torch.Generator().manual_seed(0)
    w = pca.mean[None] + torch.randn(1, 1, 512, generator=g).expand(1, 18, 512) * 0.5
    k, a, b, s = GANSPACE_PRESETS["beard"]
    out = apply_edits(w, [GanspaceEdit(k, a, b, s, pca, preset="beard")])
    # independent restatement of editings/ganspace.py: coordinate of row 0 in std units
    coord = float((w[0, 0] - pca.mean[0]) @ pca.comp[k] / pca.std[k])
    expect = w.clone()
    expect[:, a:b] += (s - coord) * pca.std[k] * pca.comp[k]
    torch.testing.assert_close(out, expect)
    assert torch.equal(out[:, :a], w[:, :a]) and torch.equal(out[:, b:], w[:, b:])
    # STRENGTH is the target coordinate: the edited rows now sit at s std-units
    new = float((out[0, a] - pca.mean[0]) @ pca.comp[k] / pca.std[k])
    assert new == pytest.approx(s, abs=1e-3)
    with pytest.raises(BadData):
        GanspacePCA.from_state({"mean": torch.zeros(1, 64)}, 512)


def test_edit_tags() -> None:
    smile = Direction("smile", torch.zeros(1, 4), "t")
    age = Direction("age", torch.zeros(1, 4), "t")
    assert edit_tag([LinearEdit(smile, 1.5), LinearEdit(age, -1.0)]) == "smile+1.5_age-1"
    assert edit_tag([LinearEdit(smile, 0.0)]) == "smile+0"
    assert edit_tag([LinearEdit(smile, 2.0)], rows=(0, 4)) == "smile+2_rows0-4"
    pca = GanspacePCA(torch.zeros(1, 4), torch.zeros(3, 4), torch.ones(3))
    assert edit_tag([GanspaceEdit(54, 7, 8, 20.0, pca, preset="eyes")]) == "eyes+20"
    assert edit_tag([GanspaceEdit(2, 3, 6, -4.5, pca)]) == "ganspace2r3-6-4.5"
    long = [LinearEdit(Direction(f"d{i}" * 10, torch.zeros(1, 4), "t"), 1.0) for i in range(10)]
    assert len(edit_tag(long)) <= 120


def test_every_edit_tag_is_recognised_and_dates_are_not() -> None:
    # batches leave out dhr's own images by these tags (pipeline.drop_own_outputs)
    smile = Direction("smile", torch.zeros(1, 4), "t")
    eye = Direction("eye_open", torch.zeros(1, 4), "t")
    pca = GanspacePCA(torch.zeros(1, 4), torch.zeros(3, 4), torch.ones(3))
    sweep = parse_sweep("smile=-3:2.5:7")
    long = [LinearEdit(Direction(f"d{i}" * 10, torch.zeros(1, 4), "t"), 1.0) for i in range(10)]
    tags = [
        edit_tag([LinearEdit(smile, 1.5), LinearEdit(eye, -1.0)]),
        edit_tag([LinearEdit(smile, 1e-5)]),
        edit_tag([LinearEdit(smile, 2.0)], rows=(0, 4)),
        edit_tag([GanspaceEdit(54, 7, 8, 20.0, pca, preset="eyes")]),
        edit_tag([GanspaceEdit(2, 3, 6, -4.5, pca)]),
        sweep.tag,
        sweep.tag + "_" + edit_tag([LinearEdit(eye, 1.0)], rows=(2, 5)),
        edit_tag(long),
    ]
    for tag in tags:
        assert is_edit_tag(tag), tag
    for name in ("recon", "2024-05-01", "v2-final", "holiday", "IMG_0042"):
        assert not is_edit_tag(name), name


def test_strip_image() -> None:
    frames = [np.full((64, 64, 3), i, np.uint8) for i in range(3)]
    s = strip_image(frames)
    assert s.shape == (64, 192, 3) and s[0, 130, 0] == 2
    big = strip_image([np.zeros((1024, 512, 3), np.uint8)] * 2)
    assert big.shape == (512, 512, 3)


# --------------------------------------------------------------------------------- files


def test_load_direction_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    v = np.arange(8, dtype=np.float32)[None]
    np.save(tmp_path / "a.npy", v)
    torch.save(torch.from_numpy(v), tmp_path / "b.pt")
    torch.save({"direction": torch.from_numpy(v), "other": torch.zeros(2)}, tmp_path / "c.pt")
    save_file({"x": torch.from_numpy(v)}, tmp_path / "d.safetensors", metadata={"pack": "ffhq"})
    save_file({"x": torch.zeros(1, 8), "y": torch.zeros(1, 8)}, tmp_path / "e.safetensors")
    for name in ("a.npy", "b.pt", "c.pt", "d.safetensors"):
        t, meta = load_direction_file(tmp_path / name)
        assert np.array_equal(np.asarray(t), v), name
    assert load_direction_file(tmp_path / "d.safetensors")[1] == {"pack": "ffhq"}
    with pytest.raises(BadData, match="2 tensors"):
        load_direction_file(tmp_path / "e.safetensors")
    with pytest.raises(InputMissing):
        load_direction_file(tmp_path / "missing.pt")
    (tmp_path / "f.txt").write_text("1 2 3")
    with pytest.raises(UsageError, match="format"):
        load_direction_file(tmp_path / "f.txt")
    # a pickle that would run code is refused, never executed
    np.save(tmp_path / "g.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(BadData):
        load_direction_file(tmp_path / "g.npy")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"direction": Evil()}, tmp_path / "h.pt")
    with pytest.raises(BadData, match="refusing"):
        load_direction_file(tmp_path / "h.pt")
    # empty or cut short: numpy raises EOFError, which click turned into "interrupted" (130)
    (tmp_path / "i.npy").write_bytes(b"")
    (tmp_path / "j.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:-4])
    for name in ("i.npy", "j.npy"):
        with pytest.raises(BadData, match="cannot read"):
            load_direction_file(tmp_path / name)


def test_ffhq_library_uses_the_published_directions(fixtures_dir: Path) -> None:
    from dhr_cli import hub
    from dhr_cli.packs import load_pack, pack_settings

    folder = fixtures_dir / "directions/ffhq"
    pack = load_pack("ffhq", offline=True)
    lib = DirectionLibrary(pack)
    listing = lib.listing()
    assert [d["name"] for d in listing["directions"]][:3] == ["smile", "age", "pose"]
    assert not any(d["cached"] for d in listing["directions"])
    for name in ("smile", "age", "pose"):
        hub.import_file(folder / f"interfacegan_{name}.pt")
    hub.import_file(folder / "ganspace_ffhq_pca.pt")
    assert all(d["cached"] for d in lib.listing()["directions"])
    smile, pose = lib.get("smile"), lib.get("pose")
    assert smile.vector.shape == (1, 512) and pose.vector.shape == (18, 512)
    torch.testing.assert_close(pose.vector.norm(dim=1), torch.ones(18))
    edits = lib.resolve(
        EditRequest(named=[("smile", 1.0), ("eyes", 10.0)], ganspace=[parse_ganspace("lip")])
    )
    assert [type(e).__name__ for e in edits] == ["LinearEdit", "GanspaceEdit", "GanspaceEdit"]
    assert edits[1].strength == 10.0 and edits[2].component == 34
    with pytest.raises(UsageError, match="unknown direction"):
        lib.get("grin")
    with pytest.raises(UsageError, match="out of range"):
        lib.ganspace(parse_ganspace("80:0:1:1"))
    synthetic_only = [n for n in pack_settings("synthetic").directions if n not in ("smile", "age")]
    if synthetic_only:  # a direction of the other pack: the project's pack is the problem
        with pytest.raises(BadData, match="synthetic pack"):
            lib.get(synthetic_only[0])


# --------------------------------------------------------------------------------- rendering


FAST = dict(steps=2, coarse_steps=2, pivot_steps=2)


@pytest.fixture(scope="module")
def edit_folder(tmp_path_factory: pytest.TempPathFactory):
    """A photo with a DHR project made by a random-weight pack, and that pack with two
    random directions standing in for the synthetic pack's."""
    from dhr_cli.app.engine import Engine
    from dhr_cli.app.invert import invert_photo
    from dhr_cli.app.options import EngineOptions
    from dhr_cli.packs import random_pack
    from dhr_cli.synthetic.benchset import make_sample

    torch.set_num_threads(1)
    pack = random_pack(3)
    g = torch.Generator().manual_seed(5)
    pack._modules["directions"] = {
        "smile": torch.randn(1, 64, generator=g) * 0.5,
        "hair_length": torch.randn(1, 64, generator=g) * 0.5,
    }
    folder = tmp_path_factory.mktemp("edit")
    photo = folder / "face.png"
    Image.fromarray(make_sample(2, "occluded", 99).image).save(photo)
    engine = Engine(pack, EngineOptions(method="dhr", **FAST))
    rec = invert_photo(engine, photo)
    return pack, folder, photo, Path(rec["project"]), Path(rec["recon"])


def _session(pack, request: EditRequest, **kw) -> EditSession:
    s = EditSession(request, **kw)
    s.packs["synthetic"] = pack
    s._ready.add("synthetic")
    return s


def test_zero_edit_reproduces_the_reconstruction_bytes(edit_folder) -> None:
    pack, folder, photo, project, recon = edit_folder
    before = project.read_bytes()
    s = _session(pack, EditRequest(named=[("smile", 0.0), ("hair_length", 0.0)]))
    rec = s.edit_input(photo)
    out = Path(rec["output"])
    assert out == folder / "face.smile+0_hair_length+0.png"
    assert out.read_bytes() == recon.read_bytes()
    assert project.read_bytes() == before  # editing never touches the project


def test_edit_renders_through_the_stored_refinement(edit_folder) -> None:
    from dhr_cli.method.render import render
    from dhr_cli.project import Project

    pack, folder, photo, project, recon = edit_folder
    p = Project.load(project)
    assert p.params["invert"]["method"] == "dhr" and p.feature is not None and p.deltas
    lib = DirectionLibrary(pack)
    edits = lib.resolve(EditRequest(named=[("smile", 2.0)], layers=parse_layers("0:6")))
    w = apply_edits(p.wplus, edits)
    ref = render(
        pack.generator,
        w,
        deltas=p.deltas,
        feature=p.feature,
        layer=p.params["invert"]["layer"],
        feature_mask=p.mask,
    )
    # --no-keep-ood: exactly the paper's Eq. 4 render
    assert torch.equal(render_edit(pack.generator, p, w, keep_out_of_domain=False), ref)
    assert torch.equal(w[:, 6:], p.wplus[:, 6:])
    # default: the out-of-domain pixels keep the reconstruction exactly, the face is edited
    recon = render_edit(pack.generator, p, p.wplus)
    img = render_edit(pack.generator, p, w)
    assert torch.equal(recon, render_edit(pack.generator, p, p.wplus, keep_out_of_domain=False))
    ood = (p.mask < 0.5).expand_as(img)
    assert ood.any() and (~ood).any()
    assert torch.equal(img[ood], recon[ood])
    assert not torch.equal(img, recon)
    m_e = edit_blend_mask(p.mask, img.shape[-1])
    torch.testing.assert_close(img, recon + m_e * (ref - recon))
    # sweeps pass the reconstruction in once
    assert torch.equal(render_edit(pack.generator, p, w, reference=recon), img)


def test_edit_blend_mask_feathers_inwards_only() -> None:
    m = torch.zeros(1, 1, 64, 64)
    m[..., 16:48, 16:48] = 1
    e = edit_blend_mask(m, 64)
    assert e.shape == m.shape and float(e.min()) >= 0 and float(e.max()) <= 1
    assert torch.all(e <= m)  # never more than the mask: out-of-domain stays exactly held
    assert float(e[0, 0, 32, 32]) > 0.999  # the inside of the face is fully edited
    assert 0 < float(e[0, 0, 16, 32]) < 1  # a soft seam just inside the border
    big = edit_blend_mask(m, 256)
    assert big.shape[-1] == 256 and torch.all(big[..., :60, :] == 0)


def test_session_outputs_sweep_and_save(edit_folder, tmp_path: Path) -> None:
    from dhr_cli.project import Project

    pack, folder, photo, project, recon = edit_folder
    # -o FILE, -o DIR/
    s = _session(pack, EditRequest(named=[("smile", 1.5)]), output=str(tmp_path / "x.png"))
    assert s.edit_input(project)["output"] == str(tmp_path / "x.png")
    s = _session(pack, EditRequest(named=[("smile", 1.5)]), output=str(tmp_path / "out") + "/")
    assert Path(s.edit_input(photo)["output"]) == tmp_path / "out" / "face.smile+1.5.png"
    with pytest.raises(UsageError, match="one input"):
        _session(
            pack, EditRequest(named=[("smile", 1.0)]), output="x.png", many=True
        ).check_output()
    # skip-existing
    s = _session(pack, EditRequest(named=[("smile", 1.5)]), output=str(tmp_path / "out") + "/")
    s.skip_existing = True
    assert s.edit_input(photo)["skipped"]
    # sweep with frames, plus a fixed edit
    s = _session(
        pack,
        EditRequest(named=[("hair_length", 1.0)], sweep=parse_sweep("smile=-2:2:3")),
        output=str(tmp_path / "sw") + "/",
        frames=True,
    )
    rec = s.edit_input(photo)
    strip = Image.open(rec["strip"])
    assert Path(rec["strip"]).name == "face.sweep-smile-2to+2x3_hair_length+1.png"
    assert strip.size == (3 * 64, 64)
    names = [Path(f).name for f in rec["frames"]]
    assert names == [f"face.hair_length+1_smile{v}.png" for v in ("-2", "+0", "+2")]
    assert np.array_equal(np.asarray(strip)[:, 64:128], np.asarray(Image.open(rec["frames"][1])))
    # --save records the edit in the history and keeps every tensor
    before = Project.load(project)
    s = _session(pack, EditRequest(named=[("smile", 1.0)]), output=str(tmp_path) + "/", save=True)
    rec = s.edit_input(project)
    after = Project.load(project)
    assert rec["saved"] and [h.step for h in after.history][-1] == "edit"
    assert (
        after.params["edit"]["tag"] == "smile+1" and len(after.history) == len(before.history) + 1
    )
    assert set(after.tensors) == set(before.tensors)
    assert all(torch.equal(after.tensors[k], before.tensors[k]) for k in before.tensors)


def test_session_errors(edit_folder, tmp_path: Path) -> None:
    pack, folder, photo, project, recon = edit_folder
    with pytest.raises(UsageError, match="unknown direction"):
        _session(pack, EditRequest(named=[("grin", 1.0)])).edit_input(photo)
    with pytest.raises(BadData, match="ffhq pack"):
        _session(pack, EditRequest(named=[("pose", 1.0)])).edit_input(photo)
    with pytest.raises(UsageError, match="GANSpace"):
        _session(pack, EditRequest(ganspace=[parse_ganspace("eyes")])).edit_input(photo)
    np.save(tmp_path / "wide.npy", np.ones((1, 512), np.float32))
    with pytest.raises(BadData, match="another pack"):
        _session(pack, EditRequest(directions=[(tmp_path / "wide.npy", 1.0)])).edit_input(photo)
    with pytest.raises(BadData, match="made with the synthetic pack"):
        _session(pack, EditRequest(named=[("smile", 1.0)]), pack_name="ffhq").edit_input(photo)
    with pytest.raises(InputMissing):
        _session(pack, EditRequest(named=[("smile", 1.0)])).edit_input(tmp_path / "none.dhr")
    lonely = tmp_path / "lonely.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(lonely)
    with pytest.raises(InputMissing, match="no project"):
        _session(pack, EditRequest(named=[("smile", 1.0)])).edit_input(lonely)
    with pytest.raises(UsageError, match="nothing to edit"):
        _session(pack, EditRequest()).edit_input(photo)


def test_latest_project_prefers_the_newest_invert(tmp_path: Path) -> None:
    from dhr_cli.project import Project

    with pytest.raises(InputMissing, match="no project"):
        latest_project(tmp_path)
    photo = tmp_path / "p.png"
    photo.write_bytes(b"x")
    for name, t in (("a", "2026-01-02T00:00:00+00:00"), ("b", "2026-01-01T00:00:00+00:00")):
        p = Project.for_photo(photo, wplus=torch.zeros(1, 10, 64), pack="synthetic")
        p.record_step("invert", {})
        p.history[-1].time = t
        p.save(tmp_path / f"{name}.png.dhr")
    # b is written last, but a was inverted later; a mask-only project never wins over them
    m = Project.for_photo(photo, wplus=torch.zeros(1, 10, 64), pack="synthetic")
    m.record_step("mask", {})
    m.save(tmp_path / "c.png.dhr")
    assert latest_project(tmp_path).name == "a.png.dhr"
    meta = json.loads(Project.load(tmp_path / "a.png.dhr").metadata()["history"])
    assert meta[-1]["step"] == "invert"


def test_zero_edit_of_a_real_photo_reproduces_the_pasted_reconstruction(tmp_path: Path) -> None:
    """The paste-back path (FFHQ-style alignment, not the identity) on skimage's astronaut:
    a stored face quad, a DHR invert with a 64-px random pack that takes photos, then an edit
    of strength 0 writes the reconstruction's bytes; a real edit only changes the face."""
    from dataclasses import replace

    from skimage.data import astronaut

    from dhr_cli.app.engine import Engine
    from dhr_cli.app.invert import invert_photo
    from dhr_cli.app.options import EngineOptions
    from dhr_cli.faces import ffhq_quad
    from dhr_cli.packs import random_pack, synthetic_settings
    from dhr_cli.project import Project, default_path

    torch.set_num_threads(1)
    pack = random_pack(4, settings=replace(synthetic_settings({}), aligned_input=False))
    pack._modules["directions"] = {
        "smile": torch.randn(1, 64, generator=torch.Generator().manual_seed(1))
    }
    rgb = astronaut()
    photo = tmp_path / "astro.png"
    Image.fromarray(rgb).save(photo)
    landmarks = np.array([[180.0, 100], [230, 100], [205, 125], [185, 152], [225, 152]])
    seed = Project.for_photo(photo, wplus=torch.zeros(1, 10, 64), pack="synthetic")
    seed.quad = torch.from_numpy(ffhq_quad(landmarks))
    seed.save(default_path(photo))
    rec = invert_photo(Engine(pack, EngineOptions(method="dhr", **FAST)), photo)
    p = Project.load(rec["project"])
    assert p.params["invert"]["identity_alignment"] is False and p.mask is not None

    s = _session(pack, EditRequest(named=[("smile", 0.0)]))
    out = Path(s.edit_input(photo)["output"])
    assert out.read_bytes() == Path(rec["recon"]).read_bytes()
    # the random pack draws nothing in-domain, so hold only the feature (Eq. 4) to see a change
    s = _session(pack, EditRequest(named=[("smile", 3.0)]), keep_out_of_domain=False)
    edited = np.asarray(Image.open(s.edit_input(photo)["output"]).convert("RGB")).astype(int)
    recon = np.asarray(Image.open(rec["recon"]).convert("RGB")).astype(int)
    changed = np.any(edited != recon, axis=2)
    assert changed[60:200, 130:290].mean() > 0.3  # the face moved
    assert not changed[350:, :].any() and not changed[:, 400:].any()  # the photo elsewhere did not
