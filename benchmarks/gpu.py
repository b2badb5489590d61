"""GPU speed of training, the input pipeline and tiled prediction, in one short run.

Run it on the device machine as::

    python benchmarks/gpu.py --out $OUT/gpu.json

(about 3-5 minutes on one H200; it stops starting optional measurements after
``--budget`` seconds, 420 by default, so it ends well inside 8 minutes). Check it
on a CPU with ``python benchmarks/gpu.py --quick`` (tiny sizes, about a minute
or two; mixed precision, which is slow on CPUs, is skipped there, and the paper
model runs on 188x188 instead of 572x572 tiles).

What it measures, in order (each measurement is wrapped: one failure, e.g. out
of memory, is printed and recorded, and the run goes on):

1. Hardware: GPU name and compute capability, TensorFlow/Keras/CUDA versions,
   CPU count.
2. Training speed with ``model.fit`` on a cached in-memory ``tf.data`` batch of
   random tensors (so the input pipeline costs nothing): median step time over
   a few epochs after one warm-up epoch, tiles/s (one training image is one
   tile), output megapixels/s and an approximate TFLOP/s (3x the forward FLOPs):

   - the demo model, ``UNet(num_classes=1, depth=4, base_filters=16,
     padding="same", batch_norm=True, dropout=0.5)`` on 128x128 tiles, batch 8
     and 64;
   - the paper's model, ``UNet(num_classes=2, depth=4, base_filters=64,
     padding="valid")`` on 572x572 tiles (388x388 output), batch 1 and 8;

   each in float32 and mixed_float16, always with ``jit_compile=False``
   (Keras's "auto" would pick XLA on a GPU). XLA (``jit_compile=True``) for
   the demo model in mixed_float16 comes last, if time allows (``--no-xla``).
3. The input pipeline: tiles/s that ``unet_tf.data.train_dataset`` delivers
   (built-in synthetic cells, 40 images of 256x256, paper augmentations), with
   and without deterministic order and without augmentation. The ratio

       pipeline tiles/s / demo model's train tiles/s (same tile and batch)

   says whether the pipeline can feed the GPU: below 1 the pipeline starves it
   (the GPU waits for tiles); 2-3x or more leaves headroom. Streaming or
   TFRecord-shard readers in ``unet_tf.data`` are measured when present
   ("not available" otherwise). Then ``model.fit`` of the demo model (mixed
   precision on a GPU) on the real pipeline against the cached tensors (one model,
   fitted on cached, real, then cached again): the ratio real / cached step
   time is the pipeline's overhead in training
   (1.0 = none; 2.0 = steps take twice as long because of the input).
4. Tiled prediction (``unet_tf.inference.predict_tiled``) of one 2048x2048 image
   with the demo model in float32, tile 512, batch 4 and 16, against one pass
   of the whole image through the model: seconds, median of 3 after a warm-up.
   The ratio tiled / full pass is the cost of the overlap and of host-side
   tiling and blending.

The results are printed as tables and written as JSON (``--out``; default
``$OUT/gpu_results.json`` when ``$OUT`` is set, else ``./gpu_results.json``),
rewritten after every section, so a run cut short still leaves its numbers.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import json
import os
import pkgutil
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import unet_tf  # noqa: E402
from unet_tf import losses, sizes  # noqa: E402
from unet_tf.models import UNet  # noqa: E402

START = time.perf_counter()

DEMO = dict(num_classes=1, depth=4, base_filters=16, padding="same", batch_norm=True, dropout=0.5,
            in_channels=1)
PAPER = dict(num_classes=2, depth=4, base_filters=64, padding="valid", batch_norm=False,
             in_channels=1)


# --------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - START:6.1f}s] {msg}", flush=True)


def elapsed() -> float:
    return time.perf_counter() - START


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    first = text.splitlines()[:3]
    return " | ".join(line.strip() for line in first)[:400]


def measure(record: dict, fn, *args, **kwargs) -> dict:
    """Runs ``fn``; its dict result goes into ``record``, an exception into ``record['error']``."""
    t0 = time.perf_counter()
    try:
        record.update(fn(*args, **kwargs) or {})
        record["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - one failure must not end the run
        record["status"] = "error"
        record["error"] = error_text(exc)
        log(f"  FAILED: {record['error']}")
        traceback.print_exc(limit=3, file=sys.stdout)
    finally:
        record["wall_s"] = round(time.perf_counter() - t0, 2)
        keras.mixed_precision.set_global_policy("float32")
        gc.collect()
    return record


def fresh_model(config: dict, policy: str):
    keras.backend.clear_session()  # also resets the dtype policy: set it afterwards
    gc.collect()
    keras.mixed_precision.set_global_policy(policy)
    return UNet(**config)


def conv_flops(cin, cout, k, out):
    return 2 * k * k * cin * cout * out * out


def unet_forward_flops(config: dict, size: int) -> float:
    """Forward FLOPs (2 per multiply-add) of one tile through a plain U-Net (transposed up-convs)."""
    depth, base, classes = config["depth"], config["base_filters"], config["num_classes"]
    trim = 2 if config["padding"] == "valid" else 0
    total, s, c = 0, size, config["in_channels"]
    for level in range(depth + 1):
        f = base * 2**level
        s -= trim
        total += conv_flops(c, f, 3, s)
        s -= trim
        total += conv_flops(f, f, 3, s)
        c = f
        if level < depth:
            s //= 2
    for level in reversed(range(depth)):
        f = base * 2**level
        total += 8 * c * f * s * s  # 2x2 transpose conv: 4 outputs per input pixel
        s *= 2
        s -= trim
        total += conv_flops(2 * f, f, 3, s)
        s -= trim
        total += conv_flops(f, f, 3, s)
        c = f
    return float(total + conv_flops(c, classes, 1, s))


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch; reading the loss at the end syncs the device."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs and "loss" in logs:
            float(logs["loss"])
        self.times.append(time.perf_counter() - self._t0)


def random_batch(config: dict, tile: int, batch: int, seed: int = 0):
    out = sizes.output_size(tile, config["depth"], config["padding"])
    rng = np.random.default_rng(seed)
    x = rng.random((batch, tile, tile, config["in_channels"]), dtype=np.float32)
    y = rng.integers(0, max(2, config["num_classes"]), (batch, out, out), dtype=np.int32)
    w = rng.uniform(0.5, 1.5, (batch, out, out)).astype(np.float32)
    return x, y, w


def cached_dataset(config: dict, tile: int, batch: int) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensors(random_batch(config, tile, batch)).repeat().prefetch(2)


def compile_model(model, jit: bool):
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.WeightedCrossEntropy(),
                  jit_compile=jit)


def timed_fit(model, ds, steps: int, epochs: int) -> list[float]:
    """Seconds per step of each epoch after the first (warm-up: tracing, autotuning)."""
    timer = EpochTimer()
    model.fit(ds, steps_per_epoch=steps, epochs=epochs + 1, verbose=0, callbacks=[timer], shuffle=False)
    return [t / steps for t in timer.times[1:]]


def step_stats(step_times: list[float], config: dict, tile: int, batch: int) -> dict:
    step = statistics.median(step_times)
    out = sizes.output_size(tile, config["depth"], config["padding"])
    flops = 3 * unet_forward_flops(config, tile) * batch
    return dict(step_ms=round(step * 1e3, 3), step_ms_epochs=[round(t * 1e3, 3) for t in step_times],
                tiles_per_s=round(batch / step, 2), out_mpx_per_s=round(batch * out * out / step / 1e6, 3),
                approx_tflops=round(flops / step / 1e12, 3))


def train_speed(config, tile, batch, policy, jit, steps, epochs) -> dict:
    model = fresh_model(config, policy)
    compile_model(model, jit)
    stats = step_stats(timed_fit(model, cached_dataset(config, tile, batch), steps, epochs),
                       config, tile, batch)
    stats["jit_compile_effective"] = bool(model.jit_compile)
    stats["params"] = int(model.count_params())
    return stats


def median_seconds(fn, repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up: tracing, autotuning
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def table(rows: list[list], headers: list[str]) -> str:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fmt(value, spec=".1f"):
    return "-" if value is None else format(value, spec)


# --------------------------------------------------------------------------- 1. hardware
def hardware() -> dict:
    gpus = tf.config.list_physical_devices("GPU")
    info = dict(tensorflow=tf.__version__, keras=keras.__version__, python=platform.python_version(),
                numpy=np.__version__, platform=platform.platform(), cpu_count=os.cpu_count(),
                unet_tf=getattr(unet_tf, "__version__", None), gpus=[])
    try:
        build = tf.sysconfig.get_build_info()
        info.update(cuda_build=build.get("cuda_version"), cudnn_build=build.get("cudnn_version"))
    except Exception as exc:  # noqa: BLE001
        info["build_info_error"] = error_text(exc)
    for gpu in gpus:
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except Exception as exc:  # noqa: BLE001
            details = {"error": error_text(exc)}
        cc = details.get("compute_capability")
        info["gpus"].append(dict(name=details.get("device_name", gpu.name),
                                 compute_capability=".".join(map(str, cc)) if cc else None))
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        if smi.returncode == 0:
            info["nvidia_smi"] = smi.stdout.strip()
    except Exception:  # noqa: BLE001 - no nvidia-smi on CPU machines
        pass
    return info


# --------------------------------------------------------------------------- 3. pipeline
def tiles_per_second(ds, warmup: int, batches: int, batch: int) -> dict:
    it = iter(ds)
    for _ in range(warmup):  # start the workers, let autotune settle, fill the prefetch buffer
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - t0
    return dict(tiles_per_s=round(batches * batch / seconds, 1), batches=batches, seconds=round(seconds, 3))


_EXTRA_PATTERN = re.compile(r"stream|shard|tfrecord|pack")
_UNRELATED = re.compile(r"rgb|unpack|key")


def extra_input_paths() -> dict:
    """Public functions in ``unet_tf.data`` that look like streaming or TFRecord-shard paths."""
    import unet_tf.data as data_pkg
    found = {}
    for mod in pkgutil.iter_modules(data_pkg.__path__):
        try:
            module = importlib.import_module(f"unet_tf.data.{mod.name}")
        except Exception:  # noqa: BLE001 - a module mid-move must not stop the benchmark
            continue
        for name, obj in vars(module).items():
            if (not name.startswith("_") and inspect.isfunction(obj) and obj.__module__ == module.__name__
                    and _EXTRA_PATTERN.search(name.lower()) and not _UNRELATED.search(name.lower())):
                found[f"{module.__name__}.{name}"] = obj
    return found


def try_extra_path(fn, bundle, folder, tmp, tile, batch, augment, warmup, batches) -> dict:
    """Calls ``fn`` with arguments matched by name; measures it when it returns a tf.data.Dataset."""
    known = dict(items=bundle.train, train=bundle.train, train_items=bundle.train, bundle=bundle,
                 data=bundle, root=folder, folder=folder, source=folder, data_dir=folder, path=folder,
                 out=tmp, output=tmp, dest=tmp, destination=tmp, out_dir=tmp, shard_dir=tmp,
                 tile_size=tile, batch_size=batch, depth=4, padding="same", augment=augment,
                 spec=bundle.spec, seed=0)
    kwargs, missing = {}, []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in known:
            kwargs[p.name] = known[p.name]
        elif p.default is p.empty:
            missing.append(p.name)
    if missing:
        return dict(note=f"found, not measured: needs {missing}")
    result = fn(**kwargs)
    if not isinstance(result, tf.data.Dataset):
        return dict(note=f"found, not measured: returns {type(result).__name__}, not a tf.data.Dataset")
    spec = result.element_spec
    first = spec[0] if isinstance(spec, (tuple, list)) else spec
    b = first.shape[0] if getattr(first, "shape", None) is not None and first.shape.rank else None
    return tiles_per_second(result, warmup, batches, int(b) if b else batch)


# --------------------------------------------------------------------------- main
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and few steps, to check the script on a CPU")
    default_out = os.path.join(os.environ.get("OUT") or ".", "gpu_results.json")
    parser.add_argument("--out", default=default_out, help=f"JSON results (default {default_out})")
    parser.add_argument("--no-xla", action="store_true", help="skip the XLA (jit_compile) variant")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds after which optional measurements are skipped (default 420)")
    args = parser.parse_args()

    gpu = bool(tf.config.list_physical_devices("GPU"))
    q = args.quick
    p = dict(  # sizes and step counts
        demo_tile=64 if q else 128, demo_batches=(4, 8) if q else (8, 64),
        paper_tile=188 if q else 572, paper_batches=(1,) if q else (1, 8),
        steps=3 if q else 30, paper_steps=2 if q else 20, epochs=2 if q else 3,
        data_n=8 if q else 40, data_size=128 if q else 256,
        pipe_warmup=2 if q else 10, pipe_batches=5 if q else 100,
        e2e_steps=3 if q else 30,
        image=512 if q else 2048, pred_tile=128 if q else 512, pred_batches=(4, 16), repeats=3)
    if not gpu and not q:
        log("warning: no GPU found; running the full sizes on the CPU will be slow")
    policies = ["float32", "mixed_float16"] if gpu else ["float32"]
    pipe_batch = p["demo_batches"][0]

    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    results: dict = dict(meta=dict(args=vars(args), params=p, gpu=gpu, policies=policies,
                                   started=time.strftime("%Y-%m-%d %H:%M:%S")),
                         hardware={}, train=[], pipeline={}, predict=[])

    def save():
        results["meta"]["elapsed_s"] = round(elapsed(), 1)
        out_path.write_text(json.dumps(results, indent=2, default=str))

    def time_left() -> float:
        return args.budget - elapsed()

    # ---- 1. hardware
    log("1/5 hardware")
    hw = results["hardware"] = measure({}, hardware)
    names = ", ".join(g["name"] for g in hw.get("gpus", [])) or "none"
    log(f"  GPU: {names}; TF {hw.get('tensorflow')}, Keras {hw.get('keras')}, "
        f"CUDA {hw.get('cuda_build')}, cuDNN {hw.get('cudnn_build')}, {hw.get('cpu_count')} CPUs")
    if not gpu:
        log("  no GPU: mixed_float16 skipped (slow on CPUs)")
    save()

    # ---- 2. training speed on cached tensors
    def train_case(section, model_name, config, tile, batch, policy, jit, steps):
        rec = dict(model=model_name, policy=policy, xla=jit, tile=tile,
                   out=sizes.output_size(tile, config["depth"], config["padding"]), batch=batch,
                   steps=steps, epochs=p["epochs"])
        log(f"{section} train {model_name} {tile}px batch {batch} {policy}{' XLA' if jit else ''}")
        measure(rec, train_speed, config, tile, batch, policy, jit, steps, p["epochs"])
        if rec["status"] == "ok":
            log(f"  {rec['step_ms']:.2f} ms/step, {rec['tiles_per_s']:.1f} tiles/s, "
                f"~{rec['approx_tflops']:.2f} TFLOP/s")
        results["train"].append(rec)
        save()
        return rec

    def find_train(model_name, policy, batch, xla=False):
        for r in results["train"]:
            if (r["model"], r["policy"], r["batch"], r["xla"]) == (model_name, policy, batch, xla) \
                    and r["status"] == "ok":
                return r
        return None

    for policy in policies:
        for batch in p["demo_batches"]:
            train_case("2/5", "demo", DEMO, p["demo_tile"], batch, policy, False, p["steps"])
    for policy in policies:
        for batch in p["paper_batches"]:
            if time_left() < 60:
                log(f"2/5 paper batch {batch} {policy}: skipped (time budget)")
                results["train"].append(dict(model="paper", policy=policy, xla=False, batch=batch,
                                             tile=p["paper_tile"], status="skipped: time budget"))
                continue
            train_case("2/5", "paper", PAPER, p["paper_tile"], batch, policy, False, p["paper_steps"])

    # ---- 3. input pipeline
    pipe = results["pipeline"]
    pipe.update(tile=p["demo_tile"], batch=pipe_batch, variants={}, ratios={}, extra_paths={})
    with tempfile.TemporaryDirectory() as tmp:
        bundle = folder = None
        try:
            from unet_tf import data
            from unet_tf.data import synthetic
            from unet_tf.data.augment import AugmentConfig
            log(f"3/5 pipeline: writing {p['data_n']} synthetic images of {p['data_size']}px")
            folder = synthetic.write_dataset(os.path.join(tmp, "cells"), n=p["data_n"],
                                             size=p["data_size"], seed=0) or os.path.join(tmp, "cells")
            t0 = time.perf_counter()
            bundle = data.load_data(folder)
            pipe["load_s"] = round(time.perf_counter() - t0, 2)
            pipe["train_images"] = len(bundle.train)
        except Exception as exc:  # noqa: BLE001
            pipe["error"] = error_text(exc)
            log(f"  FAILED: {pipe['error']}")

        def make_ds(augment=True, **kw):
            return data.train_dataset(bundle.train, tile_size=p["demo_tile"], batch_size=pipe_batch,
                                      depth=4, padding="same",
                                      augment=AugmentConfig() if augment else None,
                                      spec=bundle.spec, seed=0, **kw)

        if bundle is not None:
            variants = {"augmented, deterministic (default)": dict(),
                        "augmented, deterministic=False": dict(deterministic=False),
                        "no augmentation": dict(augment=False)}
            for name, kw in variants.items():
                log(f"3/5 pipeline tiles/s: {name}")
                rec = measure({}, lambda kw=kw: tiles_per_second(make_ds(**kw), p["pipe_warmup"],
                                                                 p["pipe_batches"], pipe_batch))
                if rec["status"] == "ok":
                    log(f"  {rec['tiles_per_s']:.1f} tiles/s")
                pipe["variants"][name] = rec
            base = pipe["variants"]["augmented, deterministic (default)"].get("tiles_per_s")
            for policy in policies:
                r = find_train("demo", policy, pipe_batch)
                if base and r:
                    pipe["ratios"][policy] = round(base / r["tiles_per_s"], 3)
            for policy, ratio in pipe["ratios"].items():
                log(f"  pipeline / demo train ({policy}, batch {pipe_batch}): {ratio:.2f}"
                    f"{'  <- the pipeline starves the GPU' if ratio < 1 else ''}")

            # streaming / TFRecord shards, when the package has them
            extras = extra_input_paths()
            if not extras:
                pipe["extra_paths"] = "not available"
                log("3/5 streaming / TFRecord-shard paths: not available")
            for qual, fn in extras.items():
                log(f"3/5 extra input path: {qual}")
                sub = os.path.join(tmp, "extra_" + qual.rsplit(".", 1)[-1])
                os.makedirs(sub, exist_ok=True)
                rec = measure({}, try_extra_path, fn, bundle, folder, sub, p["demo_tile"], pipe_batch,
                              AugmentConfig(), p["pipe_warmup"], p["pipe_batches"])
                log(f"  {rec.get('tiles_per_s', rec.get('note', rec.get('error')))}")
                pipe["extra_paths"][qual] = rec
            save()

            # end-to-end fit: real pipeline against cached random tensors, same model
            e2e_policy = "mixed_float16" if gpu else "float32"
            e2e = pipe["end_to_end"] = dict(policy=e2e_policy, batch=pipe_batch, steps=p["e2e_steps"],
                                            epochs=p["epochs"])
            if time_left() < 45:
                e2e["status"] = "skipped: time budget"
            else:
                log(f"3/5 end-to-end fit, demo model {e2e_policy}: cached tensors vs real pipeline")

                def end_to_end():
                    model = fresh_model(DEMO, e2e_policy)
                    compile_model(model, False)
                    # cached, real, cached: the cached runs bracket the real one, so a drift
                    # of the clock or of the load on the machine does not bias the ratio
                    cached_ds = cached_dataset(DEMO, p["demo_tile"], pipe_batch)
                    cached = timed_fit(model, cached_ds, p["e2e_steps"], p["epochs"])
                    real = timed_fit(model, make_ds(), p["e2e_steps"], p["epochs"])
                    cached += timed_fit(model, cached_ds, p["e2e_steps"], p["epochs"])
                    c, r = statistics.median(cached), statistics.median(real)
                    return dict(cached_step_ms=round(c * 1e3, 3), real_step_ms=round(r * 1e3, 3),
                                cached_tiles_per_s=round(pipe_batch / c, 1),
                                real_tiles_per_s=round(pipe_batch / r, 1),
                                real_over_cached=round(r / c, 3))
                measure(e2e, end_to_end)
                if e2e["status"] == "ok":
                    log(f"  cached {e2e['cached_step_ms']:.2f} ms/step, real {e2e['real_step_ms']:.2f} "
                        f"ms/step: real/cached {e2e['real_over_cached']:.2f}")
        save()

    # ---- 4. tiled prediction
    from unet_tf.inference import predict_tiled
    size = p["image"]
    image = np.random.default_rng(0).random((size, size), dtype=np.float32)
    holder = {}

    def pred_model():
        if "model" not in holder:
            holder["model"] = fresh_model(DEMO, "float32")
        return holder["model"]

    for batch in p["pred_batches"]:
        rec = dict(kind="tiled", image=size, tile=p["pred_tile"], batch=batch, policy="float32")
        if time_left() < 30:
            rec["status"] = "skipped: time budget"
        else:
            log(f"4/5 predict_tiled {size}px, tile {p['pred_tile']}, batch {batch}")

            def tiled(batch=batch):
                model = pred_model()
                med, times = median_seconds(lambda: predict_tiled(model, image, tile_size=p["pred_tile"],
                                                                  batch_size=batch), p["repeats"])
                return dict(seconds=round(med, 4), seconds_all=[round(t, 4) for t in times],
                            mpx_per_s=round(size * size / med / 1e6, 2))
            measure(rec, tiled)
            if rec["status"] == "ok":
                log(f"  {rec['seconds']:.3f} s")
        results["predict"].append(rec)
        save()

    rec = dict(kind="full pass", image=size, tile=size, batch=1, policy="float32")
    if time_left() < 30:
        rec["status"] = "skipped: time budget"
    else:
        log(f"4/5 one full pass of the {size}px image")

        def full_pass():
            model = pred_model()
            fn = tf.function(lambda x: model(x, training=False))
            x = image[None, ..., None]
            med, times = median_seconds(lambda: fn(tf.constant(x)).numpy(), p["repeats"])
            return dict(seconds=round(med, 4), seconds_all=[round(t, 4) for t in times],
                        mpx_per_s=round(size * size / med / 1e6, 2))
        measure(rec, full_pass)
        if rec["status"] == "ok":
            log(f"  {rec['seconds']:.3f} s")
    results["predict"].append(rec)
    holder.clear()
    save()

    # ---- 5. XLA (optional, last)
    xla_policy = "mixed_float16" if gpu else "float32"
    if args.no_xla:
        results["xla"] = "skipped: --no-xla"
        log("5/5 XLA: skipped (--no-xla)")
    else:
        xla_batches = p["demo_batches"] if gpu else p["demo_batches"][:1]
        for batch in xla_batches:
            if time_left() < 75:
                log(f"5/5 XLA demo batch {batch}: skipped (time budget)")
                results["train"].append(dict(model="demo", policy=xla_policy, xla=True, batch=batch,
                                             tile=p["demo_tile"], status="skipped: time budget"))
                continue
            train_case("5/5", "demo", DEMO, p["demo_tile"], batch, xla_policy, True, p["steps"])

    results["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    report(results, p, policies, pipe_batch)
    log(f"done in {elapsed():.0f} s; results in {out_path}")


def report(results, p, policies, pipe_batch):
    hw = results["hardware"]
    print()
    print("=" * 78)
    gpus = ", ".join(f"{g['name']} (cc {g['compute_capability']})" for g in hw.get("gpus", [])) or "none"
    print(f"GPU: {gpus}")
    print(f"TensorFlow {hw.get('tensorflow')}, Keras {hw.get('keras')}, CUDA {hw.get('cuda_build')}, "
          f"cuDNN {hw.get('cudnn_build')}, {hw.get('cpu_count')} CPUs, Python {hw.get('python')}")
    if hw.get("nvidia_smi"):
        print(f"nvidia-smi: {hw['nvidia_smi']}")

    print("\nTraining, model.fit on cached random tensors (median of epochs after a warm-up one)")
    rows = []
    for r in results["train"]:
        xla_speedup = None
        if r.get("xla") and r.get("status") == "ok":
            base = next((b for b in results["train"] if b["model"] == r["model"] and b["batch"] == r["batch"]
                         and b["policy"] == r["policy"] and not b["xla"] and b.get("status") == "ok"), None)
            xla_speedup = base and round(base["step_ms"] / r["step_ms"], 2)
        rows.append([r["model"], f"{r.get('tile')}->{r.get('out', '?')}", r["batch"], r["policy"],
                     "yes" if r.get("xla") else "no", fmt(r.get("step_ms"), ".2f"),
                     fmt(r.get("tiles_per_s")), fmt(r.get("out_mpx_per_s"), ".2f"),
                     fmt(r.get("approx_tflops"), ".2f"), fmt(xla_speedup, ".2f"),
                     r.get("status") if r.get("status") != "ok" else "ok"])
    print(table(rows, ["model", "tile", "batch", "policy", "XLA", "ms/step", "tiles/s", "Mpx/s",
                       "~TFLOP/s", "XLA x", "status"]))

    pipe = results["pipeline"]
    print(f"\nInput pipeline (train_dataset, tile {pipe.get('tile')}, batch {pipe.get('batch')}, "
          f"{pipe.get('train_images', '?')} training images)")
    if pipe.get("error"):
        print(f"  FAILED: {pipe['error']}")
    rows = [[name, fmt(v.get("tiles_per_s")), v.get("status")]
            for name, v in pipe.get("variants", {}).items()]
    extras = pipe.get("extra_paths")
    if isinstance(extras, dict):
        rows += [[name, fmt(v.get("tiles_per_s")), v.get("note") or v.get("error") or v.get("status")]
                 for name, v in extras.items()]
    else:
        rows.append(["streaming / TFRecord shards", "-", extras or "not available"])
    print(table(rows, ["variant", "tiles/s", "status"]))
    for policy in policies:
        ratio = pipe.get("ratios", {}).get(policy)
        verdict = "" if ratio is None else ("  (starves the GPU)" if ratio < 1 else "  (keeps up)")
        print(f"  pipeline / demo train tiles/s, {policy}, batch {pipe_batch}: {fmt(ratio, '.2f')}{verdict}")
    e2e = pipe.get("end_to_end")
    if e2e:
        if e2e.get("status") == "ok":
            print(f"  model.fit demo {e2e['policy']}: cached {e2e['cached_step_ms']:.2f} ms/step "
                  f"({e2e['cached_tiles_per_s']:.0f} tiles/s), "
                  f"real pipeline {e2e['real_step_ms']:.2f} ms/step "
                  f"({e2e['real_tiles_per_s']:.0f} tiles/s): real/cached {e2e['real_over_cached']:.2f}")
        else:
            print(f"  model.fit end to end: {e2e.get('status')} {e2e.get('error', '')}")

    print(f"\nPrediction, demo model float32, one {p['image']}x{p['image']} image (median of {p['repeats']})")
    full = next((r for r in results["predict"] if r["kind"] == "full pass" and r.get("status") == "ok"), None)
    rows = []
    for r in results["predict"]:
        rel = full and r.get("seconds") and round(r["seconds"] / full["seconds"], 2)
        rows.append([r["kind"], r["tile"], r["batch"], fmt(r.get("seconds"), ".3f"), fmt(r.get("mpx_per_s")),
                     fmt(rel, ".2f"), r.get("status")])
    print(table(rows, ["kind", "tile", "batch", "seconds", "Mpx/s", "x full", "status"]))
    print("=" * 78)


if __name__ == "__main__":
    main()
