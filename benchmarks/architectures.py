"""U-Net variants side by side, measured in one run: python benchmarks/architectures.py

At the same input size and settings (batch norm on, dropout off, weighted
cross-entropy, Adam), for U-Net, U-Net with residual blocks, U-Net with
attention gates, U-Net++ with deep supervision, and U-Net++ pruned at
inference to depth L (``inference_mode=L``), it reports:

- parameters; for the pruned U-Net++ those of the sub-network it runs (the
  file stores them all),
- forward FLOPs per image, counted by ``tf.compat.v1.profiler``
  (``float_operation``) on the frozen inference graph of a concrete function
  for one image: 2 FLOPs per multiply-add of every convolution (transposed
  ones included) plus the element-wise ops TensorFlow registers (bias adds,
  additions, multiplications); ReLU, pooling and resizing count nothing,
- train-step time (forward, backward and Adam update on one batch), median
  of interleaved rounds; the pruned U-Net++ trains as the full one (pruning
  is an inference-time choice), so its train time is the U-Net++'s,
- inference time for one batch (``training=False``), median,

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

from unet_tf import losses  # noqa: E402

tf.get_logger().setLevel("ERROR")  # the v1 profiler's deprecation notes
from unet_tf.models import UNet  # noqa: E402
from unet_tf.models import UNetPlusPlus  # noqa: E402


def build(args) -> dict:
    """The contenders, one name each; the pruned U-Net++ shares the U-Net++'s weights."""
    common = dict(num_classes=1, depth=args.depth, base_filters=args.base_filters,
                  batch_norm=True, dropout=0.0, in_channels=1)
    keras.utils.set_random_seed(0)
    models = {
        "unet": UNet(**common),
        "unet+residual": UNet(residual=True, **common),
        "unet+attention": UNet(attention=True, **common),
        "unetpp (deep sup.)": UNetPlusPlus(deep_supervision=True, **common),
    }
    models[f"unetpp pruned L={args.prune}"] = models["unetpp (deep sup.)"].with_inference_mode(args.prune)
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
    parser.add_argument("--size", type=int, default=128, help="input side (square)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prune", type=int, default=None,
                        help="depth L of the pruned U-Net++ (default depth - 1)")
    args = parser.parse_args(argv)
    args.prune = args.prune or max(1, args.depth - 1)
    start = time.perf_counter()

    rng = np.random.default_rng(0)
    x = rng.random((args.batch, args.size, args.size, 1), dtype=np.float32)
    y = (rng.random((args.batch, args.size, args.size)) > 0.5).astype(np.int32)
    w = np.ones(y.shape, np.float32)
    models = build(args)
    pruned = list(models)[-1]
    for model in models.values():
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.WeightedCrossEntropy())

    params = {name: used_params(m) for name, m in models.items()}
    flops = {name: profiled_flops(m, args.size) for name, m in models.items()}
    trainers = {name: (lambda m=m: m.train_on_batch(x, y, sample_weight=w))
                for name, m in models.items() if name != pruned}
    train = interleaved(trainers, args.steps, args.rounds)
    train[pruned] = train["unetpp (deep sup.)"]
    x_tensor = tf.constant(x)
    infer_fns = {name: tf.function(lambda t, m=m: m(t, training=False)) for name, m in models.items()}
    infer = interleaved({name: (lambda f=f: f(x_tensor).numpy()) for name, f in infer_fns.items()},
                        args.steps, args.rounds)

    print(f"\nTensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPU cores; "
          f"depth {args.depth}, {args.base_filters} base filters, batch norm, "
          f"batch {args.batch} x {args.size}x{args.size}x1, binary head")
    print("FLOPs: tf.compat.v1.profiler float_operation on the frozen inference graph, one image.")
    header = (f"{'architecture':22s} {'params':>10s} {'x':>6s} {'GFLOP/img':>10s} {'x':>6s} "
              f"{'train ms/step':>14s} {'x':>6s} {'infer ms/batch':>15s} {'x':>6s}")
    print(header)
    print("-" * len(header))
    base = "unet"
    for name in models:
        note = "  (trains as unetpp)" if name == pruned else ""
        print(f"{name:22s} {params[name]:>10,d} {params[name] / params[base]:6.2f} "
              f"{flops[name] / 1e9:10.3f} {flops[name] / flops[base]:6.2f} "
              f"{train[name] * 1e3:14.1f} {train[name] / train[base]:6.2f} "
              f"{infer[name] * 1e3:15.1f} {infer[name] / infer[base]:6.2f}{note}")
    print(f"\nTimes are medians of {args.rounds} interleaved rounds of {args.steps} calls; "
          f"whole run {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
