"""What `dhr bench` measures on one image: reconstruction fidelity (MSE, PSNR, LPIPS, identity
similarity), segmentation IoU, grey-level change inside a mask, and the peak resident memory of
the process. Torch and the networks are imported when a metric is computed, not with this
module."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

EVAL_RES = 256  # the released evaluation resizes both images to 256 px


def mse(a: torch.Tensor, b: torch.Tensor, mask: np.ndarray | None = None) -> float:
    """Mean squared error of two images [1, 3, H, W] (over channels too); with a boolean
    [H, W] mask only over its True pixels (NaN when it selects none)."""
    import torch

    d = (a.float() - b.float()) ** 2
    if mask is None:
        return float(d.mean())
    w = torch.from_numpy(np.asarray(mask, dtype=np.float32)).to(d.device)[None, None]
    n = float(w.sum())
    if n == 0:
        return float("nan")
    return float((d * w).sum() / (n * d.shape[1]))


def psnr(mse_value: float, peak_to_peak: float = 2.0) -> float:
    """PSNR in dB for images spanning `peak_to_peak` (2 for [-1, 1]); inf for identical ones."""
    if mse_value <= 0:
        return float("inf")
    return 10.0 * math.log10(peak_to_peak**2 / mse_value)


def iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    union = np.logical_or(pred, true).sum()
    return float(np.logical_and(pred, true).sum() / union) if union else 1.0


def lpips(net: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, size: int | None = None) -> float:
    """LPIPS distance of two images (both resized to `size` px first when given)."""
    import torch

    from ..nets.perceptual import resize_image

    with torch.no_grad():
        if size is not None:
            a, b = resize_image(a, size), resize_image(b, size)
        return float(net(a, b).mean())


def grey_change(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute difference (grey levels 0..255) of two uint8 images inside a boolean mask
    (NaN when it is empty)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return float("nan")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64))[mask].mean())


def nanmean(values: Iterable[float]) -> float:
    """Mean of the values that are neither None nor NaN (NaN when none is)."""
    v = [x for x in values if x is not None and not math.isnan(x)]
    return math.fsum(v) / len(v) if v else float("nan")


def fidelity(
    recon: np.ndarray,
    target: np.ndarray,
    lpips_alex: torch.nn.Module,
    *,
    device: str = "cpu",
    true_ood: np.ndarray | None = None,
    identity: Any = None,
) -> dict[str, float | None]:
    """Fidelity metrics of a reconstruction vs its target (both [H, W, 3] uint8)."""
    import torch

    from ..method.render import from_uint8
    from ..nets.perceptual import resize_image

    x, y = from_uint8(recon).to(device), from_uint8(target).to(device)
    full = mse(x, y)
    out: dict[str, float | None] = {
        "mse": full,
        "mse_256": mse(resize_image(x, EVAL_RES), resize_image(y, EVAL_RES)),
        "lpips": lpips(lpips_alex, x, y),
        "lpips_256": lpips(lpips_alex, x, y, EVAL_RES),
        "psnr": psnr(full),
        "identity": None,
    }
    if identity is not None:
        with torch.no_grad():
            out["identity"] = float(identity.similarity(x, y).mean())
    if true_ood is not None:
        out["mse_in"] = mse(x, y, ~true_ood)
        out["mse_out"] = mse(x, y, true_ood)
    return out


# ============================================================================ memory


def reset_peak_rss() -> bool:
    """Reset the process's resident-memory high-water mark (Linux >= 4.0); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory (MiB) since the last reset (else since the process started)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # Unix only: the fallback where /proc is missing (macOS)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes vs KiB
