"""Built-in synthetic microscopy dataset (numpy + OpenCV only, no downloads).

``synthetic_cells`` draws images of irregular, roundish cells with a textured
interior and a brighter nucleus, blur, uneven illumination and shot/read
noise, together with their instance maps. A tunable fraction of the cells
*touch* a neighbour: their instances are separated only by a one-pixel
background line that is barely darker than the cells. That is the situation
the U-Net border weight map (Ronneberger et al., 2015) was designed for, so the
demo and the tests can exercise it without fetching a real dataset.

``write_dataset`` writes the same data as PNG files in the folder layout the
data loader reads::

    root/README.txt
    root/train/images/cell_000.png     uint8 (or uint16) grey or RGB image
    root/train/masks/cell_000.png      uint8, 0 = background, 255 = cell
    root/train/instances/cell_000.png  uint16, 0 = background, 1..K = cell ids
    root/val/...                       same, for the validation samples

Every sample is generated from its own seed derived from ``(seed, index)``, so
sample ``i`` is the same whatever ``n`` is.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from dataclasses import dataclass

import cv2
import numpy as np

from .weights import instances_from_mask

__all__ = ["synthetic_cells", "write_dataset", "touching_pairs"]

# Radii are specified for 256 x 256 images and scaled linearly with ``size``,
# so the cell count and foreground fraction do not depend on the resolution.
_REF_SIZE = 256.0
_RADIUS_RANGE = (11.5, 19.5)  # per-image typical radius; cells vary +-25% -> ~9-24 px
_HARMONICS = (2, 3, 4, 5)  # low-frequency radial perturbation of the outline
# Stain vectors (optical density per unit concentration, RGB order), after
# Ruifrok & Johnston (2001): haematoxylin (purple nuclei) and eosin (pink).
_HEMATOXYLIN = np.array([0.65, 0.70, 0.29], np.float32)
_EOSIN = np.array([0.07, 0.99, 0.11], np.float32)


@dataclass
class _Cell:
    cy: float
    cx: float
    r: float  # equivalent radius in pixels
    a: float  # semi-axis along the cell's own u axis (pixels)
    b: float  # semi-axis along v
    cos: float
    sin: float
    amps: np.ndarray
    phases: np.ndarray
    reach: int  # half-size of a bounding box containing the whole cell

    def radial(self, phi: np.ndarray) -> np.ndarray:
        """Outline radius (in units of the ellipse) at ellipse angle ``phi``."""
        out = np.ones_like(phi)
        for k, amp, ph in zip(_HARMONICS, self.amps, self.phases):
            out += amp * np.cos(k * phi + ph)
        return out

    def extent(self, psi: float) -> float:
        """Distance from the centre to the outline along image direction ``psi``."""
        dy, dx = np.sin(psi), np.cos(psi)
        u = self.cos * dx + self.sin * dy
        v = -self.sin * dx + self.cos * dy
        phi = np.arctan2(v / self.b, u / self.a)
        return float(self.radial(np.asarray(phi)) / np.hypot(u / self.a, v / self.b))

    def field(self, size: int) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """Normalised radius ``q`` over the clipped bounding box (q < 1 inside).

        Returns ``None`` when the box misses the image.
        """
        y0, y1 = max(int(self.cy) - self.reach, 0), min(int(self.cy) + self.reach + 1, size)
        x0, x1 = max(int(self.cx) - self.reach, 0), min(int(self.cx) + self.reach + 1, size)
        if y0 >= y1 or x0 >= x1:
            return None
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - self.cy
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - self.cx
        u = (self.cos * dx + self.sin * dy) / self.a
        v = (-self.sin * dx + self.cos * dy) / self.b
        q = np.sqrt(u * u + v * v) / self.radial(np.arctan2(v, u))
        return (slice(y0, y1), slice(x0, x1)), q


def _new_cell(rng: np.random.Generator, cy: float, cx: float, r: float) -> _Cell:
    aspect = rng.uniform(0.65, 1.0)  # minor / major axis
    theta = rng.uniform(0.0, np.pi)
    amps = rng.normal(0.0, 1.0, len(_HARMONICS)) * np.array([0.06, 0.05, 0.035, 0.025])
    amps = np.clip(amps, -0.12, 0.12)
    a, b = r / np.sqrt(aspect), r * np.sqrt(aspect)  # same area as a circle of radius r
    reach = int(np.ceil(a * (1.0 + np.abs(amps).sum()))) + 4
    return _Cell(float(cy), float(cx), float(r), float(a), float(b), float(np.cos(theta)),
                 float(np.sin(theta)), amps, rng.uniform(0, 2 * np.pi, len(_HARMONICS)), reach)


def _smooth_noise(rng: np.random.Generator, size: int, grid: int) -> np.ndarray:
    """Zero-mean, unit-std random field varying on the scale ``size / grid``."""
    coarse = rng.standard_normal((grid, grid)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _fine_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std granular texture with grain size ~``sigma`` pixels."""
    noise = rng.standard_normal((size, size), dtype=np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    return (noise - noise.mean()) / (noise.std() + 1e-6)


def _shot_noise(rng: np.random.Generator, img: np.ndarray, peak: float) -> np.ndarray:
    """Poisson-like noise (Gaussian approximation, variance = mean / peak).

    ``peak`` is the photon count at intensity 1; the approximation is accurate
    from a handful of photons up and much faster than ``rng.poisson``.
    """
    img = np.clip(img, 0.0, None).astype(np.float32)
    return img + np.sqrt(img / peak) * rng.standard_normal(img.shape, np.float32)


def _place_cells(rng, size, n_target, touching):
    """Place up to ``n_target`` cells; returns (labels, depth, cells).

    Overlapping cells are resolved by giving each pixel to the cell it lies
    deepest inside (in pixels), which yields the flat shared walls of
    compressed neighbours rather than one cell lying on top of another.
    """
    scale = size / _REF_SIZE
    r_typ = rng.uniform(*_RADIUS_RANGE) * scale
    labels = np.zeros((size, size), np.int32)
    best = np.zeros((size, size), np.float32)  # depth (px) of the owning cell
    depth = np.zeros((size, size), np.float32)  # normalised depth 0 (edge) .. 1 (centre)
    cells: list[_Cell] = []
    areas: list[int] = []
    margin = 3.0 * scale  # free space kept around cells that are not meant to touch
    for _ in range(30 * max(n_target, 1)):
        if len(cells) >= n_target:
            break
        r = r_typ * rng.uniform(0.75, 1.25)
        adjacent = bool(cells) and rng.random() < touching
        if adjacent:
            # Put the new cell against an existing one, pushed in by a few
            # pixels so that the two share a wall of some length.
            host = cells[rng.integers(len(cells))]
            psi = rng.uniform(0.0, 2 * np.pi)
            cell = _new_cell(rng, 0.0, 0.0, r)
            push = 0.5 + rng.uniform(0.05, 0.3) * min(r, host.r)
            dist = host.extent(psi) + cell.extent(psi + np.pi) - push
            cell.cy, cell.cx = host.cy + dist * np.sin(psi), host.cx + dist * np.cos(psi)
        else:
            cell = _new_cell(rng, rng.uniform(0, size), rng.uniform(0, size), r)
        got = cell.field(size)
        if got is None:
            continue
        box, q = got
        inside = q < 1.0
        area = int(inside.sum())
        if area < 0.3 * np.pi * r * r:  # mostly outside the image
            continue
        owners = labels[box]
        if adjacent:
            # Accept a moderate overlap only: neither the new cell nor any
            # neighbour may lose more than a third of its area.
            hit = owners[inside]
            hit = hit[hit > 0]
            if hit.size > 0.3 * area:
                continue
            ids, counts = np.unique(hit, return_counts=True)
            if any(c > 0.3 * areas[i - 1] for i, c in zip(ids, counts)):
                continue
        elif np.any(owners[q < 1.0 + margin / r] > 0):
            continue
        d = (1.0 - q) * r
        win = inside & (d > best[box])
        cells.append(cell)
        areas.append(area)
        labels[box][win] = len(cells)
        best[box][win] = d[win]
        depth[box][win] = 1.0 - q[win]
    return labels, depth, cells


def _separate(labels: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """Make instances non-4-adjacent and clean them up.

    Where two different instances are 4-adjacent, the pixel of the one with
    the larger id becomes background: a single pass leaves a 1-px gap and
    removes every 4-adjacency (zeroing pixels never creates new contacts).
    Each instance then keeps only its largest 4-connected piece, instances
    smaller than ``min_area`` are dropped, and ids are made contiguous.

    Returns ``(instances, kept)``: the final map and the pre-gap map with the
    dropped pieces removed (used to render the cells, gap pixels included).
    """
    lab = labels
    cut = np.zeros(lab.shape, bool)
    for axis in (0, 1):
        a = lab[:-1, :] if axis == 0 else lab[:, :-1]
        b = lab[1:, :] if axis == 0 else lab[:, 1:]
        contact = (a > 0) & (b > 0) & (a != b)
        # Cut the pixel with the larger id on each side of the contact.
        ca, cb = contact & (a > b), contact & (b > a)
        if axis == 0:
            cut[:-1, :] |= ca
            cut[1:, :] |= cb
        else:
            cut[:, :-1] |= ca
            cut[:, 1:] |= cb
    inst = np.where(cut, 0, lab)
    kept = lab.copy()
    comp, stats = instances_from_mask(inst > 0, 4, return_stats=True)
    n_comp = len(stats)
    # Components of the binary mask are exactly the instance pieces, because
    # no two instances are 4-adjacent any more.
    comp_label = np.zeros(n_comp, np.int64)
    flat_c, flat_l = comp.ravel(), inst.ravel()
    nz = flat_l > 0
    comp_label[flat_c[nz]] = flat_l[nz]
    best_piece: dict[int, int] = {}
    for c in range(1, n_comp):
        lid, area = int(comp_label[c]), int(stats[c, cv2.CC_STAT_AREA])
        if lid and (lid not in best_piece or area > stats[best_piece[lid], cv2.CC_STAT_AREA]):
            best_piece[lid] = c
    new_of_comp = np.zeros(n_comp, np.int32)
    next_id = 1
    for lid in sorted(best_piece):
        c = best_piece[lid]
        if stats[c, cv2.CC_STAT_AREA] >= min_area:
            new_of_comp[c] = next_id
            next_id += 1
    out = new_of_comp[comp]
    # Dropped pieces are rendered as background too, so that what looks like a
    # cell is always labelled as one (gap pixels excepted).
    dropped = (inst > 0) & (out == 0)
    kept[dropped] = 0
    # A gap pixel whose cell was dropped entirely must not stay bright either.
    alive = np.zeros(int(lab.max()) + 1, bool)
    alive[np.unique(comp_label[new_of_comp > 0])] = True
    kept[~alive[kept]] = 0
    return out, kept


def _render(rng, labels, kept, depth, cells, size, channels):
    """Float image(s) in [0, 1] of the cells in ``kept``; ``labels`` marks gaps."""
    n_ids = len(cells) + 1
    fg = kept > 0
    gap = fg & (labels == 0)
    scale = size / _REF_SIZE
    # Cytoplasm: brighter towards the centre, granular, per-cell brightness.
    base = np.concatenate([[0.0], rng.uniform(0.4, 0.7, n_ids - 1)]).astype(np.float32)
    body = base[kept] * (0.7 + 0.3 * np.sqrt(depth))
    body *= 1.0 + 0.12 * _fine_noise(rng, size, 0.8 * max(scale, 0.5))
    nucleus = np.zeros((size, size), np.float32)
    for idx, cell in enumerate(cells, start=1):
        # Off-centre elliptical nucleus with a soft edge.
        off = rng.uniform(0.0, 0.3) * cell.r
        ang = rng.uniform(0.0, 2 * np.pi)
        nuc = _new_cell(rng, cell.cy + off * np.sin(ang), cell.cx + off * np.cos(ang),
                        cell.r * rng.uniform(0.35, 0.55))
        got = nuc.field(size)
        if got is None:
            continue
        box, q = got
        soft = 1.0 / (1.0 + np.exp(np.clip((q - 1.0) * 10.0, -30, 30)))
        nucleus[box] = np.maximum(nucleus[box], soft * (kept[box] == idx))
    nucleus *= 1.0 + 0.15 * _fine_noise(rng, size, 1.2 * max(scale, 0.5))
    # The wall between touching cells is dimmer than the cells, as membranes
    # between touching nuclei are, yet after the blur far brighter than the
    # background: thin and faint enough that the weight map matters.
    wall = np.where(gap, rng.uniform(0.45, 0.65), 1.0).astype(np.float32)
    blur = rng.uniform(0.6, 1.1) * max(scale, 0.5)
    # Smooth uneven illumination: a linear gradient times a vignette.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) - 0.5
    g = rng.uniform(0.0, 0.25)
    ang = rng.uniform(0.0, 2 * np.pi)
    illum = (1.0 + g * (np.cos(ang) * xx + np.sin(ang) * yy)) * (
        1.0 - rng.uniform(0.1, 0.3) * (xx * xx + yy * yy) / 0.5)
    # A few faint, unlabelled debris specks keep "bright = cell" from being trivial.
    debris = np.zeros((size, size), np.float32)
    for _ in range(rng.integers(0, 6)):
        y, x = rng.integers(0, size, 2)
        cv2.circle(debris, (int(x), int(y)), max(1, int(rng.uniform(1.0, 2.5) * scale)),
                   float(rng.uniform(0.08, 0.2)), -1)
    peak = rng.uniform(40.0, 160.0)  # photons at full scale: sets the shot noise
    read = rng.uniform(0.005, 0.02)
    if channels == 1:
        # Fluorescence-like: bright cells on a dark, slightly textured background.
        bg = 0.08 + 0.02 * _smooth_noise(rng, size, 6) + 0.01 * _fine_noise(rng, size, 1.0)
        img = np.where(fg, body * wall + 0.45 * base[kept] * nucleus, bg) + debris
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), blur) * illum
        img = _shot_noise(rng, img, peak) + read * rng.standard_normal(img.shape, np.float32)
        return np.clip(img, 0.0, 1.0)[..., None].astype(np.float32)
    # Brightfield H&E-like: stain concentrations -> optical density -> light
    # transmitted (Beer-Lambert). Nuclei purple, cytoplasm pink, white background,
    # so cells are *darker* than the background here.
    stroma = np.clip(0.06 + 0.03 * _smooth_noise(rng, size, 8), 0, None)
    eosin = np.where(fg, 0.35 + 0.5 * body * wall, stroma) + 0.5 * debris
    haem = np.where(fg, 0.08 + 1.1 * nucleus * wall, 0.02) + 2.0 * debris
    eosin = cv2.GaussianBlur(eosin.astype(np.float32), (0, 0), blur)
    haem = cv2.GaussianBlur(haem.astype(np.float32), (0, 0), blur)
    od = haem[..., None] * _HEMATOXYLIN + eosin[..., None] * _EOSIN
    light = 0.95 * (0.85 + 0.15 * illum[..., None] / illum.max())
    img = light * np.exp(-od * rng.uniform(0.9, 1.2, 3).astype(np.float32))
    img = _shot_noise(rng, img, 4 * peak)  # brightfield: more photons than fluorescence
    img = img + read * rng.standard_normal(img.shape, np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _sample(seed, index, size, channels, min_cells, max_cells, touching):
    # SeedSequence((seed, index)) makes sample ``index`` independent of ``n``.
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    n_target = int(rng.integers(min_cells, max_cells + 1))
    labels, depth, cells = _place_cells(rng, size, n_target, touching)
    min_area = max(4, int(round(20 * (size / _REF_SIZE) ** 2)))
    inst, kept = _separate(labels, min_area)
    img = _render(rng, inst, kept, depth, cells, size, channels)
    return img, inst


def synthetic_cells(n=32, size=256, seed=0, *, channels=1, min_cells=8, max_cells=25,
                    touching=0.5, dtype=np.uint8):
    """Generate synthetic microscopy images of (partly touching) cells.

    Args:
        n: number of samples.
        size: height and width in pixels. Cell radii (~8-24 px at 256) scale
            with ``size / 256``.
        seed: non-negative int. Sample ``i`` is generated from ``(seed, i)``
            alone, so ``synthetic_cells(4, seed=s)[k][:2]`` equals
            ``synthetic_cells(8, seed=s)[k][:2]``.
        channels: 1 for a fluorescence-like grey image (bright cells, dark
            background), 3 for an RGB brightfield H&E-like image (pink
            cytoplasm, purple nuclei, near-white background, so there cells
            are darker than the background).
        min_cells, max_cells: range of the number of cells attempted per image
            (a few may be dropped when there is no room or they are cut off).
        touching: probability in [0, 1] that a new cell is placed against an
            existing one rather than at a free random spot.
        dtype: ``np.uint8`` (0..255) or ``np.uint16`` (0..65535) for the
            images; both come from the same float image, so they agree up to
            quantisation.

    Returns:
        ``(images, instances)``: ``images`` of shape ``(n, size, size,
        channels)`` and dtype ``dtype``; ``instances`` of shape ``(n, size,
        size)``, uint16, 0 = background and 1..K the cells of each image
        (contiguous ids). Two different instances are never 4-adjacent:
        touching cells are split by a 1-px background line, so the
        4-connected components of ``instances > 0`` are the instances.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise ValueError(f"dtype must be np.uint8 or np.uint16, got {dtype}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if int(n) < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if int(size) < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}")
    if not 0 <= min_cells <= max_cells:
        raise ValueError(f"need 0 <= min_cells <= max_cells, got {min_cells}, {max_cells}")
    if not 0.0 <= touching <= 1.0:
        raise ValueError(f"touching must be in [0, 1], got {touching}")
    n, size = int(n), int(size)
    top = np.iinfo(dtype).max
    images = np.zeros((n, size, size, channels), dtype)
    instances = np.zeros((n, size, size), np.uint16 if max_cells < 65536 else np.int32)
    for i in range(n):
        img, inst = _sample(int(seed), i, size, channels, int(min_cells), int(max_cells),
                            float(touching))
        images[i] = np.rint(img * top).astype(dtype)
        instances[i] = inst
    return images, instances


def touching_pairs(instances: np.ndarray, max_dist: float = 2.0) -> set[tuple[int, int]]:
    """Pairs of different instances whose pixels come within ``max_dist`` px.

    With the default 2.0 this finds cells separated by at most a 1-px gap
    (the "touching" cells of ``synthetic_cells``).

    Args:
        instances: ``(H, W)`` integer instance map, 0 = background.
        max_dist: Euclidean pixel distance threshold.

    Returns:
        Set of ``(a, b)`` id pairs with ``a < b``.
    """
    lab = np.asarray(instances).astype(np.int64)
    h, w = lab.shape
    reach = int(np.floor(max_dist))
    padded = np.pad(lab, reach)
    pairs: set[tuple[int, int]] = set()
    for dy in range(0, reach + 1):
        for dx in range(-reach, reach + 1):
            if (dy == 0 and dx <= 0) or dy * dy + dx * dx > max_dist * max_dist:
                continue  # each offset once, up to sign
            other = padded[reach + dy:reach + dy + h, reach + dx:reach + dx + w]
            m = (lab > 0) & (other > 0) & (lab != other)
            if m.any():
                lo, hi = np.minimum(lab[m], other[m]), np.maximum(lab[m], other[m])
                pairs.update(zip(lo.tolist(), hi.tolist()))
    return pairs


def _to_png_image(img: np.ndarray) -> np.ndarray:
    # OpenCV writes BGR; convert so the file holds the real RGB colours.
    return img[..., 0] if img.shape[-1] == 1 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)


def write_dataset(root, n=32, size=256, seed=0, *, val_fraction=0.25, channels=1, splits=True,
                  touching=0.5, min_cells=8, max_cells=25, dtype=np.uint8, overwrite=False):
    """Write ``synthetic_cells`` samples as PNG files for the data loader.

    Layout with ``splits=True``: ``root/{train,val}/{images,masks,instances}/
    cell_XXX.png``; with ``splits=False`` the three folders sit directly under
    ``root``. File ``cell_XXX`` is sample ``XXX`` of ``synthetic_cells(n,
    size, seed, ...)``; the last ``round(n * val_fraction)`` samples (at least
    one when ``0 < val_fraction`` and ``n >= 2``) form the validation split.
    Images are grey (``channels=1``) or RGB PNGs (stored in RGB order: readers
    using ``cv2.imread`` get BGR) of dtype ``dtype``; masks are uint8 0/255;
    instances are uint16 ids. ``root/README.txt`` records how the data was made.

    The dataset is written into a temporary sibling folder and renamed into
    place, so an interrupted run never leaves a half-written ``root``.

    Args:
        root: destination folder; must not exist or be empty (see ``overwrite``).
        n, size, seed, channels, touching, min_cells, max_cells, dtype: passed
            to ``synthetic_cells``.
        val_fraction: fraction of samples in ``val`` (``0 <= f < 1``); ignored
            when ``splits=False``.
        splits: write ``train``/``val`` sub-folders, or one flat set.
        overwrite: replace an existing non-empty ``root``.

    Returns:
        ``pathlib.Path`` of ``root``.

    Raises:
        FileExistsError: ``root`` exists and is non-empty (or not a folder)
            and ``overwrite`` is False.
    """
    root = pathlib.Path(root).expanduser().absolute()
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")

    def _refuse():
        raise FileExistsError(
            f"{root} already exists and is not empty; pass a new path, delete it, "
            "or use overwrite=True")

    if root.exists() and not overwrite and (not root.is_dir() or any(root.iterdir())):
        _refuse()
    images, instances = synthetic_cells(n, size, seed, channels=channels, min_cells=min_cells,
                                        max_cells=max_cells, touching=touching, dtype=dtype)
    n = len(images)
    if splits:
        n_val = int(round(n * val_fraction))
        if val_fraction > 0 and n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        groups = {"train": range(0, n - n_val), "val": range(n - n_val, n)}
    else:
        n_val = 0
        groups = {"": range(n)}
    width = max(3, len(str(max(n - 1, 0))))

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for split, indices in groups.items():
            for sub in ("images", "masks", "instances"):
                (tmp / split / sub).mkdir(parents=True)
            for i in indices:
                name = f"cell_{i:0{width}d}.png"
                inst = instances[i].astype(np.uint16)
                ok = (cv2.imwrite(str(tmp / split / "images" / name), _to_png_image(images[i]))
                      and cv2.imwrite(str(tmp / split / "masks" / name),
                                      np.where(inst > 0, 255, 0).astype(np.uint8))
                      and cv2.imwrite(str(tmp / split / "instances" / name), inst))
                if not ok:
                    raise OSError(f"could not write {tmp / split / '*' / name}")
        layout = ("train/ and val/, each with images/, masks/, instances/" if splits
                  else "images/, masks/, instances/")
        split_txt = (f"train: {n - n_val} samples, val: {n_val} samples (the last ones)\n"
                     if splits else f"{n} samples, no split\n")
        (tmp / "README.txt").write_text(
            "SYNTHETIC DATA - not real microscopy.\n\n"
            "Generated by unet_tf.data.synthetic.write_dataset with\n"
            f"  synthetic_cells(n={n}, size={size}, seed={seed}, channels={channels}, "
            f"min_cells={min_cells}, max_cells={max_cells}, touching={touching}, "
            f"dtype={np.dtype(dtype).name})\n"
            f"  val_fraction={val_fraction}, splits={splits}\n\n"
            "Each image shows irregular roundish cells (perturbed ellipses) with a granular\n"
            "interior and an off-centre nucleus, blurred, unevenly lit, with Poisson and\n"
            "Gaussian noise. About `touching` of the cells are placed against a neighbour;\n"
            "touching instances are separated by a 1-px background line (never 4-adjacent).\n"
            "Sample i is drawn from its own seed (seed, i), so it does not depend on n.\n\n"
            f"Layout: {layout}\n"
            "  images/cell_XXX.png     "
            + ("grey" if channels == 1 else "RGB (H&E-like brightfield)")
            + f" {np.dtype(dtype).name}\n"
            "  masks/cell_XXX.png      uint8, 0 = background, 255 = cell\n"
            "  instances/cell_XXX.png  uint16, 0 = background, 1..K = cell ids\n"
            + split_txt)
        if root.exists() or root.is_symlink():
            if root.is_dir() and not root.is_symlink() and not any(root.iterdir()):
                root.rmdir()
            elif not overwrite:
                _refuse()
            else:
                # Move the old tree aside first so that root is never half-deleted.
                old = pathlib.Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
                os.replace(root, old / "x")
                os.replace(tmp, root)
                shutil.rmtree(old, ignore_errors=True)
                return root
        try:
            os.rename(tmp, root)
        except OSError as err:  # someone created a non-empty root meanwhile
            raise FileExistsError(f"{root} appeared while writing; pass a new path or "
                                  "delete it") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
