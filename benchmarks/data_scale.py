"""Larger-than-memory data, measured in one run: python benchmarks/data_scale.py

For 100, 400 and 1,600 synthetic images of 512x512 (``write_dataset(root, n,
size=512)``; generated once, the smaller sets are hard links to the first
images of the largest) and three ways to read them (a folder in memory, a
folder streamed, TFRecord shards streamed), each in a fresh process:

- peak memory (``VmHWM`` of that process);
- time to the first batch and to the first training step of the demo model
  (building and tracing it included), from the start of reading the data
  (the imports of Python and TensorFlow, the same for every path, are
  reported apart);
- steady-state tiles per second of the training pipeline alone (the demo
  configuration: 128 px tiles, batch 8, augmentation and weight maps on).

Also: the time ``unet-tf pack`` takes, the peak memory of ``check-data``, and
the demo model's own training rate (tiles per second on a cached batch).
Targets: streamed and sharded peak memory within 1.2x from 100 to 1,600
images; their time to the first step under 10 s; their tiles per second at
least 0.8x the in-memory path's and at least 3x the model's rate.
"""
from __future__ import annotations

import time

_STARTED = time.time()  # before the imports: the child's time to the first step counts them

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _peak() -> int:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux keeps
    that across ``exec``, so a child would report its parent's size at the fork."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --------------------------------------------------------------------------- children
def child_train(mode: str, root: str, batches: int) -> dict:
    import keras

    from unet_tf import training
    from unet_tf.config import TrainConfig
    from unet_tf.data import pipeline, streaming
    imported = time.time()
    cfg = TrainConfig()
    bundle = streaming.open_data(root, data_path="memory" if mode == "memory" else "stream",
                                 log=lambda *_: None)
    opened = time.time()
    ds = pipeline.train_dataset(bundle.train, tile_size=cfg.tile_size, batch_size=cfg.batch_size,
                                depth=cfg.depth, augment=cfg.augment_config(), spec=bundle.spec,
                                weight_map=pipeline.WeightMapConfig(), seed=0)
    it = iter(ds)
    x, y, w = next(it)
    first_batch = time.time()
    keras.utils.set_random_seed(0)
    model = training.build_model(cfg, bundle.num_classes, bundle.in_channels)
    training.compile_model(model, cfg, bundle.ignore_index)
    model.train_on_batch(x, y, sample_weight=w)  # the first step, on the first batch
    first_step = time.time()
    for _ in range(10):  # the workers busy, the buffers full
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * cfg.batch_size / (time.perf_counter() - start)
    return {"imports_s": imported - _STARTED, "open_s": opened - imported,
            "first_batch_s": first_batch - imported, "first_step_s": first_step - imported,
            "tiles_per_s": rate, "peak": _peak(), "type": type(bundle).__name__}


def child_model() -> dict:
    import keras
    import numpy as np

    from unet_tf import training
    from unet_tf.config import TrainConfig
    cfg = TrainConfig()
    keras.utils.set_random_seed(0)
    model = training.build_model(cfg, 1, 1)
    training.compile_model(model, cfg, 255)
    x = np.random.default_rng(0).random((cfg.batch_size, cfg.tile_size, cfg.tile_size, 1), np.float32)
    y = (x[..., 0] > 0.5).astype("int32")
    model.fit(x, y, batch_size=cfg.batch_size, epochs=1, verbose=0)
    steps = 20
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return {"tiles_per_s": steps * cfg.batch_size / (time.perf_counter() - start)}


def child_check(root: str) -> dict:
    from unet_tf.data.check import check_dataset
    start = time.perf_counter()
    report = check_dataset(root)
    return {"seconds": time.perf_counter() - start, "peak": _peak(), "ok": report.ok}


def run_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if done.returncode:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- data
def make_sets(tmp: Path, sizes: list[int]) -> dict[int, Path]:
    """The largest set generated once; the others hard links to its first images
    (train and val in the same 3:1 proportion)."""
    from unet_tf.data import synthetic
    largest = max(sizes)
    full = tmp / f"cells{largest}"
    if not full.exists():
        start = time.perf_counter()
        synthetic.write_dataset(full, n=largest, size=512, seed=0)
        print(f"generated {largest} images of 512x512 in {time.perf_counter() - start:.0f} s",
              flush=True)
    sets = {largest: full}
    train_all = sorted((full / "train" / "images").iterdir())
    val_all = sorted((full / "val" / "images").iterdir())
    for n in sizes:
        if n == largest:
            continue
        root = tmp / f"cells{n}"
        if not root.exists():
            n_val = round(n * len(val_all) / largest)
            for split, names in (("train", train_all[:n - n_val]), ("val", val_all[:n_val])):
                for kind in ("images", "masks", "instances"):
                    (root / split / kind).mkdir(parents=True, exist_ok=True)
                    for path in names:
                        os.link(full / split / kind / path.name, root / split / kind / path.name)
        sets[n] = root
    return sets


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400, 1600])
    parser.add_argument("--batches", type=int, default=60, help="batches timed per pipeline")
    parser.add_argument("--cache", default=None,
                        help="keep the generated data here (default: a temporary folder)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = (child_train(rest[0], rest[1], int(rest[2])) if kind == "train" else
                  child_model() if kind == "model" else child_check(rest[0]))
        print(json.dumps(result))
        return

    tmp = Path(args.cache or tempfile.mkdtemp(prefix="unet-tf-data-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        sets = make_sets(tmp, args.sizes)
        from unet_tf.data import shards
        packed, pack_s = {}, {}
        for n, root in sets.items():
            out = tmp / f"shards{n}"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            shards.pack(root, out, log=lambda *_: None)
            pack_s[n] = time.perf_counter() - start
            packed[n] = out
            print(f"packed {n} images in {pack_s[n]:.1f} s", flush=True)
        model = run_child("model")
        rows = {}
        for n in sorted(sets):
            for mode, root in (("memory", sets[n]), ("stream", sets[n]), ("shards", packed[n])):
                rows[(n, mode)] = run_child("train", mode, str(root), str(args.batches))
                print(n, mode, json.dumps(rows[(n, mode)]), flush=True)
        checks = {n: run_child("check", str(sets[n])) for n in (min(sets), max(sets))}
    finally:
        if not args.cache:
            shutil.rmtree(tmp, ignore_errors=True)

    names = {"memory": "folder, in memory", "stream": "folder, streamed", "shards": "shards, streamed"}
    print("\n| images (512x512) | path | peak memory | first batch | first step | with imports | "
          "tiles/s | x in-memory | x model |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (n, mode), r in sorted(rows.items(), key=lambda kv: (kv[0][0], list(names).index(kv[0][1]))):
        ref = rows[(n, "memory")]["tiles_per_s"]
        print(f"| {n} | {names[mode]} | {r['peak'] / 2**30:.2f} GiB | {r['first_batch_s']:.1f} s | "
              f"{r['first_step_s']:.1f} s | {r['first_step_s'] + r['imports_s']:.1f} s | "
              f"{r['tiles_per_s']:.0f} | {r['tiles_per_s'] / ref:.2f}x | "
              f"{r['tiles_per_s'] / model['tiles_per_s']:.0f}x |")
    imports = [r["imports_s"] for r in rows.values()]
    print(f"\nPython and TensorFlow imports before that: {min(imports):.1f}-{max(imports):.1f} s.")
    lo, hi = min(sets), max(sets)
    print(f"\nDemo model training rate: {model['tiles_per_s']:.1f} tiles/s (cached batch).")
    for mode in ("memory", "stream", "shards"):
        ratio = rows[(hi, mode)]["peak"] / rows[(lo, mode)]["peak"]
        print(f"Peak memory {hi} / {lo} images, {names[mode]}: {ratio:.2f}x")
    print("pack: " + ", ".join(f"{n} images {s:.0f} s" for n, s in sorted(pack_s.items())))
    print("check-data: " + ", ".join(f"{n} images {c['seconds']:.0f} s, peak "
                                     f"{c['peak'] / 2**30:.2f} GiB" for n, c in sorted(checks.items())))
    print(f"Whole benchmark: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
