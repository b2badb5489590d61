"""Training speed, measured in one run: python benchmarks/train.py [--quick]

1. The subclassed ``UNet`` against the same network written with the Keras
   functional API (the blocks must add no overhead), with GFLOP/s, and a bare
   3x3 convolution for reference.
2. The input pipeline's share of the demo configuration's step time: real
   augmented tiles against one cached batch.
3. ``mixed_bfloat16`` against float32: step time, and the validation dice after
   the same short training.
4. XLA (``jit_compile=True``) against the default.

Every comparison interleaves its contenders over several rounds and reports
medians and ratios from this one run.
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
from keras import layers  # noqa: E402

from unet_tf import data, losses, training  # noqa: E402
from unet_tf.data import synthetic  # noqa: E402
from unet_tf.data.augment import AugmentConfig  # noqa: E402
from unet_tf.config import TrainConfig  # noqa: E402
from unet_tf.models import UNet  # noqa: E402


def functional_unet(depth, base, channels, classes):
    """The same network as UNet(padding="same", batch_norm=False, dropout=0), functional API."""
    inputs = keras.Input((None, None, channels))
    x, skips = inputs, []
    conv = lambda f: layers.Conv2D(f, 3, padding="same", activation="relu",  # noqa: E731
                                   kernel_initializer="he_normal")
    for level in range(depth):
        f = base * 2**level
        x = conv(f)(conv(f)(x))
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    f = base * 2**depth
    x = conv(f)(conv(f)(x))
    for level in reversed(range(depth)):
        f = base * 2**level
        x = layers.Conv2DTranspose(f, 2, strides=2, kernel_initializer="he_normal")(x)
        x = layers.Concatenate()([x, skips[level]])
        x = conv(f)(conv(f)(x))
    x = layers.Conv2D(classes, 1)(x)
    outputs = layers.Activation("sigmoid" if classes == 1 else "softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def unet_flops(depth, base, channels, classes, size, batch):
    """Forward FLOPs (2 per multiply-add) of the same-padding U-Net, counted layer by layer."""
    total, s, c = 0, size, channels
    conv = lambda cin, cout, k, s: 2 * k * k * cin * cout * s * s  # noqa: E731
    for level in range(depth):
        f = base * 2**level
        total += conv(c, f, 3, s) + conv(f, f, 3, s)
        c, s = f, s // 2
    f = base * 2**depth
    total += conv(c, f, 3, s) + conv(f, f, 3, s)
    c = f
    for level in reversed(range(depth)):
        f = base * 2**level
        total += conv(c, f, 2, s)  # transpose conv: each input pixel makes a 2x2 patch
        s *= 2
        total += conv(2 * f, f, 3, s) + conv(f, f, 3, s)
        c = f
    total += conv(c, classes, 1, s)
    return total * batch


def time_steps(model, x, y, w, steps):
    model.train_on_batch(x, y, sample_weight=w)  # trace + warm up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y, sample_weight=w)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(contenders: dict, x, y, w, steps, rounds):
    """Median step time per contender, rounds interleaved so drift hits all alike."""
    results = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, model in contenders.items():
            results[name].append(time_steps(model, x, y, w, steps))
    return {name: statistics.median(v) for name, v in results.items()}


def compiled(model, jit=False):
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.WeightedCrossEntropy(),
                  jit_compile=jit)
    return model


def bench_architecture(args):
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, args.size, args.size, 1), dtype=np.float32)
    y = (rng.random((args.batch, args.size, args.size)) > 0.5).astype(np.int32)
    w = np.ones(y.shape, np.float32)
    keras.utils.set_random_seed(0)
    sub = compiled(UNet(1, depth=args.depth, base_filters=args.base_filters, dropout=0.0, in_channels=1))
    fun = compiled(functional_unet(args.depth, args.base_filters, 1, 1))
    assert sub.count_params() == fun.count_params(), (sub.count_params(), fun.count_params())
    times = compare({"subclassed UNet": sub, "functional API": fun}, x, y, w, args.steps, args.rounds)
    flops = 3 * unet_flops(args.depth, args.base_filters, 1, 1, args.size, args.batch)  # fwd + bwd
    conv = bare_conv_gflops(args)
    print(f"\n[1] subclassed vs functional: depth {args.depth}, {args.base_filters} base filters, "
          f"batch {args.batch}x{args.size}x{args.size}, {sub.count_params():,} parameters")
    for name, t in times.items():
        print(f"  {name:18s} {t * 1000:8.1f} ms/step  {flops / t / 1e9:6.1f} GFLOP/s")
    print(f"  bare 3x3 conv      {'':8s}            {conv:6.1f} GFLOP/s (forward + backward)")
    ratio = times["subclassed UNet"] / times["functional API"]
    print(f"  subclassed / functional step time: {ratio:.3f}")
    return ratio


def bare_conv_gflops(args):
    layer = layers.Conv2D(args.base_filters * 2, 3, padding="same")
    x = tf.random.uniform((args.batch, args.size // 2, args.size // 2, args.base_filters * 2))
    layer.build(x.shape)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(layer(x))
        return tape.gradient(y, [x] + layer.trainable_weights)

    step()
    times = []
    for _ in range(10):
        start = time.perf_counter()
        [g.numpy() for g in step() if g is not None]
        times.append(time.perf_counter() - start)
    c = args.base_filters * 2
    flops = 3 * 2 * 9 * c * c * (args.size // 2) ** 2 * args.batch
    return flops / statistics.median(times) / 1e9


def demo_setup(tmp):
    root = synthetic.write_dataset(os.path.join(tmp, "cells"), n=40, size=256, seed=0)
    bundle = data.load_data(root)
    return bundle


def bench_pipeline(args, bundle):
    cfg = TrainConfig()
    ds = data.train_dataset(bundle.train, tile_size=cfg.tile_size, batch_size=cfg.batch_size,
                            depth=cfg.depth, augment=AugmentConfig(), spec=bundle.spec, seed=0)
    cached = ds.take(1).cache().repeat()
    results = {"augmented pipeline": [], "one cached batch": []}
    models = {}
    for name, dataset in (("augmented pipeline", ds), ("one cached batch", cached)):
        keras.utils.set_random_seed(0)
        model = training.build_model(cfg, bundle.num_classes, bundle.in_channels)
        training.compile_model(model, cfg, 255)
        model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)  # trace, fill buffers
        models[name] = (model, dataset)
    for _ in range(args.rounds):
        for name, (model, dataset) in models.items():
            start = time.perf_counter()
            model.fit(dataset, steps_per_epoch=args.pipeline_steps, epochs=1, verbose=0)
            results[name].append((time.perf_counter() - start) / args.pipeline_steps)
    times = {k: statistics.median(v) for k, v in results.items()}
    print(f"\n[2] input pipeline, demo configuration (depth {cfg.depth}, {cfg.base_filters} filters, "
          f"batch {cfg.batch_size}x{cfg.tile_size}x{cfg.tile_size}, elastic + affine + gray augmentation)")
    for name, t in times.items():
        print(f"  {name:20s} {t * 1000:8.1f} ms/step")
    overhead = times["augmented pipeline"] / times["one cached batch"] - 1
    print(f"  pipeline overhead on the step time: {overhead * 100:+.1f}%")
    return overhead


def bench_precision_and_xla(args, bundle):
    cfg = TrainConfig()
    rng = np.random.default_rng(1)
    x = rng.random((cfg.batch_size, cfg.tile_size, cfg.tile_size, 1), dtype=np.float32)
    y = (rng.random(x.shape[:3]) > 0.5).astype(np.int32)
    w = np.ones(y.shape, np.float32)
    models = {}
    for name, policy, jit in (("float32", "float32", False), ("mixed_bfloat16", "mixed_bfloat16", False),
                              ("float32 + XLA", "float32", True)):
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(0)
        model = training.build_model(cfg, 1, 1)
        models[name] = compiled(model, jit)
        keras.mixed_precision.set_global_policy("float32")
    times = compare(models, x, y, w, args.steps, args.rounds)
    print(f"\n[3] precision and XLA, demo configuration, batch {cfg.batch_size}x{cfg.tile_size}x{cfg.tile_size}")
    for name, t in times.items():
        print(f"  {name:16s} {t * 1000:8.1f} ms/step  ({times['float32'] / t:.2f}x float32 speed)")
    return times


def bench_precision_quality(args, tmp):
    print(f"\n[4] validation dice after the same {args.dice_epochs} epochs of the demo run")
    out = {}
    for name in ("off", "bfloat16"):
        cfg = TrainConfig(plan=False, out=os.path.join(tmp, f"run-{name}"), epochs=args.dice_epochs,
                          mixed_precision=name, verbose=0, data=os.path.join(tmp, "cells"))
        start = time.perf_counter()
        result = training.train(cfg)
        out[name] = (result.report["dice"], time.perf_counter() - start)
        print(f"  {('float32' if name == 'off' else 'mixed_bfloat16'):16s} dice {out[name][0]:.4f}  "
              f"wall {out[name][1]:.0f} s")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--base-filters", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pipeline-steps", type=int, default=20)
    parser.add_argument("--dice-epochs", type=int, default=10)
    parser.add_argument("--skip", nargs="*", default=[], choices=["arch", "pipeline", "precision", "dice"])
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = demo_setup(tmp)
        if "arch" not in args.skip:
            bench_architecture(args)
        if "pipeline" not in args.skip:
            bench_pipeline(args, bundle)
        if "precision" not in args.skip:
            bench_precision_and_xla(args, bundle)
        if "dice" not in args.skip:
            bench_precision_quality(args, tmp)


if __name__ == "__main__":
    main()
