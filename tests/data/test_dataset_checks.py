"""check-data edge cases: void values that hide a class, classes.json limits,
empty files, a single training image and gapped instance ids.

Every test writes tiny image files into tmp_path with OpenCV.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from unet_tf.config import RANGES
from unet_tf.data.check import check_dataset, format_report, load_dataset
from unet_tf.data.images import read_image
from unet_tf.data.label_inference import VOID_SHARE_LIMIT, infer_label_spec
from unet_tf.data.labels import load_class_dict_csv, load_classes_json
from unet_tf.data.layouts import find_samples
from unet_tf.data.samples import MAX_CLASSES
from unet_tf.data.weights import unet_weight_map
from unet_tf.errors import DatasetError

from dataset_writers import H, W, binary_mask, make_pairs, write

def having(items: list[str], text: str) -> list[str]:
    return [p for p in items if text in p]


# --------------------------------------------------------------------------- void hiding a class


def test_binary_masks_read_with_three_classes_are_a_problem(tmp_path):
    root = make_pairs(tmp_path)
    report = check_dataset(root, num_classes=3)
    hits = having(report.problems, "255 is the void value (--ignore-index)")
    assert len(hits) == 1, report.problems
    assert hits[0].startswith(str(root / "masks" / "s0.png"))
    assert "only non-zero value" in hits[0] and "50.0%" in hits[0]
    assert "binary 0/255 masks" in hits[0] and "drop --num-classes" in hits[0]
    text = format_report(report)
    assert "OK" not in text and "only non-zero value" in text
    with pytest.raises(DatasetError, match="only non-zero value"):  # what training calls
        load_dataset(root, num_classes=3)
    with pytest.raises(DatasetError, match="only non-zero value"):
        infer_label_spec(find_samples(root), num_classes=3)
    assert check_dataset(root).ok and check_dataset(root, num_classes=2).ok


def test_binary_masks_with_a_names_only_classes_json_of_three_are_a_problem(tmp_path):
    root = make_pairs(tmp_path)
    (root / "classes.json").write_text(json.dumps(["background", "cell", "debris"]))
    report = check_dataset(root)
    hits = having(report.problems, "only non-zero value")
    assert len(hits) == 1 and "classes.json" in hits[0], report.problems
    (root / "classes.json").write_text(json.dumps(["background", "cell"]))
    assert check_dataset(root).ok


def test_void_covering_a_large_share_while_a_class_never_appears_is_a_problem(tmp_path):
    def mask():  # classes 0 and 1, and 255 on 2 of 8 columns (25 %)
        m = binary_mask(1)
        m[:, -2:] = 255
        return m
    root = make_pairs(tmp_path, mask_fn=mask)
    assert 0.25 > VOID_SHARE_LIMIT
    report = check_dataset(root, num_classes=3)
    hits = having(report.problems, "255 is the void value")
    assert len(hits) == 1 and "25.0%" in hits[0] and "class 2 never appears" in hits[0]
    assert "255 probably stores class 2" in hits[0]
    # Every class present, or several missing (a subset of a larger class
    # list): a void share this large is only worth a warning.
    for n in (None, 5):
        report = check_dataset(root, num_classes=n)
        assert report.ok, report.problems
        assert having(report.warnings, "covers 25.0%")


def test_a_thin_void_outline_is_fine(tmp_path):
    def mask():  # classes 0 and 1 with a one-pixel void outline (about 2 %)
        m = binary_mask(1)
        m[0, 0] = 255
        return m
    root = make_pairs(tmp_path, mask_fn=mask)
    report = check_dataset(root, num_classes=3)
    assert report.ok, report.problems
    assert not having(report.warnings, "void value")


# --------------------------------------------------------------------------- classes.json


def test_deeply_nested_classes_json_is_a_dataset_error(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match="nested too deeply") as err:
        load_classes_json(path)
    assert str(err.value).startswith(str(path))
    # Nested just below json's own limit: the message quotes a short excerpt.
    path.write_text("[" * 900 + "]" * 900)
    with pytest.raises(DatasetError) as err:
        load_classes_json(path)
    assert len(str(err.value)) < 300


def test_classes_json_with_too_many_classes_is_refused(tmp_path):
    assert MAX_CLASSES == RANGES["num_classes"][1]
    path = tmp_path / "classes.json"
    path.write_text(json.dumps([f"c{i}" for i in range(200_000)]))
    with pytest.raises(DatasetError, match=f"200000 classes, more than the limit of {MAX_CLASSES}"):
        load_classes_json(path)
    path.write_text(json.dumps([f"c{i}" for i in range(MAX_CLASSES)]))
    assert len(load_classes_json(path)[0]) == MAX_CLASSES
    csv = tmp_path / "class_dict.csv"
    csv.write_text("name,r,g,b\n" + "".join(f"c{i},{i % 256},{i // 256},0\n"
                                            for i in range(MAX_CLASSES + 1)))
    with pytest.raises(DatasetError, match="more than the limit"):
        load_class_dict_csv(csv)


def test_invalid_classes_json_is_reported_once(tmp_path):
    def rgb_mask():
        m = np.zeros((H, W, 3), np.uint8)
        m[:, 4:] = (128, 0, 0)
        m[0, :] = (0, 128, 0)
        return m
    root = make_pairs(tmp_path, mask_fn=rgb_mask)
    for text in ("{not json", "[" * 100_000 + "]" * 100_000, ""):
        (root / "classes.json").write_text(text)
        report = check_dataset(root)
        assert len(report.problems) == 1, report.problems
        assert report.problems[0].startswith(str(root / "classes.json"))
        assert "no classes.json" not in report.problems[0]
    # No classes.json at all: the "no classes.json" problem, with a file to start from.
    (root / "classes.json").unlink()
    assert having(check_dataset(root).problems, "no classes.json")


# --------------------------------------------------------------------------- empty files


def test_zero_byte_image_and_mask_are_called_empty(tmp_path):
    root = make_pairs(tmp_path)
    (root / "images" / "s1.png").write_bytes(b"")
    (root / "masks" / "s2.png").write_bytes(b"")
    report = check_dataset(root)
    for path in (root / "images" / "s1.png", root / "masks" / "s2.png"):
        assert having(report.problems, f"{path}: file is empty (0 bytes)"), report.problems
    assert not having(report.problems, "corrupt")
    with pytest.raises(DatasetError, match=r"empty \(0 bytes\)"):
        read_image(root / "images" / "s1.png")
    (root / "classes.json").write_bytes(b"")
    with pytest.raises(DatasetError, match="classes.json: file is empty"):
        load_classes_json(root / "classes.json")


# --------------------------------------------------------------------------- one image


def test_a_single_training_image_is_a_warning(tmp_path):
    root = make_pairs(tmp_path / "one", n=1)
    report = check_dataset(root)
    assert report.ok, report.problems
    hits = having(report.warnings, "validation scores are measured on this training image")
    assert len(hits) == 1 and hits[0].startswith(str(root / "images" / "s0.png"))
    assert "val/" in hits[0]
    text = format_report(report)
    assert "Warnings (1):" in text and "measured on this training image" in text
    assert "OK: no problems found." in text
    # Two images, or one with a val split: no such warning.
    two = check_dataset(make_pairs(tmp_path / "two", n=2))
    assert not having(two.warnings, "training image")
    make_pairs(tmp_path / "split" / "train", n=1)
    make_pairs(tmp_path / "split" / "val", n=1)
    assert not having(check_dataset(tmp_path / "split").warnings, "training image")


# --------------------------------------------------------------------------- gapped instance ids


def test_objects_are_counted_by_the_ids_present_not_the_largest_id(tmp_path):
    ids_used = (3, 17, 183, 300)  # 300 > 255: 16-bit instance-id maps
    for i in range(2):
        ids = np.zeros((20, 20), np.uint16)
        for k, ident in enumerate(ids_used):
            ids[2 + 4 * k:5 + 4 * k, 3:8 + i] = ident
        write(tmp_path / "images" / f"t{i}.png", np.full((20, 20), 9, np.uint8))
        write(tmp_path / "masks" / f"t{i}.png", ids)
    report = check_dataset(tmp_path)
    assert report.ok, report.problems
    assert report.spec.mode == "instance"
    assert having(report.warnings, "about 4 objects per image"), report.warnings


def test_weight_map_with_gapped_ids_matches_consecutive_ids():
    ids = np.zeros((30, 40), np.int32)
    ids[5:12, 4:14] = 3
    ids[5:12, 16:26] = 17
    ids[16:25, 8:30] = 183
    consecutive = np.searchsorted([0, 3, 17, 183], ids).astype(np.int32)
    mask = (ids > 0).astype(np.uint8)
    np.testing.assert_allclose(unet_weight_map(mask, instances=ids),
                               unet_weight_map(mask, instances=consecutive), atol=1e-6)
    np.testing.assert_allclose(unet_weight_map(ids), unet_weight_map(consecutive), atol=1e-6)
