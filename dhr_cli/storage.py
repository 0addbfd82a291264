"""Compact storage of a project's tensors (format 2.0): what `Project.save` writes for the
float W+ deltas, feature and mask, and how `Project.load` turns it back. In memory, and to every
reader, the tensors stay the float ones of the format 1.0 layout (see `dhr_cli.project`).

- ``delta_dtype`` "int4"/"int8": ``delta.<name>`` -> ``deltaq.<name>`` (signed integers, 4-bit
  ones two to a byte; with "int4" and ``delta_int8_from``, the tensors `delta_bits` names keep
  8 bits) + ``deltae.<name>`` (one scale exponent per ``delta_group`` values, in quarter
  octaves; files written before them say nothing of ``scale_steps`` and hold powers of two);
- ``feature_storage`` "float16"/"int8" (+ "-masked"): ``feature.f`` -> ``featureq.values`` at the
  positions Eq. 4 reads (``featureq.where``), int8 with ``featureq.exp`` scales or float16;
- a binary mask -> ``maskq.bits`` (bits packed along the rows).

The tensor names live here, torch-free; the codecs load torch when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

WPLUS = "latent.wplus"
MASK = "mask.in_domain"
FEATURE = "feature.f"
DELTA_PREFIX = "delta."
QUAD = "align.quad"
CROP_TO_PHOTO = "align.crop_to_photo"
DELTA_Q, DELTA_E = "deltaq.", "deltae."
FEATURE_VALUES, FEATURE_WHERE, FEATURE_EXP = "featureq.values", "featureq.where", "featureq.exp"
MASK_BITS = "maskq.bits"

__all__ = ["pack_tensors", "unpack_tensors"]


def pack_tensors(
    tensors: dict[str, torch.Tensor], invert: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors as the file holds them (compact storage as the ``invert`` step's params
    say) and the ``storage`` metadata describing it."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from .nets.weight_delta import SCALE_STEPS, delta_bits, quantize

    inv = invert
    out: dict[str, torch.Tensor] = {}
    storage: dict[str, Any] = {}
    dtype = str(inv.get("delta_dtype"))
    int8_from = inv.get("delta_int8_from")
    group = int(inv.get("delta_group") or 64)
    fstore = str(inv.get("feature_storage") or "float32")
    mask = tensors.get(MASK)
    shapes: dict[str, list[int]] = {}
    bits: dict[str, int] = {}
    for name, t in tensors.items():
        key = name.removeprefix(DELTA_PREFIX)
        b = delta_bits(key, t.numel(), dtype, int8_from) if key != name else None
        if b:
            out[DELTA_Q + key], out[DELTA_E + key] = quantize(t, b, group)
            shapes[key], bits[key] = list(t.shape), b
        elif name == FEATURE and fstore != "float32" and t.ndim == 4:
            f = t.detach().to("cpu", torch.float32)
            masked = fstore.endswith("-masked") and mask is not None
            if masked:
                m = F.adaptive_avg_pool2d(mask.to("cpu", torch.float32), f.shape[-2:])[0, 0]
                where = m < 1
                out[FEATURE_WHERE] = where.to(torch.uint8)
            else:
                where = torch.ones(f.shape[-2:], dtype=torch.bool)
            values = f[0][:, where]
            info: dict[str, Any] = {"masked": masked, "shape": list(f.shape)}
            if fstore.startswith("int8"):
                out[FEATURE_VALUES], out[FEATURE_EXP] = quantize(values, 8, group)
                info.update(
                    dtype="int8", group=group, scale_steps=SCALE_STEPS, values=list(values.shape)
                )
            else:
                out[FEATURE_VALUES] = values.to(torch.float16)
                info.update(dtype="float16")
            storage["feature"] = info
        elif (
            name == MASK
            and t.ndim == 4
            and t.shape[-1] % 8 == 0
            and bool(((t == 0) | (t == 1)).all())
        ):
            bits_np = np.packbits(t.detach().to("cpu").numpy() > 0.5, axis=-1)
            out[MASK_BITS] = torch.from_numpy(bits_np)
            storage["mask"] = {"packed": True, "shape": list(t.shape)}
        else:
            out[name] = t
    if shapes:
        storage["delta"] = {
            "bits": bits,
            "group": group,
            "scale_steps": SCALE_STEPS,
            "shapes": shapes,
        }
    return out, storage


def unpack_tensors(
    tensors: dict[str, torch.Tensor], storage: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """A file's tensors with compact storage (format 2.0, or 1.1 from development builds) turned back into the float tensors of
    the format 1.0 layout; other tensors as they are."""
    if not storage:
        return tensors
    import numpy as np
    import torch

    from .nets.weight_delta import dequantize

    out = {
        k: v
        for k, v in tensors.items()
        if not k.startswith((DELTA_Q, DELTA_E))
        and k not in (FEATURE_VALUES, FEATURE_WHERE, FEATURE_EXP, MASK_BITS)
    }
    d = storage.get("delta")
    if d:
        group, steps = int(d["group"]), int(d.get("scale_steps", 1))
        bits = d["bits"]  # {name: bits}, or one number for all (files from before mixed bits)
        for key, shape in d["shapes"].items():
            b = int(bits[key] if isinstance(bits, dict) else bits)
            out[DELTA_PREFIX + key] = dequantize(
                tensors[DELTA_Q + key], tensors[DELTA_E + key], tuple(shape), b, group, steps
            )
    f = storage.get("feature")
    if f:
        shape = tuple(int(x) for x in f["shape"])
        if f.get("masked"):
            where = tensors[FEATURE_WHERE].to(torch.bool)
        else:
            where = torch.ones(shape[-2:], dtype=torch.bool)
        if f.get("dtype") == "int8":
            values = dequantize(
                tensors[FEATURE_VALUES],
                tensors[FEATURE_EXP],
                tuple(f["values"]),
                8,
                int(f["group"]),
                int(f.get("scale_steps", 1)),
            )
        else:
            values = tensors[FEATURE_VALUES].to(torch.float32)
        feat = torch.zeros(shape, dtype=torch.float32)
        feat[0][:, where] = values
        out[FEATURE] = feat
    elif FEATURE in out and out[FEATURE].dtype == torch.float16:
        out[FEATURE] = out[FEATURE].to(torch.float32)
    m = storage.get("mask")
    if m and m.get("packed"):
        shape = tuple(int(x) for x in m["shape"])
        bits_np = np.unpackbits(tensors[MASK_BITS].numpy(), axis=-1)[..., : shape[-1]]
        out[MASK] = torch.from_numpy(bits_np.astype(np.float32)).reshape(shape)
    return out
