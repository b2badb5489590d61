"""A training plan from a dataset fingerprint: explained, rule-based defaults.

Like nnU-Net, ``train.py --data DATA`` should train well on any 2D dataset
without tuning. This module (numpy and scipy only, no TensorFlow) does it in
two steps:

1. :func:`fingerprint_arrays` streams over the training samples once and
   summarises them in a JSON-safe :class:`Fingerprint`: sizes, dtype and bit
   depth, intensity percentiles, how much each image's own intensity range
   varies, class frequencies, objects and how many of them touch, and each
   class's spatial prior (where in the image it lies).
2. :func:`make_plan` applies named rules to the fingerprint, a time budget and a
   memory budget, and returns a :class:`Plan`: one :class:`PlanEntry` (value
   and the reason for it) per training option. The user's options win and are
   marked ``overridden``. :func:`format_plan` prints it as a table.

Every threshold is a named constant below with a comment saying why. The
separate choosers (:func:`detect_invariances`, :func:`choose_normalisation`,
:func:`choose_depth`, :func:`choose_tile_and_batch`, :func:`choose_model_size`,
:func:`plan_schedule`, :func:`choose_sampling`, :func:`choose_loss`) can be
used on their own.
"""
from __future__ import annotations

import dataclasses
import math
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "Fingerprint",
    "Plan",
    "PlanEntry",
    "activation_bytes_per_pixel",
    "apply_normalisation",
    "choose_depth",
    "choose_loss",
    "choose_model_size",
    "choose_normalisation",
    "choose_sampling",
    "choose_tile_and_batch",
    "class_weights_from_frequency",
    "detect_invariances",
    "fingerprint_arrays",
    "flop_cost_model",
    "flops_per_step",
    "format_plan",
    "is_valid_tile",
    "learning_rate_at",
    "make_plan",
    "min_tile_size",
    "normalisation_spec",
    "parameter_count",
    "parse_bytes",
    "parse_duration",
    "plan_schedule",
    "training_memory_bytes",
    "whole_image_tile",
]

# ----------------------------------------------------------------------------- constants
# Fingerprint
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
#: Two objects "touch" when some of their pixels are at most this far apart
#: (chessboard distance): 1 is touching, 2 also counts the 1-pixel background
#: lines that annotators draw between touching cells in semantic masks.
TOUCH_DISTANCE_PX = 2
#: Distinct image sizes listed in the fingerprint (the rest are counted).
MAX_LISTED_SIZES = 20
#: Class 0 is the background: layout rules weigh the other classes.
BACKGROUND_CLASS = 0

# Invariances
#: A class is one-sided when, on average, (mass on one side - mass on the
#: other) / mass >= 0.5, i.e. at least 75% of its pixels in one half ...
DIPOLE_MIN = 0.5
#: ... and a two-sided sign test over the images containing it (how many lean
#: to each side) rejects symmetry at this level. The sign test is exact for
#: any symmetric layout, whatever the number of objects per image (a t-test is
#: not: with one object per image, 9 of 10 images on one side pass t > 4 about
#: 4% of the time by chance). At 0.002 a class of random position is called
#: one-sided in at most 0.2% of datasets (per class and axis), and it takes 10 images all leaning
#: the same way (2 * 0.5**10 < 0.002): fewer cannot show a layout.
SIGN_TEST_ALPHA = 0.002
#: Dipoles within this of 0 (a class centred on the axis) count as neither side.
SIGN_EPS = 1e-6
#: Images needed before any layout can be detected (from SIGN_TEST_ALPHA).
MIN_IMAGES_PER_CLASS = next(n for n in range(1, 64) if 2 * 0.5**n <= SIGN_TEST_ALPHA)
#: Flips are switched off when one-sided classes hold at least this share of
#: the foreground (non-background, non-void) pixels: a tiny noisy class cannot
#: switch them off, a structure worth segmenting can.
ASYMMETRIC_SHARE_MIN = 0.10
#: Label boundaries are anisotropic (rot90 off) when (horizontal - vertical
#: boundary pixels) / all boundary pixels averages at least 0.3 in size, i.e.
#: one direction has about twice the other's boundaries (layered tissue, text).
EDGE_ANISOTROPY_MIN = 0.30
#: Two one-sided classes form a mirror pair when the mirrored prior of one is
#: at most this fraction as far from the other's prior as from its own.
PAIR_RELATIVE_DISTANCE = 0.5

# Normalisation
#: Per-image variation (coefficient of variation of the per-image contrast,
#: see Fingerprint.intensity_variation) above which a global clip would squash
#: some images into a small part of [0, 1]: normalise each image by itself.
#: On the tests' synthetic data, stable 12-bit microscopy measures < 0.05 even
#: with sparse cells, and 12 images scaled by random factors in 0.2..5
#: measure 0.30..1 (60 draws, uniform or log-uniform factors).
INTENSITY_VARIATION_MAX = 0.25
#: Foreground/background contrast is used to measure variation only where it
#: is at least this share of the typical p1..p99 range (else the classes have
#: about the same intensity, as in texture segmentation, and the per-image
#: p1/p99 range is used instead).
MIN_CONTRAST_SHARE = 0.1
#: Sampled pixels a class group needs in an image for its median to count.
MIN_PIXELS_FOR_MEDIAN = 20
#: Dataset percentiles clipped to by the 'percentile' scheme (as nnU-Net).
CLIP_PERCENTILES = (0.5, 99.5)
#: Floats within this tolerance of [0, 1] are taken as already scaled.
UNIT_RANGE_TOLERANCE = 1e-3
#: 8-bit data using at most this many bits (max < 64) is dim: stretch it by
#: percentiles instead of dividing by 255, which would keep it within [0, 0.25].
DIM_8BIT_BITS = 6

# Memory and sizes
#: The shallowest and deepest U-Net this plan builds.
MIN_DEPTH, MAX_DEPTH = 2, 4
#: The bottleneck keeps at least 4x4 pixels: depth d needs tiles >= 4 * 2**d
#: (64 px for depth 4), else its 3x3 convolutions see mostly padding.
MIN_BOTTLENECK_SIDE = 4
#: Backward pass: the gradient of each kept activation plus convolution
#: workspace roughly double the forward activations. An assumption, not
#: calibrated in this module (it has no framework): compare with a measured
#: peak (e.g. tf.config.experimental.get_memory_info) before trusting it.
GRADIENT_FACTOR = 2.0
#: Weights, their gradients and Adam's two moments: 4 copies of the parameters.
PARAM_STATE_COPIES = 4
#: Share of the memory budget that tensors may use: the rest is left for the
#: framework, the input pipeline's prefetch and allocator fragmentation.
MEMORY_USABLE_SHARE = 0.8
#: Model widths tried, smallest first.
FILTER_CANDIDATES = (16, 32)
#: A wider model is chosen only when the budget still allows this many steps
#: with it: below ~2000 steps a U-Net is step-limited, not capacity-limited.
MIN_STEPS_FOR_WIDER = 2000
#: Effective training throughput assumed when no step time is measured (a
#: modest GPU at realistic utilisation); callers should measure instead.
ASSUMED_FLOPS_PER_SECOND = 1e12
#: Per-step cost that does not scale with FLOPs (launch, input pipeline).
STEP_OVERHEAD_S = 0.01
#: Training FLOPs are about 3x the forward pass (forward + 2x backward).
TRAIN_FLOPS_FACTOR = 3.0

# Schedule
#: Fixed start-up time (model build, graph tracing, first caches).
STARTUP_S = 30.0
#: Share of the budget kept for validation passes, checkpoints and export.
VALIDATION_SHARE = 0.10
#: Fewer steps than this cannot train anything: an error naming --time-budget.
MIN_STEPS = 20
#: Fewer steps than this train, but the plan warns that the model will be weak.
FEW_STEPS_WARNING = 500
#: Validations (= "epochs") per run: enough to pick a good checkpoint and to
#: see the curve, few enough that validation stays a small share of the time.
TARGET_VALIDATIONS, MIN_VALIDATIONS, MAX_VALIDATIONS = 20, 10, 40
#: Linear warm-up over 5% of the steps (at most 1000): Adam's early steps
#: with batch norm are unstable at the full rate.
WARMUP_SHARE, MAX_WARMUP_STEPS = 0.05, 1000
#: Cosine decay ends at 1% of the peak rate (the trainer's CosineDecay alpha).
FINAL_LR_FRACTION = 0.01
#: Adam's usual rate; warm-up and cosine decay make it safe for U-Nets.
DEFAULT_LEARNING_RATE = 1e-3

# Sampling and loss
#: A class under 5% of the labelled pixels is rare.
RARE_CLASS_FREQUENCY = 0.05
#: Share of tiles centred on a pixel of a rare class (nnU-Net uses 1/3).
RARE_TILE_SHARE = 0.33
#: Share of objects touching another one above which the paper's weight map
#: (border term separating touching objects) is worth its cost.
TOUCHING_SHARE_WCE = 0.10
#: Median-frequency class weights are clipped to this range so that a class
#: with a handful of pixels cannot dominate the loss.
CLASS_WEIGHT_RANGE = (0.1, 10.0)

DEFAULT_BASE_FILTERS = 16
DEFAULT_MAX_TILE = 512


# ----------------------------------------------------------------------------- JSON helpers
def _json_safe(value: Any) -> Any:
    """``value`` with numpy scalars/arrays and tuples turned into plain Python."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _fmt_bytes(n: float) -> str:
    """``n`` bytes as a short binary-unit string (``7.5 GiB``)."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def _fmt_seconds(s: float) -> str:
    """``s`` seconds as ``1h30m``, ``15m``, ``42s`` or ``0.21s``."""
    if s < 60:
        return f"{s:.3g}s"
    s = round(s)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (sec, "s")) if v)


# ----------------------------------------------------------------------------- fingerprint
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
        return _json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: Mapping) -> Fingerprint:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown fingerprint keys {unknown}")
        return cls(**dict(values))


class _Reservoir:
    """A uniform random sample of at most ``capacity`` rows from a stream.

    Priority sampling: every row gets a uniform random key and the rows with
    the largest keys are kept. Only rows whose key can beat the current
    threshold are drawn, so each add costs O(rows drawn), not O(rows).
    """

    def __init__(self, capacity: int, rng: np.random.Generator):
        self.capacity = capacity
        self.rng = rng
        self.keys = np.empty(0)
        self.values: np.ndarray | None = None
        self.threshold = 0.0

    def add(self, values: np.ndarray) -> None:
        """Offer the rows of ``values`` (n, C) to the sample."""
        n = len(values)
        if n == 0:
            return
        m = int(self.rng.binomial(n, 1.0 - self.threshold))  # keys above the threshold
        if m == 0:
            return
        low = self.threshold
        if m > self.capacity:  # only the top `capacity` keys of these m can survive
            low += (1.0 - low) * float(self.rng.beta(m - self.capacity, self.capacity + 1))
            m = self.capacity
        idx = self.rng.choice(n, size=m, replace=False)
        keys = self.rng.uniform(low, 1.0, size=m)
        new = values[idx].astype(np.float64)
        self.keys = np.concatenate([self.keys, keys])
        self.values = new if self.values is None else np.concatenate([self.values, new])
        if len(self.keys) > self.capacity:
            keep = np.argpartition(self.keys, -self.capacity)[-self.capacity:]
            self.keys, self.values = self.keys[keep], self.values[keep]
            self.threshold = float(self.keys.min())

    def percentiles(self, qs) -> dict | None:
        """``{str(q): [per channel]}`` or None when nothing was sampled."""
        if self.values is None or not len(self.values):
            return None
        p = np.percentile(self.values, qs, axis=0)
        return {_q_key(q): [float(v) for v in row] for q, row in zip(qs, p)}


def _q_key(q: float) -> str:
    return f"{q:g}"


class _Moments:
    """Streaming count, sum, sum of squares and signs of per-class values."""

    def __init__(self, k: int):
        self.n = np.zeros(k)
        self.s = np.zeros(k)
        self.s2 = np.zeros(k)
        self.pos = np.zeros(k)
        self.neg = np.zeros(k)

    def add(self, values: np.ndarray, present: np.ndarray) -> None:
        v = np.where(present, values, 0.0)
        self.n += present
        self.s += v
        self.s2 += v * v
        self.pos += v > SIGN_EPS
        self.neg += v < -SIGN_EPS

    def summary(self) -> dict:
        n = np.maximum(self.n, 1)
        mean = self.s / n
        var = np.maximum(self.s2 - n * mean**2, 0.0) / np.maximum(self.n - 1, 1)
        as_int = lambda a: a.astype(int).tolist()
        return {"mean": mean.tolist(), "sd": np.sqrt(var).tolist(), "n": as_int(self.n),
                "positive": as_int(self.pos), "negative": as_int(self.neg)}



def _sign_test_p(positive: int, negative: int) -> float:
    """Two-sided sign test: chance of a split at least this lopsided under symmetry."""
    m = positive + negative
    if m == 0:
        return 1.0
    k = max(positive, negative)
    tail = sum(math.comb(m, i) for i in range(k, m + 1)) / 2.0**m
    return min(1.0, 2.0 * tail)


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
        self.all_px = _Reservoir(RESERVOIR_SIZE, self.rng)
        self.fg_px = _Reservoir(RESERVOIR_SIZE, self.rng)
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
        self.lr, self.tb = _Moments(self.k), _Moments(self.k)
        self.edges = _Moments(1)
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
            n, touching, diam = _instance_objects(np.asarray(instances))
            self.objects_source = "instances"
        else:
            classes = [k for k in range(self.k) if k != BACKGROUND_CLASS and counts[k]]
            n, touching, diam = _component_objects(label, classes)
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


def _touching_ids(ids: np.ndarray) -> int:
    """How many objects of id map ``ids`` (0 = none) lie within TOUCH_DISTANCE_PX of another id.

    A max and a min filter give, at each pixel, the largest and smallest id in
    its neighbourhood; an object touches another where either differs from
    its own id. Two filter passes instead of a loop over objects.
    """
    top = int(ids.max())
    if top == 0:
        return 0
    size = 2 * TOUCH_DISTANCE_PX + 1
    cv2 = _cv2()
    if cv2 is not None and top < 2**16 - 1:  # OpenCV's uint16 filters: ~20x faster than scipy's
        ids = ids.astype(np.uint16)
        kernel = np.ones((size, size), np.uint8)
        big = np.uint16(2**16 - 1)
        hi = cv2.dilate(ids, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        lo = cv2.erode(np.where(ids > 0, ids, big), kernel, borderType=cv2.BORDER_CONSTANT,
                       borderValue=int(big))
    else:
        ids = ids.astype(np.int32)
        big = np.int32(top + 1)
        hi = ndimage.maximum_filter(ids, size=size, mode="constant", cval=0)
        lo = ndimage.minimum_filter(np.where(ids > 0, ids, big), size=size, mode="constant", cval=big)
    near = (ids > 0) & ((hi != ids) | (lo != ids))
    return int(np.count_nonzero(np.bincount(ids[near].ravel(), minlength=top + 1)))


def _cv2():
    """OpenCV if installed (a dependency of unet_tf, optional here), else None."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - scipy fallback
        return None
    return cv2


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a boolean mask: (ids, count), as scipy.ndimage.label."""
    cv2 = _cv2()
    if cv2 is not None:
        count, ids = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        return ids, count - 1
    return ndimage.label(mask)


def _diameters(ids: np.ndarray) -> np.ndarray:
    """Equivalent diameters sqrt(4 area / pi) of the present ids > 0."""
    if ids.max() < 2**24:
        areas = np.bincount(ids.ravel())[1:]
    else:
        areas = np.unique(ids[ids > 0], return_counts=True)[1]
    areas = areas[areas > 0]
    return np.sqrt(4.0 * areas / np.pi)


def _instance_objects(instances: np.ndarray) -> tuple[int, int, np.ndarray]:
    """(objects, touching objects, diameters) from an instance id map (present ids only)."""
    ids = instances.astype(np.int64)
    if ids.min() < 0:
        raise ValueError("instance ids must be >= 0 (0 = no object)")
    if ids.max() >= 2**31 - 1:  # relabel to fit the filters' int32
        _, ids = np.unique(ids, return_inverse=True)
        ids = ids.reshape(instances.shape)
    diam = _diameters(ids)
    return len(diam), _touching_ids(ids), diam


def _component_objects(label: np.ndarray, classes) -> tuple[int, int, np.ndarray]:
    """(objects, touching objects, diameters) from connected components of each class.

    Components of one class never touch each other, except through a thin
    background line; components of different classes touching is just a
    class boundary, so touching is only counted within a class.
    """
    n = touching = 0
    diams = []
    boxes = ndimage.find_objects(np.where(np.isin(label, classes), label + 1, 0).astype(np.int32))
    pad = TOUCH_DISTANCE_PX
    for k in classes:
        box = boxes[k] if k < len(boxes) else None
        if box is None:
            continue
        box = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s in box)
        cc, count = _components(label[box] == k)
        n += count
        touching += _touching_ids(cc)
        diams.append(_diameters(cc))
    return n, touching, np.concatenate(diams) if diams else np.empty(0)


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


# ----------------------------------------------------------------------------- invariances
def _foreground_weights(fp: Fingerprint) -> np.ndarray:
    """Each class's share of the foreground pixels (background and void excluded)."""
    px = np.array(fp.class_pixels, float)
    px[BACKGROUND_CLASS] = 0.0
    total = px.sum()
    return px / total if total else px


def _one_sided(moments: dict, k: int, effect_min: float = DIPOLE_MIN) -> tuple[bool, float]:
    """(is value k lopsided, its mean): mean >= effect_min and the sign test passes SIGN_TEST_ALPHA."""
    mean = moments["mean"][k]
    if abs(mean) < effect_min:
        return False, mean
    return _sign_test_p(moments["positive"][k], moments["negative"][k]) <= SIGN_TEST_ALPHA, mean


def _prior_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance between two priors normalised to sum 1 (0: same, 1: disjoint)."""
    sp, sq = p.sum(), q.sum()
    if sp <= 0 or sq <= 0:
        return 1.0
    return float(0.5 * np.abs(p / sp - q / sq).sum())


def _mirror_partner(fp: Fingerprint, a: int, flip_axis: int) -> tuple[int, float, float] | None:
    """Class b != a whose prior is close to class a's mirrored prior and far from a's own."""
    priors = np.asarray(fp.priors, float)
    mirrored = np.flip(priors[a], axis=flip_axis)
    self_d = _prior_distance(mirrored, priors[a])
    best = None
    for b in range(fp.num_classes):
        if b in (a, BACKGROUND_CLASS) or not fp.class_pixels[b]:
            continue
        d = _prior_distance(mirrored, priors[b])
        if d <= PAIR_RELATIVE_DISTANCE * self_d and (best is None or d < best[1]):
            best = (b, d, self_d)
    return best


def _flip_decision(fp: Fingerprint, moments: dict, flip_axis: int, sides: tuple[str, str]) -> tuple[bool, str]:
    """(flip allowed, reason) for one axis from the per-class dipoles."""
    weights = _foreground_weights(fp)
    found, share, paired = [], 0.0, set()
    for k in range(fp.num_classes):
        if k == BACKGROUND_CLASS or weights[k] == 0:
            continue
        one_sided, mean = _one_sided(moments, k)
        if one_sided:
            share += weights[k]
            where = sides[0] if mean > 0 else sides[1]
            text = (f"{fp.class_name(k)} lies in the {where} ({(1 + abs(mean)) / 2:.0%} of its pixels "
                    f"on average, {moments['n'][k]} images)")
            pair = None if k in paired else _mirror_partner(fp, k, flip_axis)
            if pair:  # rule (a): a left/right (or top/bottom) pair of classes
                paired.add(pair[0])
                text += (f", the mirror image of {fp.class_name(pair[0])} (prior distance "
                         f"{pair[1]:.2f}, vs {pair[2]:.2f} to itself)")
            found.append(text)
    if share >= ASYMMETRIC_SHARE_MIN:
        return False, "; ".join(found) + f": {share:.0%} of the foreground is one-sided"
    if found:
        return True, (f"only {share:.0%} of the foreground is one-sided (< {ASYMMETRIC_SHARE_MIN:.0%}): "
                      + "; ".join(found))
    return True, f"no class lies mostly in the {sides[0]} or {sides[1]}: the labels are symmetric"


def _rotation_decision(fp: Fingerprint, hflip: bool, vflip: bool) -> tuple[bool, str]:
    """(rot90 allowed, reason): off when a flip is off, or label boundaries are anisotropic."""
    if not (hflip and vflip):
        off = " and ".join(name for name, ok in (("left/right", hflip), ("top/bottom", vflip)) if not ok)
        return False, f"the {off} layout would be turned sideways"
    e = fp.edge_anisotropy
    anisotropic, mean = _one_sided(e, 0, EDGE_ANISOTROPY_MIN)
    n = e["n"][0]
    if anisotropic:
        direction = "horizontally" if mean > 0 else "vertically"
        return False, f"label boundaries run mostly {direction} (anisotropy {mean:+.2f} over {n} images)"
    return True, f"priors symmetric and label boundaries isotropic (anisotropy {mean:+.2f})"


def detect_invariances(fp: Fingerprint) -> dict:
    """Which flips and rotations keep the labels plausible, from their layout.

    Rules (constants above):

    * a class is one-sided along an axis when at least ``(1 + DIPOLE_MIN) / 2``
      of its pixels lie in one half on average over the images containing it,
      and a sign test over those images rejects symmetry at ``SIGN_TEST_ALPHA``
      (so it needs ``MIN_IMAGES_PER_CLASS`` = 10 images; random positions pass
      in at most 0.2% of datasets: stable across subsets and seeds);
    * (a) left/right: hflip is off when one-sided classes hold at least
      ``ASYMMETRIC_SHARE_MIN`` of the foreground pixels (weights by frequency,
      so a tiny noisy class cannot decide). A class whose mirrored prior
      matches another class's prior (a left/right pair) is named as such;
    * (b) top/bottom: the same with the top/bottom dipole turns vflip off
      (sky on top, road at the bottom); hflip stays on if the priors are
      symmetric left/right;
    * rot90 is off when either flip is off (a quarter turn moves the left side
      to the top), or when label boundaries are anisotropic (horizontal layers);
    * (c) otherwise (near-uniform priors: cells, nuclei, texture) all stay on.

    Args:
        fp: the dataset's fingerprint.

    Returns:
        ``{"hflip": bool, "vflip": bool, "rot90": bool, "hflip_reason": str,
        "vflip_reason": str, "rot90_reason": str}``.
    """
    if fp.n_images < MIN_IMAGES_PER_CLASS:
        reason = (f"only {fp.n_images} image(s): too few to detect a layout "
                  f"(>= {MIN_IMAGES_PER_CLASS} needed), kept on")
        return dict(hflip=True, vflip=True, rot90=True, hflip_reason=reason,
                    vflip_reason=reason, rot90_reason=reason)
    hflip, h_reason = _flip_decision(fp, fp.lr_dipole, 1, ("left half", "right half"))
    vflip, v_reason = _flip_decision(fp, fp.tb_dipole, 0, ("top half", "bottom half"))
    rot90, r_reason = _rotation_decision(fp, hflip, vflip)
    return dict(hflip=hflip, vflip=vflip, rot90=rot90, hflip_reason=h_reason,
                vflip_reason=v_reason, rot90_reason=r_reason)


# ----------------------------------------------------------------------------- normalisation
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
    lo_q, hi_q = (_q_key(q) for q in CLIP_PERCENTILES)
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
    """The numpy reference of a normalisation (for tests and for mirroring in the pipeline).

    Args:
        image: (H, W, C) or (H, W) array in its stored dtype.
        normalisation: ``{"scheme": ..., "params": ...}`` as from :func:`choose_normalisation`.

    Returns:
        float32 array of the same shape.
    """
    x = np.asarray(image, np.float32)
    scheme, params = normalisation["scheme"], normalisation.get("params", {})
    if scheme == "scale":
        return x * np.float32(params["scale"])
    if scheme == "percentile":
        low, high = np.float32(params["low"]), np.float32(params["high"])
        if x.ndim == 2:
            low, high = low[0], high[0]
        return (np.clip(x, low, high) - low) / (high - low)
    if scheme == "zscore_per_image":
        axes = (0, 1) if x.ndim == 3 else None
        mean, std = x.mean(axis=axes), x.std(axis=axes)
        return (x - mean) / np.maximum(std, np.float32(1e-6))
    raise ValueError(f"Unknown normalisation scheme {scheme!r}")


def normalisation_spec(plan: Plan) -> dict:
    """The plan's normalisation as one flat record, the format of ``unet_tf.data.normalise``.

    ``{"scheme": ..., <params>, "dtype": <stored dtype>, "bits": <0 for floats,
    else the bits the values use, 8..16>}``, e.g. ``{"scheme": "percentile",
    "low": [...], "high": [...], "dtype": "uint16", "bits": 12}``: save it in
    the run record and the exported model's metadata.
    """
    fp = plan.fingerprint
    bits = 0 if fp.bit_depth is None else max(8, min(16, fp.effective_bits or 8))
    return _json_safe({"scheme": plan["normalisation"], **plan["normalisation_params"],
                       "dtype": fp.dtype, "bits": bits})


# ----------------------------------------------------------------------------- memory and sizes
def _level_filters(depth: int, base_filters: int) -> list[int]:
    return [base_filters * 2**level for level in range(depth + 1)]


def activation_bytes_per_pixel(depth: int, base_filters: int, padding: str = "same",
                               batch_norm: bool = True, arch: str = "unet", dtype_bytes: int = 4,
                               *, in_channels: int = 1, num_outputs: int = 2) -> float:
    """Estimated training memory per input pixel, in bytes.

    Formula (f_l = base_filters * 2**l channels at level l, on 4**-l of the
    pixels; t = 3 tensors per convolution with batch norm (conv, BN, ReLU
    outputs), 2 without):

    * encoder level l < depth: ``2 t f_l / 4**l`` (two convolutions) plus the
      pooled output ``f_l / 4**(l + 1)``;
    * bottleneck: ``2 t f_depth / 4**depth`` plus its dropout output;
    * decoder level l (U-Net): up-convolution ``f_l``, concatenation ``2 f_l``
      and two convolutions ``2 t f_l``, all on ``1 / 4**l``; U-Net++ has
      ``depth - l`` nodes at level l, node j concatenating ``j + 1`` maps;
    * the input, logits, probabilities, weight map and label:
      ``in_channels + 2 num_outputs + 2``;

    the sum in floats, times ``dtype_bytes``, times ``GRADIENT_FACTOR`` for the
    activation gradients and convolution workspace of the backward pass. With
    valid padding the estimate per input pixel is an upper bound (every
    convolution trims the map).

    Args:
        depth: pooling steps.
        base_filters: channels of the first level.
        padding: "same" or "valid".
        batch_norm: batch norm after each convolution.
        arch: "unet" or "unetpp".
        dtype_bytes: 4 for float32, 2 for mixed precision activations.
        in_channels, num_outputs: input channels and output channels.

    Returns:
        Bytes per input pixel per sample.
    """
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    if arch not in ("unet", "unetpp"):
        raise ValueError(f"arch must be 'unet' or 'unetpp', got {arch!r}")
    t = 3 if batch_norm else 2
    f = _level_filters(depth, base_filters)
    floats = in_channels + 2 * num_outputs + 2.0
    for level in range(depth):
        floats += (2 * t * f[level] + f[level] / 4) / 4**level
    floats += (2 * t + 1) * f[depth] / 4**depth
    for level in range(depth):
        nodes = range(1, depth - level + 1) if arch == "unetpp" else [1]
        for j in nodes:
            floats += (f[level] + (j + 1) * f[level] + 2 * t * f[level]) / 4**level
    return floats * dtype_bytes * GRADIENT_FACTOR


def _conv(k: int, cin: int, cout: int, batch_norm: bool) -> int:
    """Parameters of a k x k convolution (bias, or BN's 4 per channel instead)."""
    return k * k * cin * cout + (4 * cout if batch_norm else cout)


def parameter_count(depth: int, base_filters: int, in_channels: int, num_classes: int, *,
                    batch_norm: bool = False, upsampling: str = "transpose") -> int:
    """Parameters of the U-Net (closed form, as ``keras.Model.count_params``).

    Two 3x3 convolutions per level (``9 c_in c_out + c_out`` each), filters
    doubling down to the bottleneck; per decoder level a 2x2 transposed
    convolution ``4 c_in f_l + f_l`` (or a 1x1 convolution after bilinear
    upsampling) then two 3x3 convolutions on the ``2 f_l`` concatenation; a
    1x1 head ``f_0 num_classes + num_classes``. Batch norm replaces each
    convolution bias by gamma, beta and the two moving statistics.
    The paper's network (depth 4, 64 filters, 1 channel, 2 classes, no batch
    norm) has 31,030,658.

    Args:
        depth, base_filters: the U-Net's shape.
        in_channels: image channels.
        num_classes: output channels (1 for a sigmoid model).
        batch_norm: batch norm after each 3x3 convolution.
        upsampling: "transpose" or "bilinear".

    Returns:
        The number of parameters (trainable and batch-norm statistics).
    """
    f = _level_filters(depth, base_filters)
    total, c = 0, in_channels
    for level in range(depth + 1):
        total += _conv(3, c, f[level], batch_norm) + _conv(3, f[level], f[level], batch_norm)
        c = f[level]
    up_kernel = 2 if upsampling == "transpose" else 1
    for level in reversed(range(depth)):
        total += _conv(up_kernel, c, f[level], False)
        total += _conv(3, 2 * f[level], f[level], batch_norm) + _conv(3, f[level], f[level], batch_norm)
        c = f[level]
    return total + _conv(1, c, num_classes, False)


def training_memory_bytes(tile: int, batch: int, depth: int, base_filters: int, *,
                          in_channels: int = 1, num_outputs: int = 2, padding: str = "same",
                          batch_norm: bool = True, arch: str = "unet") -> float:
    """Estimated peak training memory: activations of the batch plus parameter state.

    Returns:
        ``batch * tile**2 * activation_bytes_per_pixel(...) + parameters * 4 B *
        PARAM_STATE_COPIES`` (U-Net++ parameters are approximated by the U-Net's).
    """
    per_px = activation_bytes_per_pixel(depth, base_filters, padding, batch_norm, arch,
                                        in_channels=in_channels, num_outputs=num_outputs)
    params = parameter_count(depth, base_filters, in_channels, num_outputs, batch_norm=batch_norm)
    return batch * tile * tile * per_px + params * 4 * PARAM_STATE_COPIES


def _valid_output(n: int, depth: int) -> int | None:
    """Output size of a valid-padding U-Net for input n, or None when n does not work.

    Down: two 3x3 convolutions (n - 4), then 2x2 pooling needs an even,
    positive size; bottleneck n - 4; up: 2n, then two convolutions (-4).
    """
    for _ in range(depth):
        n -= 4
        if n <= 0 or n % 2:
            return None
        n //= 2
    n -= 4
    if n <= 0:
        return None
    for _ in range(depth):
        n = 2 * n - 4
        if n <= 0:
            return None
    return n


def is_valid_tile(n: int, depth: int, padding: str = "same") -> bool:
    """Whether ``n`` is a valid input size: a multiple of 2**depth (same), or the valid rule."""
    if n <= 0:
        return False
    return n % 2**depth == 0 if padding == "same" else _valid_output(n, depth) is not None


def min_tile_size(depth: int, padding: str = "same") -> int:
    """The smallest useful tile: a bottleneck of MIN_BOTTLENECK_SIDE px (same), or the smallest valid input."""
    if padding == "same":
        return MIN_BOTTLENECK_SIDE * 2**depth
    n = 1
    while _valid_output(n, depth) is None:
        n += 1
    return n


def whole_image_tile(side: int, depth: int, padding: str = "same") -> int:
    """The smallest valid tile whose output covers ``side`` pixels."""
    if padding == "same":
        step = 2**depth
        return max(min_tile_size(depth, padding), -(-side // step) * step)
    n = min_tile_size(depth, padding)
    while not (_valid_output(n, depth) or 0) >= side:
        n += 1
    return n


def _valid_tiles_desc(top: int, bottom: int, depth: int, padding: str) -> list[int]:
    return [n for n in range(top, bottom - 1, -1) if is_valid_tile(n, depth, padding)]


def choose_depth(fp: Fingerprint, padding: str = "same", max_depth: int = MAX_DEPTH,
                 max_tile: int = DEFAULT_MAX_TILE) -> dict:
    """The deepest U-Net (``MIN_DEPTH..max_depth``) whose bottleneck keeps >= 4 px of the image.

    Depth d needs ``side >= MIN_BOTTLENECK_SIDE * 2**d`` (64 px for depth 4),
    with ``side`` the larger median image side (capped by ``max_tile``).

    Returns:
        ``{"depth": int, "reason": str}``.

    Raises:
        ValueError: images smaller than the shallowest network's minimum.
    """
    side = min(fp.median_side, max_tile)
    smallest = MIN_BOTTLENECK_SIDE * 2**MIN_DEPTH
    if side < smallest:
        raise ValueError(
            f"Images of {fp.height['median']:g}x{fp.width['median']:g} px (median) are smaller than "
            f"the smallest tile this plan supports ({smallest} px: a depth-{MIN_DEPTH} U-Net "
            f"keeping a {MIN_BOTTLENECK_SIDE}x{MIN_BOTTLENECK_SIDE} bottleneck); upsample them or set "
            "--depth and --tile-size yourself")
    depth = max(d for d in range(MIN_DEPTH, max_depth + 1) if side >= MIN_BOTTLENECK_SIDE * 2**d)
    if depth == max_depth:
        reason = f"{side} px images allow the full depth {max_depth}"
    else:
        reason = (f"{side} px images: depth {depth + 1} would need >= "
                  f"{MIN_BOTTLENECK_SIDE * 2**(depth + 1)} px for a {MIN_BOTTLENECK_SIDE} px bottleneck")
    return dict(depth=depth, reason=reason)


def choose_tile_and_batch(fp: Fingerprint, depth: int, base_filters: int, memory_budget_bytes: float,
                          padding: str = "same", max_tile: int = DEFAULT_MAX_TILE,
                          min_batch: int = 2, max_batch: int = 16, *, batch_norm: bool = True,
                          arch: str = "unet", tile: int | None = None,
                          batch: int | None = None) -> dict:
    """The largest tile up to the whole image, then the largest batch, that fit the memory budget.

    The tile is the smallest valid size covering the larger median image side
    (181x217 -> 224 for depth 4, same padding; smaller images are padded or
    mirrored to it), capped by the largest valid size <= ``max_tile``. The
    batch is the largest in ``[min_batch, max_batch]`` whose
    :func:`training_memory_bytes` fits ``MEMORY_USABLE_SHARE`` of the budget;
    if ``min_batch`` does not fit, the tile shrinks (down to
    :func:`min_tile_size`), then batch 1 is tried.

    Args:
        fp: the fingerprint (image sizes, channels, classes).
        depth, base_filters: the U-Net's shape.
        memory_budget_bytes: memory the training may use.
        padding: "same" or "valid".
        max_tile, min_batch, max_batch: limits.
        batch_norm, arch: the model (for the memory estimate).
        tile, batch: fixed by the user (skips that search).

    Returns:
        ``{"tile_size", "batch_size", "memory_bytes", "tile_reason", "batch_reason"}``.

    Raises:
        ValueError: naming --memory-budget and the memory needed when even the
            smallest tile with batch 1 does not fit.
    """
    mem = lambda t, b: training_memory_bytes(
        t, b, depth, base_filters, in_channels=fp.channels, num_outputs=_num_outputs(fp),
        padding=padding, batch_norm=batch_norm, arch=arch)
    usable = memory_budget_bytes * MEMORY_USABLE_SHARE
    whole = whole_image_tile(fp.median_side, depth, padding)
    cap = _valid_tiles_desc(max(max_tile, min_tile_size(depth, padding)), 1, depth, padding)[0]
    top = min(whole, cap)
    tiles = [tile] if tile else _valid_tiles_desc(top, min_tile_size(depth, padding), depth, padding)
    result = lambda t, b: _tile_batch_result(
        fp, t, b, mem(t, b), whole, top, tile, batch, memory_budget_bytes, depth, padding,
        max_tile, min_batch, max_batch)
    if tile and batch:  # the user's choice: report the estimate, do not refuse it
        return result(tile, batch)
    batches = [batch] if batch else list(range(max_batch, min_batch - 1, -1))
    if not batch and min_batch > 1:
        batches_then = [batches, [1]]  # shrink the tile before giving up batch >= min_batch
    else:
        batches_then = [batches]
    for options in batches_then:
        for t in tiles:
            fits = [b for b in options if mem(t, b) <= usable]
            if fits:
                return result(t, max(fits))
    smallest = min(tiles)
    needed = mem(smallest, batch or 1) / MEMORY_USABLE_SHARE
    raise ValueError(
        f"--memory-budget {_fmt_bytes(memory_budget_bytes)} is too small: a {smallest}x{smallest} tile "
        f"with batch {batch or 1} of a depth-{depth}, {base_filters}-filter U-Net needs about "
        f"{_fmt_bytes(needed)} (estimate, {MEMORY_USABLE_SHARE:.0%} of the budget usable); "
        "raise --memory-budget or lower --base-filters / --depth")


def _num_outputs(fp: Fingerprint) -> int:
    return 1 if fp.binary else fp.num_classes


def _tile_batch_result(fp, t, b, memory, whole, top, tile, batch, budget, depth, padding,
                       max_tile, min_batch, max_batch) -> dict:
    side = f"{fp.height['median']:g}x{fp.width['median']:g}"
    rule = f"multiple of 2**{depth}={2**depth}" if padding == "same" else "valid-padding size"
    if tile:
        tile_reason = "set by the user"
    elif t == whole:
        tile_reason = (f"the whole image (median {side} px) in one tile: the smallest {rule} "
                       f">= {fp.median_side}")
    elif t == top:
        tile_reason = (f"images (median {side} px) are larger than --max-tile {max_tile}: "
                       f"the largest {rule} <= {max_tile}")
    else:
        tile_reason = f"shrunk from {top} to {t} to fit the memory budget"
    fits = f"estimated {_fmt_bytes(memory)} fits {MEMORY_USABLE_SHARE:.0%} of the {_fmt_bytes(budget)} budget"
    if batch:
        batch_reason = "set by the user"
    elif b < min_batch:
        batch_reason = f"only batch 1 fits even the {t} px tile ({fits})"
    else:
        batch_reason = f"the largest batch in [{min_batch}, {max_batch}] whose {fits}"
    if memory > budget * MEMORY_USABLE_SHARE:
        batch_reason += f" (estimated {_fmt_bytes(memory)} exceeds the budget)"
    return dict(tile_size=t, batch_size=b, memory_bytes=memory, tile_reason=tile_reason,
                batch_reason=batch_reason)


# ----------------------------------------------------------------------------- cost and model size
def flops_per_step(depth: int, base_filters: int, tile: int, batch: int, *, in_channels: int = 1,
                   num_outputs: int = 2, arch: str = "unet") -> float:
    """Training FLOPs of one step: TRAIN_FLOPS_FACTOR x the forward pass.

    The forward pass counts ``2 k**2 c_in c_out`` per output pixel of every
    convolution, on ``4**-level`` of the tile's pixels.
    """
    f = _level_filters(depth, base_filters)
    per_px, c = 0.0, in_channels
    for level in range(depth + 1):
        per_px += 2 * 9 * (c * f[level] + f[level] * f[level]) / 4**level
        c = f[level]
    for level in reversed(range(depth)):
        nodes = depth - level if arch == "unetpp" else 1
        up = 2 * 4 * c * f[level] / 4**level
        conv = 2 * 9 * (2 * f[level] * f[level] + f[level] * f[level]) / 4**level
        per_px += nodes * (up + conv)
        c = f[level]
    per_px += 2 * c * num_outputs
    return TRAIN_FLOPS_FACTOR * per_px * tile * tile * batch


def flop_cost_model(fp: Fingerprint, *, flops_per_second: float = ASSUMED_FLOPS_PER_SECOND,
                    step_overhead_s: float = STEP_OVERHEAD_S, arch: str = "unet") -> Callable:
    """An ``estimate_seconds_per_step(depth, base_filters, tile, batch)`` from FLOPs.

    Args:
        fp: the fingerprint (channels, outputs).
        flops_per_second: effective training throughput of the machine.
        step_overhead_s: fixed seconds per step.
        arch: "unet" or "unetpp".
    """
    def estimate(depth: int, base_filters: int, tile: int, batch: int) -> float:
        flops = flops_per_step(depth, base_filters, tile, batch, in_channels=fp.channels,
                               num_outputs=_num_outputs(fp), arch=arch)
        return step_overhead_s + flops / flops_per_second
    return estimate


def choose_model_size(estimate_seconds_per_step: Callable, time_budget_s: float, *, depth: int,
                      layout: Callable | tuple, candidates=FILTER_CANDIDATES,
                      min_steps_for_wider: int = MIN_STEPS_FOR_WIDER,
                      overhead_s: float | None = None) -> dict:
    """The widest model whose budget still allows ``min_steps_for_wider`` steps.

    Args:
        estimate_seconds_per_step: ``(depth, base_filters, tile, batch) -> seconds``
            (measured by the caller, or :func:`flop_cost_model`).
        time_budget_s: the whole run's time budget.
        depth: the U-Net's depth.
        layout: ``(tile, batch)``, or ``base_filters -> (tile, batch)`` (the
            memory budget gives wider models smaller tiles or batches); a
            ValueError from it skips that width.
        candidates: widths, smallest first; the smallest is the fallback.
        min_steps_for_wider: steps a wider model must still get.
        overhead_s: as in :func:`plan_schedule`.

    Returns:
        ``{"base_filters", "tile_size", "batch_size", "seconds_per_step", "reason"}``.
    """
    train_s = time_budget_s - (_default_overhead(time_budget_s) if overhead_s is None else overhead_s)
    options = []
    for filters in candidates:
        try:
            tile, batch = layout(filters) if callable(layout) else layout
        except ValueError as err:
            options.append((filters, None, None, None, str(err)))
            continue
        seconds = float(estimate_seconds_per_step(depth, filters, tile, batch))
        options.append((filters, tile, batch, seconds, None))
    usable = [o for o in options if o[1] is not None]
    if not usable:
        raise ValueError(options[0][4])
    chosen = usable[0]
    for o in usable[1:]:
        if train_s / o[3] >= min_steps_for_wider:
            chosen = o
    reason = _model_size_reason(chosen, options, train_s, min_steps_for_wider)
    return dict(base_filters=chosen[0], tile_size=chosen[1], batch_size=chosen[2],
                seconds_per_step=chosen[3], reason=reason)


def _model_size_reason(chosen, options, train_s, min_steps) -> str:
    parts = []
    for filters, tile, batch, sps, err in options:
        if err:
            parts.append(f"{filters} filters do not fit the memory budget")
        else:
            parts.append(f"{filters} filters: {max(int(train_s / sps), 0)} steps of {sps:.3g}s")
    wider = [o for o in options if o[0] > chosen[0]]
    if not wider:
        head = f"{chosen[0]} filters: the widest candidate, still given >= {min_steps} steps" \
            if len(options) > 1 else f"{chosen[0]} filters"
    else:
        head = f"{chosen[0]} filters: a wider model would get < {min_steps} steps or not fit"
    return f"{head} ({'; '.join(parts)})"


# ----------------------------------------------------------------------------- schedule
def _default_overhead(time_budget_s: float) -> float:
    return STARTUP_S + VALIDATION_SHARE * time_budget_s


def _split_epochs(steps: int, train_s: float | None, val_every_s: float | None,
                  epochs: int | None = None) -> tuple[int, int]:
    """(epochs, steps per epoch): an epoch is one validation/checkpoint interval."""
    if epochs is None:
        if val_every_s and train_s:
            epochs = round(train_s / val_every_s)
        else:
            epochs = TARGET_VALIDATIONS
        epochs = min(max(epochs, MIN_VALIDATIONS), MAX_VALIDATIONS)
    epochs = max(1, min(epochs, steps))
    return epochs, steps // epochs


def _lr_schedule(steps: int, learning_rate: float) -> dict:
    warmup = min(max(1, round(WARMUP_SHARE * steps)), MAX_WARMUP_STEPS, max(steps - 1, 0))
    return dict(name="warmup_cosine", peak_lr=learning_rate, warmup_steps=warmup,
                total_steps=steps, final_lr=learning_rate * FINAL_LR_FRACTION)


def learning_rate_at(step: int, schedule: Mapping) -> float:
    """The rate of a ``warmup_cosine`` schedule (from :func:`plan_schedule`) at ``step``.

    Linear from ``peak/warmup`` to ``peak`` over the warm-up steps, then cosine
    decay to ``final_lr`` at ``total_steps``.
    """
    peak, final = schedule["peak_lr"], schedule["final_lr"]
    warmup, total = schedule["warmup_steps"], schedule["total_steps"]
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * progress))


def plan_schedule(seconds_per_step: float, time_budget_s: float, *, overhead_s: float | None = None,
                  min_steps: int = MIN_STEPS, val_every_s: float | None = None,
                  learning_rate: float = DEFAULT_LEARNING_RATE) -> dict:
    """Steps, epochs and the learning-rate schedule that fit the time budget.

    ``steps = floor((time_budget_s - overhead_s) / seconds_per_step)``,
    independent of the number of images. The default overhead is
    ``STARTUP_S + VALIDATION_SHARE * time_budget_s``. An "epoch" is a
    validation/checkpoint interval: ``round(train time / val_every_s)`` of them,
    or ``TARGET_VALIDATIONS``, clamped to [MIN_VALIDATIONS, MAX_VALIDATIONS].
    ``steps`` is rounded down to whole epochs. The schedule is a linear
    warm-up then cosine decay to ``FINAL_LR_FRACTION`` of the rate.

    Args:
        seconds_per_step: measured (or estimated) seconds of one training step.
        time_budget_s: the whole run's budget.
        overhead_s: seconds not spent in training steps.
        min_steps: fewer steps raise a ValueError.
        val_every_s: desired seconds between validations.
        learning_rate: the peak rate.

    Returns:
        ``{"steps", "steps_per_epoch", "epochs", "warmup_steps", "lr_schedule", "train_seconds", "reason"}``.

    Raises:
        ValueError: naming --time-budget when fewer than ``min_steps`` fit.
    """
    if not seconds_per_step > 0:
        raise ValueError(f"seconds_per_step must be > 0, got {seconds_per_step}")
    overhead = _default_overhead(time_budget_s) if overhead_s is None else overhead_s
    train_s = time_budget_s - overhead
    steps = int(train_s // seconds_per_step) if train_s > 0 else 0
    if steps < min_steps:
        needed = overhead + min_steps * seconds_per_step
        if overhead_s is None:  # the default overhead grows with the budget
            needed = (STARTUP_S + min_steps * seconds_per_step) / (1 - VALIDATION_SHARE)
        raise ValueError(
            f"--time-budget {_fmt_seconds(time_budget_s)} is too short: after {_fmt_seconds(overhead)} of "
            f"start-up and validation it leaves {max(steps, 0)} steps of {seconds_per_step:.3g}s "
            f"(at least {min_steps} needed); give at least {_fmt_seconds(math.ceil(needed))}")
    epochs, per_epoch = _split_epochs(steps, train_s, val_every_s)
    steps = epochs * per_epoch
    schedule = _lr_schedule(steps, learning_rate)
    reason = (f"{_fmt_seconds(train_s)} of training ({_fmt_seconds(time_budget_s)} budget - "
              f"{_fmt_seconds(overhead)} start-up/validation) / {seconds_per_step:.3g}s per step")
    return dict(steps=steps, steps_per_epoch=per_epoch, epochs=epochs,
                warmup_steps=schedule["warmup_steps"], lr_schedule=schedule,
                train_seconds=train_s, reason=reason)


_DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: str | float, option: str = "--time-budget") -> float:
    """Seconds from ``"15m"``, ``"90s"``, ``"1h30m"``, ``"2.5h"`` or a number of seconds (``"600"``).

    Raises:
        ValueError: naming ``option`` for anything else, or a duration <= 0.
    """
    text = str(value).strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)\s*([dhms])", text)
        if not parts or re.fullmatch(r"(?:(?:\d+(?:\.\d*)?|\.\d+)\s*[dhms]\s*)+", text) is None:
            raise ValueError(f"{option}: cannot read {value!r} as a duration; write e.g. 90s, 15m, "
                             "1h30m or a number of seconds") from None
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{option}: the duration must be > 0, got {value!r}")
    return seconds


def parse_bytes(value: str | float, option: str = "--memory-budget") -> int:
    """Bytes from ``"8G"``, ``"512M"``, ``"1.5GiB"``, ``"64k"`` or a number of bytes.

    K, M, G, T (with or without ``B``/``iB``) are powers of 1024, as memory is
    counted.

    Raises:
        ValueError: naming ``option`` for anything else, or a size <= 0.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b)?\s*", str(value).lower())
    if match is None:
        raise ValueError(f"{option}: cannot read {value!r} as a size; write e.g. 8G, 512M or a "
                         "number of bytes")
    number, unit = float(match.group(1)), match.group(2)
    size = int(number * 1024 ** ("kmgt".index(unit) + 1 if unit else 0))
    if size <= 0:
        raise ValueError(f"{option}: the size must be > 0, got {value!r}")
    return size


# ----------------------------------------------------------------------------- sampling and loss
def choose_sampling(fp: Fingerprint) -> dict:
    """Share of tiles centred on a random pixel of a rare class.

    A present class under ``RARE_CLASS_FREQUENCY`` of the labelled pixels is
    rare; with any rare class ``RARE_TILE_SHARE`` of the tiles are centred on
    one of their pixels (with whole-image tiles this picks images containing
    them more often), else none.

    Returns:
        ``{"rare_class_share": float, "rare_classes": list[int], "reason": str}``.
    """
    freq = fp.class_frequency
    rare = [k for k in range(fp.num_classes) if 0 < freq[k] < RARE_CLASS_FREQUENCY]
    if not rare:
        return dict(rare_class_share=0.0, rare_classes=[],
                    reason=f"no class under {RARE_CLASS_FREQUENCY:.0%} of the labelled pixels")
    names = ", ".join(f"{fp.class_name(k)} {freq[k]:.2%}" for k in rare)
    return dict(rare_class_share=RARE_TILE_SHARE, rare_classes=rare,
                reason=f"rare classes (< {RARE_CLASS_FREQUENCY:.0%} of the pixels): {names}")


def class_weights_from_frequency(frequencies) -> list[float]:
    """Median-frequency balancing: ``median(f) / f_k`` clipped to CLASS_WEIGHT_RANGE (absent: 1)."""
    f = np.asarray(frequencies, float)
    present = f > 0
    if not present.any():
        return [1.0] * len(f)
    median = np.median(f[present])
    w = np.where(present, median / np.where(present, f, 1.0), 1.0)
    return [round(float(v), 4) for v in np.clip(w, *CLASS_WEIGHT_RANGE)]


def choose_loss(fp: Fingerprint) -> dict:
    """The loss, whether to use the weight map, and class weights.

    * ``wce`` with the weight map (the paper) when at least
      ``TOUCHING_SHARE_WCE`` of the objects touch another one: its border
      term separates them;
    * ``dice_ce`` otherwise: the dice term copes with class imbalance (rare
      classes), the cross-entropy keeps gradients smooth (nnU-Net's default).

    Class weights: median-frequency balancing (:func:`class_weights_from_frequency`).

    Returns:
        ``{"loss", "weight_map", "class_weights", "reason", "class_weights_reason"}``.
    """
    weights = class_weights_from_frequency(fp.class_frequency)
    wreason = (f"median-frequency balancing clipped to {list(CLASS_WEIGHT_RANGE)} "
               f"(frequencies {', '.join(f'{v:.3g}' for v in fp.class_frequency)})")
    touching = fp.touching_share
    if touching >= TOUCHING_SHARE_WCE:
        return dict(loss="wce", weight_map=True, class_weights=weights, class_weights_reason=wreason,
                    reason=(f"{touching:.0%} of the objects ({fp.objects_source}) touch another one "
                            f"(>= {TOUCHING_SHARE_WCE:.0%}): the paper's weight map separates them"))
    rare = [k for k, f in enumerate(fp.class_frequency) if 0 < f < RARE_CLASS_FREQUENCY]
    why = (f"classes are imbalanced ({', '.join(fp.class_name(k) for k in rare)} under "
           f"{RARE_CLASS_FREQUENCY:.0%})" if rare else "classes are balanced")
    return dict(loss="dice_ce", weight_map=False, class_weights=weights, class_weights_reason=wreason,
                reason=(f"{why} and few objects touch ({touching:.0%} < {TOUCHING_SHARE_WCE:.0%}): "
                        "dice + cross-entropy"))


# ----------------------------------------------------------------------------- the plan
@dataclass
class PlanEntry:
    """One planned option: its value, why, and whether the user set it."""

    value: Any
    reason: str
    overridden: bool = False


@dataclass
class Plan:
    """The planned options (``TrainConfig`` names), the fingerprint, warnings and details.

    ``entries[name].value`` is the option's value; :meth:`values` gives them
    all as a dict. ``details`` holds data behind the choices (the learning-rate
    schedule, the memory estimate, the invariance reasons).
    """

    entries: dict
    fingerprint: Fingerprint
    warnings: list = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.entries[name].value

    def values(self) -> dict:
        """``{option: value}`` of every entry."""
        return {name: e.value for name, e in self.entries.items()}

    def to_dict(self) -> dict:
        return _json_safe(dict(
            entries={n: dataclasses.asdict(e) for n, e in self.entries.items()},
            fingerprint=self.fingerprint.to_dict(), warnings=list(self.warnings),
            details=self.details))

    @classmethod
    def from_dict(cls, values: Mapping) -> Plan:
        return cls(entries={n: PlanEntry(**e) for n, e in values["entries"].items()},
                   fingerprint=Fingerprint.from_dict(values["fingerprint"]),
                   warnings=list(values.get("warnings", [])), details=dict(values.get("details", {})))


def _cost_function(fp: Fingerprint, seconds_per_step, depth: int, tile_batch_16,
                   arch: str) -> tuple[Callable, str]:
    """(estimate(depth, filters, tile, batch), how it was obtained) from the caller's input."""
    flops = flop_cost_model(fp, arch=arch)
    if seconds_per_step is None:
        return flops, f"estimated from FLOPs at an assumed {ASSUMED_FLOPS_PER_SECOND:.0e} FLOP/s, not measured"
    if callable(seconds_per_step):
        return seconds_per_step, "measured"
    ref = flops(depth, DEFAULT_BASE_FILTERS, *tile_batch_16)
    scale = float(seconds_per_step) / ref
    return (lambda d, f, t, b: flops(d, f, t, b) * scale,
            f"{float(seconds_per_step):.3g}s measured for {DEFAULT_BASE_FILTERS} filters, scaled by FLOPs")


class _PlanBuilder:
    """Fills a plan's entries in dependency order, with the user's overrides winning."""

    def __init__(self, fp, overrides):
        self.fp = fp
        self.overrides = dict(overrides or {})
        self.entries: dict[str, PlanEntry] = {}
        self.warnings: list[str] = []
        self.details: dict = {}

    def user(self, name):
        return self.overrides.get(name)

    def set(self, name, value, reason):
        """Record a planned value, unless the user set it."""
        if name in self.overrides:
            self.entries[name] = PlanEntry(_json_safe(self.overrides[name]), "set by the user", True)
        else:
            self.entries[name] = PlanEntry(_json_safe(value), reason)
        return self.entries[name].value


def make_plan(fp: Fingerprint, *, time_budget_s: float, memory_budget_bytes: float,
              seconds_per_step: float | Callable | None = None, padding: str = "same",
              overrides: Mapping | None = None, arch: str = "unet", batch_norm: bool = True,
              max_tile: int = DEFAULT_MAX_TILE) -> Plan:
    """The training plan for a fingerprinted dataset.

    Args:
        fp: the dataset's fingerprint.
        time_budget_s: the whole run's time budget (:func:`parse_duration`).
        memory_budget_bytes: memory training may use (:func:`parse_bytes`).
        seconds_per_step: None (FLOP estimate, see ASSUMED_FLOPS_PER_SECOND), a
            float measured for the 16-filter model at its planned tile and
            batch (scaled by FLOPs for other widths), or a callable
            ``(depth, base_filters, tile, batch) -> seconds`` that measures.
        padding: "same" or "valid".
        overrides: ``{option: value}`` the user gave; they win and are marked.
        arch, batch_norm: the model (memory and cost estimates).
        max_tile: the largest tile.

    Returns:
        The :class:`Plan`.

    Raises:
        ValueError: an empty dataset, images too small for any tile, a time
            budget too short (names --time-budget), a memory budget below one
            tile (names --memory-budget).
    """
    if fp.n_images < 1:
        raise ValueError("The dataset is empty: there is nothing to plan for")
    b = _PlanBuilder(fp, overrides)
    if fp.n_images == 1:
        b.warnings.append("Only 1 training image: the plan cannot check layouts, and the "
                          "model will overfit it; add images if you can")
    _plan_augmentation(b)
    _plan_normalisation(b)
    _plan_model(b, time_budget_s, memory_budget_bytes, seconds_per_step, padding, arch, batch_norm, max_tile)
    _plan_loss(b)
    _plan_schedule(b, time_budget_s)
    _warn_classes(b)
    for name in b.overrides:  # options the plan does not choose, still shown as the user's
        if name not in b.entries:
            b.entries[name] = PlanEntry(_json_safe(b.overrides[name]), "set by the user", True)
    return Plan(entries=b.entries, fingerprint=fp, warnings=b.warnings, details=_json_safe(b.details))


def _plan_augmentation(b: _PlanBuilder) -> None:
    inv = detect_invariances(b.fp)
    b.details["invariances"] = inv
    if 1 < b.fp.n_images < MIN_IMAGES_PER_CLASS:
        b.warnings.append(f"Only {b.fp.n_images} images: too few to check that flips and rotations "
                          f"are safe (>= {MIN_IMAGES_PER_CLASS} needed), so they stay on; pass "
                          "--no-flip / --no-rot90 if classes depend on left/right or up/down")
    flip = b.user("flip")
    for axis in ("hflip", "vflip"):
        if flip is not None and axis not in b.overrides:  # the user's one --flip sets both
            b.entries[axis] = PlanEntry(bool(flip), "set by the user (--flip)", True)
        else:
            b.set(axis, inv[axis], inv[axis + "_reason"])
    both = bool(b.entries["hflip"].value and b.entries["vflip"].value)
    b.set("flip", both, "both flips are safe" if both else
          "the one --flip option flips both axes, and one of them is not safe")
    b.set("rot90", inv["rot90"], inv["rot90_reason"])


def _normalisation_params(fp: Fingerprint, scheme: str) -> dict:
    """The parameters of ``scheme`` for this dataset (when the user picks the scheme)."""
    if scheme == "percentile":
        return _percentile_scheme(fp, fp.intensity_variation)["params"]
    if scheme == "zscore_per_image":
        return {}
    if scheme == "scale":
        return {"scale": 1.0 / (2**fp.bit_depth - 1) if fp.bit_depth else 1.0}
    raise ValueError(f"normalisation: unknown scheme {scheme!r}; use scale, percentile or zscore_per_image")


def _plan_normalisation(b: _PlanBuilder) -> None:
    norm = choose_normalisation(b.fp)
    scheme = b.set("normalisation", norm["scheme"], norm["reason"])
    params = norm["params"] if scheme == norm["scheme"] else _normalisation_params(b.fp, scheme)
    b.set("normalisation_params", params, f"parameters of {scheme}")


def _plan_model(b: _PlanBuilder, time_budget_s, memory_budget_bytes, seconds_per_step, padding,
                arch, batch_norm, max_tile) -> None:
    fp = b.fp
    if b.user("depth") is not None:
        depth = b.set("depth", None, "")
    else:
        chosen = choose_depth(fp, padding, max_tile=max_tile)
        depth = b.set("depth", chosen["depth"], chosen["reason"])
    depth = int(depth)
    tile_o = b.user("tile_size")
    batch_o = b.user("batch_size")

    def layout(filters):
        r = choose_tile_and_batch(fp, depth, filters, memory_budget_bytes, padding, max_tile,
                                  batch_norm=batch_norm, arch=arch, tile=tile_o, batch=batch_o)
        layout.results[filters] = r
        return r["tile_size"], r["batch_size"]
    layout.results = {}

    ref = layout(DEFAULT_BASE_FILTERS)
    estimate, how = _cost_function(fp, seconds_per_step, depth, ref, arch)
    if b.user("base_filters") is not None:
        filters = int(b.user("base_filters"))
        tile, batch = layout(filters)
        size = dict(reason="", seconds_per_step=float(estimate(depth, filters, tile, batch)))
    else:  # each width is measured (or estimated) once, here
        size = choose_model_size(estimate, time_budget_s, depth=depth, layout=layout)
        filters, tile, batch = size["base_filters"], size["tile_size"], size["batch_size"]
    b.set("base_filters", filters, size["reason"] + f"; step times {how}")
    r = layout.results[filters]
    b.set("tile_size", tile, r["tile_reason"])
    b.set("batch_size", batch, r["batch_reason"])
    if tile_o and not is_valid_tile(int(tile_o), depth, padding):
        b.warnings.append(f"--tile-size {tile_o} is not a valid input size for depth {depth} with "
                          f"{padding} padding; the next valid size is "
                          f"{whole_image_tile(int(tile_o), depth, padding)}")
    b.details["memory_bytes"] = r["memory_bytes"]
    b.details["seconds_per_step"] = size["seconds_per_step"]
    b.details["seconds_per_step_source"] = how


def _plan_loss(b: _PlanBuilder) -> None:
    loss = choose_loss(b.fp)
    chosen = b.set("loss", loss["loss"], loss["reason"])
    use_map = loss["weight_map"] if chosen == loss["loss"] else chosen == "wce"
    b.set("weight_map", use_map, "the paper's weight map goes with wce" if use_map
          else "no touching objects to separate" if chosen == loss["loss"] else f"not used by {chosen}")
    b.set("class_weights", loss["class_weights"], loss["class_weights_reason"])
    sampling = choose_sampling(b.fp)
    b.set("rare_class_share", sampling["rare_class_share"], sampling["reason"])
    b.details["rare_classes"] = sampling["rare_classes"]


def _plan_schedule(b: _PlanBuilder, time_budget_s: float) -> None:
    lr = float(b.user("learning_rate") or DEFAULT_LEARNING_RATE)
    sps = b.details["seconds_per_step"]
    steps_o, epochs_o, spe_o = b.user("steps"), b.user("epochs"), b.user("steps_per_epoch")
    if steps_o is None and epochs_o is not None and spe_o is not None:
        steps_o = int(epochs_o) * int(spe_o)
    if steps_o is not None:
        steps = int(steps_o)
        epochs, per_epoch = _split_epochs(steps, None, None,
                                          epochs_o or (max(1, steps // int(spe_o)) if spe_o else None))
        schedule = dict(steps=steps, epochs=epochs, steps_per_epoch=per_epoch,
                        reason="from the user's steps/epochs", lr_schedule=_lr_schedule(steps, lr))
    else:
        schedule = plan_schedule(sps, time_budget_s, learning_rate=lr)
        if epochs_o is not None or spe_o is not None:
            epochs, per_epoch = _split_epochs(schedule["steps"], None, None,
                                              epochs_o or max(1, schedule["steps"] // int(spe_o)))
            schedule.update(epochs=epochs, steps_per_epoch=per_epoch)
    steps = b.set("steps", schedule["steps"], schedule["reason"])
    b.set("epochs", schedule["epochs"], f"{schedule['epochs']} validations/checkpoints in the run")
    b.set("steps_per_epoch", schedule["steps_per_epoch"], "steps between validations")
    lr_data = _lr_schedule(int(steps), lr)
    b.details["lr_schedule"] = lr_data
    b.set("learning_rate", lr, "Adam's usual peak rate, with warm-up and cosine decay")
    b.set("lr_schedule", "cosine", f"linear warm-up over {lr_data['warmup_steps']} steps, then cosine "
          f"decay to {FINAL_LR_FRACTION:.0%} at step {lr_data['total_steps']}")
    b.set("warmup_steps", lr_data["warmup_steps"],
          f"{WARMUP_SHARE:.0%} of the steps (at most {MAX_WARMUP_STEPS})")
    if int(steps) < FEW_STEPS_WARNING:
        b.warnings.append(f"Only {steps} training steps fit: expect an undertrained model "
                          f"(>= {FEW_STEPS_WARNING} recommended); raise --time-budget")


def _warn_classes(b: _PlanBuilder) -> None:
    fp = b.fp
    absent = [fp.class_name(k) for k in range(fp.num_classes) if not fp.class_pixels[k]]
    if absent:
        b.warnings.append(f"{', '.join(absent)} never appear in the training labels")
    if fp.void_share > 0.5:
        b.warnings.append(f"{fp.void_share:.0%} of the pixels are void (ignore index {fp.ignore_index})")


# ----------------------------------------------------------------------------- printing
def _value_text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    return str(value)


def _fingerprint_lines(fp: Fingerprint) -> list[str]:
    h, w = fp.height, fp.width
    bits = f", {fp.effective_bits} bits used of {fp.bit_depth}" if fp.bit_depth else ""
    lines = [
        (f"images          {fp.n_images}, {fp.channels} channel(s), {fp.dtype}{bits}, "
         f"values {fp.value_min:.4g}..{fp.value_max:.4g}"),
        (f"sizes           height {h['min']}/{h['median']:g}/{h['max']}, width {w['min']}/"
         f"{w['median']:g}/{w['max']} (min/median/max), {fp.n_distinct_sizes} distinct"),
        f"intensity       per-image variation {fp.intensity_variation:.2f}",
        "classes         " + ", ".join(f"{fp.class_name(k)} {f:.2%}" for k, f in enumerate(fp.class_frequency))
        + (f"; void {fp.void_share:.1%}" if fp.void_share else ""),
        f"objects         {fp.objects_per_image['median']:g} per image (median, {fp.objects_source}, "
        f"{fp.object_images} images), {fp.touching_share:.0%} touching"
        + (f", diameter {fp.object_diameter:.3g} px" if fp.object_diameter else ""),
    ]
    return lines


def format_plan(plan: Plan, width: int = 100) -> str:
    """The plan as a terminal table ``option  value  reason`` plus the fingerprint summary.

    Options the user set are marked with ``*``.
    """
    rows = [(name + ("*" if e.overridden else ""), _value_text(e.value), e.reason)
            for name, e in plan.entries.items()]
    rows = [(n, v if len(v) <= 40 else v[:37] + "...", r) for n, v, r in rows]
    n_w = max(len("option"), *(len(r[0]) for r in rows))
    v_w = max(len("value"), *(len(r[1]) for r in rows))
    reason_w = max(30, width - n_w - v_w - 4)
    out = ["Dataset", *("  " + line for line in _fingerprint_lines(plan.fingerprint)), "",
           f"{'option':<{n_w}}  {'value':<{v_w}}  reason", "-" * min(width, n_w + v_w + 4 + reason_w)]
    for name, value, reason in rows:
        wrapped = textwrap.wrap(reason, reason_w) or [""]
        out.append(f"{name:<{n_w}}  {value:<{v_w}}  {wrapped[0]}")
        out.extend(" " * (n_w + v_w + 4) + line for line in wrapped[1:])
    if any(e.overridden for e in plan.entries.values()):
        out.append("* set by the user")
    if plan.warnings:
        out += ["", "Warnings", *("  - " + w for w in plan.warnings)]
    return "\n".join(out)
