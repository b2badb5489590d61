"""Input/output size rules of the U-Net, as plain Python (no TensorFlow).

With ``padding="same"`` the output has the input's size, and the input must be
a multiple of ``2**depth`` so that every pooling step divides evenly.

With ``padding="valid"`` (the paper) every 3x3 convolution trims one pixel per
side, so each level loses 4 pixels, pooling needs an even size, and the output
is smaller than the input: 572 -> 388 for depth 4.
"""
from __future__ import annotations

__all__ = [
    "output_size",
    "is_valid_input_size",
    "valid_input_sizes",
    "nearest_valid_input_sizes",
    "check_input_size",
    "input_size_for_output",
]


def _check_args(depth: int, padding: str) -> None:
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")


def _valid_output_size(size: int, depth: int) -> int | None:
    """Output size of a valid-padding U-Net, or None if ``size`` cannot work."""
    s = size
    for _ in range(depth):
        s -= 4  # two unpadded 3x3 convolutions
        if s <= 0 or s % 2:
            return None  # 2x2 pooling needs an even, positive size
        s //= 2
    s -= 4  # bottleneck
    if s <= 0:
        return None
    for _ in range(depth):
        s = 2 * s - 4  # 2x2 up-convolution, then two convolutions
        if s <= 0:
            return None
    return s


def output_size(size: int, depth: int = 4, padding: str = "same") -> int:
    """Spatial output size for an input of ``size`` pixels along one axis.

    Raises:
        ValueError: if ``size`` is not a valid input size; the message names
            the nearest valid sizes.
    """
    check_input_size(size, depth, padding)
    if padding == "same":
        return size
    return _valid_output_size(size, depth)  # type: ignore[return-value]


def is_valid_input_size(size: int, depth: int = 4, padding: str = "same") -> bool:
    _check_args(depth, padding)
    if size <= 0:
        return False
    if padding == "same":
        return size % (2**depth) == 0
    return _valid_output_size(size, depth) is not None


def valid_input_sizes(lo: int, hi: int, depth: int = 4, padding: str = "same") -> list[int]:
    """All valid input sizes in ``[lo, hi]``."""
    return [s for s in range(max(lo, 1), hi + 1) if is_valid_input_size(s, depth, padding)]


def nearest_valid_input_sizes(size: int, depth: int = 4, padding: str = "same") -> tuple[int | None, int]:
    """The largest valid size <= ``size`` (None if there is none) and the smallest >= ``size``."""
    _check_args(depth, padding)
    below = next((s for s in range(size, 0, -1) if is_valid_input_size(s, depth, padding)), None)
    above = next(s for s in range(max(size, 1), size + 2 ** (depth + 3) + 200) if is_valid_input_size(s, depth, padding))
    return below, above


def check_input_size(size: int, depth: int = 4, padding: str = "same") -> None:
    """Raise a ``ValueError`` naming the nearest valid sizes if ``size`` cannot work."""
    if is_valid_input_size(size, depth, padding):
        return
    below, above = nearest_valid_input_sizes(size, depth, padding)
    options = " or ".join(str(s) for s in (below, above) if s is not None)
    if padding == "same":
        why = f"with padding='same' it must be a multiple of 2**depth = {2**depth}"
    else:
        why = ("with padding='valid' every level must keep an even, positive size "
               "after its two unpadded convolutions")
    raise ValueError(
        f"Input size {size} does not work for a U-Net of depth {depth}: {why}. "
        f"Nearest valid input sizes: {options}. Pad or crop the input to one of them "
        f"(unet_tf.inference.predict_tiled does this for you).")


def input_size_for_output(out: int, depth: int = 4, padding: str = "same") -> int:
    """The smallest valid input size whose output is at least ``out`` pixels."""
    _check_args(depth, padding)
    if padding == "same":
        step = 2**depth
        return max(step, -(-out // step) * step)
    size = 1
    while True:
        o = _valid_output_size(size, depth)
        if o is not None and o >= out:
            return size
        size += 1
