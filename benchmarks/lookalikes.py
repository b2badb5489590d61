"""Look-alikes of real datasets that the built-in cells are not like (for benchmarks/plan_quality.py).

Each writer makes a dataset folder with ``train/`` and ``val/`` splits that has
the one property that breaks fixed defaults:

- ``lateral``: brain-slice-like 181x217 16-bit images whose classes are the
  left and right hemisphere and the left and right ventricle, with an
  intensity range that changes from image to image (as MRI does). Only the
  position tells left from right, so horizontal flips contradict the labels.
- ``street``: 240x320 RGB photos with sky above buildings above road, small
  rare cars (about 1.5% of the pixels) and void (255) outlines; upside-down
  scenes never occur.
- ``micro16``: 12-bit fluorescence-like nuclei in 16-bit files, touching, with
  instance maps.
- ``small``: 48x64 grey images with two kinds of blobs.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from unet_tf.data.synthetic import synthetic_cells


def _save(root: Path, split: str, name: str, image, mask, instances=None, image_ext=".png"):
    for kind in ("images", "masks") + (("instances",) if instances is not None else ()):
        (root / split / kind).mkdir(parents=True, exist_ok=True)
    bgr = image[..., ::-1] if image.ndim == 3 else image
    cv2.imwrite(str(root / split / "images" / f"{name}{image_ext}"), np.ascontiguousarray(bgr))
    cv2.imwrite(str(root / split / "masks" / f"{name}.png"), mask)
    if instances is not None:
        cv2.imwrite(str(root / split / "instances" / f"{name}.png"), instances.astype(np.uint16))


def _splits(n: int, val: float = 0.25):
    n_val = max(1, int(round(n * val)))
    return ["val" if i < n_val else "train" for i in range(n)]


def lateral(root, n=48, seed=0):
    """Left/right hemispheres and ventricles in 181x217 16-bit slices."""
    root, rng = Path(root), np.random.default_rng(seed)
    h, w = 181, 217
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i, split in enumerate(_splits(n)):
        cy, cx = h / 2 + rng.normal(0, 6), w / 2 + rng.normal(0, 6)
        ay, ax = rng.uniform(70, 82), rng.uniform(55, 66)
        tilt = np.deg2rad(rng.normal(0, 4))
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(tilt) + dy * np.sin(tilt)          # left-right axis of the head
        v = -dx * np.sin(tilt) + dy * np.cos(tilt)
        brain = (u / ax) ** 2 + (v / ay) ** 2 <= 1
        skull = ((u / (ax + 6)) ** 2 + (v / (ay + 6)) ** 2 <= 1) & ~brain
        vent = lambda side: ((u - side * rng.uniform(9, 13)) / 7) ** 2 + ((v + 5) / 16) ** 2 <= 1  # noqa: E731
        mask = np.zeros((h, w), np.uint8)
        mask[brain & (u < 0)] = 1          # left hemisphere (image left)
        mask[brain & (u >= 0)] = 2
        mask[brain & vent(-1)] = 3         # left ventricle
        mask[brain & vent(1)] = 4
        texture = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 3)
        image = np.where(brain, 0.55 + 0.08 * texture, 0.0)
        image = np.where(skull, 0.9, image)
        image = np.where(mask >= 3, 0.2, image)
        image = image + rng.normal(0, 0.03, (h, w))
        gain, offset = rng.uniform(0.3, 3.0), rng.uniform(0, 400)   # varies per scan
        image16 = np.clip(image * 1500 * gain + offset, 0, 65535).astype(np.uint16)
        _save(root, split, f"slice{i:03d}", image16, mask)
    return root


def street(root, n=48, seed=0):
    """Sky over buildings over road, rare cars, void outlines; JPEG photos."""
    root, rng = Path(root), np.random.default_rng(seed)
    h, w = 240, 320
    for i, split in enumerate(_splits(n)):
        horizon = int(rng.uniform(0.3, 0.45) * h)
        road_top = int(rng.uniform(0.6, 0.7) * h)
        mask = np.zeros((h, w), np.uint8)  # 0: vegetation/other
        image = np.zeros((h, w, 3), np.float32)
        sky = np.linspace(0, 1, h)[:, None]
        mask[:horizon] = 1
        image[:horizon] = (np.array([110, 160, 230]) * (1 - 0.3 * sky[:horizon]))[:, None, :]
        image[horizon:road_top] = (60, 110, 50)
        x = 0
        while x < w:  # buildings along the horizon
            bw, bh = int(rng.uniform(25, 70)), int(rng.uniform(20, 80))
            top = max(horizon - bh, 5)
            color = rng.uniform(70, 170, 3)
            mask[top:road_top - 5, x:x + bw] = 2
            image[top:road_top - 5, x:x + bw] = color
            x += bw + int(rng.uniform(0, 15))
        pts = np.array([[w * 0.35, road_top], [w * 0.65, road_top], [w, h], [0, h]], np.int32)
        road = np.zeros((h, w), np.uint8)
        cv2.fillPoly(road, [pts], 1)
        mask[road > 0] = 3
        image[road > 0] = (80, 80, 85)
        for _ in range(int(rng.integers(0, 3))):  # rare cars on the road
            cy = int(rng.uniform(road_top + 10, h - 15))
            size = (cy - road_top) / (h - road_top) * 30 + 8
            cx = int(rng.uniform(w * 0.25, w * 0.75))
            car = (slice(max(cy - int(size / 2), 0), cy), slice(cx - int(size), cx + int(size)))
            mask[car] = 4
            image[car] = rng.uniform(20, 230, 3)
            edge = cv2.morphologyEx((mask == 4).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3)))
            mask[edge > 0] = 255                          # void outline, as annotators leave
        image += rng.normal(0, 8, image.shape)
        _save(root, split, f"scene{i:03d}", np.clip(image, 0, 255).astype(np.uint8), mask,
              image_ext=".jpg")
    return root


def micro16(root, n=40, seed=0):
    """Touching nuclei, 12-bit values in 16-bit files, with instance maps."""
    root = Path(root)
    images, instances = synthetic_cells(n, 256, seed=seed)
    rng = np.random.default_rng(seed)
    for i, split in enumerate(_splits(n)):
        image = images[i][..., 0].astype(np.float32) * rng.uniform(4, 14) + rng.uniform(50, 150)
        image16 = np.clip(image + rng.normal(0, 20, image.shape), 0, 4095).astype(np.uint16)
        mask = ((instances[i] > 0) * 255).astype(np.uint8)
        _save(root, split, f"cells{i:03d}", image16, mask, instances[i])
    return root


def small(root, n=60, seed=0):
    """48x64 grey images: bright round blobs (class 1) and dark bars (class 2)."""
    root, rng = Path(root), np.random.default_rng(seed)
    h, w = 48, 64
    for i, split in enumerate(_splits(n)):
        image = rng.normal(120, 12, (h, w)).astype(np.float32)
        mask = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            c = (int(rng.integers(6, w - 6)), int(rng.integers(6, h - 6)))
            r = int(rng.integers(3, 7))
            cv2.circle(mask, c, r, 1, -1)
            cv2.circle(image, c, r, 200, -1)
        for _ in range(int(rng.integers(0, 3))):
            x, y = int(rng.integers(0, w - 12)), int(rng.integers(0, h - 4))
            mask[y:y + 3, x:x + 12] = 2
            image[y:y + 3, x:x + 12] = 50
        _save(root, split, f"tiny{i:03d}", np.clip(image, 0, 255).astype(np.uint8), mask)
    return root


WRITERS = {"lateral": lateral, "street": street, "micro16": micro16, "small": small}
#: The best hand-tuned options of the fixed defaults for each look-alike.
HAND_TUNED = {
    "lateral": ["--no-flip", "--no-rot90"],
    "street": ["--no-flip", "--no-rot90"],
    "micro16": [],
    "small": [],
}
