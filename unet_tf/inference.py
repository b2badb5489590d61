"""Overlap-tile prediction of images of any size, for Keras, SavedModel and TFLite models.

``predict_tiled`` is the paper's overlap-tile strategy as a plain function:

- valid padding: each input tile carries the context the network consumes,
  so output tiles cover the image exactly; beyond the image border the input
  is mirror extrapolated. Tile offsets stay on multiples of ``2**depth``, so
  every tile sees the pooling grid of one full pass, and the result equals a
  full-image pass (up to float rounding).
- same padding: tiles overlap and are blended with a Gaussian weight, so the
  zero-padded tile borders, which see less context, count little: no seams.

Only one batch of tiles is in flight at a time; memory grows with the image
only through the (H, W, classes) result.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import sizes
from .runtimes import Runtime, load_runtime
from .tiling import strided_grid, window

__all__ = ["predict_tiled", "predict_image", "prepare_image", "to_labels"]


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _default_overlap(out: int, step: int) -> int:
    # Enough for the steep Gaussian blend to hide tile borders, small enough
    # that a 2048 image costs little more than one pass (benchmarks/inference.py).
    return _round_up(max(2 * step, out // 16), step)


def _axis_plan(length: int, tile: int | None, overlap: int | None, runtime: Runtime,
               target: int = 512) -> tuple[int, list[int]]:
    """``(input tile, output offsets)`` along one axis.

    Offsets stay multiples of ``2**depth`` (the pooling grid). Without a given
    tile, the tile is balanced to the image: for same padding the fewest
    ~``target`` tiles that cover it with the overlap, sized so that they end at
    the image border instead of overshooting it (a 2048 image takes 4 tiles of
    560, not 5 of 512).
    """
    step = 2 ** runtime.depth
    depth, padding = runtime.depth, runtime.padding
    if tile is not None:
        out = runtime.output_size(tile)
        stride = out if padding == "valid" else out - (_default_overlap(out, step) if overlap is None
                                                       else int(overlap))
        stride = max(step, stride - stride % step)
        return tile, strided_grid(length, out, stride)
    if padding == "same":
        target = sizes.nearest_valid_input_sizes(target, depth, padding)[1]
        if length <= target:
            return sizes.input_size_for_output(length, depth, padding), [0]
        o = _default_overlap(target, step) if overlap is None else _round_up(int(overlap), step)
        n = -(-(length - o) // (target - o))
        tile = _round_up(-(-(length + (n - 1) * o) // n), step)
        return tile, [k * (tile - o) for k in range(n)]
    n = max(1, -(-length // target))
    tile = sizes.input_size_for_output(-(-length // n), depth, padding)
    out = runtime.output_size(tile)
    return tile, strided_grid(length, out, max(step, out - out % step))


def _blend_window(out_h: int, out_w: int, padding: str) -> np.ndarray:
    if padding == "valid":  # exact tiles: no blending needed
        return np.ones((out_h, out_w), np.float32)
    # Gaussian centred on the tile; the floor keeps every pixel covered.
    def axis(n):
        x = np.arange(n, dtype=np.float32) - (n - 1) / 2
        return np.exp(-0.5 * (x / (n / 8)) ** 2) + 1e-4
    return np.outer(axis(out_h), axis(out_w)).astype(np.float32)


def predict_tiled(model, image: np.ndarray, *, tile_size: int | tuple[int, int] | None = None,
                  overlap: int | None = None, batch_size: int = 4, tta: bool | str = False,
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Probabilities for a whole image, predicted tile by tile.

    Args:
        model: a Keras U-Net, a model path, or a :class:`Runtime`.
        image: the model's input, already normalised: ``(H, W)`` or ``(H, W, C)``, any H and W.
        tile_size: input tile size (int or (h, w)); must be a valid input size.
            Default: tiles of about 512 balanced to the image, or the
            runtime's fixed shape.
        overlap: same padding only: overlap between tiles (default a sixteenth
            of the tile, at least ``2 * 2**depth``). Strides stay multiples of
            ``2**depth``.
        batch_size: tiles per model call.
        tta: test-time augmentation: ``True`` or ``"flips"`` averages the four
            flips; ``"d4"`` adds the 90-degree rotations (8 in all).
        progress: called as ``progress(done_tiles, total_tiles)``.

    Returns:
        float32 ``(H, W, num_classes)`` probabilities.
    """
    runtime = load_runtime(model)
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] != runtime.in_channels:
        raise ValueError(f"image has {image.shape[-1]} channels, the model expects "
                         f"{runtime.in_channels}; see unet_tf.inference.prepare_image")
    if tta:
        return _predict_tta(runtime, image, tta, tile_size=tile_size, overlap=overlap,
                            batch_size=batch_size)
    return _predict_once(runtime, image, tile_size, overlap, batch_size, progress)


def _tta_transforms(mode):
    flips = [(False, False), (True, False), (False, True), (True, True)]
    rots = [0, 1] if mode == "d4" else [0]
    return [(fv, fh, k) for k in rots for fv, fh in flips]


def _predict_tta(runtime, image, mode, **kwargs):
    total = None
    transforms = _tta_transforms(mode)
    for flip_v, flip_h, k in transforms:
        x = image[::-1] if flip_v else image
        x = x[:, ::-1] if flip_h else x
        x = np.rot90(x, k)
        y = np.rot90(_predict_once(runtime, np.ascontiguousarray(x), **kwargs, progress=None), -k)
        y = y[:, ::-1] if flip_h else y
        y = y[::-1] if flip_v else y
        total = y if total is None else total + y
    return (total / len(transforms)).astype(np.float32)


def _predict_once(runtime: Runtime, image, tile_size, overlap, batch_size, progress):
    height, width = image.shape[:2]
    if tile_size is None and runtime.fixed_shape is not None:
        tile_size = runtime.fixed_shape
    tile_h, tile_w = (None, None) if tile_size is None else (
        (tile_size, tile_size) if np.isscalar(tile_size) else tuple(tile_size))
    for t in (tile_h, tile_w):
        if t is not None:
            sizes.check_input_size(int(t), runtime.depth, runtime.padding)
    tile_h, tops = _axis_plan(height, tile_h, overlap, runtime)
    tile_w, lefts = _axis_plan(width, tile_w, overlap, runtime)
    out_h, out_w = runtime.output_size(tile_h), runtime.output_size(tile_w)
    margin_h, margin_w = (tile_h - out_h) // 2, (tile_w - out_w) // 2
    offsets = [(top, left) for top in tops for left in lefts]
    blend = _blend_window(out_h, out_w, runtime.padding)
    acc = np.zeros((height, width, runtime.num_classes), np.float32)
    weights = np.zeros((height, width), np.float32)
    batch_size = max(1, min(batch_size, runtime.max_batch or batch_size))
    for start in range(0, len(offsets), batch_size):
        chunk = offsets[start:start + batch_size]
        batch = np.stack([window(image, top - margin_h, left - margin_w, tile_h, tile_w, "mirror")
                          for top, left in chunk])
        result = runtime(batch)
        for (top, left), tile in zip(chunk, result):
            h, w = min(out_h, height - top), min(out_w, width - left)
            acc[top:top + h, left:left + w] += tile[:h, :w] * blend[:h, :w, None]
            weights[top:top + h, left:left + w] += blend[:h, :w]
        if progress is not None:
            progress(min(start + batch_size, len(offsets)), len(offsets))
    acc /= weights[..., None]  # in place: no third image-sized array
    return acc


def to_labels(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class indices (H, W) uint8/uint16 from probabilities (H, W, K)."""
    if probabilities.shape[-1] == 1:
        return (probabilities[..., 0] >= threshold).astype(np.uint8)
    labels = probabilities.argmax(-1)
    return labels.astype(np.uint8 if probabilities.shape[-1] <= 256 else np.uint16)


def prepare_image(raw: np.ndarray, in_channels: int, input_scale: float | None = None,
                  normalisation: dict | None = None, name: str = "image") -> np.ndarray:
    """Raw pixels (H, W[, C]) to the model's input: channels matched, normalised as in training.

    Args:
        raw: The image as read from its file.
        in_channels: The model's input channels (grey images are repeated,
            colour images made grey, alpha dropped, as needed).
        input_scale: The scale factor, for models that recorded only that.
        normalisation: The model's normalisation (``unet_tf.data.normalise``);
            images of another bit depth are brought to the training units first.
        name: Named in errors (the file).

    Raises:
        DatasetError: the image cannot be brought to the training images' range.
        ValueError: its channels cannot match the model's.
    """
    import cv2

    from .data.normalise import normalise
    from .run import legacy_normalisation
    image = np.asarray(raw)
    if image.ndim == 2:
        image = image[..., None]
    channels = image.shape[-1]
    if channels != in_channels:
        if channels == 1:
            image = np.repeat(image, in_channels, axis=-1)
        elif in_channels == 1 and channels in (3, 4):
            image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)[..., None]
        elif channels == 4 and in_channels == 3:
            image = image[..., :3]
        else:
            raise ValueError(f"{name}: the image has {channels} channels and the model expects "
                             f"{in_channels}")
    if normalisation is None:
        normalisation = legacy_normalisation(1.0 / 255.0 if input_scale is None else input_scale)
    return normalise(image, normalisation, name)


def predict_image(model, raw: np.ndarray, **kwargs) -> np.ndarray:
    """Probabilities (H, W, K) for raw pixels, normalised as the model was trained."""
    runtime = load_runtime(model)
    image = prepare_image(raw, runtime.in_channels, runtime.input_scale, runtime.normalisation)
    return predict_tiled(runtime, image, **kwargs)
