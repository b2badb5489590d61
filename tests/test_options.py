"""Every numeric option is range-checked up front: a bad value names the option and creates nothing."""
import math

import pytest
from click.testing import CliRunner

from unet_tf.cli import main
from unet_tf.config import RANGES, TrainConfig


def _bad_values(name):
    low, high, closed = RANGES[name]
    values = [low - 1 if isinstance(low, int) else low - abs(low) - 0.5]
    values.append(high + 1 if closed else high)
    if isinstance(getattr(TrainConfig(), name), float) or isinstance(low, float):
        values.append(math.nan)
    return values


CASES = [(name, value) for name in sorted(RANGES) for value in _bad_values(name)]


@pytest.mark.parametrize("name,value", CASES)
def test_bad_train_option_is_refused_by_name(tmp_path, name, value):
    out = tmp_path / "run"
    flag = "--" + name.replace("_", "-")
    result = CliRunner().invoke(main, ["train", "--out", str(out), flag, str(value)])
    assert result.exit_code in (1, 2), result.output
    assert flag in result.output, result.output
    assert not out.exists()


@pytest.mark.parametrize("key,value", [("epochs", "abc"), ("tile_size", "32"), ("learning_rate", "x"),
                                       ("flip", "yes"), ("steps_per_epoch", -1), ("num_classes", 0),
                                       ("learning_rate", -1.0), ("batch_size", True)])
def test_bad_config_file_value_is_refused_by_name(tmp_path, key, value):
    import json
    config = tmp_path / "c.json"
    config.write_text(json.dumps({key: value}))
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "--" + key.replace("_", "-") in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("args,flag", [
    (["export", "MODEL", "--tflite-size", "0x32"], "--tflite-size"),
    (["export", "MODEL", "--tflite-size", "abc"], "--tflite-size"),
    (["export", "MODEL", "--version", "0"], "--version"),
    (["predict", "MODEL", "IMG", "--tile-size", "-1"], "--tile-size"),
    (["predict", "MODEL", "IMG", "--batch-size", "0"], "--batch-size"),
    (["predict", "MODEL", "IMG", "--threshold", "1.5"], "--threshold"),
    (["evaluate", "MODEL", "DATA", "--threshold", "-0.1"], "--threshold"),
    (["evaluate", "MODEL", "DATA", "--tile-size", "0"], "--tile-size"),
    (["check-data", "DATA", "--num-classes", "0"], "--num-classes"),
])
def test_bad_command_option_is_refused_by_name(tmp_path, args, flag):
    args = [str(tmp_path / a) if a in ("MODEL", "IMG", "DATA") else a for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (1, 2), result.output
    assert flag in result.output, result.output
    assert "Traceback" not in result.output
