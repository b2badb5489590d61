"""Figures for the run folder, drawn with OpenCV (no plotting library needed).

``curves.png``: loss and metrics per epoch. ``samples.png``: image, ground
truth and prediction overlays for a few validation images. ``overlay`` is also
what ``unet-tf predict`` writes next to each mask.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .files import atomic_write

__all__ = ["class_colors", "to_uint8", "overlay", "colorize", "draw_curves", "draw_samples",
           "write_png"]

_WHITE = (255, 255, 255)
_GREY = (200, 200, 200)
_BLACK = (0, 0, 0)
_SERIES = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127)]  # RGB


def is_grey_palette(palette) -> bool:
    """True when every class colour is a grey level (r == g == b)."""
    lut = np.asarray(palette)
    return bool(np.all(lut == lut[:, :1]))


def class_colors(num_labels: int, palette=None) -> np.ndarray:
    """An RGB colour per class (uint8, (K, 3)); class 0 black unless a colour
    palette is given (grey-level palettes make poor overlays and are ignored)."""
    if palette is not None and not is_grey_palette(palette):
        return np.asarray(palette, np.uint8)
    colors = [(0, 0, 0), (0, 220, 0), (230, 40, 40), (40, 90, 255), (250, 220, 0), (0, 220, 220),
              (220, 0, 220), (255, 140, 0), (140, 80, 255), (120, 255, 120)]
    rng = np.random.default_rng(7)
    while len(colors) < num_labels:
        colors.append(tuple(int(v) for v in rng.integers(40, 256, 3)))
    return np.asarray(colors[:max(num_labels, 2)], np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A displayable RGB uint8 copy of an image of any range (percentile stretched)."""
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] not in (1, 3):
        image = image[..., :1]
    lo, hi = np.percentile(image, [0.5, 99.5])
    scaled = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    out = (scaled * 255 + 0.5).astype(np.uint8)
    return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out


def colorize(labels: np.ndarray, colors: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Class indices (H, W) to RGB; ignored pixels grey."""
    safe = np.clip(np.where(labels == ignore_index, 0, labels), 0, len(colors) - 1)
    out = colors[safe]
    out[labels == ignore_index] = 128
    return out


def overlay(image: np.ndarray, labels: np.ndarray, colors: np.ndarray, alpha: float = 0.45,
            ignore_index: int = 255) -> np.ndarray:
    """The image with class colours blended in and class outlines drawn (RGB uint8)."""
    base = to_uint8(image)
    color = colorize(labels, colors, ignore_index)
    fg = (labels != 0) & (labels != ignore_index)
    out = base.copy()
    out[fg] = (base[fg] * (1 - alpha) + color[fg] * alpha).astype(np.uint8)
    edges = cv2.morphologyEx(np.where(fg, labels, 0).astype(np.uint8), cv2.MORPH_GRADIENT,
                             np.ones((3, 3), np.uint8)) > 0
    out[edges] = color[edges] if fg.any() else out[edges]
    return out


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB (or gray) array as PNG, atomically (temporary file, then rename)."""
    path = Path(path)
    array = rgb[..., ::-1] if rgb.ndim == 3 and rgb.shape[-1] == 3 else rgb
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise OSError(f"{path}: could not encode PNG")
    atomic_write(path, buffer.tobytes())


def _text(canvas, text, xy, scale=0.45, color=_BLACK, thickness=1):
    cv2.putText(canvas, text, xy, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)


def _panel(series: dict[str, list[float]], title: str, width=480, height=320) -> np.ndarray:
    canvas = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 55, 15, 28, 40
    _text(canvas, title, (left, 18), 0.55)
    values = [v for vs in series.values() for v in vs if np.isfinite(v)]
    if not values:
        return canvas
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    n = max(len(vs) for vs in series.values())
    x_of = lambda i: int(left + (width - left - right) * (i / max(n - 1, 1)))  # noqa: E731
    y_of = lambda v: int(top + (height - top - bottom) * (1 - (v - lo) / (hi - lo)))  # noqa: E731
    cv2.rectangle(canvas, (left, top), (width - right, height - bottom), _GREY, 1)
    for frac in (0.0, 0.5, 1.0):
        v = lo + frac * (hi - lo)
        _text(canvas, f"{v:.3g}", (4, y_of(v) + 4), 0.4)
    _text(canvas, "epoch", (width // 2 - 20, height - 10), 0.45)
    _text(canvas, "1", (left - 3, height - bottom + 15), 0.4)
    _text(canvas, str(n), (width - right - 10, height - bottom + 15), 0.4)
    for k, (name, vs) in enumerate(series.items()):
        color = _SERIES[k % len(_SERIES)]
        pts = np.array([(x_of(i), y_of(v)) for i, v in enumerate(vs) if np.isfinite(v)], np.int32)
        if len(pts) > 1:
            cv2.polylines(canvas, [pts], False, color, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(canvas, tuple(int(c) for c in p), 2, color, -1)
        ly = top + 14 + 16 * k
        cv2.line(canvas, (width - 150, ly - 4), (width - 130, ly - 4), color, 2)
        _text(canvas, name, (width - 125, ly), 0.42)
    return canvas


def draw_curves(history: dict[str, list[float]], path: str | Path) -> None:
    """Loss and metric curves (train and validation) per epoch, one panel each."""
    names = [k for k in history if not k.startswith("val_") and k not in ("learning_rate", "lr", "epoch")]
    panels = []
    for name in names:
        series = {name: history[name]}
        if f"val_{name}" in history:
            series[f"val_{name}"] = history[f"val_{name}"]
        panels.append(_panel(series, name))
    if not panels:
        panels = [_panel({}, "no history")]
    while len(panels) % 2:
        panels.append(np.full_like(panels[0], 255))
    rows = [np.hstack(panels[i:i + 2]) for i in range(0, len(panels), 2)]
    write_png(path, np.vstack(rows))


def draw_samples(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]], colors: np.ndarray,
                 path: str | Path, size: int = 256, ignore_index: int = 255) -> None:
    """A grid: image | ground truth overlay | prediction overlay, one row per sample."""
    tiles = []
    for image, truth, pred in rows:
        panels = [to_uint8(image), overlay(image, truth, colors, ignore_index=ignore_index),
                  overlay(image, pred, colors, ignore_index=ignore_index)]
        scale = size / max(image.shape[:2])
        dsize = (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale)))
        panels = [cv2.resize(p, dsize, interpolation=cv2.INTER_NEAREST) for p in panels]
        panels = [cv2.copyMakeBorder(p, 0, size - p.shape[0], 0, size - p.shape[1] + 4,
                                     cv2.BORDER_CONSTANT, value=_WHITE) for p in panels]
        tiles.append(np.hstack(panels))
    header = np.full((24, tiles[0].shape[1], 3), 255, np.uint8)
    for k, title in enumerate(("image", "ground truth", "prediction")):
        _text(header, title, (k * (size + 4) + 6, 17), 0.5)
    write_png(path, np.vstack([header] + tiles))
