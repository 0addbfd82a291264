"""The path users run, at its real size: `dhr invert` then `dhr edit --smile 1` through the CLI
on skimage's astronaut with the ffhq pack's networks at their real shapes (config-f 1024
generator, IR-SE50 e4e, BiSeNet, LPIPS VGG/Alex) and deterministic stand-in weights
(`packs.stand_in.full_size_pack`), MTCNN detection, few steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_pack():
    from dhr_cli.packs.stand_in import full_size_pack

    pack = full_size_pack(0)
    g = pack.generator
    smile = torch.randn(1, g.style_dim, generator=torch.Generator().manual_seed(1))
    pack._modules["directions"] = {"smile": smile / smile.norm()}
    return pack


def test_invert_and_edit_at_1024(full_pack, tmp_path: Path, monkeypatch) -> None:
    from PIL import Image
    from skimage import data

    from dhr_cli import packs
    from dhr_cli.cli import main
    from dhr_cli.packs import pack as pack_module
    from dhr_cli.project import Project

    models = tmp_path / "models"
    models.mkdir()
    # the CLI's pack lookup finds the in-memory stand-in (load_pack's key for these options),
    # and its check of the pack's files before torch loads has nothing to find on disk: the
    # stand-in holds every network in memory (Pack.require still checks it, against those)
    for offline in (True, None):
        monkeypatch.setitem(pack_module._PACKS, ("ffhq", "cpu", str(models), offline), full_pack)
    monkeypatch.setattr(packs, "require_files", lambda *args, **kwargs: {})
    photo_rgb = data.astronaut()
    photo = tmp_path / "astronaut.png"
    Image.fromarray(photo_rgb).save(photo)
    common = ["--pack", "ffhq", "--models-dir", str(models), "--offline", "--quiet"]
    argv = ["invert", str(photo), *common, "--detector", "mtcnn"]
    argv += ["--coarse-steps", "2", "--steps", "2"]
    assert main(argv) == 0

    p = Project.load(tmp_path / "astronaut.png.dhr")
    g = full_pack.generator
    assert tuple(p.wplus.shape) == (1, 18, 512)
    assert tuple(p.mask.shape) == (1, 1, 1024, 1024)
    assert tuple(p.feature.shape) == (1, 256, 128, 128)
    assert p.feature.dtype == torch.float32
    params = dict(g.named_parameters())
    assert p.deltas and all(tuple(v.shape) == tuple(params[k].shape) for k, v in p.deltas.items())
    assert p.params["invert"]["mse_weighting"] == "released"
    assert p.params["mask"]["maps"] == "full"
    assert p.format_version == "2.0"
    # int4 deltas below 256 px, int8 from there, the out-of-domain feature int8: <= 20 MB
    assert p.params["invert"]["delta_dtype"] == "int4"
    assert p.params["invert"]["delta_int8_from"] == 256
    assert (tmp_path / "astronaut.png.dhr").stat().st_size <= 20e6

    out = tmp_path / "smile.png"
    assert main(["edit", str(photo), "--smile", "1", "-o", str(out), *common]) == 0
    edited = np.asarray(Image.open(out).convert("RGB"))
    assert edited.shape == photo_rgb.shape
    # pixels far from the face (outside the aligned crop's quad, grown by a margin) untouched
    quad = p.quad.numpy()
    centre, half = quad.mean(axis=0), np.abs(quad - quad.mean(axis=0)).max()
    yy, xx = np.mgrid[: photo_rgb.shape[0], : photo_rgb.shape[1]]
    far = np.maximum(np.abs(xx - centre[0]), np.abs(yy - centre[1])) > half * 1.5 + 8
    assert far.any()
    assert np.array_equal(edited[far], photo_rgb[far])
    assert not np.array_equal(edited, photo_rgb)  # the face did change
