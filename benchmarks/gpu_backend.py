"""The U-Net's training step on a GPU through Keras 3 on another backend (JAX by default).

    KERAS_BACKEND=jax python benchmarks/gpu_backend.py --out gpu_backend.json

For GPU machines that have no TensorFlow (the device machines this project is
lent carry JAX and PyTorch but no TensorFlow, and TensorFlow's wheel is far
larger than what can be carried there): the same subclassed ``UNet`` and the
same losses run on the JAX backend, so the network's speed on the GPU can be
measured even where ``benchmarks/gpu.py`` (tf.data, the TensorFlow trainer)
cannot run. It times ``model.fit`` steps (median over epochs after a warm-up
epoch) of the demo model (depth 4, 16 filters, 128 px tiles) and the paper's
model (depth 4, 64 filters, valid padding, 572 -> 388 tiles) in float32,
mixed_float16 and mixed_bfloat16, and one pass over a 2048x2048 image.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from unet_tf import losses  # noqa: E402
from unet_tf.models import UNet  # noqa: E402

MODELS = {
    "demo": dict(depth=4, base_filters=16, padding="same", batch_norm=True, tile=128),
    "paper": dict(depth=4, base_filters=64, padding="valid", batch_norm=False, tile=572),
}


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _device() -> str:
    try:
        import jax
        return ", ".join(str(d) for d in jax.devices())
    except ImportError:
        return keras.backend.backend()


def train_step_seconds(name: str, batch: int, policy: str, steps: int, epochs: int) -> dict:
    spec = dict(MODELS[name])
    tile = spec.pop("tile")
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = UNet(num_classes=1, dropout=0.5, in_channels=1, **spec)
        out = model.output_size(tile)
        rng = np.random.default_rng(0)
        x = rng.random((batch * steps, tile, tile, 1), dtype=np.float32)
        y = (rng.random((batch * steps, out, out)) > 0.5).astype("int32")
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.WeightedCrossEntropy(),
                      jit_compile=True)
        times = []
        for epoch in range(epochs + 1):
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
            if epoch:  # the first epoch compiles
                times.append((time.perf_counter() - start) / steps)
        step = statistics.median(times)
        return {"model": name, "tile": tile, "batch": batch, "policy": policy,
                "ms_per_step": round(step * 1000, 2), "tiles_per_s": round(batch / step, 1)}
    finally:
        keras.mixed_precision.set_global_policy("float32")


def full_pass_seconds(size: int = 2048) -> dict:
    model = UNet(num_classes=1, depth=4, base_filters=16, batch_norm=True, in_channels=1)
    x = np.random.default_rng(0).random((1, size, size, 1), dtype=np.float32)
    model.predict(x, verbose=0)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        model.predict(x, verbose=0)
        times.append(time.perf_counter() - start)
    return {"image": f"{size}x{size}", "seconds": round(statistics.median(times), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_backend.json"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script")
    args = parser.parse_args()
    results = {"backend": keras.backend.backend(), "keras": keras.__version__,
               "devices": _device(), "train": [], "predict": None}
    _log(f"backend {results['backend']}, devices {results['devices']}")
    cases = [("demo", 8), ("demo", 64), ("paper", 1), ("paper", 8)]
    policies = ["float32", "mixed_float16", "mixed_bfloat16"]
    if args.quick:
        MODELS["demo"]["tile"], MODELS["paper"]["tile"] = 64, 188
        cases, policies, args.steps, args.epochs = [("demo", 2), ("paper", 1)], ["float32"], 2, 1
    for name, batch in cases:
        for policy in policies:
            try:
                row = train_step_seconds(name, batch, policy, args.steps, args.epochs)
            except Exception as err:  # noqa: BLE001 - e.g. out of memory: report, go on
                row = {"model": name, "batch": batch, "policy": policy, "error": str(err)[:300]}
            _log(json.dumps(row))
            results["train"].append(row)
            Path(args.out).write_text(json.dumps(results, indent=2))
    try:
        results["predict"] = full_pass_seconds(512 if args.quick else 2048)
    except Exception as err:  # noqa: BLE001
        results["predict"] = {"error": str(err)[:300]}
    _log(json.dumps(results["predict"]))
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
