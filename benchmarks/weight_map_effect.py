"""Does the U-Net weight map separate touching cells? python benchmarks/weight_map_effect.py

Trains the demo configuration twice from the same seed and budget (80 epochs,
about 15 minutes on 2 cores), with the
paper's weight map (w0=10, sigma=5) and without it (class balance only:
--w0 0), then counts objects on the validation images after connected
components: matched, split, merged and missed cells at IoU 0.5.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from unet_tf import training  # noqa: E402
from unet_tf.data import synthetic  # noqa: E402
from unet_tf.config import TrainConfig  # noqa: E402
from unet_tf.evaluate import evaluate_folder  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic.write_dataset(os.path.join(tmp, "cells"), n=args.images, size=256, seed=args.seed)
        for name, w0 in (("with weight map (w0=10)", 10.0), ("without border term (w0=0)", 0.0)):
            cfg = TrainConfig(plan=False, data=str(root), out=os.path.join(tmp, f"run-{w0}"), epochs=args.epochs,
                              w0=w0, seed=args.seed, verbose=0)
            result = training.train(cfg)
            # Connected components only: does the network draw the walls itself?
            ev = evaluate_folder(result.best_model, root, split="val",
                                 out=os.path.join(tmp, f"eval-{w0}.json"),
                                 instance_method="components", min_size=0)
            shed = evaluate_folder(result.best_model, root, split="val",
                                   out=os.path.join(tmp, f"eval-ws-{w0}.json"))
            m, w = ev["object_metrics"], shed["object_metrics"]
            rows[name] = dict(dice=ev["dice"], f1=m["f1"], mean_ap=m["mean_ap"],
                              f1_watershed=w["f1"], mean_ap_watershed=w["mean_ap"], **ev["objects"])
    keys = ("dice", "f1", "mean_ap", "f1_watershed", "mean_ap_watershed", "true_objects",
            "matched", "merged")
    print(f"\n{args.epochs} epochs, seed {args.seed}, validation images of the synthetic cells")
    print(f"{'':28s}" + "".join(f"{k:>16s}" for k in keys))
    for name, row in rows.items():
        print(f"{name:28s}" + "".join(f"{row[k]:16d}" if isinstance(row[k], int) else f"{row[k]:16.4f}"
                                      for k in keys))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
