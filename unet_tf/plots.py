"""Figures for the run folder (matplotlib, Agg) and the overlays predict writes (OpenCV).

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


def _figure_png(fig, path: str | Path) -> None:
    """Saves a matplotlib figure as PNG atomically and frees it."""
    import io

    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write(Path(path), buffer.getvalue())


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed, none opened
    import matplotlib.pyplot as plt
    return plt


def draw_curves(history: dict[str, list[float]], path: str | Path) -> None:
    """Loss and metric curves (train and validation) per epoch, one panel each."""
    plt = _pyplot()
    names = [k for k in history if not k.startswith("val_") and k not in ("learning_rate", "lr", "epoch")]
    cols = 2 if len(names) > 1 else 1
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.4 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        epochs = np.arange(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker=".", label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker=".", label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")  # "best" keeps the legend off the lines
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    if not names:
        axes[0, 0].set_title("no history")
    fig.tight_layout()
    _figure_png(fig, path)


def draw_samples(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]], colors: np.ndarray,
                 path: str | Path, ignore_index: int = 255) -> None:
    """A grid: image | ground truth overlay | prediction overlay, one row per sample."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for row, (image, truth, pred) in zip(axes, rows):
        panels = (to_uint8(image), overlay(image, truth, colors, ignore_index=ignore_index),
                  overlay(image, pred, colors, ignore_index=ignore_index))
        for ax, panel in zip(row, panels):
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], ("image", "ground truth", "prediction")):
        ax.set_title(title)
    fig.tight_layout()
    _figure_png(fig, path)
