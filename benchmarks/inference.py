"""Inference speed, measured in one run: python benchmarks/inference.py

1. Overlap-tile prediction of a 2048x2048 image against one full pass of the
   same model (target: at most 1.3x), for same and valid padding.
2. How the tiled time grows with the image area.
3. The latency of each runtime (Keras compiled, SavedModel, each TFLite
   variant) on one 256x256 tile, all at the same thread count.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from unet_tf import deploy as export  # noqa: E402
from unet_tf import sizes, training  # noqa: E402
from unet_tf.data import synthetic as datasets  # noqa: E402
from unet_tf.config import TrainConfig  # noqa: E402
from unet_tf.inference import predict_tiled  # noqa: E402
from unet_tf.runtimes import KerasRuntime, load_runtime  # noqa: E402
from unet_tf.models import UNet  # noqa: E402


def median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tiled_vs_full(model, size, repeats):
    image = np.random.default_rng(0).random((size, size, 1), dtype=np.float32)
    runtime = KerasRuntime(model)
    full_in = sizes.input_size_for_output(size, model.depth, model.padding)
    margin = (full_in - model.output_size(full_in)) // 2
    from unet_tf.tiling import window
    canvas = window(image, -margin, -margin, full_in, full_in)[None]
    full = median_time(lambda: runtime(canvas), repeats)
    tiled = median_time(lambda: predict_tiled(runtime, image), repeats)
    return full, tiled


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="threads for every runtime in part 3")
    args = parser.parse_args()
    cfg = TrainConfig()
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs; model: depth {cfg.depth}, "
          f"{cfg.base_filters} filters, batch norm")
    keras.utils.set_random_seed(0)
    same = training.build_model(cfg, 1, 1)
    valid = UNet(1, depth=cfg.depth, base_filters=cfg.base_filters, padding="valid", in_channels=1)

    print("\n[1] 2048x2048: overlap-tile prediction vs one full pass")
    for name, model in (("same padding", same), ("valid padding", valid)):
        full, tiled = tiled_vs_full(model, 2048, args.repeats)
        print(f"  {name:14s} full pass {full:6.2f} s   tiled {tiled:6.2f} s   ratio {tiled / full:.2f}")

    print("\n[2] tiled time against image area (same padding)")
    base = None
    for size in (512, 1024, 2048):
        image = np.random.default_rng(0).random((size, size, 1), dtype=np.float32)
        t = median_time(lambda: predict_tiled(same, image), args.repeats)
        base = base or t / size**2
        print(f"  {size:5d}x{size:<5d} {t:6.2f} s   {t / size**2 * 1e6:6.2f} s/Mpx   "
              f"({t / size**2 / base:.2f}x the 512 rate)")

    print(f"\n[3] runtime latency, one 256x256 tile, {args.threads} threads")
    with tempfile.TemporaryDirectory() as tmp:
        datasets.write_dataset(os.path.join(tmp, "cells"), n=12, size=256, seed=0)
        run = training.train(TrainConfig(plan=False, data=os.path.join(tmp, "cells"), out=os.path.join(tmp, "run"),
                                         epochs=8, verbose=0))
        export.export_model(run.out, os.path.join(tmp, "exports"), log=lambda *_: None,
                            options=export.ExportOptions(latency_runs=3))
        tile = np.random.default_rng(1).random((1, 256, 256, 1), dtype=np.float32)
        runtimes = {"keras (compiled)": load_runtime(run.best_model),
                    "savedmodel": load_runtime(os.path.join(tmp, "exports", "unet", "1"))}
        for variant in export.TFLITE_VARIANTS:
            path = os.path.join(tmp, "exports", "tflite", f"unet_256x256_{variant}.tflite")
            runtimes[f"tflite {variant}"] = load_runtime(path, num_threads=args.threads)
        base = None
        for name, runtime in runtimes.items():
            t = median_time(lambda: runtime(tile), 10 * args.repeats)
            base = base or t
            print(f"  {name:20s} {t * 1000:7.1f} ms   ({base / t:.2f}x keras speed)")


if __name__ == "__main__":
    main()
