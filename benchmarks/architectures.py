"""U-Net variants side by side, measured in one run: python benchmarks/architectures.py

At the same input size and settings (batch norm on, dropout off, weighted
cross-entropy, Adam), for U-Net, U-Net with residual blocks, U-Net with
attention gates, U-Net++ with deep supervision, U-Net++ pruned at inference
to depth L (``inference_mode=L``), U-Net 3+ with full-scale deep supervision,
and U-Nets on pretrained-encoder architectures (``--encoders``, default
MobileNetV2, EfficientNetB0 and ResNet50; built with ``weights=None``:
nothing is downloaded, so they start from random weights like the others),
it reports:

- parameters; for the pruned U-Net++ those of the sub-network it runs (the
  file stores them all),
- forward FLOPs per image, counted by ``tf.compat.v1.profiler``
  (``float_operation``) on the frozen inference graph of a concrete function
  for one image: 2 FLOPs per multiply-add of every convolution (transposed
  and depthwise ones included) plus the element-wise ops TensorFlow registers
  (bias adds, additions, multiplications); ReLU, pooling and resizing count nothing,
- train-step time (forward, backward and Adam update on one batch), median
  of interleaved rounds; the pruned U-Net++ trains as the full one (pruning
  is an inference-time choice), so its train time is the U-Net++'s,
- inference time for one batch (``training=False``), median,
- TFLite int8 latency: one tile, full-integer model calibrated on 16 tiles of
  the built-in cells, LiteRT with XNNPACK on ``--tflite-threads`` threads,
- validation dice (foreground, whole 256x256 validation images predicted
  tile by tile) after training each from scratch on the built-in synthetic
  cells for the same wall-clock budget (``--budget`` seconds of train steps,
  the first step's tracing not counted; augmented tiles of ``--size``, batch
  ``--batch``); the pruned U-Net++ is the budget-trained U-Net++, pruned,

and prints the ratios against plain U-Net.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework.convert_to_constants import (  # noqa: E402
    convert_variables_to_constants_v2)

from unet_tf import losses, metrics  # noqa: E402

tf.get_logger().setLevel("ERROR")  # the v1 profiler's deprecation notes
from unet_tf.models import EncoderUNet  # noqa: E402
from unet_tf.models import UNet  # noqa: E402
from unet_tf.models import UNet3Plus  # noqa: E402
from unet_tf.models import UNetPlusPlus  # noqa: E402

UNETPP = "unetpp (deep sup.)"


def factories(args) -> dict:
    """Fresh-model constructors, one per contender (the pruned U-Net++ is derived, see build)."""
    common = dict(num_classes=1, depth=args.depth, base_filters=args.base_filters,
                  batch_norm=True, dropout=0.0, in_channels=1)
    made = {
        "unet": lambda: UNet(**common),
        "unet+residual": lambda: UNet(residual=True, **common),
        "unet+attention": lambda: UNet(attention=True, **common),
        UNETPP: lambda: UNetPlusPlus(deep_supervision=True, **common),
        "unet3p (deep sup.)": lambda: UNet3Plus(deep_supervision=True, **common),
    }
    for name in args.encoders:
        alpha = args.mobilenet_alpha if name == "mobilenetv2" else 1.0
        label = f"{name} (a={alpha:g})" if name == "mobilenetv2" and alpha != 1.0 else name
        # Depth 5: the whole encoder (bottleneck at stride 32); the same decoder widths.
        made[f"unet on {label}"] = (lambda n=name, a=alpha: EncoderUNet(
            encoder=n, encoder_alpha=a, num_classes=1, depth=5, base_filters=args.base_filters,
            batch_norm=True, dropout=0.0, in_channels=1))
    return made


def pruned_name(args) -> str:
    return f"unetpp pruned L={args.prune}"


def build(args) -> dict:
    """The contenders, one name each; the pruned U-Net++ shares the U-Net++'s weights."""
    keras.utils.set_random_seed(0)
    models = {name: make() for name, make in factories(args).items()}
    models[pruned_name(args)] = models[UNETPP].with_inference_mode(args.prune)
    return models


def used_params(model) -> int:
    """Parameters the model's inference uses (a pruned U-Net++ skips the deeper nodes)."""
    if not isinstance(model, UNetPlusPlus) or not isinstance(model.inference_mode, int):
        return model.count_params()
    depth = model.inference_mode
    used = [model.encoders[i] for i in range(min(depth + 1, model.depth))]
    used += [model.bottleneck] if depth == model.depth else []
    used += [model._node(i, j) for j, i in model._node_order() if i + j <= depth]
    used += [model.head_convs[depth - 1]]
    return sum(layer.count_params() for layer in used)


def profiled_flops(model, size: int) -> int:
    """Forward FLOPs for one image: tf.compat.v1.profiler on the frozen inference graph."""
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec((1, size, size, 1), tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)  # variables -> constants: a v1 graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph=frozen.graph, options=options).total_float_ops


def tflite_int8_latency_ms(model, tiles: np.ndarray, threads: int, runs: int) -> float:
    """Median latency of one tile through the full-integer TFLite model (builtin ops only)."""
    import tempfile
    from pathlib import Path

    from unet_tf.deploy.tflite import _convert, _fixed_shape_saved_model, median_latency_ms
    from unet_tf.runtimes import run_tflite, tflite_interpreter, tflite_ops
    with tempfile.TemporaryDirectory() as tmp:
        _fixed_shape_saved_model(model, tiles.shape[1:3], tiles.shape[-1], Path(tmp) / "fixed")
        content = _convert(Path(tmp) / "fixed", "int8", tiles)
    ops = tflite_ops(tflite_interpreter(content, num_threads=1, xnnpack=False))
    assert not [op for op in ops if op.upper().startswith(("FLEX", "CUSTOM"))], ops
    interp = tflite_interpreter(content, num_threads=threads)
    return median_latency_ms(lambda: run_tflite(interp, tiles[:1]), runs)


class _Budget(keras.callbacks.Callback):
    """Stops training once ``seconds`` of train steps have run (the first, traced, step excluded)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.start, self.steps = seconds, None, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.start is None:
            self.start = time.perf_counter()
        elif time.perf_counter() - self.start >= self.seconds:
            self.model.stop_training = True


def dice_at_budget(model, bundle, args) -> tuple[float, int]:
    """Foreground dice on the validation images after ``args.budget`` seconds of training."""
    from unet_tf import data
    from unet_tf.data.augment import AugmentConfig
    from unet_tf.training import evaluate_items
    train = data.train_dataset(bundle.train, tile_size=args.size, batch_size=args.batch,
                               depth=model.depth, augment=AugmentConfig(), spec=bundle.spec,
                               seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.WeightedCrossEntropy(),
                  metrics=[metrics.Dice(1)])
    budget = _Budget(args.budget)
    model.fit(train, epochs=1, steps_per_epoch=1_000_000, callbacks=[budget], verbose=0)
    report = evaluate_items(model, bundle.val, 1, bundle.ignore_index, tile_size=args.size)
    return float(report["dice"]), budget.steps


def cells(args):
    """The built-in synthetic cells (written once into a temporary folder), loaded."""
    import tempfile

    from unet_tf import data
    from unet_tf.data import synthetic
    folder = os.path.join(tempfile.mkdtemp(prefix="bench-arch-"), "cells")
    synthetic.write_dataset(folder, n=args.images, size=256, seed=0)
    return data.load_data(folder)


def median_time(fn, steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(contenders: dict, steps: int, rounds: int) -> dict:
    """Median seconds per call for each contender; rounds interleaved so drift hits all alike."""
    for fn in contenders.values():
        fn()  # trace and warm up
    results = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            results[name].append(median_time(fn, steps))
    return {name: statistics.median(values) for name, values in results.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--size", type=int, default=128,
                        help="input side (square; a multiple of 32 for the encoders)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prune", type=int, default=None,
                        help="depth L of the pruned U-Net++ (default depth - 1)")
    parser.add_argument("--encoders", default="mobilenetv2,efficientnetb0,resnet50",
                        help="comma-separated encoders for encoder U-Nets ('' for none)")
    parser.add_argument("--mobilenet-alpha", type=float, default=1.0)
    parser.add_argument("--budget", type=float, default=20.0,
                        help="seconds of training per model for the validation dice (0: skip)")
    parser.add_argument("--images", type=int, default=40, help="synthetic cells images")
    parser.add_argument("--tflite-threads", type=int, default=2)
    parser.add_argument("--tflite-runs", type=int, default=10)
    args = parser.parse_args(argv)
    args.prune = args.prune or max(1, args.depth - 1)
    args.encoders = [e for e in args.encoders.split(",") if e]
    start = time.perf_counter()

    rng = np.random.default_rng(0)
    x = rng.random((args.batch, args.size, args.size, 1), dtype=np.float32)
    y = (rng.random((args.batch, args.size, args.size)) > 0.5).astype(np.int32)
    w = np.ones(y.shape, np.float32)
    bundle = cells(args)
    from unet_tf.deploy.tflite import sample_tiles
    calibration = sample_tiles(bundle.train, (args.size, args.size), 16).astype(np.float32)
    models = build(args)
    pruned = pruned_name(args)
    for model in models.values():
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.WeightedCrossEntropy())

    params = {name: used_params(m) for name, m in models.items()}
    flops = {name: profiled_flops(m, args.size) for name, m in models.items()}
    trainers = {name: (lambda m=m: m.train_on_batch(x, y, sample_weight=w))
                for name, m in models.items() if name != pruned}
    train = interleaved(trainers, args.steps, args.rounds)
    train[pruned] = train[UNETPP]
    x_tensor = tf.constant(x)
    infer_fns = {name: tf.function(lambda t, m=m: m(t, training=False)) for name, m in models.items()}
    infer = interleaved({name: (lambda f=f: f(x_tensor).numpy()) for name, f in infer_fns.items()},
                        args.steps, args.rounds)
    int8 = {name: tflite_int8_latency_ms(m, calibration, args.tflite_threads, args.tflite_runs)
            for name, m in models.items()}
    dice, steps = {}, {}
    if args.budget > 0:
        for name, make in factories(args).items():
            keras.utils.set_random_seed(0)
            model = make()
            dice[name], steps[name] = dice_at_budget(model, bundle, args)
            if name == UNETPP:
                from unet_tf.training import evaluate_items
                clone = model.with_inference_mode(args.prune)
                report = evaluate_items(clone, bundle.val, 1, bundle.ignore_index, tile_size=args.size)
                dice[pruned], steps[pruned] = float(report["dice"]), steps[name]

    print(f"\nTensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPU cores; "
          f"depth {args.depth} (encoders: 5), {args.base_filters} base filters, batch norm, "
          f"batch {args.batch} x {args.size}x{args.size}x1, binary head")
    print("FLOPs: tf.compat.v1.profiler float_operation on the frozen inference graph, one image.")
    print(f"int8: TFLite full-integer, one {args.size}x{args.size} tile, {args.tflite_threads} threads. "
          f"dice: validation, after {args.budget:g} s of training on the built-in cells.")
    header = (f"{'architecture':28s} {'params':>11s} {'x':>6s} {'GFLOP/img':>10s} {'x':>6s} "
              f"{'train ms/step':>14s} {'x':>6s} {'infer ms/batch':>15s} {'x':>6s} "
              f"{'int8 ms':>8s} {'x':>6s} {'steps':>6s} {'dice':>6s}")
    print(header)
    print("-" * len(header))
    base = "unet"
    for name in models:
        note = "  (trains as unetpp)" if name == pruned else ""
        score = f"{steps[name]:6d} {dice[name]:6.3f}" if name in dice else f"{'':6s} {'':6s}"
        print(f"{name:28s} {params[name]:>11,d} {params[name] / params[base]:6.2f} "
              f"{flops[name] / 1e9:10.3f} {flops[name] / flops[base]:6.2f} "
              f"{train[name] * 1e3:14.1f} {train[name] / train[base]:6.2f} "
              f"{infer[name] * 1e3:15.1f} {infer[name] / infer[base]:6.2f} "
              f"{int8[name]:8.1f} {int8[name] / int8[base]:6.2f} {score}{note}")
    print(f"\nTimes are medians of {args.rounds} interleaved rounds of {args.steps} calls; "
          f"whole run {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
