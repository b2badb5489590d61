"""``predict --instances``: instance maps from every model format, and their options."""
import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from unet_tf import training
from unet_tf.cli import main
from unet_tf.config import TrainConfig
from unet_tf.objects import to_instances
from unet_tf.predict import predict_files


@pytest.fixture(scope="module")
def run(cells, tmp_path_factory):
    """A tiny run trained on the session's synthetic cells (depth 2, 4 filters, 64 px)."""
    out = tmp_path_factory.mktemp("instances") / "run"
    config = TrainConfig(plan=False, data=str(cells), out=str(out), depth=2, base_filters=4, tile_size=64,
                         batch_size=4, steps_per_epoch=25, epochs=2, learning_rate=3e-3, verbose=0)
    training.train(config)
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """The run as a SavedModel and a float32 TFLite file of the images' 64x64 shape."""
    from unet_tf.deploy import ExportOptions, export_model
    out = tmp_path_factory.mktemp("instance_exports")
    options = ExportOptions(tflite_sizes=[(64, 64)], tflite_variants=("float32",), latency_runs=1)
    export_model(run, out, options=options, log=lambda *_: None)
    return {"keras": run / "best.keras", "saved_model": out / "unet" / "1",
            "tflite": out / "tflite" / "unet_64x64_float32.tflite"}


def _read(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_keras_saved_model_and_tflite_give_the_same_instance_maps(cells, exported, tmp_path):
    images = cells / "val" / "images"
    maps = {}
    for kind, model in exported.items():
        out = tmp_path / kind
        result = CliRunner().invoke(main, ["predict", str(model), str(images), "--out", str(out),
                                           "--instances", "--tile-size", "64", "--probabilities"])
        assert result.exit_code == 0, result.output
        assert "instance maps" in result.output
        for image in sorted(images.iterdir()):
            inst = _read(out / f"{image.stem}_instances.png")
            assert inst.dtype == np.uint16 and inst.shape == (64, 64)
            overlay = _read(out / f"{image.stem}_instances_overlay.png")
            assert overlay.shape == (64, 64, 3) and overlay.dtype == np.uint8
            # The map is to_instances of the model's own probabilities, ids 1..N.
            probs = np.load(out / f"{image.stem}_prob.npy")
            np.testing.assert_array_equal(inst, to_instances(probs))
            ids = np.unique(inst)
            assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, len(ids)))
            # Objects lie inside the predicted mask.
            assert not (inst > 0)[_read(out / f"{image.stem}.png") == 0].any()
            maps[kind, image.stem] = inst
    stems = sorted(p.stem for p in images.iterdir())
    assert sum(len(np.unique(maps["keras", s])) - 1 for s in stems) >= 5   # a model that finds cells
    for stem in stems:
        # Float differences between runtimes (< 1e-6) decide no pixel here: exactly equal maps.
        np.testing.assert_array_equal(maps["saved_model", stem], maps["keras", stem])
        np.testing.assert_array_equal(maps["tflite", stem], maps["keras", stem])


def test_the_installed_command_loads_a_keras_file(cells, exported, tmp_path):
    """The real ``unet-tf`` (TensorFlow imported before Keras) finds the custom classes."""
    image = sorted((cells / "val" / "images").iterdir())[0]
    out = tmp_path / "cli"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "unet_tf.cli", "predict", str(exported["keras"]),
                           str(image), "--out", str(out), "--instances", "--tile-size", "64",
                           "--instance-method", "components", "--min-size", "0"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    inst = _read(out / f"{image.stem}_instances.png")
    mask = _read(out / f"{image.stem}.png") > 0
    # Components only, nothing removed: the objects cover the mask exactly.
    np.testing.assert_array_equal(inst > 0, mask)


def test_the_python_api_takes_the_same_options(exported, cells, tmp_path):
    images = cells / "val" / "images"
    written = predict_files(exported["tflite"], [images], tmp_path, instances=True, min_size=40,
                            seed_distance=3.0, instance_method="components", overlays=False,
                            probabilities=True)
    for mask_path in written:
        inst = _read(mask_path.with_name(mask_path.stem + "_instances.png"))
        probs = np.load(mask_path.with_name(mask_path.stem + "_prob.npy"))
        np.testing.assert_array_equal(inst, to_instances(probs, min_size=40, method="components"))
        sizes = np.bincount(inst.ravel())[1:]
        assert (sizes[sizes > 0] >= 40).all()
        assert not mask_path.with_name(mask_path.stem + "_instances_overlay.png").exists()
    with pytest.raises(ValueError, match="seed_distance"):
        predict_files(exported["tflite"], [images], tmp_path, instances=True, seed_distance=0.5)
    with pytest.raises(ValueError, match="min_size"):
        predict_files(exported["tflite"], [images], tmp_path, instances=True, min_size=-1)
    with pytest.raises(ValueError, match="instance_method"):
        predict_files(exported["tflite"], [images], tmp_path, instances=True,
                      instance_method="blobs")


@pytest.mark.parametrize("args, option", [(["--seed-distance", "0.5"], "--seed-distance"),
                                          (["--min-size", "-3"], "--min-size"),
                                          (["--instance-method", "blobs"], "--instance-method")])
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_out_of_range_options_name_the_option(command, args, option, tmp_path):
    result = CliRunner().invoke(main, [command, str(tmp_path / "m.keras"), str(tmp_path), *args])
    assert result.exit_code == 2
    assert option in result.output


def test_multi_class_models_give_instances_per_class(tmp_path, rng):
    from unet_tf.models import UNet
    model = UNet(num_classes=3, depth=2, base_filters=4, in_channels=1)
    model.save(tmp_path / "m.keras")
    image = (rng.random((48, 40)) * 255).astype(np.uint8)
    image = cv2.GaussianBlur(image, (0, 0), 3)
    cv2.imwrite(str(tmp_path / "img.png"), image)
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "m.keras"), str(tmp_path / "img.png"),
                                       "--out", str(tmp_path / "out"), "--instances",
                                       "--instance-method", "components", "--min-size", "0"])
    assert result.exit_code == 0, result.output
    labels = _read(tmp_path / "out" / "img.png")
    inst = _read(tmp_path / "out" / "img_instances.png")
    assert labels.shape == inst.shape == (48, 40)
    assert len(np.unique(labels)) >= 2
    np.testing.assert_array_equal(inst > 0, labels > 0)       # every non-background pixel
    for i in np.unique(inst)[1:]:
        assert len(np.unique(labels[inst == i])) == 1           # one class per object


def test_training_logs_and_reports_the_foreground_dice(run):
    with open(run / "history.csv") as f:
        header = next(csv.reader(f))
    assert "dice_fg" in header and "val_dice_fg" in header and "val_dice" in header
    report = json.loads((run / "report.json").read_text())
    # Binary: the foreground classes are the one foreground class.
    assert report["dice_foreground"] == pytest.approx(report["dice_per_class"][1])
    assert report["iou_foreground"] == pytest.approx(report["iou_per_class"][1])
    assert report["dice"] == pytest.approx(report["dice_foreground"])
