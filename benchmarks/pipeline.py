"""Input pipeline throughput, measured in one run: python benchmarks/pipeline.py

Tiles per second that ``unet_tf.data.train_dataset`` delivers for each elastic
deformation backend, with and without weight maps, against the train-step
rate (tiles per second) of the demo model, as ratios. Target: the default
pipeline delivers at least 3x what the demo model consumes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from unet_tf import data, training  # noqa: E402
from unet_tf.data import synthetic  # noqa: E402
from unet_tf.data.augment import AugmentConfig  # noqa: E402
from unet_tf.config import TrainConfig  # noqa: E402


def tiles_per_second(ds, batches: int, batch_size: int) -> float:
    iterator = iter(ds)
    next(iterator)  # start the workers, fill the prefetch buffer
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cfg = TrainConfig()
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs; demo configuration: tile {cfg.tile_size}, "
          f"batch {cfg.batch_size}, depth {cfg.depth}, {cfg.base_filters} filters")
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic.write_dataset(os.path.join(tmp, "cells"), n=40, size=256, seed=0)
        variants = {}
        for backend in ("opencv", "elasticdeform"):
            for weights in (True, False):
                bundle = data.load_data(root, weight_map=data.WeightMapConfig(enabled=weights))
                name = f"{backend:13s} weight maps {'on ' if weights else 'off'}"
                variants[name] = data.train_dataset(
                    bundle.train, tile_size=cfg.tile_size, batch_size=cfg.batch_size, depth=cfg.depth,
                    augment=AugmentConfig(backend=backend), spec=bundle.spec, seed=0,
                    weight_map=data.WeightMapConfig(enabled=weights))
        bundle = data.load_data(root)
        recompute = data.WeightMapConfig(recompute=True)
        variants["opencv        weight maps recomputed"] = data.train_dataset(
            bundle.train, tile_size=cfg.tile_size, batch_size=cfg.batch_size, depth=cfg.depth,
            augment=AugmentConfig(), spec=bundle.spec, seed=0, weight_map=recompute)
        rates = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, ds in variants.items():
                batches = args.batches if "elasticdeform" not in name else max(5, args.batches // 3)
                rates[name].append(tiles_per_second(ds, batches, cfg.batch_size))
        rates = {k: statistics.median(v) for k, v in rates.items()}

        keras.utils.set_random_seed(0)
        model = training.build_model(cfg, 1, 1)
        training.compile_model(model, cfg, 255)
        default = next(iter(variants.values()))
        cached = default.take(1).cache().repeat()
        model.fit(cached, steps_per_epoch=3, epochs=1, verbose=0)
        start = time.perf_counter()
        steps = 20
        model.fit(cached, steps_per_epoch=steps, epochs=1, verbose=0)
        model_rate = steps * cfg.batch_size / (time.perf_counter() - start)

    print(f"\n{'pipeline':42s} {'tiles/s':>9s} {'x model':>8s}")
    for name, rate in rates.items():
        print(f"{name:42s} {rate:9.1f} {rate / model_rate:7.1f}x")
    print(f"{'demo model train steps (cached batch)':42s} {model_rate:9.1f}")
    print(f"\nopencv / elasticdeform backend (weight maps on): "
          f"{rates['opencv        weight maps on '] / rates['elasticdeform weight maps on ']:.1f}x")


if __name__ == "__main__":
    main()
