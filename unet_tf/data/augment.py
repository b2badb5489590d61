"""Data augmentation of the U-Net paper (Ronneberger et al. 2015), numpy/OpenCV core.

Everything here is pure numpy + OpenCV (no TensorFlow), thread-safe (no global
RNG, no mutable module state besides a read-only basis cache) and takes an
explicit integer seed, so a tf.data pipeline can wrap :func:`augment_sample` in
``tf.numpy_function``.

Geometry
--------
All geometric augmentations are composed into ONE coordinate map per sample so
that every array is resampled exactly once. For an output pixel ``p`` (row,
col) of the ``out_shape`` window the input coordinate that is read is::

    q = p + offset                       # offset: centre crop of the (H, W) frame
    y = q + d(q) - c                     # d: elastic field on the (H, W) frame, c = ((H-1)/2, (W-1)/2)
    x = c + t + M @ y                    # M = Rot(theta) @ Rot90^k @ Flip / scale, t: shift

i.e. the image is first transformed affinely about its centre (flips, 90-degree
rotations, small rotation, scaling, shift), then elastically deformed exactly
like ``elasticdeform.deform_grid`` would deform that intermediate image (control
points at the corners of the full H x W frame), then the centre ``out_shape``
window is taken. Borders are mirrored (scipy "mirror" == OpenCV
``BORDER_REFLECT_101``).

Backends
--------
* ``"opencv"`` (default, fast): the dense elastic field is computed with a
  separable cubic B-spline basis (``Bh @ coarse @ Bw.T``) that reproduces
  elasticdeform's field to float precision, and every array is sampled once with
  ``cv2.remap``: images with ``INTER_CUBIC`` (Keys kernel, a=-0.75; or exact
  cubic B-splines with ``interpolation="bspline"``), labels/instances with
  ``INTER_NEAREST``, weights with ``INTER_LINEAR``.
* ``"elasticdeform"`` (slow reference): the affine part is applied first with
  OpenCV (skipped when it is the identity, exact gathers when it is only
  flips/rot90) and the elastic part with ``elasticdeform.deform_grid`` (cubic
  B-spline images, order 0 labels, order 1 weights). Same geometry, but up to
  two resamplings and ~20x slower: use it for validation only.

Gray values (image only, after the geometry): gamma on values clipped to >= 0,
then contrast (multiply around the per-channel mean), then brightness (add).
Outputs are not clipped to [0, 1].
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "AugmentConfig",
    "random_coarse_displacement",
    "dense_displacement_field",
    "elastic_deform",
    "augment_sample",
]

_BACKENDS = ("opencv", "elasticdeform")
_INTERPOLATIONS = ("cubic", "bspline", "linear")
_BLOCK_ROWS = 32  # row block of the B-spline sampler
_BORDER = cv2.BORDER_REFLECT_101  # == scipy.ndimage mode="mirror" (d c b | a b c d | c b a)
# dtypes cv2.remap handles natively (int64 is silently returned as int32, so it is excluded).
_CV_NEAREST_DTYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32,
                                            np.float32, np.float64)}


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------
@dataclass
class AugmentConfig:
    """Which augmentations to apply and how strongly.

    Every augmentation is switched off by its flag or by a zero magnitude;
    :meth:`none` switches all of them off (``augment_sample`` then returns exact
    copies of its inputs, cropped to ``out_shape``).

    Attributes:
        elastic: apply the elastic deformation.
        elastic_points: control points per axis of the coarse grid (>= 1).
        elastic_sigma: std-dev in pixels of the Gaussian coarse displacements.
        backend: ``"opencv"`` (fast) or ``"elasticdeform"`` (slow reference).
        interpolation: image interpolation, ``"cubic"`` (OpenCV Keys kernel),
            ``"bspline"`` (exact cubic B-spline like scipy/elasticdeform, ~3x the
            cost of "cubic") or ``"linear"``. Labels are always nearest, weights linear.
        flip: random vertical and horizontal flips (each with p=0.5).
        hflip, vflip: each flip on its own (left-right, up-down); None follows
            ``flip``. A dataset plan turns off what the labels are not
            invariant to (left/right structures, sky above ground).
        rot90: random multiples of 90 degrees. Odd multiples are only drawn when
            the rotated output window fits in the input (always for square inputs).
        rotate_degrees: small rotation drawn uniformly from +-rotate_degrees.
        shift: translation drawn uniformly from +-shift * (H, W) pixels.
        scale: zoom factor range (lo, hi), drawn uniformly; > 1 magnifies.
        brightness: additive offset drawn from +-brightness.
        contrast: factor drawn from [1 - contrast, 1 + contrast], applied around
            the per-channel mean; must be < 1.
        gamma: exponent drawn log-uniformly from [exp(-gamma), exp(gamma)],
            applied to the image clipped to >= 0 (assumes intensities in [0, 1]).
    """

    elastic: bool = True
    elastic_points: int = 3
    elastic_sigma: float = 10.0
    backend: str = "opencv"
    interpolation: str = "cubic"
    flip: bool = True
    rot90: bool = True
    rotate_degrees: float = 15.0
    hflip: Optional[bool] = None
    vflip: Optional[bool] = None
    shift: float = 0.05
    scale: Tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.1
    contrast: float = 0.2
    gamma: float = 0.2

    def __post_init__(self) -> None:
        self.scale = tuple(float(s) for s in self.scale)
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi, got {self.scale}")
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}")
        if int(self.elastic_points) < 1:
            raise ValueError("elastic_points must be >= 1")
        self.elastic_points = int(self.elastic_points)
        for name in ("elastic_sigma", "rotate_degrees", "shift", "brightness", "contrast", "gamma"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.contrast >= 1:
            raise ValueError("contrast must be < 1 (a factor <= 0 would invert/erase the image)")

    @classmethod
    def none(cls) -> "AugmentConfig":
        """A config with every augmentation switched off (identity)."""
        return cls(elastic=False, flip=False, rot90=False, rotate_degrees=0.0, shift=0.0,
                   scale=(1.0, 1.0), brightness=0.0, contrast=0.0, gamma=0.0)

    def to_dict(self) -> dict:
        """Plain JSON/YAML-serialisable dict (``scale`` as a list)."""
        d = dataclasses.asdict(self)
        d["scale"] = list(self.scale)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        """Inverse of :meth:`to_dict`; missing keys take defaults, unknown keys raise."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown AugmentConfig keys: {sorted(unknown)}")
        return cls(**d)

    @property
    def elastic_active(self) -> bool:
        return bool(self.elastic) and self.elastic_sigma > 0


# --------------------------------------------------------------------------------------
# Elastic field
# --------------------------------------------------------------------------------------
def random_coarse_displacement(rng: np.random.Generator, points: int | Sequence[int] = 3,
                               sigma: float = 10.0) -> np.ndarray:
    """Random displacements of the coarse control grid.

    Args:
        rng: numpy Generator (the only source of randomness).
        points: control points per axis (int, or (rows, cols)).
        sigma: standard deviation of the displacements in pixels.

    Returns:
        float64 array of shape (2, points, points): [row displacement, col displacement],
        the ``displacement`` argument of ``elasticdeform.deform_grid``.
    """
    pts = (int(points), int(points)) if np.isscalar(points) else tuple(int(p) for p in points)
    return rng.standard_normal((2,) + pts) * float(sigma)


def _mirror_index(idx: np.ndarray, n: int) -> np.ndarray:
    """scipy 'mirror' / cv2 REFLECT_101 index extension (d c b | a b c d | c b a)."""
    idx = np.asarray(idx, dtype=np.int64)
    if n <= 1:
        return np.zeros_like(idx)
    period = 2 * n - 2
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def _cubic_bspline_weights(t: np.ndarray) -> np.ndarray:
    """Cubic B-spline weights of taps floor(x)-1 .. floor(x)+2 for t = x - floor(x); shape (..., 4)."""
    t2, t3 = t * t, t * t * t
    return np.stack([(1 - t) ** 3 / 6.0,
                     (3 * t3 - 6 * t2 + 4) / 6.0,
                     (-3 * t3 + 3 * t2 + 3 * t + 1) / 6.0,
                     t3 / 6.0], axis=-1)


@functools.lru_cache(maxsize=64)
def _bspline_basis(n: int, points: int) -> np.ndarray:
    """Matrix B (n, points) with dense = B @ coarse along one axis, as in elasticdeform.

    elasticdeform (deform.c) places control point k at pixel k * (n-1)/(points-1),
    prefilters the coarse grid with ``scipy.ndimage.spline_filter1d(order=3,
    mode="mirror")`` and evaluates the cubic B-spline with mirrored coefficient
    indices. Both steps are linear, so they fold into one (n, points) matrix:
    B = W @ inv(A), with W the B-spline evaluation weights and A the
    interpolation matrix (c[j-1] + 4 c[j] + c[j+1]) / 6 with mirror boundaries.
    Cached and read-only (safe to share between threads).
    """
    # Same arithmetic as deform.c: cp = (points - 1) * j / (n - 1), in double.
    j = np.arange(n, dtype=np.float64)
    cp = (points - 1) * j / (n - 1) if n > 1 else np.zeros(n)
    base = np.floor(cp)
    w = _cubic_bspline_weights(cp - base)                      # (n, 4)
    taps = _mirror_index(base.astype(np.int64)[:, None] - 1 + np.arange(4), points)
    W = np.zeros((n, points))
    np.add.at(W, (np.repeat(np.arange(n), 4), taps.ravel()), w.ravel())
    # Interpolation (prefilter) matrix of the mirror-extended coefficients.
    A = np.zeros((points, points))
    for k in range(points):
        for off, val in ((-1, 1 / 6), (0, 4 / 6), (1, 1 / 6)):
            A[k, int(_mirror_index(np.array(k + off), points))] += val
    B = W @ np.linalg.inv(A)
    B.setflags(write=False)
    return B


def _gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Small-K matrix product through cv2.gemm.

    (h, K) @ (K, w) with K ~ 5 is memory bound; numpy's OpenBLAS spins up its
    thread pool for it and was 10-50x slower and erratic (0.1-30 ms) when measured
    on 2 cores, let alone inside a multi-threaded tf.data pipeline.
    """
    return cv2.gemm(np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32), 1.0, None, 0.0)


def _window_bases(coarse: np.ndarray, shape, offset, out_shape):
    """Per-axis B-spline bases restricted to the output window: (h, Ph), (w, Pw)."""
    coarse = np.asarray(coarse, dtype=np.float64)
    if coarse.ndim != 3 or coarse.shape[0] != 2:
        raise ValueError(f"coarse displacement must have shape (2, Ph, Pw), got {coarse.shape}")
    (H, W), (r0, c0), (h, w) = shape, offset, out_shape
    Bh = _bspline_basis(int(H), coarse.shape[1])[r0:r0 + h]
    Bw = _bspline_basis(int(W), coarse.shape[2])[c0:c0 + w]
    return coarse, Bh, Bw


def dense_displacement_field(coarse: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Dense displacement field, equal to elasticdeform's to float32 precision (~1e-6 px).

    Args:
        coarse: (2, Ph, Pw) displacements of the control points (row, col components).
        shape: (H, W) of the image.

    Returns:
        float32 array (2, H, W); output pixel (r, c) reads the input at
        (r + field[0, r, c], c + field[1, r, c]).
    """
    H, W = (int(s) for s in shape)
    coarse, Bh, Bw = _window_bases(coarse, (H, W), (0, 0), (H, W))
    # Separable: field[d] = Bh @ coarse[d] @ Bw.T, a rank-Pw product, essentially free.
    return np.stack([_gemm(Bh @ coarse[d], Bw.T) for d in range(2)])


# --------------------------------------------------------------------------------------
# Resampling primitives
# --------------------------------------------------------------------------------------
def _remap_float(arr: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, interp: int) -> np.ndarray:
    """cv2.remap of a float (H, W) or (H, W, C) array, any C (chunks of <= 4 channels)."""
    dtype = arr.dtype
    work = arr if dtype in (np.float32, np.float64) else arr.astype(np.float32)
    if work.ndim == 2:
        out = cv2.remap(work, map_x, map_y, interp, borderMode=_BORDER)
    else:
        C = work.shape[2]
        chunks = [cv2.remap(np.ascontiguousarray(work[..., i:i + 4]), map_x, map_y, interp,
                            borderMode=_BORDER).reshape(map_x.shape + (min(4, C - i),))
                  for i in range(0, C, 4)]
        out = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=2)
    return out.astype(dtype, copy=False)


def _remap_nearest(arr: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resampling that keeps every value (ids, ignore index) exact."""
    dtype = arr.dtype
    if dtype in _CV_NEAREST_DTYPES:
        return cv2.remap(arr, map_x, map_y, cv2.INTER_NEAREST, borderMode=_BORDER)
    if dtype == np.bool_:
        return cv2.remap(arr.view(np.uint8), map_x, map_y, cv2.INTER_NEAREST,
                         borderMode=_BORDER).view(np.bool_)
    if arr.size and np.issubdtype(dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if np.iinfo(np.int32).min <= lo and hi <= np.iinfo(np.int32).max:
            # e.g. int64 labels: exact through int32 (cv2 has no 64-bit integer remap).
            out = cv2.remap(arr.astype(np.int32), map_x, map_y, cv2.INTER_NEAREST, borderMode=_BORDER)
            return out.astype(dtype)
    # Fallback for anything else: numpy gather; np.rint rounds half to even like cv2.
    rows = _mirror_index(np.rint(map_y), arr.shape[0])
    cols = _mirror_index(np.rint(map_x), arr.shape[1])
    return arr[rows, cols]


def _remap_bspline(arr: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """Exact cubic B-spline interpolation (scipy order=3, mode='mirror', prefilter=True).

    Prefilters to B-spline coefficients, then evaluates the 4x4-tap spline as 4
    bilinear lookups (the weights are all positive, so each pair of taps folds
    into one linear fetch at a shifted position; OpenCV 5's float remap is exact).
    """
    from scipy import ndimage  # scipy is a dependency of elasticdeform; only needed here

    dtype = arr.dtype
    coef = ndimage.spline_filter1d(arr, order=3, axis=0, mode="mirror", output=np.float32)
    coef = ndimage.spline_filter1d(coef, order=3, axis=1, mode="mirror", output=np.float32)

    def fold(m):
        # Taps base-1, base (weights w0, w1) -> one linear fetch at base-1 + w1/(w0+w1);
        # taps base+1, base+2 (w2, w3) -> one at base+1 + w3/(w2+w3).
        # Written with in-place products: float32 ``** 3`` goes through pow() and was 4x slower.
        base = np.floor(m)
        t = m - base
        t2 = t * t
        w1 = t2 * (0.5 * t - 1.0)
        w1 += 2.0 / 3.0                   # (3t^3 - 6t^2 + 4) / 6
        w3 = t2 * t
        w3 *= 1.0 / 6.0                   # t^3 / 6
        s = 1.0 - t
        g0 = s * s
        g0 *= s
        g0 *= 1.0 / 6.0
        g0 += w1                          # w0 + w1, in [1/6, 5/6]: never zero
        g1 = 1.0 - g0
        h0 = w1 / g0
        h0 += base
        h0 -= 1.0
        h1 = w3 / g1
        h1 += base
        h1 += 1.0
        return g0, g1, h0, h1

    # Row blocks keep every temporary small (cache resident, no fresh 1 MB page-faulting
    # allocations per elementwise op): ~2x faster than whole-image arrays.
    out = np.empty(map_x.shape + coef.shape[2:], np.float32)
    for r0 in range(0, map_x.shape[0], _BLOCK_ROWS):
        rows = slice(r0, r0 + _BLOCK_ROWS)
        gy0, gy1, hy0, hy1 = fold(map_y[rows])
        gx0, gx1, hx0, hx1 = fold(map_x[rows])
        acc = out[rows]
        acc[...] = 0
        for gy, hy in ((gy0, hy0), (gy1, hy1)):
            for gx, hx in ((gx0, hx0), (gx1, hx1)):
                v = _remap_float(coef, hx, hy, cv2.INTER_LINEAR)
                g = gy * gx
                v *= g[..., None] if v.ndim == 3 else g
                acc += v
    return out.astype(dtype, copy=False)


def _resample(arr: np.ndarray, kind: str, map_x: np.ndarray, map_y: np.ndarray,
              interpolation: str) -> np.ndarray:
    if kind in ("label", "instances"):
        return _remap_nearest(arr, map_x, map_y)
    if kind == "weight" or interpolation == "linear":
        return _remap_float(arr, map_x, map_y, cv2.INTER_LINEAR)
    if interpolation == "bspline":
        return _remap_bspline(arr, map_x, map_y)
    return _remap_float(arr, map_x, map_y, cv2.INTER_CUBIC)


# --------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Geometry:
    matrix: np.ndarray          # (2, 2) pull matrix M, (row, col) order
    shift: np.ndarray           # (2,) t in pixels
    coarse: Optional[np.ndarray]  # (2, Ph, Pw) or None when no elastic deformation

    @property
    def affine_is_permutation(self) -> bool:
        """Only flips / 90-degree rotations (and no shift): exact integer gathers suffice."""
        m = self.matrix
        return bool(np.all(np.isin(m, (-1.0, 0.0, 1.0))) and np.all(self.shift == 0)
                    and np.count_nonzero(m) == 2)

    @property
    def affine_is_identity(self) -> bool:
        return bool(np.array_equal(self.matrix, np.eye(2)) and np.all(self.shift == 0))


def _sample_geometry_and_gray(config: AugmentConfig, seed: int, in_shape, out_shape):
    """Draw every random parameter from one Generator, always in the same order, so that
    switching one augmentation off does not change the draws of the others."""
    rng = np.random.default_rng(seed)
    u = rng.random(10)
    H, W = in_shape
    h, w = out_shape

    flip_v = (config.flip if config.vflip is None else config.vflip) and u[0] < 0.5
    flip_h = (config.flip if config.hflip is None else config.hflip) and u[1] < 0.5
    k = 0
    if config.rot90:
        # Odd quarter turns only when the rotated output window still fits in the input.
        k = int(u[2] * 4) if (h <= W and w <= H) else 2 * int(u[2] * 2)
    theta = math.radians((2 * u[3] - 1) * config.rotate_degrees)
    lo, hi = config.scale
    s = lo + (hi - lo) * u[4]
    t = np.array([(2 * u[5] - 1) * config.shift * H, (2 * u[6] - 1) * config.shift * W])
    brightness = (2 * u[7] - 1) * config.brightness
    contrast = 1.0 + (2 * u[8] - 1) * config.contrast
    gamma = math.exp((2 * u[9] - 1) * config.gamma)
    coarse = random_coarse_displacement(rng, config.elastic_points, config.elastic_sigma)

    flip = np.diag([-1.0 if flip_v else 1.0, -1.0 if flip_h else 1.0])
    r90 = np.linalg.matrix_power(np.array([[0.0, -1.0], [1.0, 0.0]]), k)  # exact integers
    if theta == 0.0:
        rot = np.eye(2)
    else:
        c, sn = math.cos(theta), math.sin(theta)
        rot = np.array([[c, -sn], [sn, c]])
    m = rot @ r90 @ flip
    if s != 1.0:
        m = m / s
    geo = _Geometry(matrix=m + 0.0, shift=t + 0.0,  # + 0.0 turns -0.0 into 0.0
                    coarse=coarse if config.elastic_active else None)
    return geo, (brightness, contrast, gamma)


def _centre_offset(in_shape, out_shape) -> Tuple[int, int]:
    return (in_shape[0] - out_shape[0]) // 2, (in_shape[1] - out_shape[1]) // 2


def _pull_maps(geo: _Geometry, in_shape, out_shape, offset, elastic: bool):
    """cv2.remap maps (map_x = input column, map_y = input row), float32 (h, w).

    map_y = c_r + t_r + m00 * (q_r - c_r + d_r) + m01 * (q_c - c_c + d_c) (and likewise
    map_x). The elastic field is a rank-Pw sum of outer products and the affine part
    is rank 2, so each map is ONE small-K product L (h, Pw + 2) @ R (Pw + 2, w): the
    dense field is never materialised separately.
    """
    H, W = in_shape
    h, w = out_shape
    cr, cc = (H - 1) / 2.0, (W - 1) / 2.0
    yr = np.arange(h, dtype=np.float64) + offset[0] - cr    # (h,) row of q relative to the centre
    yc = np.arange(w, dtype=np.float64) + offset[1] - cc    # (w,)
    (m00, m01), (m10, m11) = geo.matrix
    ones_h, ones_w = np.ones((h, 1)), np.ones((1, w))
    maps = []
    for (ma, mb), a0 in (((m10, m11), cc + geo.shift[1]), ((m00, m01), cr + geo.shift[0])):
        left = [(a0 + ma * yr)[:, None], ones_h]
        right = [ones_w, (mb * yc)[None, :]]
        if elastic and geo.coarse is not None:
            coarse, Bh, Bw = _window_bases(geo.coarse, in_shape, offset, out_shape)
            left.insert(0, Bh @ (ma * coarse[0] + mb * coarse[1]))   # (h, Pw)
            right.insert(0, Bw.T)                                      # (Pw, w)
        maps.append(_gemm(np.hstack(left), np.vstack(right)))
    return maps[0], maps[1]


def _gather_permutation(arrays, geo: _Geometry, in_shape, out_shape, offset):
    """Exact resampling for flips / quarter turns (+ crop) by integer indexing.

    Returns None when the coordinates are not integers (e.g. a quarter turn of a
    frame whose H - W is odd has a half-pixel centre), the caller then remaps.
    """
    H, W = in_shape
    h, w = out_shape
    cr, cc = (H - 1) / 2.0, (W - 1) / 2.0
    qr = np.arange(h) + offset[0] - cr
    qc = np.arange(w) + offset[1] - cc
    (m00, m01), (m10, m11) = geo.matrix
    swap = m00 == 0
    if swap:   # input row depends on output col and vice versa
        rows, cols = cr + m01 * qc, cc + m10 * qr
    else:
        rows, cols = cr + m00 * qr, cc + m11 * qc
    if not (np.array_equal(rows, np.round(rows)) and np.array_equal(cols, np.round(cols))):
        return None
    ri = _mirror_index(np.round(rows), H)
    ci = _mirror_index(np.round(cols), W)
    out = []
    for a in arrays:
        g = a[np.ix_(ri, ci)]
        out.append(np.ascontiguousarray(np.swapaxes(g, 0, 1) if swap else g))
    return out


def _apply_geometry(arrays, kinds, geo: _Geometry, out_shape, backend: str, interpolation: str):
    """Resample every array of ``arrays`` (same H, W) once with the composed transform."""
    in_shape = arrays[0].shape[:2]
    offset = _centre_offset(in_shape, out_shape)
    elastic = geo.coarse is not None

    if backend == "elasticdeform" and elastic:
        return _apply_elasticdeform(arrays, kinds, geo, out_shape, offset, interpolation)

    if not elastic and geo.affine_is_permutation:
        exact = _gather_permutation(arrays, geo, in_shape, out_shape, offset)
        if exact is not None:
            return exact
    map_x, map_y = _pull_maps(geo, in_shape, out_shape, offset, elastic=elastic)
    return [_resample(a, k, map_x, map_y, interpolation) for a, k in zip(arrays, kinds)]


def _apply_elasticdeform(arrays, kinds, geo: _Geometry, out_shape, offset, interpolation):
    """Reference path: affine with OpenCV on the full frame, then elasticdeform + crop."""
    import elasticdeform  # slow reference only; imported lazily

    in_shape = arrays[0].shape[:2]
    if not geo.affine_is_identity:
        affine_only = _Geometry(geo.matrix, geo.shift, None)
        arrays = _apply_geometry(arrays, kinds, affine_only, in_shape, "opencv", interpolation)
    image_order = 1 if interpolation == "linear" else 3
    orders = [0 if k in ("label", "instances") else 1 if k == "weight" else image_order for k in kinds]
    crop = None
    if tuple(out_shape) != tuple(in_shape):
        crop = [slice(offset[0], offset[0] + out_shape[0]), slice(offset[1], offset[1] + out_shape[1])]
    # axis=(0, 1) for every input: elasticdeform's default would also deform (mix) channels.
    return elasticdeform.deform_grid(list(arrays), np.asarray(geo.coarse, np.float64), order=orders,
                                     mode="mirror", axis=[(0, 1)] * len(arrays), prefilter=True,
                                     crop=crop)


# --------------------------------------------------------------------------------------
# Gray values
# --------------------------------------------------------------------------------------
def _apply_gray(image: np.ndarray, brightness: float, contrast: float, gamma: float) -> np.ndarray:
    """Gamma (on values clipped to >= 0), contrast around the per-channel mean, brightness.

    Each step is skipped when its parameter is neutral, so a disabled step is exact.
    Per-channel means keep channels from mixing.
    """
    if gamma == 1.0 and contrast == 1.0 and brightness == 0.0:
        return image
    dtype = image.dtype
    x = image.copy()  # work in place on a private copy (fewer 1 MB temporaries)
    if gamma != 1.0:
        np.maximum(x, 0, out=x)
        np.power(x, np.asarray(gamma, dtype), out=x)
    # contrast and brightness fold into one affine map: x * f + (mean * (1 - f) + b)
    offset = np.zeros((1, 1) + x.shape[2:], np.float64) + brightness
    if contrast != 1.0:
        x *= np.asarray(contrast, dtype)
        offset = offset + x.mean(axis=(0, 1), keepdims=True, dtype=np.float64) * (1.0 / contrast - 1.0)
    if contrast != 1.0 or brightness != 0.0:
        x += offset.astype(dtype)
    return x


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------
def _normalize_seed(seed) -> int:
    s = int(np.asarray(seed).item())
    return s % (1 << 64)  # SeedSequence rejects negatives; tf seeds may be negative int64


def _collect(image, label, weight, instances):
    image = np.ascontiguousarray(image)  # cv2 wants C-contiguous; no copy when it already is
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"image must be a floating array, got {image.dtype}")
    hw = image.shape[:2]
    arrays, kinds, slots = [image], ["image"], [0]
    for slot, (name, a) in enumerate((("label", label), ("weight", weight), ("instances", instances)), 1):
        if a is None:
            continue
        a = np.ascontiguousarray(a)
        if a.shape != hw:
            raise ValueError(f"{name} must have shape {hw}, got {a.shape}")
        arrays.append(a)
        kinds.append(name)
        slots.append(slot)
    return arrays, kinds, slots


def _scatter(results, slots):
    out = [None, None, None, None]
    for r, s in zip(results, slots):
        out[s] = r
    return tuple(out)


def elastic_deform(image: np.ndarray, label: Optional[np.ndarray] = None,
                   weight: Optional[np.ndarray] = None, instances: Optional[np.ndarray] = None, *,
                   coarse: np.ndarray, backend: str = "opencv", interpolation: str = "cubic"):
    """Elastic deformation alone, with a given coarse displacement grid.

    Args:
        image: float (H, W) or (H, W, C).
        label, weight, instances: optional (H, W) arrays (nearest, linear, nearest).
        coarse: (2, Ph, Pw) control-point displacements, e.g. from
            :func:`random_coarse_displacement`.
        backend: ``"opencv"`` or ``"elasticdeform"``.
        interpolation: image interpolation, see :class:`AugmentConfig`.

    Returns:
        (image, label, weight, instances), same shapes/dtypes, None where not given.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}")
    arrays, kinds, slots = _collect(image, label, weight, instances)
    geo = _Geometry(np.eye(2), np.zeros(2), np.asarray(coarse, np.float64))
    res = _apply_geometry(arrays, kinds, geo, arrays[0].shape[:2], backend, interpolation)
    return _scatter(res, slots)


def augment_sample(image: np.ndarray, label: Optional[np.ndarray], weight: Optional[np.ndarray] = None,
                   instances: Optional[np.ndarray] = None, *, config: AugmentConfig, seed: int,
                   out_shape: Optional[Tuple[int, int]] = None):
    """Augment one sample: one resampling for all geometry, then gray values on the image.

    Args:
        image: float32 (H, W, C) (or (H, W)); any number of channels, never mixed.
        label: int (H, W) class map (nearest: ignore values survive), or None.
        weight: float (H, W) weight map (linear), or None.
        instances: int (H, W) instance ids (nearest, exact for any integer dtype), or None.
        config: :class:`AugmentConfig`.
        seed: integer seed; the output is a deterministic function of (inputs, config, seed).
        out_shape: (h, w) <= (H, W): centre window of the transformed frame to return
            (e.g. a training tile); default (H, W).

    Returns:
        (image, label, weight, instances): new arrays with the input dtypes, spatial
        shape ``out_shape`` (channels kept), None where the input was None.
    """
    arrays, kinds, slots = _collect(image, label, weight, instances)
    in_shape = arrays[0].shape[:2]
    out_shape = tuple(int(s) for s in (out_shape if out_shape is not None else in_shape))
    if len(out_shape) != 2 or not (0 < out_shape[0] <= in_shape[0] and 0 < out_shape[1] <= in_shape[1]):
        raise ValueError(f"out_shape must be (h, w) with 0 < h <= {in_shape[0]}, 0 < w <= {in_shape[1]}, "
                         f"got {out_shape}")
    geo, (brightness, contrast, gamma) = _sample_geometry_and_gray(
        config, _normalize_seed(seed), in_shape, out_shape)
    res = _apply_geometry(arrays, kinds, geo, out_shape, config.backend, config.interpolation)
    res = [np.array(r, copy=True) if np.may_share_memory(r, a) else r for r, a in zip(res, arrays)]
    res[0] = _apply_gray(res[0], brightness, contrast, gamma)
    return _scatter(res, slots)
