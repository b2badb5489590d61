"""Does the plan train well with no tuning, and does it hold its time budget? One run, ratios.

    python benchmarks/plan_quality.py [--budget 3m] [--datasets lateral,street,micro16,small]

1. Quality: on each look-alike of ``benchmarks/lookalikes.py`` the CLI runs
   twice with the same ``--time-budget``: with only ``--data`` (the plan), and
   with the fixed defaults (``--no-plan``) plus the hand-tuned options that
   suit that dataset (no flips where labels are lateral or upright). Both are
   scored on the whole validation images (``report.json``): mean foreground
   dice, and each class's dice.
2. Budget: the plan on 3, 40 and 400 images of the built-in cells (128 px),
   planned against actual training seconds.

Prints a table and writes ``plan_quality.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from lookalikes import HAND_TUNED, WRITERS  # noqa: E402

from unet_tf.data.synthetic import write_dataset  # noqa: E402

TRAIN = [sys.executable, str(Path(__file__).resolve().parents[1] / "train.py")]


def _train(data: Path, out: Path, budget: str, extra: list[str]) -> dict:
    started = time.monotonic()
    proc = subprocess.run(TRAIN + ["--data", str(data), "--out", str(out), "--time-budget", budget,
                                   "--verbose", "2", *extra], capture_output=True, text=True)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        return {"error": proc.stderr[-1500:], "seconds": seconds}
    report = json.loads((out / "report.json").read_text())
    return {"seconds": round(seconds, 1), "dice_fg": report.get("dice_foreground", report["dice"]),
            "dice_per_class": report["dice_per_class"], "classes": report.get("class_names"),
            "timing": report.get("timing", {})}


def quality(tmp: Path, budget: str, names: list[str]) -> dict:
    results = {}
    for name in names:
        data = WRITERS[name](tmp / name)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: plan", flush=True)
        planned = _train(data, tmp / f"{name}-plan", budget, [])
        print(f"[{time.strftime('%H:%M:%S')}] {name}: fixed defaults + {HAND_TUNED[name]}", flush=True)
        fixed = _train(data, tmp / f"{name}-fixed", budget,
                       ["--no-plan", "--epochs", "100000", *HAND_TUNED[name]])
        results[name] = {"plan": planned, "hand_tuned": fixed, "hand_tuned_options": HAND_TUNED[name]}
        print(json.dumps(results[name]), flush=True)
    return results


def budget_held(tmp: Path, budget: str, sizes=(3, 40, 400)) -> dict:
    results = {}
    for n in sizes:
        data = write_dataset(tmp / f"cells{n}", n=n, size=128, seed=n, val_fraction=0.25)
        print(f"[{time.strftime('%H:%M:%S')}] budget: {n} images", flush=True)
        run = _train(data, tmp / f"budget{n}", budget, [])
        timing = run.get("timing", {})
        planned, actual = timing.get("planned_train_seconds"), timing.get("train_seconds")
        results[n] = {**run, "planned": planned, "actual": actual,
                      "ratio": round(actual / planned, 3) if planned and actual else None}
        print(json.dumps(results[n]), flush=True)
    return results


def _table(quality_results: dict, budget_results: dict, budget: str, budget_check: str) -> str:
    lines = [f"Quality at --time-budget {budget} (mean foreground dice on the validation images)",
             f"{'dataset':10} {'plan':>8} {'hand-tuned defaults':>20}  options"]
    for name, r in quality_results.items():
        p, f = r["plan"].get("dice_fg"), r["hand_tuned"].get("dice_fg")
        fmt = lambda v: "failed" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"{name:10} {fmt(p):>8} {fmt(f):>20}  {' '.join(r['hand_tuned_options']) or '-'}")
    lines += ["", f"Budget held (plan, --time-budget {budget_check})",
              f"{'images':>6} {'planned s':>10} {'actual s':>9} {'actual/planned':>15} {'whole run s':>12}"]
    for n, r in budget_results.items():
        lines.append(f"{n:>6} {r.get('planned') or '-':>10} {r.get('actual') or '-':>9} "
                     f"{r.get('ratio') or '-':>15} {r.get('seconds', '-'):>12}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", default="3m")
    parser.add_argument("--budget-check", default="2m")
    parser.add_argument("--datasets", default=",".join(WRITERS))
    parser.add_argument("--skip-budget", action="store_true")
    parser.add_argument("--out", default="plan_quality.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        q = quality(Path(tmp), args.budget, args.datasets.split(","))
        b = {} if args.skip_budget else budget_held(Path(tmp), args.budget_check)
    Path(args.out).write_text(json.dumps({"quality": q, "budget": b}, indent=2))
    print(_table(q, b, args.budget, args.budget_check))


if __name__ == "__main__":
    main()
