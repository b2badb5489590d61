"""``unet-tf evaluate``: pixel scores as the field reports them, object metrics of the
instance output, ids counted as present (also in check-data and the weight map), bad input."""
import json
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from unet_tf.cli import main
from unet_tf.data.check import check_dataset, format_report
from unet_tf.data.labels import read_instances
from unet_tf.data.weights import unet_weight_map
from unet_tf.errors import DatasetError
from unet_tf.evaluate import evaluate_folder, format_evaluation
from unet_tf.objects import ObjectMetrics, object_diagnosis, relabel_sequential


def _gapped(ids: np.ndarray) -> np.ndarray:
    """The same objects with ids 1000, 1037, 1074, ... (gaps, largest id >> count)."""
    lut = np.concatenate([[0], 1000 + 37 * np.arange(int(ids.max()))]).astype(np.uint16)
    return lut[ids]


def _copy(cells, dst, instances="keep"):
    """A copy of the cells data: instance maps kept, given gapped ids, or removed."""
    shutil.copytree(cells, dst)
    for split in ("train", "val"):
        folder = dst / split / "instances"
        if instances == "remove":
            shutil.rmtree(folder)
            continue
        for f in folder.iterdir():
            ids = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            if instances == "gapped":
                cv2.imwrite(str(f), _gapped(ids))
    return dst


def _present(folder) -> int:
    return sum(len(np.unique(read_instances(f))) - 1 for f in sorted(folder.iterdir()))


def _evaluate(saved_binary_model, data, out, *extra):
    result = CliRunner().invoke(main, ["evaluate", str(saved_binary_model), str(data), "--split", "val",
                                       "--out", str(out), "--tile-size", "32", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


def test_gapped_ids_are_counted_as_present_and_change_nothing(cells, saved_binary_model, tmp_path):
    gapped = _copy(cells, tmp_path / "gapped", "gapped")
    n_true = _present(cells / "val" / "instances")
    assert _present(gapped / "val" / "instances") == n_true
    largest = sum(int(read_instances(f).max()) for f in (gapped / "val" / "instances").iterdir())
    assert largest > 10 * n_true                                     # what counting max ids gives
    plain, _ = _evaluate(saved_binary_model, cells, tmp_path / "plain.json")
    got, output = _evaluate(saved_binary_model, gapped, tmp_path / "gapped.json")
    assert got["objects"]["true_objects"] == got["object_metrics"]["n_true"] == n_true
    assert got["objects"] == plain["objects"]
    for key in ("n_true", "n_pred", "tp", "fp", "fn", "precision", "recall", "f1", "ap", "pq",
                "mean_ap"):
        assert got["object_metrics"][key] == plain["object_metrics"][key], key
    assert [e["object_metrics"] for e in got["per_image"]] == \
        [e["object_metrics"] for e in plain["per_image"]]
    assert "mean AP over IoU 0.5:0.95" in output and "precision" in output


def test_object_metrics_are_those_of_the_predicted_instance_maps(cells, saved_binary_model, tmp_path):
    """evaluate scores exactly what ``predict --instances`` writes, with the same options."""
    options = ["--min-size", "10", "--seed-distance", "3", "--instance-method", "watershed"]
    got, _ = _evaluate(saved_binary_model, cells, tmp_path / "eval.json", *options)
    pred_dir = tmp_path / "pred"
    result = CliRunner().invoke(main, ["predict", str(saved_binary_model), str(cells / "val" / "images"),
                                       "--out", str(pred_dir), "--tile-size", "32", "--instances",
                                       "--no-overlays", *options])
    assert result.exit_code == 0, result.output
    expected, diagnosis = ObjectMetrics(), None
    for truth_file in sorted((cells / "val" / "instances").iterdir()):
        truth = read_instances(truth_file)
        pred = cv2.imread(str(pred_dir / f"{truth_file.stem}_instances.png"), cv2.IMREAD_UNCHANGED)
        expected.update(truth, pred, truth_file.stem)
        found = object_diagnosis(truth, pred)
        diagnosis = found if diagnosis is None else {k: diagnosis[k] + found[k] for k in found}
    want = expected.result()
    at_half = want["by_threshold"][0]
    m = got["object_metrics"]
    assert m["instances"] == {"method": "watershed", "min_size": 10, "seed_distance": 3.0,
                              "threshold": 0.5}
    assert (m["tp"], m["fp"], m["fn"]) == (at_half["tp"], at_half["fp"], at_half["fn"])
    assert m["ap"] == pytest.approx(at_half["tp"] / (at_half["tp"] + at_half["fp"] + at_half["fn"]))
    assert m["pq"] == pytest.approx(at_half["panoptic_quality"])
    assert m["mean_ap"] == pytest.approx(want["mean_ap"])
    assert m["tp"] > 0 and len(m["by_threshold"]) == 10
    assert got["objects"] == diagnosis
    per_image = {e["name"]: e["object_metrics"] for e in got["per_image"]}
    for entry in want["per_image"]:
        assert per_image[entry["name"]]["mean_ap"] == pytest.approx(entry["mean_ap"])
        assert per_image[entry["name"]]["tp"] == entry["by_threshold"][0]["tp"]


def test_truth_from_mask_components_without_instance_maps(cells, saved_binary_model, tmp_path):
    # The synthetic masks keep a background line between touching cells, so their
    # connected components are the instance maps.
    masks_only = _copy(cells, tmp_path / "masks_only", "remove")
    with_maps, _ = _evaluate(saved_binary_model, cells, tmp_path / "a.json")
    without, _ = _evaluate(saved_binary_model, masks_only, tmp_path / "b.json")
    assert without["object_metrics"]["n_true"] == _present(cells / "val" / "instances")
    assert without["objects"] == with_maps["objects"]
    assert without["object_metrics"]["mean_ap"] == with_maps["object_metrics"]["mean_ap"]


def test_instance_id_masks_with_gaps(cells, saved_binary_model, tmp_path):
    """16-bit instance maps as the masks themselves (cell tracking challenge style)."""
    data = tmp_path / "ctc"
    for split in ("train", "val"):
        (data / split / "masks").mkdir(parents=True)
        shutil.copytree(cells / split / "images", data / split / "images")
        for f in (cells / split / "instances").iterdir():
            cv2.imwrite(str(data / split / "masks" / f.name),
                        _gapped(cv2.imread(str(f), cv2.IMREAD_UNCHANGED)))
    report = check_dataset(data)
    assert report.ok, report.problems
    assert report.spec.mode == "instance"
    n_val = _present(cells / "val" / "instances")
    assert report.summary["objects"]["val"] == {"maps": 2, "objects": n_val}
    got, _ = _evaluate(saved_binary_model, data, tmp_path / "ctc.json")
    assert got["objects"]["true_objects"] == got["object_metrics"]["n_true"] == n_val


def test_check_data_and_weight_map_count_present_ids(cells, tmp_path):
    gapped = _copy(cells, tmp_path / "gapped", "gapped")
    report = check_dataset(gapped)
    assert report.ok, report.problems
    counts = {split: _present(cells / split / "instances") for split in ("train", "val")}
    assert report.summary["objects"] == {"train": {"maps": 4, "objects": counts["train"]},
                                         "val": {"maps": 2, "objects": counts["val"]}}
    text = format_report(report)
    assert f"train {counts['train']} in 4 maps" in text and f"val {counts['val']} in 2 maps" in text
    # The 16-bit instance-mask warning counts ids present too (a few ids, far apart).
    ids = np.zeros((40, 40), np.uint16)
    for k, value in enumerate((3, 17, 183, 999, 4000, 4001, 60000, 65535, 12)):
        ids[4 * k:4 * k + 3, 5:9] = value
    (tmp_path / "ctc" / "images").mkdir(parents=True)
    (tmp_path / "ctc" / "masks").mkdir()
    for i in range(2):
        cv2.imwrite(str(tmp_path / "ctc" / "images" / f"t{i}.png"), np.zeros((40, 40), np.uint8))
        cv2.imwrite(str(tmp_path / "ctc" / "masks" / f"t{i}.png"), ids)
    report = check_dataset(tmp_path / "ctc")
    assert report.spec.mode == "instance"
    assert any("about 9 objects per image" in w for w in report.warnings), report.warnings
    assert report.summary["objects"] == {"all": {"maps": 2, "objects": 18}}
    # The weight map: the same map from gapped ids and from 1..N.
    f = sorted((gapped / "val" / "instances").iterdir())[0]
    inst = read_instances(f)
    mask = (inst > 0).astype(np.uint8)
    np.testing.assert_allclose(unet_weight_map(mask, instances=inst),
                               unet_weight_map(mask, instances=relabel_sequential(inst)),
                               rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- bad input
def _one_val_instance_map(data):
    return sorted((data / "val" / "instances").iterdir())[0]


@pytest.mark.parametrize("change, words", [("another image's", "does not match its mask"),
                                           ("cropped", "instance map size 60x64 differs")])
def test_instance_map_that_does_not_fit_its_mask_is_refused(cells, saved_binary_model, tmp_path, change,
                                                            words):
    data = _copy(cells, tmp_path / "changed")
    target = _one_val_instance_map(data)
    if change == "cropped":
        cv2.imwrite(str(target), cv2.imread(str(target), cv2.IMREAD_UNCHANGED)[:60])
    else:
        shutil.copy(sorted((data / "train" / "instances").iterdir())[0], target)
    result = CliRunner().invoke(main, ["check-data", str(data)])
    assert result.exit_code == 1 and target.name in result.output and words in result.output
    result = CliRunner().invoke(main, ["evaluate", str(saved_binary_model), str(data), "--out",
                                       str(tmp_path / "e.json")])
    assert result.exit_code == 1, result.output
    assert str(target) in result.output and words in result.output


@pytest.mark.parametrize("values, words", [((-3.0, 2.0), "negative ids"),
                                           ((2.5, 1.0), "non-integer ids")])
def test_negative_or_fractional_ids_are_refused(cells, saved_binary_model, tmp_path, values, words):
    data = _copy(cells, tmp_path / "bad")
    target = _one_val_instance_map(data)
    ids = cv2.imread(str(target), cv2.IMREAD_UNCHANGED).astype(np.float32)
    ids[ids == 1], ids[ids == 2] = values
    target.unlink()
    bad = target.with_suffix(".tif")
    assert cv2.imwrite(str(bad), ids)
    result = CliRunner().invoke(main, ["check-data", str(data)])
    assert result.exit_code == 1 and bad.name in result.output and words in result.output
    result = CliRunner().invoke(main, ["evaluate", str(saved_binary_model), str(data), "--out",
                                       str(tmp_path / "e.json")])
    assert result.exit_code == 1
    assert str(bad) in result.output and words in result.output


def test_prediction_of_another_size_is_refused(cells, saved_binary_model, tmp_path, monkeypatch):
    import unet_tf.evaluate as evaluate
    real = evaluate.predict_tiled
    monkeypatch.setattr(evaluate, "predict_tiled", lambda *a, **k: real(*a, **k)[:-2])
    with pytest.raises(DatasetError, match=r"masks[/\\]cell_\d+\.png: the prediction is 62x64"):
        evaluate_folder(saved_binary_model, cells, split="val", out=tmp_path / "e.json", tile_size=32)


def test_format_evaluation_names_classes_and_shows_both_means():
    result = {"images": 3, "split": "test", "class_names": ["background", "nucleus", "cytoplasm"],
              "dice_per_class": [0.98, 0.8, None], "iou_per_class": [0.96, 0.7, None],
              "dice": 0.89, "mean_iou": 0.83, "dice_foreground": 0.8, "iou_foreground": 0.7,
              "pixel_accuracy": 0.97, "objects": None, "object_metrics": None}
    text = format_evaluation(result)
    lines = text.splitlines()
    assert any(line.split()[:3] == ["nucleus", "0.8000", "0.7000"] for line in lines)
    assert any(line.split()[:2] == ["cytoplasm", "-"] for line in lines)
    assert any(line.startswith("mean, all classes") and "0.8900" in line for line in lines)
    assert any(line.startswith("mean, foreground") and line.split()[-2:] == ["0.8000", "0.7000"]
               for line in lines)
    assert "objects" not in text
