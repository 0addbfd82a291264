"""`dhr_cli.bench` (its report, chart and grid too): metrics on tiny known cases, aggregation, the
paper-ordering verdict, shard/merge equivalence with one whole run (bundled synthetic pack, a
few steps), project reuse, and the report files."""

from __future__ import annotations

import contextlib
import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dhr_cli.bench import (
    BenchConfig,
    aggregate,
    bench_items,
    comparable,
    draw_chart,
    draw_grid,
    fidelity,
    grey_change,
    iou,
    load_results,
    lpips,
    markdown,
    merge_results,
    mse,
    paper_ordering,
    psnr,
    run_bench,
    verdict_text,
    write_report,
    write_results,
)
from dhr_cli.errors import BadData, InputMissing, OutputError, UsageError

FAST = dict(steps=2, coarse_steps=2, pivot_steps=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pack():
    from dhr_cli.packs import load_pack

    return load_pack("synthetic")


def test_importing_bench_loads_neither_torch_nor_matplotlib() -> None:
    """The CLI imports `dhr_cli.bench` lazily, and the package keeps torch (and matplotlib,
    needed only to draw chart.png) out of its import too."""
    import subprocess
    import sys

    code = (
        "import sys; import dhr_cli.bench; "
        "bad = [m for m in ('torch', 'matplotlib') if m in sys.modules]; assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- metrics by hand


def test_mse_and_psnr_by_hand() -> None:
    a = torch.zeros(1, 3, 2, 2)
    b = torch.zeros(1, 3, 2, 2)
    b[0, :, 0, 0] = 0.4  # one pixel of four off by 0.4 in every channel
    assert mse(a, b) == pytest.approx(0.16 / 4)
    mask = np.array([[True, False], [False, False]])
    assert mse(a, b, mask) == pytest.approx(0.16)  # only that pixel
    assert mse(a, b, ~mask) == 0.0
    assert math.isnan(mse(a, b, np.zeros((2, 2), bool)))
    # [-1, 1] images: PSNR = 10 log10(2^2 / MSE); MSE 0.04 -> 20 dB (= PSNR 20 dB on [0, 1])
    assert psnr(0.04) == pytest.approx(20.0)
    assert psnr(4e-4) == pytest.approx(40.0)
    assert psnr(0.0) == math.inf


def test_iou_by_hand() -> None:
    pred = np.array([[1, 1, 0], [0, 1, 0]], bool)
    true = np.array([[1, 0, 0], [0, 1, 1]], bool)
    assert iou(pred, true) == pytest.approx(2 / 4)  # intersection 2, union 4
    assert iou(pred, pred) == 1.0
    assert iou(pred, ~pred) == 0.0
    empty = np.zeros((2, 3), bool)
    assert iou(empty, empty) == 1.0  # nothing to find, nothing found
    assert iou(pred, empty) == 0.0


def test_grey_change_by_hand() -> None:
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 30
    m = np.array([[True, True], [False, False]])
    assert grey_change(a, b, m) == pytest.approx(15.0)
    assert math.isnan(grey_change(a, b, np.zeros((2, 2), bool)))


def test_identical_images_give_zero_lpips_and_mse(pack) -> None:
    from dhr_cli.synthetic.benchset import make_sample

    img = make_sample(1, "occluded", 5).image
    out = fidelity(img, img, pack.lpips_alex, true_ood=np.zeros(img.shape[:2], bool))
    assert out["mse"] == 0.0 and out["mse_256"] == 0.0
    assert out["lpips"] == pytest.approx(0.0, abs=1e-7)
    assert out["lpips_256"] == pytest.approx(0.0, abs=1e-7)
    assert out["psnr"] == math.inf and out["identity"] is None
    assert math.isnan(out["mse_out"]) and out["mse_in"] == 0.0
    other = make_sample(2, "clean", 5).image
    diff = fidelity(other, img, pack.lpips_alex)
    assert diff["mse"] > 0.001 and diff["lpips"] > 0.01 and diff["lpips_256"] > 0.01
    # LPIPS at 256 px is LPIPS of the upsampled images
    from dhr_cli.method.render import from_uint8

    up = torch.nn.functional.interpolate(
        from_uint8(other), size=256, mode="bilinear", align_corners=False
    )
    ref = torch.nn.functional.interpolate(
        from_uint8(img), size=256, mode="bilinear", align_corners=False
    )
    assert diff["lpips_256"] == pytest.approx(lpips(pack.lpips_alex, up, ref), rel=1e-6)


def test_identity_similarity_of_identical_images_is_one() -> None:
    from dhr_cli.nets.identity import IdentityEncoder

    torch.manual_seed(0)
    net = IdentityEncoder()  # random weights: the metric's plumbing, not its calibration
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)

    class Alex(torch.nn.Module):
        def forward(self, a, b):
            return ((a - b) ** 2).mean(dim=(1, 2, 3))

    out = fidelity(img, img, Alex(), identity=net)
    assert out["identity"] == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- config, aggregates


def test_config_checks() -> None:
    with pytest.raises(UsageError, match="unknown method"):
        BenchConfig(methods=("dhr", "hfgi"), synthetic=3)
    with pytest.raises(UsageError, match="twice"):
        BenchConfig(methods=("dhr", "dhr"), synthetic=3)
    with pytest.raises(UsageError, match="not both"):
        BenchConfig(synthetic=3, images=("a.png",))
    with pytest.raises(UsageError):
        BenchConfig()
    c = BenchConfig(synthetic=5, steps=3, seed=2)
    assert c.overrides() == {"steps": 3}
    assert BenchConfig.from_json(json.loads(json.dumps(c.to_json()))) == c
    items = bench_items(c)
    assert [it.position for it in items] == list(range(5))
    assert {it.stratum for it in items} == {"clean", "occluded", "textured"}
    photos = bench_items(BenchConfig(images=("a/x.png", "b/x.png", "c/y.png")))
    assert [it.id for it in photos] == ["x.png", "00001-x.png", "y.png"]


def _record(pos: int, stratum: str, value: float, rss: float) -> dict:
    return {
        "position": pos,
        "id": f"{pos:05d}",
        "stratum": stratum,
        "methods": {
            "dhr": {
                "metrics": {"mse": value, "identity": None},
                "runtime": {"reused": pos == 0, "wall_s": {"total": 2 * value}, "peak_rss_mb": rss},
            }
        },
    }


def test_aggregate_by_hand() -> None:
    recs = [
        _record(2, "occluded", 3.0, 100.0),
        _record(0, "clean", 1.0, 300.0),
        _record(1, "occluded", 2.0, 200.0),
    ]
    agg = aggregate(recs, ["dhr"])
    d = agg["all"]["methods"]["dhr"]
    assert d["n"] == 3 and d["runtime"]["reused"] == 1
    assert d["metrics"]["mse"] == pytest.approx(2.0)
    assert d["metrics"]["identity"] is None  # never measured: not a number
    assert d["runtime"]["wall_s"]["total"] == pytest.approx(4.0)
    assert d["runtime"]["peak_rss_mb"] == 300.0  # a maximum, not a mean
    assert list(agg["by_stratum"]) == ["clean", "occluded"]  # the set's stratum order
    occ = agg["by_stratum"]["occluded"]["methods"]["dhr"]
    assert occ["n"] == 2 and occ["metrics"]["mse"] == pytest.approx(2.5)


def _doc_with(values: dict[str, tuple[float, float, float]]) -> dict:
    """A results document whose occluded stratum has (mse, lpips_256, edit mse) per method."""
    methods = {
        m: {
            "n": 3,
            "metrics": {"mse": a, "lpips_256": b},
            "edit": {"mse": e, "mse_in": e, "mse_out": e / 2},
        }
        for m, (a, b, e) in values.items()
    }
    group = {"methods": methods}
    return {"aggregates": {"all": group, "by_stratum": {"occluded": group}}}


def test_paper_ordering_verdict() -> None:
    good = _doc_with(
        {"encoder": (0.1, 0.5, 0.2), "pti": (0.03, 0.2, 0.1), "dhr": (0.01, 0.1, 0.05)}
    )
    v = paper_ordering(good)
    assert v["holds"] and v["fidelity"]["holds"] and v["edit"]["holds"]
    assert "REPRODUCED" in verdict_text(v) and "NOT" not in verdict_text(v)
    bad = _doc_with(
        {"pti": (0.03, 0.2, 0.04), "feature": (0.005, 0.15, 0.3), "dhr": (0.01, 0.1, 0.05)}
    )
    v = paper_ordering(bad)
    assert not v["holds"] and not v["fidelity"]["holds"] and not v["edit"]["holds"]
    assert v["fidelity"]["by_metric"]["mse"]["best"] == "feature"
    assert v["fidelity"]["by_metric"]["lpips_256"]["holds"]
    text = verdict_text(v)
    assert "NOT reproduced" in text and "best is feature, not DHR" in text
    assert "0.0500 vs 0.0400" in text  # the numbers, plainly
    assert paper_ordering({"aggregates": {"all": {}, "by_stratum": {}}}) is None


# --------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def whole(pack) -> dict:
    """One whole run: 3 scenes (one per stratum), every method, a few steps."""
    return run_bench(BenchConfig(synthetic=3, grid=2, **FAST), pack=pack, show_progress=False)


def test_whole_run_document(whole: dict) -> None:
    assert whole["format"] == "dhr-bench" and whole["complete"] and not whole["failed"]
    assert whole["items"] == ["00000", "00001", "00002"]
    assert [r["position"] for r in whole["records"]] == [0, 1, 2]
    assert sorted(whole["strata"]) == ["clean", "occluded", "textured"]
    rec = next(r for r in whole["records"] if r["stratum"] == "occluded")
    assert set(rec["methods"]) == {"encoder", "pti", "feature", "dhr"}
    for m, r in rec["methods"].items():
        met = r["metrics"]
        assert met["mse"] > 0 and met["lpips"] > 0 and met["psnr"] > 0
        assert met["mse_in"] is not None and met["mse_out"] is not None
        assert r["edit"]["mse"] > 0 and r["edit"]["ood_change"] >= 0
        assert set(r["edit"]["by_attribute"]) == {"smile", "age"}
        assert len(r["edit"]["by_edit"]) == 8  # 2 attributes x 4 deltas
        rt = r["runtime"]
        assert rt["wall_s"]["total"] > 0 and rt["cpu_s"] > 0 and rt["peak_rss_mb"] > 50
        assert rt["reused"] is False and rt["cuda_peak_mb"] is None
        assert ("segmentation" in r) == (m == "dhr")
    seg = rec["methods"]["dhr"]["segmentation"]
    assert 0 <= seg["iou"] <= 1 and 0 <= seg["pred_ood_fraction"] <= 1
    assert 0 <= seg["iou_superpixels"] <= 1 and 0 <= seg["iou_parsing"] <= 1
    assert rec["reference"]["edit"]["mse"] > 0
    # the synthetic domain has no identities: ArcFace is not even asked for (issue 31)
    assert (
        "identity similarity not computed (the synthetic domain has no identities)"
        in (whole["notices"])
    )
    assert sorted(whole["grid"]) == ["0", "1"]  # --grid 2
    g = whole["grid"]["0"]
    assert {"input", "methods", "mask"} <= set(g) and set(g["methods"]["dhr"]) == {"recon", "edit"}
    run = whole["runs"][0]
    assert run["load_start"] is not None and run["cpu_count"] >= 1 and run["wall_s"] > 0


@pytest.mark.slow
def test_shards_merge_to_the_whole_run(pack, whole: dict, tmp_path: Path) -> None:
    config = BenchConfig(synthetic=3, grid=2, **FAST)
    parts = [run_bench(config, shard=(k, 2), pack=pack, show_progress=False) for k in (1, 2)]
    assert [r["position"] for r in parts[0]["records"]] == [0, 2]
    assert not parts[0]["complete"] and parts[0]["shard"] == [1, 2]
    # through files, as shards on other machines hand them over
    files = [write_results(p, tmp_path / f"part{k}.json") for k, p in enumerate(parts, 1)]
    merged = merge_results([load_results(f) for f in reversed(files)], require_complete=True)
    assert merged["complete"] and len(merged["runs"]) == 2
    # same per-image records (timings aside) and the same aggregates, exactly
    assert comparable(merged) == comparable(whole)
    assert (
        merged["aggregates"]["all"]["methods"]["dhr"]["metrics"]
        == (whole["aggregates"]["all"]["methods"]["dhr"]["metrics"])
    )
    assert sorted(merged["grid"]) == ["0", "1"]

    # one part alone is incomplete: an error unless asked for
    with pytest.raises(BadData, match="cover 2 of 3"):
        merge_results([parts[0]], require_complete=True)
    assert not merge_results([parts[0]])["complete"]
    # a part of another benchmark
    other = copy.deepcopy(parts[1])
    other["config"]["steps"] = 3
    with pytest.raises(BadData, match="steps"):
        merge_results([parts[0], other])
    # the same image with other numbers
    clash = copy.deepcopy(parts[0])
    clash["records"][0]["methods"]["dhr"]["metrics"]["mse"] += 1
    with pytest.raises(BadData, match="twice"):
        merge_results([parts[0], clash, parts[1]])
    # the same image measured twice with the same numbers is fine (a re-run shard)
    assert comparable(merge_results([parts[0], parts[1], parts[0]])) == comparable(whole)


def test_load_results_rejects_other_files(tmp_path: Path) -> None:
    with pytest.raises(InputMissing):
        load_results(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BadData):
        load_results(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(BadData, match="not a dhr bench"):
        load_results(bad)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: d.update(records="abc"), "'records' is not a JSON list"),
        (lambda d: d.update(config="abc"), "'config' is not a JSON object"),
        (lambda d: d.pop("items"), "no 'items'"),
        (lambda d: d["records"].append({"x": 1}), "no valid 'position'"),
        (lambda d: d["records"][0].update(position=99), "no valid 'position'"),
        (lambda d: d["records"][0].update(methods=[1]), "no 'methods' object"),
        (lambda d: d["config"].update(methods=5), "bad 'config'"),
    ],
)
def test_load_results_rejects_damaged_files(whole: dict, tmp_path: Path, damage, match) -> None:
    # each was an internal error (KeyError, TypeError, AttributeError) inside `bench merge`
    doc = copy.deepcopy(whole)
    damage(doc)
    path = tmp_path / "part.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(BadData, match=match):
        load_results(path)
    assert load_results(write_results(whole, path))["items"] == whole["items"]


def test_reuse_writes_and_reads_project_files(pack, tmp_path: Path) -> None:
    config = BenchConfig(
        synthetic=1,
        methods=("encoder", "dhr"),
        reuse=True,
        projects=str(tmp_path / "projects"),
        grid=0,
        **FAST,
    )
    first = run_bench(config, pack=pack, show_progress=False)
    files = sorted(p.name for p in (tmp_path / "projects").iterdir())
    assert files == ["00000.dhr.dhr", "00000.encoder.dhr", "00000.png"]
    again = run_bench(config, pack=pack, show_progress=False)
    assert all(r["runtime"]["reused"] for r in again["records"][0]["methods"].values())
    assert again["aggregates"]["all"]["methods"]["dhr"]["runtime"]["reused"] == 1
    # the same numbers (the diagnostics of m_s and m_p alone need the segmentation itself)
    a, b = comparable(again)["records"][0], comparable(first)["records"][0]
    for m in ("encoder", "dhr"):
        assert a["methods"][m]["metrics"] == b["methods"][m]["metrics"]
        assert a["methods"][m]["edit"] == b["methods"][m]["edit"]
    assert a["methods"]["dhr"]["segmentation"]["iou"] == b["methods"]["dhr"]["segmentation"]["iou"]
    assert "iou_parsing" not in a["methods"]["dhr"]["segmentation"]
    # other settings: not reused (inverted again, with a warning)
    changed = BenchConfig(**{**config.to_json(), "steps": 3})
    third = run_bench(changed, pack=pack, show_progress=False)
    assert not third["records"][0]["methods"]["dhr"]["runtime"]["reused"]


# --------------------------------------------------------------------------- report


def test_report_files(whole: dict, tmp_path: Path) -> None:
    written = write_report(whole, tmp_path / "rep", command="dhr bench --synthetic 3", grid=2)
    assert set(written) == {"chart", "grid", "results", "report"}
    chart = Image.open(written["chart"])
    assert chart.format == "PNG" and chart.size == (1400, 600)
    assert np.asarray(chart.convert("L")).std() > 10  # something is drawn
    grid = Image.open(written["grid"])
    # rows: header + 2 images; columns: input, true mask, DHR mask, 4 x (recon, edit), true edit
    assert grid.size == (96 + 12 * 132 + 4, 44 + 2 * 132 + 4)
    res = json.loads(written["results"].read_text())
    assert "grid" not in res and res["records"] == json.loads(json.dumps(whole["records"]))
    text = written["report"].read_text()
    for needle in (
        "# dhr bench report",
        "dhr bench --synthetic 3",
        "Not the published defaults",
        "Does it reproduce the paper's ordering?",
        "Paper ordering on the occluded stratum",
        "Stratum `occluded`",
        "## Segmentation",
        "## Editing vs the true edited images",
        "no edit (input image)",
        "## Speed and memory",
        "load average",
        "![fidelity vs edit error, and time per method](chart.png)",
        "(grid.png)",
        "identity similarity not computed (the synthetic domain has no identities)",
    ):
        assert needle in text, needle


def test_a_report_cut_short_leaves_no_half_files(
    whole: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def full_disk(self, fp, *args, **kwargs):
        with open(fp, "ab") if isinstance(fp, (str, Path)) else contextlib.nullcontext(fp) as f:
            f.write(b"\x89PNG half a chart")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OutputError, match=r"chart\.png: No space left on device"):
        write_report(whole, tmp_path / "rep", command="dhr bench", grid=2)
    assert list((tmp_path / "rep").iterdir()) == []


def test_report_without_true_edits_or_grid() -> None:
    """Photos (no strata, no true edits, no thumbnails): the chart falls back to MSE vs LPIPS,
    no grid, and the report says the ordering was not measured."""
    rec = _record(0, None, 0.1, 100.0)
    rec["methods"]["dhr"]["metrics"]["lpips_256"] = 0.2
    rec["stratum"] = None
    doc = {
        "config": BenchConfig(images=("a.png",), methods=("dhr",), pack="ffhq").to_json(),
        "items": ["a.png"],
        "positions": [0],
        "complete": True,
        "records": [rec],
        "failed": [],
        "aggregates": aggregate([rec], ["dhr"]),
        "runs": [],
        "notices": [],
        "grid": {},
    }
    assert draw_grid(doc) is None
    assert draw_chart(doc).size == (1400, 600)
    text = markdown(doc, images={})
    assert "1 photos" in text and "Not measured" in text and "## Segmentation" not in text


def test_identity_notice_gives_the_real_reason_offline(tmp_path: Path) -> None:
    """A pack whose faces have identities asks for ArcFace; offline without it the notice says
    why (tests run offline), not a guess."""
    from dataclasses import replace

    from dhr_cli.bench import BenchConfig
    from dhr_cli.bench.run import Bench
    from dhr_cli.packs import random_pack, synthetic_settings

    pack = random_pack(1, settings=replace(synthetic_settings({}), identities=True))
    bench = Bench(BenchConfig(synthetic=1, offline=True, models_dir=str(tmp_path)), pack=pack)
    bench._setup_identity()
    assert bench.identity is None
    assert any(
        "identity similarity skipped" in n and "offline mode is on" in n for n in bench.notices
    )
