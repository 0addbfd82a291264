"""Issue 34: hostile or odd inputs and shared model folders, each case reproduced as reported.

1. special files (a device, a FIFO) as a photo or a project: refused, exit 3, one line;
   project headers checked against the file size before the body is read; an image byte cap;
3. names planted in the models folder (a symlink or hard link as ``.partial``, as an import or
   extraction temporary, as a lock file) are never written through;
5. a file without a published hash is trusted on first use only if it loads as its
   architecture: payload pickles, junk zips and small files are refused, nothing recorded;
6. the restricted unpickler: BUILD cannot change allow-listed classes, a name in the file
   never imports a torch submodule;
7. a symlink loop is told as one.

Every case checks that nothing else changed: earlier files byte-identical, no temporary files
left, nothing written outside the models folder. No test touches the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dhr_cli import download, hub, model_check, registry
from dhr_cli.cli import main
from dhr_cli.errors import BadData, ExitCode, InputMissing
from dhr_cli.trust import Hashes

AGE = "interfacegan_age.pt"


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "face.png"
    Image.new("RGB", (64, 64), (200, 150, 120)).save(path)
    return path


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DHR_OFFLINE", raising=False)
    monkeypatch.setattr(download, "RETRY_BASE_DELAY", 0.01)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the models folder that a planted link points at: it must never change."""
    path = tmp_path / "elsewhere" / "victim.bin"
    path.parent.mkdir()
    path.write_bytes(b"precious bytes, not a model\n" * 8)
    return path


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer comes)."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still blocked after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def err_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def models_folder_listing(folder: Path) -> list[str]:
    """Everything in the models folder except the locks and the record of hashes."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if ".locks" not in p.parts and p.name != hub.HASHES_FILE
    )


# --- 1. special files as inputs ---------------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_as_the_project_is_refused_without_reading_it(photo: Path) -> None:
    # `ln -s /dev/zero face.png.dhr; dhr invert face.png --pack synthetic` grew to 21 GB until
    # OOM: run in a child process whose memory is capped, so a regression fails, not the host
    (photo.parent / "face.png.dhr").symlink_to("/dev/zero")

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))

    code = "import sys; from dhr_cli.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run(
        [sys.executable, "-c", code, "invert", "face.png", "--pack", "synthetic"],
        cwd=photo.parent,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=cap_memory,
    )
    assert r.returncode == ExitCode.INPUT_MISSING == 3, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "character device" in lines[0] and "face.png.dhr" in lines[0]


def test_a_fifo_as_the_photo_is_refused_at_once(
    photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = photo.parent / "pipe.png"
    os.mkfifo(fifo)
    with deadline(60):
        assert main(["invert", str(fifo), "--pack", "synthetic"]) == 3
    [line] = err_lines(capsys)
    assert "named pipe (FIFO)" in line and "pipe.png" in line


def test_a_fifo_as_the_project_is_refused_at_once(photo: Path) -> None:
    from dhr_cli.project import Project, read_metadata

    fifo = photo.parent / "face.png.dhr"
    os.mkfifo(fifo)
    with deadline(30):
        for read in (read_metadata, Project.load):
            with pytest.raises(InputMissing, match=r"named pipe \(FIFO\)") as e:
                read(fifo)
            assert e.value.exit_code == 3 and "\n" not in e.value.message


def test_dhr_edit_tells_a_fifo_project_as_one(
    photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.mkfifo(photo.parent / "face.png.dhr")
    with deadline(60):
        for arg in (photo, photo.parent / "face.png.dhr"):
            assert main(["edit", str(arg), "--smile", "1"]) == 3
            [line] = err_lines(capsys)
            assert "named pipe (FIFO)" in line and "no project file" not in line


def test_a_project_header_length_is_checked_before_the_body_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dhr_cli import project

    reads: list[int] = []
    real_open = project.open_regular

    class Counting:
        def __init__(self, f: io.BufferedReader) -> None:
            self.f = f

        def read(self, n: int = -1) -> bytes:
            data = self.f.read(n)
            reads.append(len(data))
            return data

        def fileno(self) -> int:
            return self.f.fileno()

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

    monkeypatch.setattr(
        project, "open_regular", lambda p, what="file": Counting(real_open(p, what))
    )
    # a length that claims 64 MB in a 1 MB file: refused after reading 8 bytes
    big = tmp_path / "claims.dhr"
    big.write_bytes((64 << 20).to_bytes(8, "little") + b"{" + b"\0" * (1 << 20))
    with pytest.raises(BadData, match="header cut off"):
        project.read_metadata(big)
    assert sum(reads) == 8
    # a length past safetensors' cap: the same, whatever the file's size
    reads.clear()
    huge = tmp_path / "huge.dhr"
    huge.write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    with pytest.raises(BadData, match="not a safetensors file"):
        project.Project.load(huge)
    assert sum(reads) == 8


def test_an_image_over_the_byte_cap_is_refused_before_decoding(photo: Path) -> None:
    from dhr_cli.faces.image_io import check_image, load_image

    size = photo.stat().st_size
    for read in (check_image, load_image):
        with pytest.raises(BadData, match="too large .* refused before decoding"):
            read(photo, max_bytes=size - 1)
    assert load_image(photo, max_bytes=size).width == 64


# --- 3. names planted in the models folder ----------------------------------------------------


def _serve_age(http_server, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch, data: bytes):
    http_server.add(AGE, data)
    monkeypatch.setenv("DHR_MIRROR", http_server.url)
    return (fixtures_dir / "directions" / "ffhq" / AGE).read_bytes()


def test_a_symlink_planted_as_the_partial_download_is_not_written_through(
    online: None,
    http_server,
    fixtures_dir: Path,
    victim: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = victim.read_bytes()
    folder = hub.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{AGE}.partial").symlink_to(victim)
    # the mirror serves a wrong file of the right size: exit 5, as reported
    good = _serve_age(http_server, fixtures_dir, monkeypatch, b"")
    http_server.add(AGE, bytes(reversed(good)))
    assert main(["models", "download", "interfacegan-age"]) == 5
    assert victim.read_bytes() == before
    assert models_folder_listing(folder) == []  # no partial, no temporary, no link
    # a good file downloads fine; the victim still untouched
    (folder / f"{AGE}.partial").symlink_to(victim)
    http_server.add(AGE, good)
    assert main(["models", "download", "interfacegan-age"]) == 0
    assert victim.read_bytes() == before
    assert (folder / AGE).read_bytes() == good and not (folder / AGE).is_symlink()
    assert models_folder_listing(folder) == [AGE]
    capsys.readouterr()


def test_a_hard_link_planted_as_the_partial_download_is_not_appended_to(
    online: None, http_server, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = hub.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    victim = folder.parent / "victim-on-the-same-disk.bin"
    victim.write_bytes(b"x" * 100)  # shorter than the file: would be "resumed" from byte 100
    os.link(victim, folder / f"{AGE}.partial")
    good = _serve_age(http_server, fixtures_dir, monkeypatch, b"")
    http_server.add(AGE, good)
    assert hub.fetch("interfacegan-age").read_bytes() == good
    assert victim.read_bytes() == b"x" * 100
    assert http_server.requests == [(f"/{AGE}", None)]  # a fresh download, not a resume
    assert models_folder_listing(folder) == [AGE]


def test_a_symlink_planted_as_a_lock_file_is_not_emptied(
    online: None,
    http_server,
    fixtures_dir: Path,
    victim: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = victim.read_bytes()
    folder = hub.cache_dir()
    (folder / ".locks").mkdir(parents=True)
    (folder / ".locks" / f"{AGE}.lock").symlink_to(victim)
    good = _serve_age(http_server, fixtures_dir, monkeypatch, b"")
    http_server.add(AGE, good)
    assert hub.fetch("interfacegan-age").read_bytes() == good
    assert victim.read_bytes() == before


def test_an_import_never_writes_through_a_planted_name(
    fixtures_dir: Path, tmp_path: Path, victim: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = victim.read_bytes()
    folder = hub.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for name in (f"{AGE}.import.partial", f"{AGE}.partial"):
        (folder / name).symlink_to(victim)
    src = tmp_path / "age.pt"
    src.write_bytes((fixtures_dir / "directions" / "ffhq" / AGE).read_bytes())
    assert main(["models", "import", str(src)]) == 0
    assert victim.read_bytes() == before
    assert (folder / AGE).read_bytes() == src.read_bytes()
    # the planted links are someone else's: left alone; dhr left no temporary of its own
    assert models_folder_listing(folder) == sorted([AGE, f"{AGE}.import.partial", f"{AGE}.partial"])
    capsys.readouterr()


def test_an_archive_member_is_not_extracted_through_a_planted_name(
    tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    monkeypatch.setattr(hub, "_find_spec", lambda package: None)  # not from the installed lpips
    weights = Path(importlib.util.find_spec("lpips").submodule_search_locations[0])
    alex = hub.get("lpips-lin-alex")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(alex.archive.member, (weights / "weights" / "v0.1" / "alex.pth").read_bytes())
    wheel = tmp_path / "lpips.whl"
    wheel.write_bytes(buf.getvalue())
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    arch = hub.ArchiveMember(
        "https://example.invalid/lpips.whl", digest, len(buf.getvalue()), alex.archive.member
    )
    monkeypatch.setitem(hub.REGISTRY, alex.name, replace(alex, archive=arch))
    before = victim.read_bytes()
    folder = hub.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{alex.filename}.partial").symlink_to(victim)
    [dest] = hub.import_file(wheel)
    assert victim.read_bytes() == before
    assert dest.read_bytes() == (weights / "weights" / "v0.1" / "alex.pth").read_bytes()
    assert models_folder_listing(folder) == sorted([alex.filename, f"{alex.filename}.partial"])


# --- 5. first use: a file must load as its architecture ---------------------------------------


class _Payload:
    """Unpickling this runs a shell command (what a hostile checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _evil_zip(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"state_dict": {"x": torch.zeros(3)}, "opts": _Payload(marker)}, path)
    return path


def _nothing_trusted(name: str, filename: str) -> None:
    folder = hub.cache_dir()
    assert Hashes(folder).first_use(name) is None
    assert not (folder / filename).exists()
    if folder.exists():
        assert [p for p in models_folder_listing(folder) if p != ".archives"] == []


def test_a_payload_zip_imported_as_e4e_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    evil = _evil_zip(tmp_path / "evil.pt", marker)
    assert evil.stat().st_size < 8000  # the reported 3.7 KB zip
    assert main(["models", "import", str(evil), "--name", "e4e-ffhq"]) == 4
    assert "e4e-ffhq" in capsys.readouterr().err
    # whatever the size: the restricted loader refuses it, nothing runs, nothing is recorded
    e4e = hub.get("e4e-ffhq")
    monkeypatch.setitem(hub.REGISTRY, e4e.name, replace(e4e, min_size=None))
    assert main(["models", "import", str(evil), "--name", "e4e-ffhq"]) == 4
    err = capsys.readouterr().err
    assert "does not load as e4e-ir-se50-ffhq" in err and "posix.system" in err
    assert not marker.exists()
    _nothing_trusted("e4e-ffhq", e4e.filename)


def test_a_raw_pickle_imported_as_the_generator_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    raw = tmp_path / "g.pt"
    raw.write_bytes(pickle.dumps({"g_ema": _Payload(marker), "pad": b"\0" * 2400}, protocol=2))
    assert main(["models", "import", str(raw), "--name", "stylegan2-ffhq-1024"]) == 4
    gen = hub.get("stylegan2-ffhq-1024")
    monkeypatch.setitem(hub.REGISTRY, gen.name, replace(gen, min_size=None))
    assert main(["models", "import", str(raw), "--name", "stylegan2-ffhq-1024"]) == 4
    assert "refusing" in capsys.readouterr().err
    assert not marker.exists()
    _nothing_trusted("stylegan2-ffhq-1024", gen.filename)


def test_a_junk_zip_served_by_the_mirror_is_refused(
    online: None, http_server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    e4e = hub.get("e4e-ffhq")
    http_server.add(e4e.filename, b"PK\x03\x04" + b"junk" * 100)  # 404 bytes
    monkeypatch.setenv("DHR_MIRROR", http_server.url)
    monkeypatch.setitem(hub.REGISTRY, e4e.name, replace(e4e, urls=()))  # the mirror only
    assert main(["models", "download", "e4e-ffhq"]) == 5
    assert "rejected" in capsys.readouterr().err
    _nothing_trusted("e4e-ffhq", e4e.filename)


def test_torchvision_backbones_are_pinned_in_full() -> None:
    for name in ("lpips-alexnet", "lpips-vgg16"):
        e = hub.get(name)
        assert e.sha256 and len(e.sha256) == 64 and e.sha256.startswith(e.sha256_prefix)
        assert e.size
    # every registry file without a published hash is checked by loading it before it is trusted
    for e in hub.registry().values():
        if e.sha256 is None:
            assert e.arch in model_check.ARCHITECTURES, e.name


def _tiny_generator(style_dim: int) -> dict[str, object]:
    import torch

    from dhr_cli.nets.stylegan2 import Generator, GeneratorConfig

    cfg = GeneratorConfig(size=8, style_dim=style_dim, n_mlp=2, channels={4: 8, 8: 8})
    gen = Generator(cfg)
    return {"g_ema": gen.state_dict(), "latent_avg": torch.zeros(style_dim)}


def test_a_file_of_the_claimed_architecture_is_trusted_and_another_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setitem(
        model_check.ARCHITECTURES,
        "tiny-generator",
        model_check.generator_check(size=8, style_dim=16, n_mlp=2, channels={4: 8, 8: 8}),
    )
    entry = registry.ModelFile(
        "tiny-gen", "generator", "tiny-gen.pt", "ffhq", "MIT", urls=("https://x.invalid/g.pt",),
        arch="tiny-generator", min_size=1000,
    )  # fmt: skip
    monkeypatch.setitem(hub.REGISTRY, entry.name, entry)
    other = tmp_path / "other.pt"
    torch.save(_tiny_generator(style_dim=32), other)  # a generator, but not this one
    with pytest.raises(BadData, match="another StyleGAN2 generator: style_dim 32"):
        hub.import_file(other, "tiny-gen")
    _nothing_trusted("tiny-gen", entry.filename)
    good = tmp_path / "good.pt"
    torch.save(_tiny_generator(style_dim=16), good)
    [dest] = hub.import_file(good, "tiny-gen")
    rec = Hashes(hub.cache_dir()).first_use("tiny-gen")
    assert rec["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert dest.read_bytes() == good.read_bytes()


# --- 6. the restricted unpickler --------------------------------------------------------------


def test_build_cannot_change_an_allow_listed_class(tmp_path: Path) -> None:
    from dhr_cli.nets import checkpoints

    # GLOBAL dnnlib.util.EasyDict (the class itself), {"pwned": "yes"}, BUILD, then a payload
    data = (
        b"\x80\x02cdnnlib.util\nEasyDict\n}X\x05\x00\x00\x00pwnedX\x03\x00\x00\x00yessb"
        b"cos\nsystem\nX\x04\x00\x00\x00true\x85R."
    )
    pkl = tmp_path / "network.pkl"
    pkl.write_bytes(data)
    with pytest.raises(BadData, match="refusing .* sets the state of the class _EasyDictStandIn"):
        checkpoints.load_generator(pkl)
    assert not hasattr(checkpoints._EasyDictStandIn, "pwned")
    assert "pwned" not in vars(checkpoints._EasyDictStandIn)


def test_a_torch_name_in_a_pickle_imports_nothing() -> None:
    code = (
        "import sys, torch\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "from dhr_cli.errors import BadData\n"
        "from dhr_cli.nets.checkpoints import _ada_resolve, restricted_unpickle\n"
        "try:\n"
        "    restricted_unpickle(b'\\x80\\x02ctorch\\n_dynamo\\n.', resolve=_ada_resolve)\n"
        "    raise SystemExit('loaded')\n"
        "except BadData as e:\n"
        "    assert 'torch._dynamo' in str(e), e\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('torch._dynamo'))))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []


# --- 7. symlink loops --------------------------------------------------------------------------


def test_a_symlink_loop_is_told_as_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "loop1.png", tmp_path / "loop2.png"
    a.symlink_to(b)
    b.symlink_to(a)
    assert main(["invert", str(a), "--pack", "synthetic"]) == 3
    [line] = err_lines(capsys)
    assert "symlink loop" in line and "not found" not in line
    assert main(["models", "import", str(a)]) == 3
    assert "symlink loop" in capsys.readouterr().err


def test_the_registry_architectures_accept_their_own_networks(tmp_path: Path) -> None:
    # files of the right network (random weights) load; one network is not taken for another
    import warnings

    import torch
    from facexlib.detection.retinaface import RetinaFace

    from dhr_cli.nets.parsing import FaceParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's notice for pretrained=False
        retina = RetinaFace(network_name="mobile0.25", device=torch.device("cpu"))
    detector = tmp_path / "detector.pth"  # as facexlib saves it: DataParallel names inside
    torch.save({"module." + k: v for k, v in retina.state_dict().items()}, detector)
    parser = tmp_path / "parser.pth"
    torch.save(FaceParser().net.state_dict(), parser)
    assert model_check.load_problem("retinaface-mobilenet0.25", detector) is None
    assert model_check.load_problem("bisenet-parsing-19", parser) is None
    for arch, path in (("retinaface-resnet50", detector), ("arcface-ir-se50", parser)):
        problem = model_check.load_problem(arch, path)
        assert problem and problem.startswith(f"it does not load as {arch}"), problem


def refuse_reading(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Opening a file called `name` fails as without read permission (tests run as root, where
    permission bits do not stop a read), where dhr opens the files it reads."""
    from dhr_cli import files

    real_open = os.open

    def guarded(path, flags, *args, **kwargs):
        if Path(path).name == name:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", guarded)


def test_an_unreadable_input_fails_alone_with_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 2: one photo without read permission is that photo's failure (exit 3 in the batch's
    summary), not a usage error that stops the batch."""
    from PIL import Image

    from dhr_cli.synthetic.benchset import make_sample

    ok, noread = tmp_path / "ok.png", tmp_path / "noread.png"
    for p in (ok, noread):
        Image.fromarray(make_sample(0, "occluded", 1).image).save(p)
    refuse_reading(monkeypatch, "noread.png")
    argv = ["invert", str(ok), str(noread), "--pack", "synthetic", "--method", "encoder"]
    assert main([*argv, "--json"]) == ExitCode.PARTIAL_FAILURE
    doc = json.loads(capsys.readouterr().out)
    assert [Path(r["input"]).name for r in doc["done"]] == ["ok.png"]
    [failed] = doc["failed"]
    assert failed["exit_code"] == 3 and "Permission denied" in failed["error"]
    # alone, it is the command's error: exit 3 with one line
    assert main(["invert", str(noread), "--pack", "synthetic", "--method", "encoder"]) == 3
    assert "cannot read" in capsys.readouterr().err


def test_an_unreadable_file_to_import_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    fixtures = Path(__file__).parent / "fixtures" / "directions" / "ffhq"
    ok = Path(shutil.copy(fixtures / "interfacegan_age.pt", tmp_path / "interfacegan_age.pt"))
    noread = Path(shutil.copy(ok, tmp_path / "noread.pt"))
    refuse_reading(monkeypatch, "noread.pt")
    assert main(["models", "import", str(ok), str(noread)]) == ExitCode.PARTIAL_FAILURE
    err = capsys.readouterr().err
    assert "noread.pt" in err and "Usage:" not in err
    assert hub.local_path("interfacegan-age") is not None  # the readable one was imported
