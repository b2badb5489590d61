"""Training runs through the command line and the library, on real files."""
import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from unet_tf import training
from unet_tf.cli import main
from unet_tf.config import TrainConfig

# The plan (tested in test_autoplan.py) times real steps; these tests fix every size instead.
TINY = ["--no-plan", "--depth", "2", "--base-filters", "4", "--tile-size", "32", "--batch-size", "4",
        "--steps-per-epoch", "3", "--verbose", "0"]


def _tiny_config(cells, out, **kw):
    values = dict(data=str(cells), out=str(out), depth=2, base_filters=4, tile_size=32, batch_size=4,
                  steps_per_epoch=3, epochs=2, verbose=0, plan=False)
    values.update(kw)
    return TrainConfig(**values)


def test_cli_run_writes_the_whole_run_folder(cells, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(cells), "--out", str(out), "--epochs", "2",
                                       *TINY])
    assert result.exit_code == 0, result.output
    for name in ("config.json", "run.json", "best.keras", "last.keras", "history.csv",
                 "report.json", "curves.png", "samples.png"):
        assert (out / name).is_file(), name
    assert any((out / "logs").rglob("*tfevents*"))
    assert (out / "state.json").exists()
    assert {p.name for p in (out / "checkpoints").iterdir()} <= {"epoch-0001.keras", "epoch-0002.keras"}
    with open(out / "history.csv") as f:  # epochs counted from 1, as in best.json
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2"]
    config = json.loads((out / "config.json").read_text())
    assert config["depth"] == 2 and config["epochs"] == 2
    # The report's numbers come from the best model's predictions on the validation images.
    report = json.loads((out / "report.json").read_text())
    from unet_tf import data
    bundle = data.load_data(cells)
    best = keras.models.load_model(out / "best.keras")
    again = training.evaluate_items(best, bundle.val, 1, tile_size=256)
    assert report["dice_per_class"] == pytest.approx(again["dice_per_class"])
    assert report["iou_per_class"] == pytest.approx(again["iou_per_class"])
    assert "Validation dice" in result.output


def test_config_file_with_command_line_override(cells, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(textwrap.dedent(f"""
        data: {cells}
        depth: 2
        base-filters: 4
        tile_size: 32
        epochs: 5
        steps_per_epoch: 2
        verbose: 0
        plan: false
    """))
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--config", str(cfg), "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["epochs"] == 1 and saved["tile_size"] == 32 and saved["base_filters"] == 4


def test_bad_options_fail_with_a_clear_message(cells, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--data", str(cells), "--tile-size", "50", "--depth", "2",
                                  "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "--tile-size 50" in result.output
    assert "Nearest valid input sizes: 48 or 52" in result.output
    result = runner.invoke(main, ["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")])
    assert result.exit_code == 1 and "missing" in result.output
    cfg = tmp_path / "bad.json"
    cfg.write_text('{"lerning_rate": 0.1}')
    result = runner.invoke(main, ["train", "--config", str(cfg)])
    assert result.exit_code == 1 and "lerning_rate" in result.output


def test_existing_run_folder_is_not_overwritten(cells, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--resume"):
        training.train(_tiny_config(cells, out))
    assert (out / "keep.txt").read_text() == "x"


class _Interrupt(Exception):
    pass


def test_interrupted_run_resumes_from_the_next_epoch(cells, tmp_path, monkeypatch):
    out = tmp_path / "run"
    original = training._callbacks

    class KillAfterSecondEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise _Interrupt()

    def with_kill(*args, **kwargs):
        cbs, guard, checkpoint = original(*args, **kwargs)
        return cbs + [KillAfterSecondEpoch()], guard, checkpoint

    monkeypatch.setattr(training, "_callbacks", with_kill)
    with pytest.raises(_Interrupt):
        training.train(_tiny_config(cells, out, epochs=4))
    assert (out / "state.json").exists() and (out / "last.keras").exists()
    monkeypatch.setattr(training, "_callbacks", original)
    epochs_run = []
    monkeypatch.setattr(training, "_callbacks",
                        lambda *a, **k: (lambda r: (r[0] + [keras.callbacks.LambdaCallback(
                            on_epoch_begin=lambda e, logs: epochs_run.append(e))], r[1], r[2]))(original(*a, **k)))
    result = training.train(_tiny_config(cells, out, epochs=4, resume=True))
    assert epochs_run == [2, 3]  # epochs 0 and 1 had finished before the interruption
    assert len(result.history["loss"]) == 4  # the CSV log was continued, not restarted


def test_nan_loss_stops_the_run_with_its_message(tmp_path):
    root = tmp_path / "nan"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    import cv2
    for i in range(3):
        image = np.random.default_rng(i).random((32, 32)).astype(np.float32)
        image[4:20, 4:20] = np.nan  # a corrupt float TIFF
        mask = np.zeros((32, 32), np.uint8)
        mask[8:16, 8:16] = 255
        cv2.imwrite(str(root / "images" / f"n{i}.tif"), image)
        cv2.imwrite(str(root / "masks" / f"n{i}.png"), mask)
    result = CliRunner().invoke(main, ["train", "--data", str(root), "--out", str(tmp_path / "run"),
                                       "--epochs", "3", "--no-augment", *TINY])
    assert result.exit_code == 1
    assert "loss became nan at epoch 1, batch 1" in result.output
    assert "--learning-rate" in result.output


def test_mixed_precision_model_predicts_the_same_after_reload(cells, tmp_path):
    out = tmp_path / "run"
    result = training.train(_tiny_config(cells, out, epochs=1, mixed_precision="bfloat16"))
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    model = keras.models.load_model(result.best_model)
    assert model.encoders[0].conv_block.conv1.dtype_policy.name == "mixed_bfloat16"
    x = np.random.default_rng(0).random((1, 32, 32, 1), dtype=np.float32)
    again = keras.models.load_model(result.best_model)
    a, b = np.asarray(model(x)), np.asarray(again(x))
    assert a.dtype == np.float32  # the head runs in float32
    np.testing.assert_array_equal(a, b)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_train_in_step_on_loopback(cells, tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "run"
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        cmd = [sys.executable, str(Path(__file__).parents[1] / "train.py"), "--strategy", "multiworker",
               "--data", str(cells), "--out", str(out), "--epochs", "2", "--verbose", "2",
               "--depth", "2", "--base-filters", "4", "--tile-size", "32", "--batch-size", "4",
               "--steps-per-epoch", "3", "--no-augment"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:  # a worker left waiting for a crashed peer must not outlive the test
            p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    # Both workers ran the same epochs, in step, with all-reduced (identical) losses.
    epochs = [[line for line in log.splitlines() if "val_dice" in line] for log in logs]
    assert len(epochs[0]) == len(epochs[1]) == 2
    loss = lambda line: line.split("loss: ")[1].split()[0]  # noqa: E731
    assert [loss(x) for x in epochs[0]] == [loss(x) for x in epochs[1]]
    assert (out / "best.keras").is_file() and (out / "report.json").is_file()


def test_evaluate_uses_the_images_the_run_held_out(cells, tmp_path):
    import shutil

    from unet_tf.data.layouts import find_samples
    from unet_tf.data.split import split_samples
    flat = tmp_path / "flat"                      # no val/ folder: training holds some out
    for split in ("train", "val"):
        for kind in ("images", "masks"):
            shutil.copytree(cells / split / kind, flat / kind, dirs_exist_ok=True)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(flat), "--out", str(out), "--epochs", "1",
                                       "--val-fraction", "0.34", "--seed", "5", *TINY])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["evaluate", str(out), str(flat), "--tile-size", "32"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "evaluation.json").read_text())
    _, held_out = split_samples(find_samples(flat)["all"], 0.34, seed=5)
    assert report["split"] == "held-out val"
    assert [e["name"] for e in report["per_image"]] == [s.name for s in held_out]
