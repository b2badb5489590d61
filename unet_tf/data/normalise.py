"""Input normalisation: raw pixels to the model's input, the same in training, prediction and serving.

A normalisation is plain data (saved in the run record and in every exported
artifact's metadata)::

    {"scheme": "scale", "scale": 1/255, "dtype": "uint8", "bits": 8}
    {"scheme": "percentile", "low": [...], "high": [...], "dtype": "uint16", "bits": 12}
    {"scheme": "zscore_per_image", "dtype": "float32"}

- ``scale``: ``raw * scale`` (8-bit data: 1/255; n-bit data stored in 16 bits: 1/(2^n - 1)).
- ``percentile``: clip each channel to the training set's robust range
  ``[low, high]`` (its 0.5th and 99.5th percentiles), then map it to [0, 1].
- ``zscore_per_image``: each image minus its mean, over its standard
  deviation, per channel (for data whose intensities vary from image to image).

Images of another type than the training images are first brought to the
training images' units by bit depth (a 16-bit image for an 8-bit model is
divided by 257), so ``scale`` and ``percentile`` see the range they were
fitted on; a float image outside [0, 1] for an integer model cannot be
placed on that range and is refused by name. ``zscore_per_image`` needs no
conversion.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import DatasetError

__all__ = ["SCHEMES", "scale_normalisation", "bit_depth", "to_training_units", "normalise",
           "affine", "describe"]

SCHEMES = ("scale", "percentile", "zscore_per_image")
_EPS = 1e-6


def bit_depth(dtype, peak: float) -> int:
    """Bits of an integer image type that hold ``peak`` (8 to 16); 0 for floats."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 8
    if not np.issubdtype(dtype, np.integer):
        return 0
    return max(8, min(16, math.ceil(math.log2(float(peak) + 1))))


def scale_normalisation(scale: float, dtype="uint8", bits: int | None = None) -> dict:
    """The ``scale`` scheme as data (what older runs, without a scheme, used)."""
    dtype = np.dtype(dtype).name
    if bits is None:
        bits = 8 if dtype == "uint8" else round(math.log2(1.0 / scale + 1)) if scale < 1 else 0
    return {"scheme": "scale", "scale": float(scale), "dtype": dtype, "bits": int(bits)}


def _full_scale(bits: int) -> float:
    return float(2**bits - 1)


def to_training_units(raw: np.ndarray, norm: dict, name: str = "image") -> np.ndarray:
    """``raw`` as float32 in the units of the training images (by bit depth).

    Raises:
        DatasetError: a float image outside [0, 1] for a model trained on
            integer images, whose scale cannot be known.
    """
    image = np.asarray(raw)
    target = np.dtype(norm.get("dtype", image.dtype.name))
    if image.dtype == target or norm.get("scheme") == "zscore_per_image":
        return image.astype(np.float32)
    target_bits = int(norm.get("bits") or bit_depth(target, 255))
    if np.issubdtype(image.dtype, np.integer):
        bits = bit_depth(image.dtype, image.max() if image.size else 0)
        unit = image.astype(np.float32) / _full_scale(bits)        # 0..1
    else:
        peak = float(np.nanmax(image)) if image.size else 0.0
        if image.size and (np.nanmin(image) < 0 or peak > 1.0 + _EPS):
            raise DatasetError(f"{name}: a {image.dtype.name} image with values up to {peak:g}, "
                               f"but the model was trained on {target.name} images; save it as "
                               f"{target.name} (or scale it to [0, 1]) to predict on it")
        unit = image.astype(np.float32)
    if target_bits == 0:  # float training data: its own units were [0, 1] or its scale
        return unit / float(norm.get("scale", 1.0))
    return unit * _full_scale(target_bits)


def normalise(raw: np.ndarray, norm: dict, name: str = "image") -> np.ndarray:
    """Raw pixels (H, W, C) to the model's float32 input, as ``norm`` says."""
    image = to_training_units(raw, norm, name)
    scheme = norm.get("scheme", "scale")
    if scheme == "scale":
        return image * np.float32(norm["scale"])
    if scheme == "percentile":
        low = np.asarray(norm["low"], np.float32)
        high = np.asarray(norm["high"], np.float32)
        return (np.clip(image, low, high) - low) / np.maximum(high - low, _EPS)
    if scheme == "zscore_per_image":
        mean = image.mean(axis=(0, 1), keepdims=True)
        std = image.std(axis=(0, 1), keepdims=True)
        return (image - mean) / np.maximum(std, _EPS)
    raise ValueError(f"unknown normalisation scheme {scheme!r}; expected one of {SCHEMES}")


def describe(norm: dict) -> str:
    """One line for logs and reports."""
    scheme = norm.get("scheme", "scale")
    if scheme == "scale":
        return f"scale by {norm['scale']:.6g} ({norm.get('dtype')}, {norm.get('bits')} bits)"
    if scheme == "percentile":
        return (f"clip to the training percentiles {norm['low']} .. {norm['high']} "
                "and map to [0, 1]")
    return "per-image z-score (each image minus its mean, over its standard deviation)"


def affine(pixels: np.ndarray, norm: dict) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """``(gain, offset, clip)`` with ``normalise(pixels) == clip(pixels) * gain + offset``.

    Training keeps images as stored and normalises each tile as it is cut, so
    the per-image z-score needs the whole image's statistics once, here.
    Returns per-channel float32 arrays; ``clip`` is ``(low, high)`` or None.
    """
    channels = pixels.shape[-1]
    scheme = norm.get("scheme", "scale")
    ones = np.ones(channels, np.float32)
    if scheme == "scale":
        return ones * np.float32(norm["scale"]), ones * 0, None
    if scheme == "percentile":
        low = np.asarray(norm["low"], np.float32) * ones
        high = np.asarray(norm["high"], np.float32) * ones
        gain = 1.0 / np.maximum(high - low, _EPS)
        return gain.astype(np.float32), (-low * gain).astype(np.float32), (low, high)
    if scheme == "zscore_per_image":
        flat = pixels.reshape(-1, channels).astype(np.float64)
        mean, std = flat.mean(0), np.maximum(flat.std(0), _EPS)
        return (1.0 / std).astype(np.float32), (-mean / std).astype(np.float32), None
    raise ValueError(f"unknown normalisation scheme {scheme!r}; expected one of {SCHEMES}")
