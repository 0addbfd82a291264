"""Synthetic benchmark set: determinism, strata, true edits, folder round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dhr_cli.errors import BadData, InputMissing
from dhr_cli.synthetic import attributes as A
from dhr_cli.synthetic import benchset as B
from dhr_cli.synthetic import render as R
from dhr_cli.synthetic.occluders import TEXTURES


@pytest.fixture(scope="module")
def bench() -> B.BenchSet:
    return B.make_benchset(9, seed=3)


def test_strata_counts_are_exact_and_seeded() -> None:
    s = B.strata_for(100, seed=1, fractions=(0.5, 0.3, 0.2))
    assert [s.count(k) for k in B.STRATA] == [50, 30, 20]
    assert s == B.strata_for(100, seed=1, fractions=(0.5, 0.3, 0.2))
    assert s != B.strata_for(100, seed=2, fractions=(0.5, 0.3, 0.2))
    odd = B.strata_for(10, seed=0)
    assert sorted(odd.count(k) for k in B.STRATA) == [3, 3, 4]
    with pytest.raises(ValueError):
        B.strata_for(5, seed=0, fractions=(1.0, -1.0, 1.0))


def test_benchset_contents(bench: B.BenchSet) -> None:
    assert bench.counts() == {"clean": 3, "occluded": 3, "textured": 3}
    for s in bench:
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert s.ood_mask.shape == (64, 64) and s.ood_mask.dtype == bool
        assert s.params == A.params_dict(s.z)
        assert len(s.edits) == 2 * len(B.DEFAULT_DELTAS)
        if s.stratum == "clean":
            assert not s.ood_mask.any() and s.occluders == () and s.texture is None
            np.testing.assert_array_equal(s.image, R.render(s.z).image)
        elif s.stratum == "occluded":
            assert 0.05 <= s.ood_fraction <= 0.40 and s.occluders
        else:
            assert s.texture in TEXTURES
            assert s.ood_fraction > 0.05


def test_true_edits_keep_out_of_domain_pixels(bench: B.BenchSet) -> None:
    for s in bench:
        for (attr, d), e in s.edits.items():
            clean = R.render(A.edit_z(s.z, attr, d))
            outside = ~e.ood_mask
            # In-domain pixels are the clean edited face; smile/age never move the mask.
            np.testing.assert_array_equal(e.image[outside], clean.image[outside])
            np.testing.assert_array_equal(e.ood_mask, s.ood_mask)
            if s.scene is not None and s.scene.layer is not None:
                full = s.scene.layer.alpha == 1.0
                np.testing.assert_array_equal(e.image[full], s.image[full])
        smile_up = s.edit("smile", 2.0).image
        assert (smile_up != s.image).any()


def test_determinism_and_sample_independence(bench: B.BenchSet) -> None:
    again = B.make_benchset(9, seed=3)
    for a, b in zip(bench, again, strict=True):
        assert a.image.tobytes() == b.image.tobytes()
        assert a.ood_mask.tobytes() == b.ood_mask.tobytes()
        for k in a.edits:
            assert a.edits[k].image.tobytes() == b.edits[k].image.tobytes()
    # Sample i depends only on (seed, i, stratum), not on the size of the set.
    s = bench[4]
    alone = B.make_sample(4, s.stratum, seed=3)
    assert alone.image.tobytes() == s.image.tobytes()
    other = B.make_benchset(9, seed=4)
    assert any(a.image.tobytes() != b.image.tobytes() for a, b in zip(bench, other, strict=True))


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_write_and_load_round_trip(bench: B.BenchSet, tmp_path: Path) -> None:
    index = B.write_benchset(bench, tmp_path / "a")
    B.write_benchset(B.make_benchset(9, seed=3), tmp_path / "b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")  # byte-identical folders
    meta = json.loads(index.read_text())
    assert meta["format"] == B.FORMAT and meta["strata"] == bench.counts()
    assert meta["generator"]["seed"] == 3
    loaded = B.load_benchset(tmp_path / "a")
    assert (loaded.seed, loaded.size, loaded.deltas) == (3, 64, bench.deltas)
    for a, b in zip(bench, loaded, strict=True):
        assert (a.index, a.stratum, a.occluders, a.texture) == (
            b.index,
            b.stratum,
            b.occluders,
            b.texture,
        )
        np.testing.assert_array_equal(a.z, b.z)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.ood_mask, b.ood_mask)
        np.testing.assert_array_equal(a.classes, b.classes)
        for k, e in a.edits.items():
            np.testing.assert_array_equal(e.image, b.edits[k].image)
            np.testing.assert_array_equal(e.ood_mask, b.edits[k].ood_mask)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(InputMissing):
        B.load_benchset(tmp_path / "nothing")
    (tmp_path / "index.json").write_text('{"format": "other"}')
    with pytest.raises(BadData):
        B.load_benchset(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(BadData):
        B.load_benchset(tmp_path)
