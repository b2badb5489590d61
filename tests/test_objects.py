"""unet_tf.objects: instance ids, StarDist-compatible object metrics, instance maps.

numpy/scipy/OpenCV only: no TensorFlow here. The StarDist numbers come from
``tests/reference`` (recorded by ``make_object_reference.py``), so StarDist
itself is not needed.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from unet_tf.objects import (
    DEFAULT_THRESHOLDS,
    ObjectMetrics,
    count_objects,
    instance_colors,
    match_objects,
    object_diagnosis,
    outline_overlay,
    present_ids,
    relabel_sequential,
    to_instances,
    validate_instances,
)

REFERENCE = Path(__file__).parent / "reference"
COUNTS = ("tp", "fp", "fn", "n_true", "n_pred")
COUNT_RATIOS = ("precision", "recall", "f1", "accuracy")
# StarDist adds its float32 IoUs in float32; ours are added in float64.
IOU_RATIOS = ("mean_true_score", "mean_matched_score", "panoptic_quality")


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def gapped_map(n=29, top=183, seed=0):
    """n 6 x 6 squares whose ids are n distinct values up to ``top``."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(np.arange(1, top), n - 1, replace=False))
    ids = np.append(ids, top)
    out = np.zeros((64, 80), np.uint8)
    for k, i in enumerate(ids):
        y, x = 1 + 10 * (k // 8), 1 + 10 * (k % 8)
        out[y:y + 6, x:x + 6] = i
    return out, ids


# --------------------------------------------------------------------------- ids
def test_gapped_ids_are_counted_as_present_not_max():
    inst, ids = gapped_map()
    assert inst.max() == 183
    assert count_objects(inst) == 29
    np.testing.assert_array_equal(present_ids(inst), ids)
    found = object_diagnosis(inst, inst)
    assert found["true_objects"] == found["predicted_objects"] == found["matched"] == 29
    assert found["missed"] == found["split"] == found["merged"] == found["false_positives"] == 0


def test_large_and_empty_ids():
    inst = np.zeros((8, 8), np.int32)
    assert count_objects(inst) == 0 and present_ids(inst).size == 0
    inst[0, 0], inst[4, 4], inst[7, 7] = 65535, 70000, 9_000_000     # past the lookup table
    np.testing.assert_array_equal(present_ids(inst), [65535, 70000, 9_000_000])


def test_relabel_sequential_keeps_order_and_dtype():
    inst = np.array([[0, 183, 183], [17, 0, 3], [3, 3, 0]], np.uint16)
    out = relabel_sequential(inst)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, [[0, 3, 3], [2, 0, 1], [1, 1, 0]])
    np.testing.assert_array_equal(relabel_sequential(np.full((2, 2), 7)), np.ones((2, 2)))


@pytest.mark.parametrize("bad, words", [
    (np.array([[0, -1], [2, 3]]), "negative"),
    (np.array([[0, 1.5], [2, 3]]), "non-integer"),
    (np.array([[0, np.nan], [2, 3]]), "non-integer"),
    (np.zeros((4, 4, 1), np.uint16), "2-D"),
    (np.zeros(4, np.uint16), "2-D"),
    (np.zeros((4, 4), bool), "boolean"),
    (np.array([["a", "b"]]), "integers"),
])
def test_validation_names_the_map(bad, words):
    with pytest.raises(ValueError, match=words) as err:
        validate_instances(bad, "cell_007.png")
    assert "cell_007.png" in str(err.value)


def test_whole_valued_floats_are_ids():
    out = validate_instances(np.array([[0.0, 3.0], [3.0, 17.0]], np.float32))
    assert np.issubdtype(out.dtype, np.integer)
    assert count_objects(np.array([[0.0, 3.0], [3.0, 17.0]])) == 2


def test_matching_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        match_objects(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="prediction"):
        match_objects(np.zeros((4, 4), np.uint8), -np.ones((4, 4), np.int8))
    with pytest.raises(ValueError, match="thresholds"):
        match_objects(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), [0.5, 1.5])
    with pytest.raises(ValueError, match="img_3.png: truth has negative"):
        ObjectMetrics().update(-np.ones((4, 4), np.int8), np.zeros((4, 4), np.uint8), "img_3.png")


# --------------------------------------------------------------------------- StarDist agreement
@pytest.fixture(scope="module")
def reference():
    record = json.loads((REFERENCE / "object_reference.json").read_text())
    with np.load(REFERENCE / "object_reference.npz") as arrays:
        pairs = [(str(name), arrays[f"truth_{k:02d}"], arrays[f"pred_{k:02d}"])
                 for k, name in enumerate(arrays["names"])]
    assert len(pairs) == len(record["pairs"]) >= 24
    return record, pairs


def assert_same(ours: dict, theirs: dict, where: str):
    assert ours["thresh"] == pytest.approx(theirs["thresh"]), where
    for key in COUNTS:
        assert ours[key] == theirs[key], f"{where}: {key}"
    for key in COUNT_RATIOS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9), f"{where}: {key}"
    for key in IOU_RATIOS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), f"{where}: {key}"


def test_matching_equals_stardist_per_pair(reference):
    record, pairs = reference
    for (name, truth, pred), theirs in zip(pairs, record["pairs"]):
        assert name == theirs["name"] and str(truth.dtype) == theirs["dtype"]
        ours = match_objects(truth, pred, record["thresholds"])
        for mine, stardist in zip(ours, theirs["matching"], strict=True):
            assert_same(mine, stardist, f"{name} @ {stardist['thresh']}")


def test_dataset_metrics_equal_stardist(reference):
    record, pairs = reference
    metrics = ObjectMetrics(record["thresholds"])
    for name, truth, pred in pairs:
        metrics.update(truth, pred, name)
    result = metrics.result()
    for mine, stardist in zip(result["by_threshold"], record["dataset"], strict=True):
        assert_same(mine, stardist, f"dataset @ {stardist['thresh']}")
    wanted = [d["accuracy"] for d in record["dataset"] if d["thresh"] >= 0.5]
    assert result["mean_ap"] == pytest.approx(np.mean(wanted), abs=1e-12)
    assert [p["name"] for p in result["per_image"]] == [n for n, _, _ in pairs]
    json.dumps(result)                                   # plain numbers only


def test_reference_exercises_the_hard_cases(reference):
    record, _ = reference
    names = {p["name"] for p in record["pairs"]}
    assert {"empty_truth", "empty_pred", "both_empty", "split_halves", "merged_two",
            "exact_ties", "uint16_large_ids", "ambiguous_low_iou"} <= names
    # IoU exactly 0.7 counts at 0.7 (StarDist compares in float32), and the
    # optimal assignment below 0.5 finds two matches where one pair is ambiguous.
    by_name = {p["name"]: {m["thresh"]: m for m in p["matching"]} for p in record["pairs"]}
    assert by_name["exact_ties"][0.7]["tp"] == 6
    assert by_name["ambiguous_low_iou"][0.1]["tp"] == 2


# --------------------------------------------------------------------------- metrics
def test_single_threshold_and_empty_images():
    truth = np.zeros((16, 16), np.uint8)
    truth[2:8, 2:8] = 5
    one = match_objects(truth, truth, 0.5)
    assert isinstance(one, dict) and one["tp"] == 1 and one["f1"] == 1.0
    empty = np.zeros_like(truth)
    both = match_objects(empty, empty, 0.5)
    # StarDist's convention: nothing matched means 0, even for two empty images.
    assert (both["tp"], both["fp"], both["fn"], both["precision"], both["f1"]) == (0, 0, 0, 0.0, 0.0)
    missing = match_objects(truth, empty, 0.5)
    assert (missing["fn"], missing["recall"], missing["mean_true_score"]) == (1, 0.0, 0.0)
    result = ObjectMetrics().result()
    assert result["images"] == 0 and result["mean_ap"] == 0.0
    assert [r["thresh"] for r in result["by_threshold"]] == list(DEFAULT_THRESHOLDS)


def test_dataset_sums_counts_rather_than_averaging_ratios():
    # Image 1: one object, found. Image 2: ten objects, every prediction off target.
    small = np.zeros((32, 32), np.uint16)
    small[4:12, 4:12] = 1
    crowd = np.zeros((32, 64), np.uint16)
    shifted = np.zeros_like(crowd)
    for k in range(10):
        y, x = 2 + 16 * (k // 5), 2 + 12 * (k % 5)
        crowd[y:y + 6, x:x + 6] = k + 1
        shifted[y + 4:y + 10, x + 4:x + 10] = 20 + k
    metrics = ObjectMetrics([0.5])
    first = metrics.update(small, small, "small")[0]
    second = metrics.update(crowd, shifted, "crowd")[0]
    assert (first["accuracy"], second["accuracy"]) == (1.0, 0.0)
    total = metrics.result()["by_threshold"][0]
    assert (total["tp"], total["fp"], total["fn"]) == (1, 10, 10)
    assert total["accuracy"] == pytest.approx(1 / 21)        # not (1 + 0) / 2
    assert total["precision"] == pytest.approx(1 / 11)
    assert total["mean_true_score"] == pytest.approx(1 / 11)  # IoU sum / true objects
    assert metrics.result()["per_image"][1]["mean_ap"] == 0.0


def test_diagnosis_split_merge_miss_false_positive():
    truth = np.zeros((40, 60), np.uint16)
    pred = np.zeros_like(truth)
    truth[2:12, 2:22] = 7                      # split into two halves
    pred[2:12, 2:11], pred[2:12, 12:21] = 1, 2        # each 90 px: IoU 0.45
    truth[20:30, 2:12], truth[20:30, 13:23] = 30, 31   # merged by one prediction
    pred[20:30, 2:23] = 3
    truth[20:30, 40:50] = 90                   # found
    pred[20:30, 40:49] = 4
    truth[2:6, 40:44] = 120                    # missed
    pred[34:38, 50:56] = 5                     # on background
    found = object_diagnosis(truth, pred)
    assert found == {"true_objects": 5, "predicted_objects": 5, "matched": 1, "merged": 2, "split": 1,
                         "missed": 1, "false_positives": 1}


def test_diagnosis_small_pieces_are_not_a_split():
    truth = np.zeros((30, 30), np.uint8)
    truth[2:22, 2:22] = 1
    pred = np.zeros_like(truth)
    pred[3:5, 3:5], pred[15:17, 15:17] = 1, 2   # two specks inside: 2% of the object
    assert object_diagnosis(truth, pred)["missed"] == 1


# --------------------------------------------------------------------------- instances
def two_touching_discs():
    """Radius 12, centres 22 px apart: one blob with a neck about 9 px wide."""
    shape = (64, 96)
    return disc(shape, 32, 37, 12), disc(shape, 32, 59, 12)


def test_watershed_splits_touching_discs():
    left, right = two_touching_discs()
    mask = left | right
    assert cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1 == 1
    prob = np.where(mask, 0.9, 0.1).astype(np.float32)
    assert count_objects(to_instances(prob, method="components")) == 1
    inst = to_instances(prob)
    assert inst.dtype == np.uint16 and count_objects(inst) == 2
    truth = left.astype(np.uint16) + 2 * (right & ~left)
    assert match_objects(truth, inst, 0.8)["tp"] == 2       # each piece is one disc


@pytest.mark.parametrize("angle", [0, 35, 90])
def test_elongated_object_stays_whole(angle):
    rect = np.zeros((100, 100), np.uint8)
    corners = cv2.boxPoints(((50, 50), (60, 10), angle)).astype(np.int32)
    cv2.fillPoly(rect, [corners], 1)
    ellipse = np.zeros((100, 100), np.uint8)
    cv2.ellipse(ellipse, (50, 50), (30, 5), angle, 0, 360, 1, -1)
    for mask in (rect, ellipse):
        inst = to_instances(mask.astype(np.float32))
        assert count_objects(inst) == 1
        assert (inst > 0).sum() == mask.sum()


def test_thin_gap_separates_and_specks_go():
    prob = np.zeros((40, 60, 1), np.float32)
    prob[5:35, 5:30] = prob[5:35, 31:55] = 0.8       # a one-pixel gap between two blocks
    prob[37:39, 2:4] = 0.9                           # a 4-pixel speck
    inst = to_instances(prob)
    assert count_objects(inst) == 2 and inst[38, 3] == 0
    np.testing.assert_array_equal(present_ids(inst), [1, 2])
    np.testing.assert_array_equal(inst, to_instances(prob[..., 0]))
    assert count_objects(to_instances(prob, min_size=1)) == 3
    assert count_objects(to_instances(prob, threshold=0.85, min_size=1)) == 1
    assert count_objects(to_instances(np.zeros((8, 8)))) == 0


def test_multiclass_instances_per_class():
    shape = (64, 96)
    labels = np.zeros(shape, np.int64)
    left, right = two_touching_discs()
    labels[left | right] = 1
    labels[5:15, 70:90] = 2
    labels[40:60, 75:90] = 2
    probs = np.eye(3, dtype=np.float32)[labels] * 0.8 + 0.05
    inst, classes = to_instances(probs, return_classes=True)
    assert count_objects(inst) == 4 and sorted(classes) == [1, 2, 3, 4]
    assert sorted(classes.values()) == [1, 1, 2, 2]
    for i, cls in classes.items():
        assert (labels[inst == i] == cls).all()
    assert (inst[labels == 0] == 0).all()
    with_bg, bg_classes = to_instances(probs, ignore_background=False, return_classes=True)
    assert 0 in bg_classes.values() and count_objects(with_bg) >= 5
    np.testing.assert_array_equal(with_bg[labels > 0] > 0, True)
    with pytest.raises(ValueError, match="shape"):
        to_instances(np.zeros((2, 4, 4, 2)))
    with pytest.raises(ValueError, match="method"):
        to_instances(probs, method="stardist")


def test_outline_overlay_colours_each_object():
    inst = np.zeros((30, 40), np.uint16)
    inst[5:15, 5:15], inst[5:15, 15:25], inst[20:28, 30:38] = 3, 17, 183
    image = np.full((30, 40, 3), 50, np.uint8)
    out = outline_overlay(image, inst)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (image == 50).all()                                 # input untouched
    colours = instance_colors([3, 17, 183])
    assert len({tuple(c) for c in colours}) == 3
    np.testing.assert_array_equal(out[5, 8], colours[0])       # top edge of id 3
    np.testing.assert_array_equal(out[10, 15], colours[1])     # shared border, id 17's side
    np.testing.assert_array_equal(out[27, 33], colours[2])
    assert (out[10, 10] == 50).all() and (out[0, 0] == 50).all()
    np.testing.assert_array_equal(outline_overlay(image[..., 0], inst), out)
    np.testing.assert_array_equal(instance_colors([17]), instance_colors([17]))
    with pytest.raises(ValueError, match="shape"):
        outline_overlay(image, inst[:10])
