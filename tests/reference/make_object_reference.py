"""Record StarDist's object metrics on test pairs, for ``tests/test_objects.py``.

The test suite does not need StarDist: it compares ``unet_tf.objects`` with
the numbers recorded here. To regenerate them (outside the project's venv)::

    python3 -m venv /tmp/stardist-venv
    /tmp/stardist-venv/bin/pip install stardist      # numpy, scipy, numba, csbdeep
    /tmp/stardist-venv/bin/python tests/reference/make_object_reference.py

Writes, next to this file, ``object_reference.npz`` (the instance-map pairs,
64 x 64, compressed) and ``object_reference.json`` (per pair StarDist's
``matching``, for the whole set ``matching_dataset(..., by_image=False)``,
and the versions used). The pairs are built with numpy only, from fixed seeds.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

SIZE = 64
#: Below 0.5 StarDist's optimal assignment matters; 0.5..0.95 are the usual ones.
THRESHOLDS = (0.1, 0.3) + tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- shapes
def disc(cy: float, cx: float, r: float, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def paint(shapes, ids, dtype=np.uint16) -> np.ndarray:
    """Instance map from boolean masks (later shapes drawn over earlier ones)."""
    out = np.zeros((SIZE, SIZE), dtype)
    for mask, i in zip(shapes, ids):
        out[mask] = i
    return out


def box(y0, y1, x0, x1) -> np.ndarray:
    out = np.zeros((SIZE, SIZE), bool)
    out[y0:y1, x0:x1] = True
    return out


# --------------------------------------------------------------------------- pairs
def random_blobs(seed: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Random discs with gapped ids; the prediction moves, resizes, drops and adds some."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 14))
    top = 250 if dtype == np.uint8 else 3000
    t_ids = rng.choice(np.arange(1, top), n, replace=False)
    p_ids = rng.choice(np.arange(1, top), n + 4, replace=False)
    centres = rng.uniform(6, SIZE - 6, (n, 2))
    radii = rng.uniform(3, 9, n)
    truth = paint([disc(cy, cx, r) for (cy, cx), r in zip(centres, radii)], t_ids, dtype)
    shapes = [disc(cy + rng.integers(-3, 4), cx + rng.integers(-3, 4), max(r + rng.uniform(-2, 2), 1))
              for (cy, cx), r in zip(centres, radii) if rng.random() < 0.8]
    shapes += [disc(*rng.uniform(4, SIZE - 4, 2), rng.uniform(2, 5)) for _ in range(int(rng.integers(0, 4)))]
    return truth, paint(shapes, p_ids[:len(shapes)], dtype)


def crowded(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping rectangles drawn over each other: many low, ambiguous IoUs."""
    rng = np.random.default_rng(100 + seed)

    def rects(n):
        out = []
        for _ in range(n):
            y, x = rng.integers(0, SIZE - 12, 2)
            out.append(box(y, y + int(rng.integers(6, 20)), x, x + int(rng.integers(6, 20))))
        return out

    truth = paint(rects(14), rng.permutation(np.arange(1, 15)) * 7)
    return truth, paint(rects(18), np.arange(1, 19))


def gap_ids() -> tuple[np.ndarray, np.ndarray]:
    truth = paint([disc(15, 15, 8), disc(40, 20, 6), disc(30, 48, 10)], [3, 17, 183], np.uint8)
    pred = paint([disc(16, 15, 8), disc(40, 23, 6), disc(30, 44, 9)], [1, 2, 3], np.uint8)
    return truth, pred


def touching_rects() -> tuple[np.ndarray, np.ndarray]:
    """A grid of rectangles sharing borders; the prediction's borders moved by 2 px."""
    t_shapes, p_shapes = [], []
    for r in range(4):
        for c in range(4):
            t_shapes.append(box(16 * r, 16 * r + 16, 16 * c, 16 * c + 16))
            p_shapes.append(box(16 * r + 2, 16 * r + 18, 16 * c + 2 * (r % 2), 16 * c + 16 + 2 * (r % 2)))
    return paint(t_shapes, range(1, 17)), paint(p_shapes, range(5, 21))


def shifted_sweep() -> tuple[np.ndarray, np.ndarray]:
    """Eight 10 x 10 squares, the prediction's shifted by 0..7 px (IoU 1 down to 0.18)."""
    t_shapes, p_shapes = [], []
    for k in range(8):
        y, x = 4 + 30 * (k // 4), 2 + 15 * (k % 4)
        t_shapes.append(box(y, y + 10, x, x + 10))
        p_shapes.append(box(y + k, y + 10 + k, x, x + 10))
    return paint(t_shapes, range(1, 9)), paint(p_shapes, range(1, 9))


def exact_ties() -> tuple[np.ndarray, np.ndarray]:
    """10 x 10 truths, each holding a prediction of 55, 60, ..., 95 pixels: IoU exactly k/100."""
    truth = np.zeros((SIZE, SIZE), np.uint16)
    pred = np.zeros((SIZE, SIZE), np.uint16)
    for k, area in enumerate(range(55, 100, 5)):
        y, x = 2 + 20 * (k // 3), 2 + 20 * (k % 3)
        truth[y:y + 10, x:x + 10] = k + 1
        inside = np.zeros(100, bool)
        inside[:area] = True
        pred[y:y + 10, x:x + 10][inside.reshape(10, 10)] = 50 + k
    return truth, pred


def tiny() -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((SIZE, SIZE), np.uint16)
    pred = np.zeros((SIZE, SIZE), np.uint16)
    truth[5, 5] = 1                                  # one pixel, found exactly
    pred[5, 5] = 9
    truth[10, 10:12] = 2                             # two pixels, half found (IoU 0.5)
    pred[10, 11] = 8
    truth[20:22, 20:22] = 3                          # four pixels, shifted by one
    pred[21:23, 20:22] = 7
    truth[40, 40] = 4                                # missed
    pred[50, 50] = 6                                 # false positive
    return truth, pred


def ambiguous() -> tuple[np.ndarray, np.ndarray]:
    """Below IoU 0.5 the greedy choice is worse than the optimal assignment."""
    truth = paint([box(0, 10, 0, 20), box(10, 20, 0, 20)], [1, 2])
    pred = paint([box(3, 14, 0, 20), box(0, 5, 0, 20)], [1, 2])
    return truth, pred


def split_halves() -> tuple[np.ndarray, np.ndarray]:
    """A 10 x 10 truth and two 5 x 10 halves: both IoU exactly 0.5, one may match."""
    truth = paint([box(10, 20, 10, 20), box(30, 50, 30, 50)], [1, 2])
    pred = paint([box(10, 15, 10, 20), box(15, 20, 10, 20), box(30, 50, 30, 42), box(30, 50, 42, 50)],
                 [4, 5, 6, 7])
    return truth, pred


def merged() -> tuple[np.ndarray, np.ndarray]:
    truth = paint([disc(20, 20, 8), disc(20, 37, 8), disc(45, 45, 6)], [10, 20, 30])
    pred = paint([disc(20, 20, 8) | disc(20, 37, 8) | box(17, 23, 20, 37), disc(45, 46, 6)], [1, 2])
    return truth, pred


def many_gapped() -> tuple[np.ndarray, np.ndarray]:
    """29 small squares with ids up to 183; the prediction shifts every third one."""
    rng = np.random.default_rng(7)
    ids = np.sort(rng.choice(np.arange(1, 184), 29, replace=False))
    ids[-1] = 183
    t_shapes, p_shapes = [], []
    for k in range(29):
        y, x = 1 + 11 * (k // 6), 1 + 10 * (k % 6)
        t_shapes.append(box(y, y + 8, x, x + 8))
        p_shapes.append(box(y + 3 * (k % 3 == 0), y + 8, x, x + 8 - (k % 4 == 1)))
    return paint(t_shapes, ids, np.uint8), paint(p_shapes, rng.permutation(29) + 1, np.uint8)


def pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = [(f"random_blobs_{s}", *random_blobs(s, dt))
           for s, dt in enumerate([np.uint8, np.uint16, np.uint16, np.int32, np.int32, np.uint16])]
    out += [(f"crowded_{s}", *crowded(s)) for s in range(3)]
    objects = paint([disc(20, 20, 8), disc(44, 40, 10)], [2, 5])
    empty = np.zeros((SIZE, SIZE), np.uint16)
    out += [
        ("gap_ids_3_17_183", *gap_ids()),
        ("touching_rects", *touching_rects()),
        ("empty_truth", empty, objects),
        ("empty_pred", objects, empty.copy()),
        ("both_empty", empty.copy(), empty.copy()),
        ("split_halves", *split_halves()),
        ("merged_two", *merged()),
        ("shifted_sweep", *shifted_sweep()),
        ("exact_ties", *exact_ties()),
        ("tiny_objects", *tiny()),
        ("ambiguous_low_iou", *ambiguous()),
        ("many_gapped_ids", *many_gapped()),
        ("uint16_large_ids", paint([disc(15, 15, 8), disc(45, 20, 7), disc(30, 48, 9)],
                                   [300, 40000, 65535]),
         paint([disc(15, 17, 8), disc(45, 20, 5), disc(30, 48, 9)], [65534, 256, 1000])),
        ("int32_huge_ids", paint([disc(15, 15, 8), disc(45, 45, 12)], [70000, 5_000_000], np.int32),
         paint([disc(16, 15, 8), disc(45, 42, 12)], [9_999_999, 3], np.int32)),
        ("identical_permuted", objects, paint([disc(20, 20, 8), disc(44, 40, 10)], [9, 1])),
        ("pred_everywhere", objects, np.ones((SIZE, SIZE), np.uint16)),
        ("whole_image_truth", np.ones((SIZE, SIZE), np.uint16),
         paint([box(0, 64, 0, 32), box(0, 64, 32, 64)], [1, 2])),
    ]
    return out


# --------------------------------------------------------------------------- record
def plain(stats) -> dict:
    """A StarDist namedtuple as JSON-friendly Python numbers."""
    out = {}
    for key, value in stats._asdict().items():
        if isinstance(value, (str, bool)):
            out[key] = value
        elif isinstance(value, (int, np.integer)):
            out[key] = int(value)
        else:
            out[key] = float(value)
    return out


def to_json(record: dict) -> str:
    """Indented JSON with each StarDist result on one line (short, diff-friendly)."""
    def dump(value, indent: str) -> str:
        if isinstance(value, dict) and "tp" in value:
            return json.dumps(value)
        if isinstance(value, dict):
            items = [f"{indent} {json.dumps(k)}: {dump(v, indent + ' ')}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + f"\n{indent}}}"
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = [f"{indent} {dump(v, indent + ' ')}" for v in value]
            return "[\n" + ",\n".join(items) + f"\n{indent}]"
        return json.dumps(value)
    return dump(record, "") + "\n"


def main() -> None:
    import stardist
    from stardist.matching import matching, matching_dataset

    cases = pairs()
    truths = [t for _, t, _ in cases]
    preds = [p for _, _, p in cases]
    record = {
        "about": "StarDist object metrics on the pairs in object_reference.npz; "
                 "made by make_object_reference.py",
        "stardist_version": stardist.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "thresholds": list(THRESHOLDS),
        "pairs": [{"name": name, "dtype": str(t.dtype),
                   "matching": [plain(s) for s in matching(t, p, thresh=THRESHOLDS)]}
                  for name, t, p in cases],
        "dataset": [plain(s) for s in matching_dataset(truths, preds, thresh=THRESHOLDS,
                                                       by_image=False, show_progress=False)],
    }
    arrays = {"names": np.array([name for name, _, _ in cases])}
    for k, (_, t, p) in enumerate(cases):
        arrays[f"truth_{k:02d}"] = t
        arrays[f"pred_{k:02d}"] = p
    np.savez_compressed(HERE / "object_reference.npz", **arrays)
    (HERE / "object_reference.json").write_text(to_json(record))
    print(f"{len(cases)} pairs, stardist {stardist.__version__}: "
          f"{HERE / 'object_reference.npz'}, {HERE / 'object_reference.json'}")


if __name__ == "__main__":
    main()
