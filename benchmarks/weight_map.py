"""Benchmark: fast U-Net weight map vs the straightforward computation.

The default reference does one full-image exact Euclidean distance transform
per instance (cv2.distanceTransform, DIST_L2 + DIST_MASK_PRECISE, on OpenCV's
threads) and keeps the two smallest distances per pixel; ``--reference tests``
times the scipy reference from tests/data/test_weights.py instead (same algorithm,
slower transform, float64). Both run on the same random instance map; the
script checks they agree within --atol and prints the median times and the
speed-up measured in this run (alternating rounds, see main).

    python benchmarks/weight_map.py --size 512 --instances 50 --rounds 15

Needs numpy and OpenCV only (no TensorFlow, no scipy).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from unet_tf.data.weights import unet_weight_map  # noqa: E402


def random_cells(size, n, rng, r_min=8.0, r_max=20.0, touch_fraction=0.3, max_tries=200_000):
    """Instance map (size x size, int32) with ``n`` non-overlapping ellipses.

    About ``touch_fraction`` of them are placed 1-2 px from an existing cell,
    so the map has touching pairs with thin background gaps.
    """
    h = w = size
    labels = np.zeros((h, w), np.int32)
    centers, radii = [], []
    k = 0
    for _ in range(max_tries):
        if k == n:
            break
        a = rng.uniform(r_min, r_max)
        b = a * rng.uniform(0.6, 1.0)
        theta = rng.uniform(0, np.pi)
        if k and rng.random() < touch_fraction:
            j = rng.integers(k)
            phi = rng.uniform(0, 2 * np.pi)
            dist = radii[j] + a + rng.uniform(1.0, 2.5)
            cy = centers[j][0] + dist * np.sin(phi)
            cx = centers[j][1] + dist * np.cos(phi)
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = int(np.ceil(a)) + 1
        y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, h)
        x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, w)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        u = (yy - cy) * np.cos(theta) + (xx - cx) * np.sin(theta)
        v = -(yy - cy) * np.sin(theta) + (xx - cx) * np.cos(theta)
        cell = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        if not cell.any() or labels[y0:y1, x0:x1][cell].any():
            continue
        k += 1
        labels[y0:y1, x0:x1][cell] = k
        centers.append((cy, cx))
        radii.append(a)
    if k < n:
        raise RuntimeError(f"could only place {k} of {n} cells")
    return labels


def reference_weight_map(labels, w0=10.0, sigma=5.0):
    """Straightforward weight map: a full-image distance transform per instance."""
    fg = labels != 0
    n = labels.size
    n_fg = int(np.count_nonzero(fg))
    counts = [c for c in (n - n_fg, n_fg) if c]
    w_bg = n / (len(counts) * (n - n_fg)) if n - n_fg else 0.0
    w_fg = n / (len(counts) * n_fg) if n_fg else 0.0
    out = np.where(fg, w_fg, w_bg).astype(np.float32)
    ids = np.unique(labels[fg])
    if len(ids) < 2:
        return out
    d1 = np.full(labels.shape, np.inf, np.float32)
    d2 = np.full(labels.shape, np.inf, np.float32)
    for k in ids:
        d = cv2.distanceTransform((labels != k).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        np.minimum(d2, np.maximum(d1, d), out=d2)
        np.minimum(d1, d, out=d1)
    s = d1.astype(np.float64) + d2
    out += np.where(fg, 0.0, w0 * np.exp(-(s * s) / (2.0 * sigma * sigma))).astype(np.float32)
    return out


def tests_reference():
    """The reference that lives in tests/data/test_weights.py (scipy, float64)."""
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "tests", "data", "test_weights.py")
    spec = importlib.util.spec_from_file_location("unet_tf_test_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # needs scipy and pytest (pip install -e .[dev])
    return module.reference_weight_map


def _time(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def _block(fn, n, *args, **kwargs):
    """Median seconds of ``n`` back-to-back calls, and the last result."""
    times, out = [], None
    for _ in range(n):
        t, out = _time(fn, *args, **kwargs)
        times.append(t)
    return float(np.median(times)), out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--instances", type=int, default=50)
    p.add_argument("--rounds", type=int, default=15,
                   help="alternating rounds; each times a block of fast calls and a block of reference calls")
    p.add_argument("--fast-calls", type=int, default=10, help="fast calls per round")
    p.add_argument("--reference-calls", type=int, default=2, help="reference calls per round")
    p.add_argument("--w0", type=float, default=10.0)
    p.add_argument("--sigma", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--reference", choices=["opencv", "tests"], default="opencv",
                   help="opencv: one cv2 distance transform per instance (default, the stronger "
                        "baseline); tests: the scipy reference in tests/data/test_weights.py")
    p.add_argument("--opencv-threads", type=int, default=None,
                   help="cv2.setNumThreads for both sides (default: OpenCV's own setting)")
    args = p.parse_args(argv)
    if args.opencv_threads is not None:
        cv2.setNumThreads(args.opencv_threads)

    rng = np.random.default_rng(args.seed)
    labels = random_cells(args.size, args.instances, rng)
    kw = dict(w0=args.w0, sigma=args.sigma)
    reference = reference_weight_map if args.reference == "opencv" else tests_reference()

    # The speed of a shared machine drifts over seconds, so the two sides are
    # timed in alternating rounds (a block of fast calls, then a block of
    # reference calls) and the speed-up is the median of the per-round ratios.
    # A short pause before each block lets the other side's threads (OpenCV's
    # pool spins for a while after parallel work) go idle.
    _block(unet_weight_map, 20, labels, **kw)  # warm-up: imports, thread pools, allocator
    _block(reference, 1, labels, **kw)
    t_fast, t_ref, ratios = [], [], []
    for _ in range(args.rounds):
        time.sleep(0.01)
        tf, fast = _block(unet_weight_map, args.fast_calls, labels, **kw)
        time.sleep(0.01)
        tr, ref = _block(reference, args.reference_calls, labels, **kw)
        t_fast.append(tf)
        t_ref.append(tr)
        ratios.append(tr / tf)

    err = float(np.abs(fast.astype(np.float64) - ref).max())
    q = lambda v, k: float(np.percentile(v, k))  # noqa: E731
    print(f"image {args.size}x{args.size}, {args.instances} instances, w0={args.w0}, sigma={args.sigma}, "
          f"{args.rounds} rounds of {args.fast_calls} fast + {args.reference_calls} reference calls, "
          f"opencv threads={cv2.getNumThreads()}, reference={args.reference}")
    print(f"fast      median {1e3 * q(t_fast, 50):9.3f} ms")
    print(f"reference median {1e3 * q(t_ref, 50):9.3f} ms")
    print(f"speed-up  {q(ratios, 50):9.1f}x  (median of per-round ratios; "
          f"quartiles {q(ratios, 25):.1f}-{q(ratios, 75):.1f}x, min {min(ratios):.1f}x)")
    print(f"max abs diff {err:.3g} (atol {args.atol:g}): {'OK' if err <= args.atol else 'FAIL'}")
    return 0 if err <= args.atol else 1


if __name__ == "__main__":
    sys.exit(main())
