"""Benchmark: elasticdeform vs the OpenCV backend of unet_tf.data.augment.

Times, on the same float image + int mask and the SAME coarse displacement grid:
  * elasticdeform.deform_grid (the reference, cubic B-spline image, order-0 mask)
  * unet_tf.data.augment.elastic_deform, OpenCV backend (cubic Keys kernel, and exact B-spline)
  * unet_tf.data.augment.augment_sample with every augmentation on (OpenCV and elasticdeform backends)
and prints ms per image+mask pair, the speed-ups, and the parity of the two backends.

    python benchmarks/augment.py --size 512 --repeats 20
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import elasticdeform  # noqa: E402

from unet_tf.data.augment import AugmentConfig, augment_sample, elastic_deform, random_coarse_displacement  # noqa: E402


def _timeit(fn, repeats):
    fn()  # warm-up (caches, cv2 thread pool, page faults)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def _sample(size, channels, seed):
    rng = np.random.default_rng(seed)
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    base = 0.5 + 0.4 * np.sin(r / 23.0) * np.cos(c / 31.0)
    image = np.stack([np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1)
                      for _ in range(channels)], axis=-1).astype(np.float32)
    mask = ((np.sin(r / 40.0) * np.cos(c / 50.0) > 0) + 2 * ((r - size / 2) ** 2 + (c - size / 2) ** 2
                                                           < (size / 4) ** 2)).astype(np.int32)
    return image, mask


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="image side (square), default 512")
    p.add_argument("--channels", type=int, default=1, help="image channels, default 1")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per method, default 20")
    p.add_argument("--points", type=int, default=3, help="coarse grid points per axis, default 3")
    p.add_argument("--sigma", type=float, default=10.0, help="coarse displacement std-dev (px), default 10")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    image, mask = _sample(args.size, args.channels, args.seed)
    coarse = random_coarse_displacement(np.random.default_rng(args.seed), args.points, args.sigma)
    print(f"python {platform.python_version()}, numpy {np.__version__}, opencv {cv2.__version__}, "
          f"cv2 threads {cv2.getNumThreads()}, cpus {os.cpu_count()}")
    print(f"image {image.shape} {image.dtype} + mask {mask.shape} {mask.dtype}, grid {args.points}x{args.points}, "
          f"sigma {args.sigma}, {args.repeats} repeats; times are median (min) ms per image+mask pair\n")

    def ed():
        return elasticdeform.deform_grid([image, mask], coarse, order=[3, 0], mode="mirror",
                                         axis=[(0, 1)] * 2, prefilter=True)

    full_cfg = AugmentConfig()
    methods = [
        ("elasticdeform.deform_grid (reference)", ed),
        ("opencv elastic, cubic (default)", lambda: elastic_deform(image, mask, coarse=coarse)),
        ("opencv elastic, exact B-spline", lambda: elastic_deform(image, mask, coarse=coarse,
                                                                  interpolation="bspline")),
        ("augment_sample all on, opencv", lambda: augment_sample(image, mask, config=full_cfg, seed=1)),
        ("augment_sample all on, elasticdeform", lambda: augment_sample(
            image, mask, config=AugmentConfig(backend="elasticdeform"), seed=1)),
    ]
    results = {}
    for name, fn in methods:
        med, best = _timeit(fn, args.repeats)
        results[name] = med
        print(f"{name:40s} {med:8.2f} ms  ({best:.2f})")

    ref = results[methods[0][0]]
    print("\nspeed-up vs elasticdeform.deform_grid (median):")
    for name, _ in methods[1:4]:
        print(f"  {name:38s} {ref / results[name]:6.1f}x")
    print(f"  {'augment_sample: opencv vs elasticdeform':38s} "
          f"{results[methods[4][0]] / results[methods[3][0]]:6.1f}x")

    # Parity, same coarse grid, measured in the same run.
    ref_img, ref_mask = ed()
    m = args.size // 16
    for interp in ("cubic", "bspline"):
        out_img, out_mask, _, _ = elastic_deform(image, mask, coarse=coarse, interpolation=interp)
        print(f"parity {interp:7s}: image max |diff| interior {np.abs(out_img - ref_img)[m:-m, m:-m].max():.2e}"
              f", whole {np.abs(out_img - ref_img).max():.2e}; mask pixels differing "
              f"{(out_mask != ref_mask).mean() * 100:.3f}%")


if __name__ == "__main__":
    main()
