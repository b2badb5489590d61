"""The dataset fingerprint: one streaming pass over the training samples.

:func:`fingerprint_arrays` summarises a dataset in a JSON-safe
:class:`Fingerprint`: sizes, dtype and bit depth, intensity percentiles, how
much each image's own intensity range varies, class frequencies, objects and
how many of them touch, and each class's spatial prior (where in the image it
lies).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .formatting import json_safe
from .object_stats import component_objects, instance_objects
from .streaming import Moments, Reservoir


#: Pixels kept (per channel) for the dataset's intensity percentiles: 100k samples
#: pin the 0.5th/99.5th percentiles to about +-0.05 percentile points.
RESERVOIR_SIZE = 100_000
#: Pixels sampled per image for its own 1st/50th/99th percentiles.
PER_IMAGE_SAMPLE = 16_384
#: Object statistics (components, touching, diameters) are computed on at most
#: this many images, spread evenly over the dataset: connected components and
#: the touching test cost a few array passes per class, too slow for every
#: image of a large set, and a few hundred images give stable medians.
MAX_OBJECT_IMAGES = 200
#: Diameters kept per image (a random subset) for the median object size.
MAX_DIAMETERS_PER_IMAGE = 1000
#: Distinct image sizes listed in the fingerprint (the rest are counted).
MAX_LISTED_SIZES = 20
#: Class 0 is the background: layout rules weigh the other classes.
BACKGROUND_CLASS = 0
#: Foreground/background contrast is used to measure variation only where it
#: is at least this share of the typical p1..p99 range (else the classes have
#: about the same intensity, as in texture segmentation, and the per-image
#: p1/p99 range is used instead).
MIN_CONTRAST_SHARE = 0.1
#: Sampled pixels a class group needs in an image for its median to count.
MIN_PIXELS_FOR_MEDIAN = 20


@dataclass
class Fingerprint:
    """What the plan needs to know about a dataset (JSON-safe, see ``to_dict``).

    Intensity fields are per channel; ``percentiles`` and
    ``foreground_percentiles`` (label not background nor void) map "0.5",
    "50", "99.5" to per-channel values from a fixed-seed sample of at most
    RESERVOIR_SIZE pixels. Class fields have one value per class (void
    excluded). ``priors[k]`` is the ``grid x grid`` average frequency of class
    ``k`` over normalised image coordinates (row 0 = top): each image's pixels
    are binned to grid cells (row * grid // H, col * grid // W), the per-cell
    class shares (void left out of the denominator) are averaged over the
    images; the same as area-resizing each one-hot map when the image size is
    a multiple of ``grid``, in one bincount instead of one resize per class.
    The dipoles hold, per class, the mean, standard deviation, count and the
    number of positive and negative values over the images containing it of
    (left - right) / mass (``lr_dipole``) and (top - bottom) / mass
    (``tb_dipole``); ``edge_anisotropy`` the same for (horizontal - vertical)
    / all label-boundary pixels per image. Objects are instances (present ids,
    not the largest id) or the 4-connected components of each foreground
    class, from at most MAX_OBJECT_IMAGES images spread over the dataset.
    """

    n_images: int
    num_classes: int
    ignore_index: int
    binary: bool
    class_names: list | None
    channels: int
    dtype: str
    dtypes: list
    bit_depth: int | None
    effective_bits: int | None
    value_min: float
    value_max: float
    height: dict
    width: dict
    sizes: list
    n_distinct_sizes: int
    percentiles: dict
    foreground_percentiles: dict | None
    image_median_spread: list
    image_range_cv: list
    image_contrast_cv: list | None
    image_level_spread: list | None
    class_pixels: list
    class_frequency: list
    class_image_share: list
    void_share: float
    objects_source: str
    object_images: int
    objects_per_image: dict
    touching_share: float
    object_diameter: float | None
    grid: int
    priors: list
    lr_dipole: dict
    tb_dipole: dict
    edge_anisotropy: dict

    @property
    def median_side(self) -> int:
        """The larger of the median height and median width (pixels)."""
        return math.ceil(max(self.height["median"], self.width["median"]))

    @property
    def intensity_variation(self) -> float:
        """How much each image's intensity scale differs from the others' (0: not at all).

        The largest, over channels, of the coefficient of variation of the
        per-image contrast (median of the foreground minus median of the
        background) and of the spread of the background medians relative to
        the mean contrast: both are about 0 for a fixed exposure whatever the
        share of foreground, and follow any per-image gain or offset. Where
        the labels give no contrast, the per-image p1..p99 ranges are used
        (``image_range_cv``, ``image_median_spread``), which also move when
        only the foreground share changes.
        """
        if self.image_contrast_cv is not None:
            values = list(self.image_contrast_cv) + list(self.image_level_spread)
        else:
            values = list(self.image_median_spread) + list(self.image_range_cv)
        return float(max(values)) if values else 0.0

    def class_name(self, k: int) -> str:
        """``class k`` with its name when the dataset names it."""
        if self.class_names and k < len(self.class_names) and self.class_names[k]:
            return f"class {k} ({self.class_names[k]})"
        return f"class {k}"

    def to_dict(self) -> dict:
        return json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: Mapping) -> Fingerprint:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown fingerprint keys {unknown}")
        return cls(**dict(values))


_INTENSITY_QS = (0.5, 50.0, 99.5)
_PER_IMAGE_QS = (1.0, 50.0, 99.0)


class _FingerprintBuilder:
    """Accumulates one :class:`Fingerprint` over samples added one at a time."""

    def __init__(self, num_classes: int, ignore_index: int, class_names, binary: bool,
                 grid: int, seed: int, max_object_images: int):
        if grid < 2 or grid % 2:
            raise ValueError(f"grid must be an even number >= 2, got {grid}")
        self.k = 2 if binary else int(num_classes)
        if self.k < 2:
            raise ValueError(f"num_classes must be >= 2 (background and one class), got {num_classes}")
        self.ignore, self.names, self.binary, self.grid = int(ignore_index), class_names, binary, grid
        self.rng = np.random.default_rng(seed)
        self.all_px = Reservoir(RESERVOIR_SIZE, self.rng)
        self.fg_px = Reservoir(RESERVOIR_SIZE, self.rng)
        self.n = 0
        self.channels: int | None = None
        self.dtypes: dict[str, np.dtype] = {}
        self.vmin, self.vmax = math.inf, -math.inf
        self.heights: list[int] = []
        self.widths: list[int] = []
        self.per_image: list[np.ndarray] = []  # (C, 3): p1, p50, p99
        self.per_image_groups: list[np.ndarray] = []  # (C, 2): background, foreground medians
        self.class_px = np.zeros(self.k, np.int64)
        self.class_images = np.zeros(self.k, np.int64)
        self.void_px = 0
        self.prior_sum = np.zeros((grid, grid, self.k))
        self.prior_n = np.zeros((grid, grid))
        self.lr, self.tb = Moments(self.k), Moments(self.k)
        self.edges = Moments(1)
        self.max_object_images = max_object_images
        self.object_stride = 1
        self.objects: list[tuple[int, int, int, np.ndarray]] = []
        self.objects_source = "none"

    # -- one sample
    def add(self, image, label, instances=None) -> None:
        image, label = self._check(np.asarray(image), np.asarray(label), instances)
        valid = label != self.ignore
        self._add_intensities(image, label, valid)
        counts = self._add_classes(label, valid)
        self._add_layout(label, valid)
        if self.n % self.object_stride == 0:
            self._add_objects(label, valid, counts, instances)
        self.n += 1

    def _check(self, image, label, instances):
        where = f"sample {self.n}"
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3:
            raise ValueError(f"{where}: image must be (H, W) or (H, W, C), got shape {image.shape}")
        if label.shape != image.shape[:2]:
            raise ValueError(f"{where}: label shape {label.shape} does not match image {image.shape[:2]}")
        if instances is not None and np.shape(instances) != label.shape:
            raise ValueError(f"{where}: instances shape {np.shape(instances)} does not match "
                             f"label {label.shape}")
        if self.channels is None:
            self.channels = image.shape[2]
        elif image.shape[2] != self.channels:
            raise ValueError(f"{where}: {image.shape[2]} channels, earlier images have {self.channels}")
        if image.dtype.kind == "f" and not np.isfinite(image).all():
            raise ValueError(f"{where}: image has NaN or infinite values")
        bad = (label != self.ignore) & ((label < 0) | (label >= self.k))
        if bad.any():
            raise ValueError(f"{where}: label value {int(label[bad].flat[0])} is not a class "
                             f"(0..{self.k - 1}) nor the ignore index {self.ignore}")
        return image, label

    def _add_intensities(self, image, label, valid) -> None:
        h, w, c = image.shape
        self.heights.append(h)
        self.widths.append(w)
        self.dtypes.setdefault(str(image.dtype), image.dtype)
        self.vmin = min(self.vmin, float(image.min()))
        self.vmax = max(self.vmax, float(image.max()))
        flat = image.reshape(-1, c)
        self.all_px.add(flat)
        fg = (valid & (label != BACKGROUND_CLASS)).ravel()
        if fg.any():
            self.fg_px.add(flat[fg])
        idx = self.rng.integers(0, len(flat), size=min(len(flat), PER_IMAGE_SAMPLE))
        sample = flat[idx].astype(np.float64)
        self.per_image.append(np.percentile(sample, _PER_IMAGE_QS, axis=0).T)
        lab, ok = label.ravel()[idx], valid.ravel()[idx]
        groups = [sample[ok & (lab == BACKGROUND_CLASS)], sample[ok & (lab != BACKGROUND_CLASS)]]
        self.per_image_groups.append(np.stack(
            [np.median(g, axis=0) if len(g) >= MIN_PIXELS_FOR_MEDIAN else np.full(c, np.nan)
             for g in groups], axis=1))

    def _add_classes(self, label, valid) -> np.ndarray:
        counts = np.bincount(label[valid].ravel().astype(np.intp), minlength=self.k)[: self.k]
        self.class_px += counts
        self.class_images += counts > 0
        self.void_px += int(label.size - valid.sum())
        return counts

    def _add_layout(self, label, valid) -> None:
        """Spatial prior on the grid, left/right and top/bottom dipoles, edge anisotropy."""
        h, w = label.shape
        k1 = self.k + 1  # bin k collects void
        lab = np.where(valid, label, self.k).astype(np.intp)
        rows = np.bincount((np.arange(h)[:, None] * k1 + lab).ravel(), minlength=h * k1)
        cols = np.bincount((np.arange(w)[None, :] * k1 + lab).ravel(), minlength=w * k1)
        rows, cols = rows.reshape(h, k1)[:, : self.k], cols.reshape(w, k1)[:, : self.k]
        g = self.grid
        cell = (np.arange(h) * g // h)[:, None] * g + (np.arange(w) * g // w)[None, :]
        cells = np.bincount((cell * k1 + lab).ravel(), minlength=g * g * k1)
        cells = cells.reshape(g, g, k1)[..., : self.k].astype(np.float64)
        labelled = cells.sum(-1)
        seen = labelled > 0
        self.prior_sum[seen] += cells[seen] / labelled[seen][:, None]
        self.prior_n += seen
        mass = rows.sum(0).astype(np.float64)
        present = mass > 0
        safe = np.maximum(mass, 1)
        self.lr.add(_side(w) @ cols / safe, present)  # +1: all on the left
        self.tb.add(_side(h) @ rows / safe, present)  # +1: all at the top
        self._add_edges(label, valid)

    def _add_edges(self, label, valid) -> None:
        horizontal = np.count_nonzero((label[1:] != label[:-1]) & valid[1:] & valid[:-1])
        vertical = np.count_nonzero((label[:, 1:] != label[:, :-1]) & valid[:, 1:] & valid[:, :-1])
        total = horizontal + vertical
        if total:
            self.edges.add(np.array([(horizontal - vertical) / total]), np.array([True]))

    def _add_objects(self, label, valid, counts, instances) -> None:
        if instances is not None:
            n, touching, diam = instance_objects(np.asarray(instances))
            self.objects_source = "instances"
        else:
            classes = [k for k in range(self.k) if k != BACKGROUND_CLASS and counts[k]]
            n, touching, diam = component_objects(label, classes)
            if self.objects_source == "none":
                self.objects_source = "components"
        if len(diam) > MAX_DIAMETERS_PER_IMAGE:
            diam = self.rng.choice(diam, MAX_DIAMETERS_PER_IMAGE, replace=False)
        self.objects.append((self.n, n, touching, diam.astype(np.float32)))
        if len(self.objects) > self.max_object_images:  # thin evenly: double the stride
            self.object_stride *= 2
            self.objects = [o for o in self.objects if o[0] % self.object_stride == 0]

    # -- the result
    def finish(self) -> Fingerprint:
        if self.n == 0:
            raise ValueError("The dataset is empty: no images to fingerprint")
        dtype = max(self.dtypes.values(), key=lambda d: (d.kind == "f", d.itemsize))
        bits, effective = _bit_depth(dtype, self.vmax)
        per_image = np.stack(self.per_image)  # (N, C, 3)
        labelled = int(self.class_px.sum())
        return Fingerprint(
            n_images=self.n, num_classes=self.k, ignore_index=self.ignore, binary=self.binary,
            class_names=list(self.names) if self.names is not None else None,
            channels=int(self.channels), dtype=str(dtype), dtypes=sorted(self.dtypes),
            bit_depth=bits, effective_bits=effective,
            value_min=self.vmin, value_max=self.vmax,
            height=_min_median_max(self.heights), width=_min_median_max(self.widths),
            **self._sizes(),
            percentiles=self.all_px.percentiles(_INTENSITY_QS),
            foreground_percentiles=self.fg_px.percentiles(_INTENSITY_QS),
            **_per_image_variation(per_image),
            **_contrast_variation(np.stack(self.per_image_groups), per_image),
            class_pixels=self.class_px.tolist(),
            class_frequency=(self.class_px / max(labelled, 1)).tolist(),
            class_image_share=(self.class_images / self.n).tolist(),
            void_share=self.void_px / max(self.void_px + labelled, 1),
            **self._object_summary(),
            grid=self.grid, priors=self._priors(),
            lr_dipole=self.lr.summary(), tb_dipole=self.tb.summary(),
            edge_anisotropy=self.edges.summary(),
        )

    def _sizes(self) -> dict:
        pairs, counts = np.unique(np.stack([self.heights, self.widths], 1), axis=0, return_counts=True)
        order = np.argsort(-counts, kind="stable")[:MAX_LISTED_SIZES]
        return dict(sizes=[[int(pairs[i][0]), int(pairs[i][1]), int(counts[i])] for i in order],
                    n_distinct_sizes=len(pairs))

    def _priors(self) -> list:
        prior = self.prior_sum / np.maximum(self.prior_n, 1)[..., None]
        return np.moveaxis(prior, -1, 0).round(6).tolist()

    def _object_summary(self) -> dict:
        counts = np.array([o[1] for o in self.objects], float)
        total = counts.sum()
        diam = np.concatenate([o[3] for o in self.objects]) if self.objects else np.empty(0)
        return dict(
            objects_source=self.objects_source, object_images=len(self.objects),
            objects_per_image=_stats(counts),
            touching_share=float(sum(o[2] for o in self.objects) / total) if total else 0.0,
            object_diameter=float(np.median(diam)) if len(diam) else None)


def _side(n: int) -> np.ndarray:
    """+1 for pixels in the first half of an axis, -1 in the second, 0 on the centre line."""
    centre = (np.arange(n) + 0.5) / n
    return np.sign(0.5 - centre)


def _bit_depth(dtype: np.dtype, vmax: float) -> tuple[int | None, int | None]:
    """(stored bits, bits the values actually use) for integer dtypes; (None, None) for floats."""
    if dtype.kind == "b":
        return 1, 1
    if dtype.kind not in "ui":
        return None, None
    return dtype.itemsize * 8, max(1, math.ceil(math.log2(max(vmax, 0) + 1)))


def _min_median_max(values) -> dict:
    return {"min": int(np.min(values)), "median": float(np.median(values)), "max": int(np.max(values))}


def _stats(values: np.ndarray) -> dict:
    if not len(values):
        return {"median": 0.0, "mean": 0.0, "max": 0.0}
    return {"median": float(np.median(values)), "mean": float(np.mean(values)), "max": float(np.max(values))}


def _per_image_variation(per_image: np.ndarray) -> dict:
    """Spread of per-image medians and ranges across images, per channel.

    ``image_range_cv``: std / mean of the per-image ranges (p99 - p1).
    ``image_median_spread``: std of the per-image medians / mean range (a
    coefficient of variation of the medians would explode for dark images
    whose medians are near 0; the range is the scale that matters).
    """
    ranges = per_image[..., 2] - per_image[..., 0]
    mean_range = ranges.mean(0)
    scale = np.where(mean_range > 0, mean_range, 1.0)
    return dict(image_range_cv=(ranges.std(0) / scale).tolist(),
                image_median_spread=(per_image[..., 1].std(0) / scale).tolist())


def _contrast_variation(groups: np.ndarray, per_image: np.ndarray) -> dict:
    """Spread of the per-image foreground/background contrast, per channel (None if unmeasurable).

    ``image_contrast_cv``: std / |mean| of (foreground median - background
    median) over the images that have both; ``image_level_spread``: std of
    the background medians / |mean contrast|. None when fewer than 2 images
    have both groups, or the mean contrast is under MIN_CONTRAST_SHARE of the
    mean p1..p99 range in some channel.
    """
    both = ~np.isnan(groups).any(axis=(1, 2))
    if both.sum() < 2:
        return dict(image_contrast_cv=None, image_level_spread=None)
    g = groups[both]
    contrast = g[..., 1] - g[..., 0]  # (N, C)
    mean = np.abs(contrast.mean(0))
    mean_range = (per_image[..., 2] - per_image[..., 0]).mean(0)
    if (mean < MIN_CONTRAST_SHARE * mean_range).any() or (mean == 0).any():
        return dict(image_contrast_cv=None, image_level_spread=None)
    return dict(image_contrast_cv=(contrast.std(0) / mean).tolist(),
                image_level_spread=(g[..., 0].std(0) / mean).tolist())


def fingerprint_arrays(samples: Iterable, *, num_classes: int, ignore_index: int = 255,
                       class_names=None, binary: bool = False, grid: int = 8, seed: int = 0,
                       max_object_images: int = MAX_OBJECT_IMAGES) -> Fingerprint:
    """Fingerprint a dataset streamed one sample at a time.

    Args:
        samples: iterable of ``(image, label, instances_or_None)``: ``image``
            (H, W, C) or (H, W) in its stored dtype, ``label`` (H, W) class
            indices with ``ignore_index`` for void, ``instances`` (H, W) int
            ids (0 = none) or None (objects are then the connected components
            of each foreground class). Only one sample is held at a time.
        num_classes: classes in the labels (2 when ``binary``).
        ignore_index: label value of void pixels, left out of every class statistic.
        class_names: optional names, used in reasons.
        binary: a one-channel sigmoid problem with labels 0/1.
        grid: side of the coarse grid of the spatial priors (even).
        seed: seed of the pixel samples (percentiles), for reproducibility.
        max_object_images: images used for object statistics, spread evenly.

    Returns:
        The :class:`Fingerprint`.

    Raises:
        ValueError: no samples, mismatched shapes or channels, label values
            that are neither a class nor void, non-finite image values.
    """
    builder = _FingerprintBuilder(num_classes, ignore_index, class_names, binary, grid, seed,
                                  max_object_images)
    for sample in samples:
        image, label, *rest = sample
        builder.add(image, label, rest[0] if rest else None)
    return builder.finish()
