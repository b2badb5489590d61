"""Windows into arrays with mirror extrapolation, and tile grids (numpy only).

Shared by the training pipeline (random tiles) and by overlap-tile inference.
"""
from __future__ import annotations

import numpy as np

__all__ = ["reflect_index", "window", "grid"]


def reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Map any integer positions into ``[0, n)`` by mirroring without repeating the edge.

    Like ``numpy.pad(mode="reflect")`` and OpenCV's ``BORDER_REFLECT_101``, but
    for any distance, so windows may be much larger than the array.
    """
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.mod(index, period)
    return np.where(index < n, index, period - index)


def window(array: np.ndarray, top: int, left: int, height: int, width: int,
           mode: str = "mirror", fill=0) -> np.ndarray:
    """``array[top:top+height, left:left+width]``, extrapolated outside the array.

    ``mode="mirror"`` reflects the array (the paper's overlap-tile
    extrapolation); ``mode="constant"`` fills with ``fill``.
    """
    h, w = array.shape[:2]
    rows = np.arange(top, top + height)
    cols = np.arange(left, left + width)
    if 0 <= top and top + height <= h and 0 <= left and left + width <= w:
        return array[top:top + height, left:left + width].copy()
    if mode == "mirror":
        return array[reflect_index(rows, h)[:, None], reflect_index(cols, w)[None, :]]
    out = np.full((height, width) + array.shape[2:], fill, dtype=array.dtype)
    r_ok, c_ok = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    out[np.ix_(r_ok, c_ok)] = array[np.ix_(rows[r_ok], cols[c_ok])]
    return out


def grid(length: int, tile: int, stride: int | None = None) -> list[int]:
    """Tile offsets covering ``length``: every ``stride`` pixels, the last one aligned to the end.

    Use :func:`strided_grid` when every offset must stay a multiple of the stride.
    """
    stride = stride or tile
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def strided_grid(length: int, tile: int, stride: int) -> list[int]:
    """Offsets ``0, stride, 2*stride, ...`` until a tile reaches ``length`` (may overshoot the end)."""
    count = max(1, -(-(length - tile) // stride) + 1) if length > tile else 1
    return [k * stride for k in range(count)]
