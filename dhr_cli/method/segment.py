"""Domain-Specific Segmentation (Cao et al., Sec. 3.2): which pixels can the generator draw?

Output: a binary mask m at the generator resolution, 1 = in-domain (the generator's weights
will be tuned there and edits apply), 0 = out-of-domain (kept through feature modulation).

1. Coarse inversion: a short W projection from the mean latent (`projector.project_w`, 40 Adam
   steps at lr 0.1, LPIPS-VGG at 256 px through the generator's early exit for FFHQ).
2. Loss maps: the spatial LPIPS-VGG maps of the final latent's render, one per VGG stage.
   `maps="full"` (the ffhq pack; the released setting): the latent rendered at the generator's
   full size against the full-size crop (stages 1024 ... 64 for FFHQ; one extra render and two
   VGG forwards). `maps="coarse"` (the synthetic pack, and a cheaper choice): the projection's
   own final maps at its working resolution (256 ... 16 for FFHQ).
3. Superpixels: SLIC on the RGB aligned crop (n_segments 200, compactness 30, sigma 1).
4. Score of superpixel k = sum over stages of the mean of that stage's map inside k
   (`superpixel_scores`).
5. Threshold by the superpixel's majority parsing class (argmax of the parser's probabilities
   summed over the superpixel): FFHQ skin 0.7; ears, brows, eyes, nose, mouth, lips 0.8;
   others 0.6 (the synthetic pack carries calibrated values). In-domain iff score < tau.
   `tau_quantile` q instead sets every threshold to the q-quantile of this image's scores.
6. Parsing mask m_p: out-of-domain where the summed probability of the pack's out-of-domain
   classes (FFHQ: background, cloth, necklace, earring, hat) is >= 0.5.
7. m = m_p * m_s.

Mask-to-stage resizing: the released code resizes each superpixel mask to a stage map with
nearest-neighbour sampling, so a superpixel smaller than a coarse stage's cell can vanish there
(its mean becomes 0/0 = NaN, which the released comparison turns into out-of-domain). The
default here is "area": a superpixel's stage mean is the area-weighted mean of the cells it
covers (equal to the mean over its pixels of the nearest-upsampled map), so every superpixel
is scored on every stage. `mask_mode="nearest"` reproduces the released sampling (a superpixel
that vanishes on a stage contributes 0 there).

Deterministic: SLIC is deterministic and every random draw of the coarse inversion comes from
the given seed (the released code draws from the global RNG).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..nets.parsing import in_domain_mask
from .projector import Projection, ProjectorConfig, project_w

__all__ = [
    "SegmentConfig",
    "Segmentation",
    "combine_masks",
    "segment",
    "superpixel_classes",
    "superpixel_mask",
    "superpixel_scores",
    "superpixels",
    "thresholds_for",
]

MASK_MODES = ("area", "nearest")
MAPS = ("coarse", "full")


@dataclass(frozen=True)
class SegmentConfig:
    """Every knob of Domain-Specific Segmentation (defaults: the released FFHQ settings)."""

    projector: ProjectorConfig = ProjectorConfig()
    n_segments: int = 200
    compactness: float = 30.0
    sigma: float = 1.0
    class_names: tuple[str, ...] = ()
    tau: Mapping[str, float] = field(default_factory=dict)
    tau_default: float = 0.6
    tau_quantile: float | None = None
    ood_classes: tuple[str, ...] = ()
    parsing_threshold: float = 0.5
    mask_mode: str = "area"
    use_parsing: bool = True
    maps: str = "coarse"  # "full": LPIPS-VGG maps at the generator's full size (released)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.maps not in MAPS:
            raise ValueError(f"maps must be one of {MAPS}, got {self.maps!r}")
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}")
        if self.tau_quantile is not None and not 0.0 <= self.tau_quantile <= 1.0:
            raise ValueError(f"tau_quantile must be in [0, 1], got {self.tau_quantile}")

    def params(self) -> dict:
        """JSON-safe parameters (for the project file)."""
        d = asdict(self)
        d["tau"] = dict(self.tau)
        d["class_names"] = list(self.class_names)
        d["ood_classes"] = list(self.ood_classes)
        return d


@dataclass
class Segmentation:
    """Result of `segment`: the mask and what it was made from."""

    mask: torch.Tensor  # [1, 1, S, S] float, 1 = in-domain: m_p * m_s
    superpixel_mask: torch.Tensor  # m_s [1, 1, S, S]
    parsing_mask: torch.Tensor  # m_p [1, 1, S, S]
    labels: np.ndarray  # [S, S] int32 superpixel ids from 1
    scores: np.ndarray  # [K] summed stage means
    classes: np.ndarray  # [K] majority parsing class index
    thresholds: np.ndarray  # [K] tau used
    coarse: Projection | None = None

    def summary(self, class_names: Sequence[str] = ()) -> dict:
        m = self.mask
        return {
            "in_domain_fraction": float(m.mean()),
            "superpixels": int(len(self.scores)),
            "superpixels_out": int((self.scores >= self.thresholds).sum()),
            "parsing_out_fraction": float(1 - self.parsing_mask.mean()),
            "coarse_lpips": None if self.coarse is None else self.coarse.loss,
        }


def superpixels(
    rgb: np.ndarray, n_segments: int = 200, compactness: float = 30.0, sigma: float = 1.0
) -> np.ndarray:
    """SLIC superpixel labels [H, W] int32, starting at 1 and consecutive."""
    from skimage.segmentation import slic

    labels = slic(
        np.asarray(rgb),
        n_segments=n_segments,
        compactness=compactness,
        sigma=sigma,
        start_label=1,
        channel_axis=-1,
    )
    # relabel to 1..K without gaps (SLIC may drop empty clusters)
    _, inverse = np.unique(labels, return_inverse=True)
    return (inverse.reshape(labels.shape) + 1).astype(np.int32)


def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """PyTorch's 'nearest' source index for each output index (floor(i * in / out))."""
    return np.minimum(np.floor(np.arange(n_out) * (n_in / n_out)).astype(np.int64), n_in - 1)


def superpixel_scores(
    maps: Sequence[torch.Tensor], labels: np.ndarray, *, mode: str = "area"
) -> np.ndarray:
    """Score per superpixel [K]: sum over stages of the mean of the stage map inside it.

    maps: per-stage maps [1, 1, h, w] (any sizes); labels [H, W] ids 1..K.
    mode "area": the superpixel's mask is area-resized to each stage (= mean over its pixels of
    the nearest-upsampled map); "nearest": nearest-resized as in the released code (a
    superpixel absent from a stage contributes 0). Equal to `perceptual.stage_masked_mean`
    with one mask channel per superpixel, without materialising K full-size masks.
    """
    if mode not in MASK_MODES:
        raise ValueError(f"mode must be one of {MASK_MODES}, got {mode!r}")
    labels = np.asarray(labels)
    k = int(labels.max())
    h_full, w_full = labels.shape
    total = np.zeros(k + 1, dtype=np.float64)
    for stage in maps:
        m = stage.detach().to("cpu", torch.float64).reshape(stage.shape[-2:]).numpy()
        h, w = m.shape
        if mode == "area":
            up = m[_nearest_index(h_full, h)][:, _nearest_index(w_full, w)]
            sums = np.bincount(labels.ravel(), weights=up.ravel(), minlength=k + 1)
            counts = np.bincount(labels.ravel(), minlength=k + 1)
        else:
            small = labels[_nearest_index(h, h_full)][:, _nearest_index(w, w_full)]
            sums = np.bincount(small.ravel(), weights=m.ravel(), minlength=k + 1)
            counts = np.bincount(small.ravel(), minlength=k + 1)
        total += np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    return total[1:]


def superpixel_classes(probs: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """Majority parsing class per superpixel [K]: argmax over classes of the probability
    summed inside the superpixel (probs [1, C, H, W] at the labels' resolution)."""
    p = probs.detach().to("cpu", torch.float64)[0].numpy()
    k = int(labels.max())
    flat = labels.ravel()
    sums = np.stack(
        [np.bincount(flat, weights=p[c].ravel(), minlength=k + 1)[1:] for c in range(p.shape[0])],
        axis=1,
    )
    return sums.argmax(axis=1)


def thresholds_for(
    classes: np.ndarray,
    class_names: Sequence[str],
    tau: Mapping[str, float],
    tau_default: float,
    *,
    scores: np.ndarray | None = None,
    quantile: float | None = None,
) -> np.ndarray:
    """Threshold per superpixel: tau of its majority class (tau_default for classes not in
    the table), or, with `quantile`, the q-quantile of `scores` for every superpixel."""
    if quantile is not None:
        if scores is None:
            raise ValueError("a tau quantile needs the scores")
        return np.full(len(classes), float(np.quantile(scores, quantile)))
    table = np.array([float(tau.get(c, tau_default)) for c in class_names] or [tau_default])
    return table[np.asarray(classes, dtype=np.int64)]


def superpixel_mask(labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """m_s [H, W] float32: 1 where the pixel's superpixel scores below its threshold."""
    inside = np.concatenate([[0.0], (scores < thresholds).astype(np.float32)])
    return inside[labels].astype(np.float32)


def combine_masks(superpixel: torch.Tensor, parsing: torch.Tensor | None) -> torch.Tensor:
    """m = m_p * m_s (1 = in-domain only where both agree)."""
    return superpixel if parsing is None else superpixel * parsing


@torch.no_grad()
def full_size_maps(
    generator: torch.nn.Module,
    lpips_vgg: torch.nn.Module,
    coarse: Projection,
    image: torch.Tensor,
) -> list[torch.Tensor]:
    """The released loss maps: the coarse latent rendered at the generator's full size (the
    projection's noise maps where it optimised them, the stored ones above its working size)
    against the full-size crop, LPIPS-VGG per stage (streamed: 1024-px VGG features are large)."""
    img = generator(coarse.w, noise=coarse.noises)
    return lpips_vgg.spatial_maps_streamed(img, image)


def segment(
    image: torch.Tensor,
    rgb: np.ndarray,
    *,
    generator: torch.nn.Module,
    lpips_vgg: torch.nn.Module,
    parser: torch.nn.Module | None,
    latent_stats: tuple[torch.Tensor, float],
    config: SegmentConfig,
    callback: Callable[[int, float], None] | None = None,
) -> Segmentation:
    """Domain-Specific Segmentation of one aligned crop.

    image [1, 3, S, S] in [-1, 1] and rgb [S, S, 3] uint8 (the same crop; S = generator size);
    latent_stats = (w_mean, w_std) for the projector; callback(step, lpips) per coarse step.
    """
    size = image.shape[-1]
    w_mean, w_std = latent_stats
    coarse = project_w(
        generator,
        image,
        lpips_vgg,
        config=config.projector,
        w_mean=w_mean,
        w_std=w_std,
        seed=config.seed,
        callback=callback,
    )
    maps = coarse.maps
    if config.maps == "full" and coarse.image.shape[-1] != size:
        maps = full_size_maps(generator, lpips_vgg, coarse, image)
    labels = superpixels(rgb, config.n_segments, config.compactness, config.sigma)
    scores = superpixel_scores(maps, labels, mode=config.mask_mode)

    ones = image.new_ones(1, 1, size, size)
    if parser is not None:
        with torch.no_grad():
            probs = parser.probabilities(image)
        if probs.shape[-1] != size:
            probs = torch.nn.functional.interpolate(probs, size=(size, size), mode="bilinear")
        names = tuple(getattr(parser, "class_names", ()) or config.class_names)
        if not names or len(names) != probs.shape[1]:
            names = config.class_names
        classes = superpixel_classes(probs, labels)
        m_p = (
            in_domain_mask(
                probs,
                config.ood_classes,
                class_names=names,
                threshold=config.parsing_threshold,
            )
            if config.use_parsing and config.ood_classes
            else ones
        )
    else:
        names = config.class_names
        classes = np.zeros(len(scores), dtype=np.int64)
        m_p = ones
    thresholds = thresholds_for(
        classes,
        names,
        config.tau,
        config.tau_default,
        scores=scores,
        quantile=config.tau_quantile,
    )
    m_s = torch.from_numpy(superpixel_mask(labels, scores, thresholds))[None, None].to(image)
    mask = combine_masks(m_s, m_p.to(image))
    return Segmentation(
        mask=mask,
        superpixel_mask=m_s,
        parsing_mask=m_p.to(image),
        labels=labels,
        scores=scores,
        classes=classes,
        thresholds=thresholds,
        coarse=coarse,
    )
