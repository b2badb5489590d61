"""The command line on real files: check-data, predict, evaluate."""
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from unet_tf.cli import main
from unet_tf.objects import object_diagnosis


def test_check_data_prints_a_summary(cells):
    result = CliRunner().invoke(main, ["check-data", str(cells)])
    assert result.exit_code == 0, result.output
    assert "binary" in result.output and "train" in result.output


def test_check_data_lists_every_problem_and_exits_1(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((8, 8), np.uint8))
    cv2.imwrite(str(tmp_path / "images" / "b.png"), np.zeros((8, 8), np.uint8))
    cv2.imwrite(str(tmp_path / "masks" / "b.png"), np.zeros((9, 8), np.uint8))
    cv2.imwrite(str(tmp_path / "masks" / "c.png"), np.zeros((8, 8), np.uint8))
    result = CliRunner().invoke(main, ["check-data", str(tmp_path)])
    assert result.exit_code == 1
    for name in ("a.png", "b.png", "c.png"):
        assert name in result.output


def test_predict_writes_masks_and_overlays(cells, saved_binary_model, tmp_path):
    out = tmp_path / "pred"
    images = cells / "val" / "images"
    result = CliRunner().invoke(main, ["predict", str(saved_binary_model), str(images), "--out", str(out),
                                       "--probabilities", "--tile-size", "32"])
    assert result.exit_code == 0, result.output
    for image in images.iterdir():
        mask = cv2.imread(str(out / f"{image.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
        assert cv2.imread(str(out / f"{image.stem}_overlay.png")).shape == (64, 64, 3)
        probs = np.load(out / f"{image.stem}_prob.npy")
        assert probs.shape == (64, 64, 1)
        np.testing.assert_array_equal(mask == 255, probs[..., 0] >= 0.5)


def test_predict_on_a_dataset_folder_segments_images_not_masks(saved_binary_model, tmp_path):
    # Patient folders with slices next to their masks, and a DSB-2018 style sample folder.
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for p in ("p1", "p2"):
        (data / p).mkdir(parents=True)
        for k in (1, 2):
            cv2.imwrite(str(data / p / f"{p}_{k}.png"), rng.integers(0, 255, (40, 48), dtype=np.uint8))
            cv2.imwrite(str(data / p / f"{p}_{k}_mask.png"), np.zeros((40, 48), np.uint8))
    out = tmp_path / "pred"
    result = CliRunner().invoke(main, ["predict", str(saved_binary_model), str(data), "--out", str(out),
                                       "--no-overlays", "--tile-size", "32", "--probabilities"])
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["p1/p1_1.png", "p1/p1_2.png", "p2/p2_1.png", "p2/p2_2.png"]
    assert np.load(out / "p2" / "p2_1_prob.npy").shape == (40, 48, 1)
    assert not [p for p in out.rglob(".*")]                  # no temporary files left
    assert cv2.imread(str(out / "p1" / "p1_1.png"), cv2.IMREAD_UNCHANGED).shape == (40, 48)

    dsb = tmp_path / "dsb"
    for sid in ("a1", "b2"):
        (dsb / sid / "images").mkdir(parents=True)
        (dsb / sid / "masks").mkdir()
        cv2.imwrite(str(dsb / sid / "images" / f"{sid}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        for k in range(3):
            cv2.imwrite(str(dsb / sid / "masks" / f"m{k}.png"), np.zeros((32, 32), np.uint8))
    result = CliRunner().invoke(main, ["predict", str(saved_binary_model), str(dsb), "--out", str(tmp_path / "o2"),
                                       "--no-overlays", "--tile-size", "32"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["a1.png", "b2.png"]


def test_predict_reports_bad_inputs(saved_binary_model, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    result = CliRunner().invoke(main, ["predict", str(saved_binary_model), str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "broken.png" in result.output
    result = CliRunner().invoke(main, ["predict", str(saved_binary_model), str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "nope" in result.output


def test_evaluate_matches_a_numpy_reference(cells, saved_binary_model, tmp_path):
    pred_dir = tmp_path / "pred"
    CliRunner().invoke(main, ["predict", str(saved_binary_model), str(cells / "val" / "images"),
                              "--out", str(pred_dir), "--tile-size", "32", "--no-overlays"])
    report = tmp_path / "eval.json"
    result = CliRunner().invoke(main, ["evaluate", str(saved_binary_model), str(cells), "--split", "val",
                                       "--out", str(report), "--tile-size", "32"])
    assert result.exit_code == 0, result.output
    got = json.loads(report.read_text())
    tp = fp = fn = tn = 0
    for mask_file in (cells / "val" / "masks").iterdir():
        truth = cv2.imread(str(mask_file), cv2.IMREAD_UNCHANGED) > 0
        pred = cv2.imread(str(pred_dir / mask_file.name), cv2.IMREAD_UNCHANGED) > 0
        tp += (truth & pred).sum()
        fp += (~truth & pred).sum()
        fn += (truth & ~pred).sum()
        tn += (~truth & ~pred).sum()
    assert got["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert got["iou_per_class"][1] == pytest.approx(tp / (tp + fp + fn))
    assert got["pixel_accuracy"] == pytest.approx((tp + tn) / (tp + tn + fp + fn))
    assert got["objects"]["true_objects"] > 0
    assert got["dice_foreground"] == pytest.approx(got["dice"])
    assert "objects (IoU 0.5)" in result.output and "mean, foreground" in result.output


def test_object_diagnosis_on_a_small_case():
    truth = np.zeros((10, 30), int)
    truth[1:5, 1:5] = 1      # matched
    truth[1:5, 7:9] = 2      # merged with 3
    truth[1:5, 9:11] = 3
    truth[6:10, 1:11] = 4    # split in two
    truth[6:9, 20:23] = 5    # missed
    pred = np.zeros_like(truth)
    pred[1:5, 1:5] = 1
    pred[1:5, 6:12] = 2
    pred[6:10, 1:5] = 3
    pred[6:10, 6:10] = 4
    pred[1:3, 25:28] = 5     # false positive
    counts = object_diagnosis(truth, pred)
    assert counts == dict(true_objects=5, predicted_objects=5, matched=1, merged=2, split=1,
                          missed=1, false_positives=1)


def test_predicted_masks_use_the_training_masks_encoding():
    from unet_tf.predict import _mask_image
    labels = np.array([[0, 1], [2, 1]], np.uint8)
    np.testing.assert_array_equal(_mask_image(labels[:1] % 2, 1), [[0, 255]])
    np.testing.assert_array_equal(_mask_image(labels, 3), labels)
    grey = [(0, 0, 0), (128, 128, 128), (255, 255, 255)]
    np.testing.assert_array_equal(_mask_image(labels, 3, grey), [[0, 128], [255, 128]])
    rgb = _mask_image(labels, 3, [(0, 0, 0), (128, 64, 128), (64, 0, 128)])
    assert rgb.shape == (2, 2, 3) and tuple(rgb[1, 0]) == (64, 0, 128)


def test_commands_start_tensorflow_without_its_start_up_chatter():
    import subprocess
    import sys
    code = ("import os, sys; from unet_tf.cli import _start_tensorflow; _start_tensorflow(); "
            "os.write(2, b'after start\\n'); print('tensorflow' in sys.modules)")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == b"True"
    assert b"I0000" not in done.stderr and b"cuInit" not in done.stderr and b"oneDNN" not in done.stderr
    assert done.stderr.endswith(b"after start\n")           # stderr still works afterwards
