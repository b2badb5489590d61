"""Choosing how stored intensities map to network inputs, and its numpy reference.

This module decides the scheme and its parameters from the fingerprint;
:mod:`unet_tf.data.normalise` applies the resulting record in the input
pipeline (:func:`apply_normalisation` here is the numpy reference it mirrors).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .fingerprint import Fingerprint
from .formatting import json_safe
from .result import Plan
from .streaming import percentile_key


#: Per-image variation (coefficient of variation of the per-image contrast,
#: see Fingerprint.intensity_variation) above which a global clip would squash
#: some images into a small part of [0, 1]: normalise each image by itself.
#: On the tests' synthetic data, stable 12-bit microscopy measures < 0.05 even
#: with sparse cells, and 12 images scaled by random factors in 0.2..5
#: measure 0.30..1 (60 draws, uniform or log-uniform factors).
INTENSITY_VARIATION_MAX = 0.25
#: Dataset percentiles clipped to by the 'percentile' scheme (as nnU-Net).
CLIP_PERCENTILES = (0.5, 99.5)
#: Floats within this tolerance of [0, 1] are taken as already scaled.
UNIT_RANGE_TOLERANCE = 1e-3
#: 8-bit data using at most this many bits (max < 64) is dim: stretch it by
#: percentiles instead of dividing by 255, which would keep it within [0, 0.25].
DIM_8BIT_BITS = 6


def choose_normalisation(fp: Fingerprint) -> dict:
    """How to map stored intensities to network inputs.

    Rules, first match wins:

    1. 8-bit data -> ``scale`` by 1/255 (unless dim: ``effective_bits <=
       DIM_8BIT_BITS``, then rule 4);
    2. float data within [0, 1] -> ``scale`` by 1.0 (already scaled);
    3. per-image intensity variation above ``INTENSITY_VARIATION_MAX`` (MRI-like:
       each image has its own range) -> ``zscore_per_image``: per image and
       channel, subtract the mean and divide by the standard deviation;
    4. otherwise (16-bit or 12-bit-in-16 microscopy, stable floats) ->
       ``percentile``: clip to the dataset's [p0.5, p99.5] per channel and
       scale to [0, 1] (params ``low``, ``high``).

    Args:
        fp: the dataset's fingerprint.

    Returns:
        ``{"scheme": str, "params": dict, "reason": str}``.
    """
    variation = fp.intensity_variation
    if fp.bit_depth is not None and fp.bit_depth <= 8 and fp.effective_bits > DIM_8BIT_BITS:
        return dict(scheme="scale", params={"scale": 1 / 255},
                    reason=f"{fp.dtype} data ({fp.value_min:g}..{fp.value_max:g}): divide by 255")
    in_unit_range = -UNIT_RANGE_TOLERANCE <= fp.value_min and fp.value_max <= 1 + UNIT_RANGE_TOLERANCE
    if fp.bit_depth is None and in_unit_range:
        return dict(scheme="scale", params={"scale": 1.0},
                    reason=f"{fp.dtype} data already in [0, 1] ({fp.value_min:.3g}..{fp.value_max:.3g})")
    if variation > INTENSITY_VARIATION_MAX:
        return dict(scheme="zscore_per_image", params={},
                    reason=(f"each image has its own intensity range (variation {variation:.2f} > "
                            f"{INTENSITY_VARIATION_MAX}): per image, subtract the mean, divide by the std"))
    return _percentile_scheme(fp, variation)


def _percentile_scheme(fp: Fingerprint, variation: float) -> dict:
    lo_q, hi_q = (percentile_key(q) for q in CLIP_PERCENTILES)
    low, high = fp.percentiles[lo_q], fp.percentiles[hi_q]
    high = [h if h > lo else lo + 1.0 for lo, h in zip(low, high)]
    bits = f"{fp.effective_bits}-bit in {fp.dtype}" if fp.bit_depth else fp.dtype
    lo_s = ", ".join(f"{v:.4g}" for v in low)
    hi_s = ", ".join(f"{v:.4g}" for v in high)
    return dict(scheme="percentile", params={"low": low, "high": high},
                reason=(f"{bits} data with a stable range across images (variation {variation:.2f} <= "
                        f"{INTENSITY_VARIATION_MAX}): clip to the dataset's p{lo_q}..p{hi_q} "
                        f"([{lo_s}]..[{hi_s}]) and scale to [0, 1]"))


def apply_normalisation(image: np.ndarray, normalisation: Mapping) -> np.ndarray:
    """A planned normalisation applied to one image, by the pipeline's own code.

    Args:
        image: (H, W, C) or (H, W) array in its stored dtype.
        normalisation: ``{"scheme": ..., "params": ...}`` as from :func:`choose_normalisation`.

    Returns:
        float32 array of the same shape.
    """
    from ..data.normalise import normalise  # numpy only, like this package
    x = np.asarray(image)
    flat = {"scheme": normalisation["scheme"], **normalisation.get("params", {}),
            "dtype": x.dtype.name}
    out = normalise(x[..., None] if x.ndim == 2 else x, flat)
    return out[..., 0] if x.ndim == 2 else out


def normalisation_spec(plan: Plan) -> dict:
    """The plan's normalisation as one flat record, the format of ``unet_tf.data.normalise``.

    ``{"scheme": ..., <params>, "dtype": <stored dtype>, "bits": <0 for floats,
    else the bits the values use, 8..16>}``, e.g. ``{"scheme": "percentile",
    "low": [...], "high": [...], "dtype": "uint16", "bits": 12}``: save it in
    the run record and the exported model's metadata.
    """
    fp = plan.fingerprint
    bits = 0 if fp.bit_depth is None else max(8, min(16, fp.effective_bits or 8))
    return json_safe({"scheme": plan["normalisation"], **plan["normalisation_params"],
                       "dtype": fp.dtype, "bits": bits})


def normalisation_params(fp: Fingerprint, scheme: str) -> dict:
    """The parameters of ``scheme`` for this dataset (when the user picks the scheme)."""
    if scheme == "percentile":
        return _percentile_scheme(fp, fp.intensity_variation)["params"]
    if scheme == "zscore_per_image":
        return {}
    if scheme == "scale":
        return {"scale": 1.0 / (2**fp.bit_depth - 1) if fp.bit_depth else 1.0}
    raise ValueError(f"normalisation: unknown scheme {scheme!r}; use scale, percentile or zscore_per_image")
