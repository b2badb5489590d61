"""The plan in a real run: train.py with no tuning follows it, the user's options win, it travels."""
import json
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from unet_tf.cli import main

# Depth and width fixed so that one model size is timed, not two (seconds on 2 cores).
SMALL = ["--depth", "2", "--base-filters", "4", "--verbose", "0"]


@pytest.fixture(scope="module")
def planned_run(cells, tmp_path_factory):
    out = tmp_path_factory.mktemp("planned") / "run"
    started = time.monotonic()
    result = CliRunner().invoke(main, ["train", "--data", str(cells), "--out", str(out),
                                       "--time-budget", "50s", "--no-rot90", *SMALL])
    return out, result, time.monotonic() - started


def test_the_run_follows_the_plan_and_keeps_it(planned_run):
    out, result, _ = planned_run
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "plan.json").read_text())
    config = json.loads((out / "config.json").read_text())
    entries = plan["entries"]
    for name in ("tile_size", "batch_size", "epochs", "steps_per_epoch", "loss", "hflip"):
        assert config[name] == entries[name]["value"], name
    # 64 px images: the whole image is one tile, not a 128 crop.
    assert config["tile_size"] == 64
    assert entries["depth"]["overridden"] and entries["rot90"]["overridden"]
    assert config["rot90"] is False and config["depth"] == 2
    assert "Options you set override the plan: --base-filters, --depth, --rot90" in result.output
    run = json.loads((out / "run.json").read_text())
    assert run["normalisation"]["scheme"] == entries["normalisation"]["value"]


def test_the_run_ends_within_its_time_budget(planned_run):
    out, result, seconds = planned_run
    assert result.exit_code == 0, result.output
    history = (out / "history.csv").read_text().strip().splitlines()
    assert len(history) >= 2  # it trained
    report = json.loads((out / "report.json").read_text())
    # The budget covers the whole run: planning, training, the report and the figures.
    assert seconds <= 50 * 1.05, seconds
    assert report["dice"] > 0


def test_plan_goes_into_the_export(planned_run, tmp_path):
    out, result, _ = planned_run
    assert result.exit_code == 0, result.output
    exported = CliRunner().invoke(main, ["export", str(out), "--out", str(tmp_path / "exp"),
                                         "--tflite-size", "64x64", "--tflite-variant", "float32"])
    assert exported.exit_code == 0, exported.output
    meta = json.loads((tmp_path / "exp" / "unet" / "1" / "assets.extra" / "unet_tf.json").read_text())
    tflite_meta = json.loads((tmp_path / "exp" / "tflite" / "unet_64x64_float32.json").read_text())
    plan = json.loads((out / "plan.json").read_text())
    assert meta["plan"] == plan == tflite_meta["plan"]
    assert meta["normalisation"]["scheme"] == plan["entries"]["normalisation"]["value"]


def test_plan_command_prints_reasons_and_writes_plan_json(cells, tmp_path):
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(main, ["plan", str(cells), "--out", str(out), "--estimate",
                                       "--time-budget", "10m"])
    assert result.exit_code == 0, result.output
    assert "reason" in result.output and "tile_size" in result.output
    plan = json.loads(out.read_text())
    assert plan["entries"]["steps"]["value"] > 0
    assert "fingerprint" in plan


@pytest.mark.parametrize("args,needle", [
    (["--time-budget", "1s"], "--time-budget"),
    (["--time-budget", "abc"], "--time-budget"),
    (["--memory-budget", "1k"], "--memory-budget"),
])
def test_bad_budgets_are_named_and_leave_nothing(cells, tmp_path, args, needle):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(cells), "--out", str(out), *SMALL,
                                       *args])
    assert result.exit_code == 1, result.output
    assert needle in result.output
    assert not out.exists()


def _write_pairs(root, n, size):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 255, (size, size), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[2:size // 2, 2:size // 2] = 255
        cv2.imwrite(str(root / "images" / f"i{i}.png"), image)
        cv2.imwrite(str(root / "masks" / f"i{i}.png"), mask)


@pytest.mark.parametrize("n,size,needle", [(1, 64, "too few to plan"), (3, 8, "px")])
def test_data_the_plan_cannot_work_with_is_named(tmp_path, n, size, needle):
    data = tmp_path / "data"
    _write_pairs(data, n, size)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(out),
                                       "--val-fraction", "0"])
    assert result.exit_code == 1, result.output
    assert needle in result.output
    assert not out.exists()
