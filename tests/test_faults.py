"""A run folder and an export that can be trusted: NaN, resume, repeated commands, bit depths, leftovers."""
import json
import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from unet_tf import training
from unet_tf.cli import main
from unet_tf.config import TrainConfig


def _config(data, out, **kw):
    values = dict(data=str(data), out=str(out), depth=2, base_filters=4, tile_size=32, batch_size=4,
                  steps_per_epoch=3, epochs=2, verbose=0, plan=False)
    values.update(kw)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def finished(cells, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    training.train(_config(cells, out))
    return out


def _nan_after_first_epoch(monkeypatch):
    """The learning rate turns NaN after epoch 1: the weights become NaN in epoch 2."""
    original = training._callbacks

    class Poison(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.model.optimizer.learning_rate.assign(float("nan"))

    def with_poison(*args, **kwargs):
        cbs, guard, checkpoint = original(*args, **kwargs)
        return [Poison()] + cbs, guard, checkpoint

    monkeypatch.setattr(training, "_callbacks", with_poison)


def test_nan_never_overwrites_a_finite_model(cells, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _nan_after_first_epoch(monkeypatch)
    with pytest.raises(training.TrainingDiverged) as err:
        training.train(_config(cells, out, epochs=3))
    assert "(epoch 1" in str(err.value) and "last.keras" in str(err.value)
    for name in ("last.keras", "best.keras"):
        model = keras.models.load_model(out / name, compile=False)
        assert all(np.isfinite(w).all() for w in model.get_weights()), name
    assert json.loads((out / "state.json").read_text())["epoch"] == 1


def test_predict_and_export_refuse_a_model_with_nan_weights(finished, tmp_path):
    model = keras.models.load_model(finished / "best.keras", compile=False)
    weights = model.get_weights()
    weights[0] = np.full_like(weights[0], np.nan)
    model.set_weights(weights)
    bad = tmp_path / "bad.keras"
    model.save(bad)
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((32, 32), np.uint8))
    for args in (["predict", str(bad), str(image), "--out", str(tmp_path / "p")],
                 ["export", str(bad), "--out", str(tmp_path / "e"), "--no-tflite"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert "bad.keras" in result.output and "NaN" in result.output


def test_resume_of_a_finished_run_changes_nothing(finished):
    before = {p.name: p.stat().st_mtime_ns for p in finished.iterdir() if p.is_file()}
    result = training.train(_config(finished.parent / "x", finished, resume=True))
    assert result.finished_before
    after = {p.name: p.stat().st_mtime_ns for p in finished.iterdir() if p.is_file()}
    assert after == before


def test_resume_with_more_epochs_continues(cells, tmp_path):
    out = tmp_path / "run"
    training.train(_config(cells, out, epochs=1))
    result = training.train(_config(cells, out, epochs=3, resume=True, learning_rate=0.5))
    assert len(result.history["loss"]) == 3
    rows = (out / "history.csv").read_text().strip().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2", "3"]
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 3 and config["learning_rate"] == 0.001  # what actually ran


def test_resumed_best_stays_the_best(cells, tmp_path, monkeypatch):
    out = tmp_path / "run"
    training.train(_config(cells, out, epochs=2))
    best_before = json.loads((out / "best.json").read_text())
    # A resumed epoch whose score is worse must not replace best.keras.
    original = training._callbacks

    class Worse(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_dice"] = -1.0

    monkeypatch.setattr(training, "_callbacks", lambda *a, **k: (
        lambda r: ([Worse()] + r[0], r[1], r[2]))(original(*a, **k)))
    training.train(_config(cells, out, epochs=3, resume=True))
    assert json.loads((out / "best.json").read_text()) == best_before
    assert json.loads((out / "report.json").read_text())["best_epoch"] == best_before["epoch"]


def test_exporting_twice_refuses_without_force(finished, tmp_path):
    args = ["export", str(finished), "--out", str(tmp_path / "exp"), "--tflite-size", "32x32",
            "--tflite-variant", "float32"]
    assert CliRunner().invoke(main, args).exit_code == 0
    report = tmp_path / "exp" / "export_report.json"
    before = report.stat().st_mtime_ns
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "--force" in again.output
    assert report.stat().st_mtime_ns == before
    assert not (tmp_path / "exp" / "unet" / "2").exists()
    new_version = CliRunner().invoke(main, args[:4] + ["--version", "2", "--no-tflite"])
    assert new_version.exit_code == 0, new_version.output
    assert (tmp_path / "exp" / "unet" / "2").is_dir()
    assert (tmp_path / "exp" / "export_report_v2.json").is_file()


def test_failed_export_leaves_no_empty_folders(finished, tmp_path):
    out = tmp_path / "exp"
    result = CliRunner().invoke(main, ["export", str(finished), "--out", str(out),
                                       "--tflite-size", "30x30"])
    assert result.exit_code == 1 and "--tflite-size" in result.output
    assert not out.exists()


def test_an_unwritable_out_is_a_message(finished, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((32, 32), np.uint8))
    for args in (["predict", str(finished), str(image), "--out", str(blocker / "p")],
                 ["export", str(finished), "--out", str(blocker / "e"), "--no-tflite"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert str(blocker) in result.output and "Traceback" not in result.output


def test_a_data_error_leaves_no_run_folder(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "missing"), "--out", str(out),
                                       "--no-plan"])
    assert result.exit_code == 1
    assert not out.exists()


def test_a_start_that_failed_does_not_force_resume(cells, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # what a start killed before epoch 1 leaves
    (out / "logs").mkdir()
    result = training.train(_config(cells, out, epochs=1))
    assert len(result.history["loss"]) == 1


def test_a_16_bit_copy_predicts_like_the_8_bit_image(finished, tmp_path):
    from unet_tf.inference import predict_image
    rng = np.random.default_rng(0)
    image8 = (rng.random((40, 48)) * 255).astype(np.uint8)
    image16 = image8.astype(np.uint16) * 257
    p8 = predict_image(finished, image8, tile_size=32)
    p16 = predict_image(finished, image16, tile_size=32)
    np.testing.assert_allclose(p16, p8, atol=1e-4)


def test_a_float_image_out_of_range_is_refused_by_name(finished, tmp_path):
    image = tmp_path / "float.tif"
    cv2.imwrite(str(image), (np.random.default_rng(0).random((32, 32)) * 1000).astype(np.float32))
    result = CliRunner().invoke(main, ["predict", str(finished), str(image), "--out", str(tmp_path / "p")])
    assert result.exit_code == 1
    assert "float.tif" in result.output and "uint8" in result.output


def test_the_time_guard_leaves_room_for_the_last_validation_and_the_report():
    """Training stops once the time left would not cover the epoch's validation (as long
    as the last one took) and the report's reserve, so model.fit returns before the
    deadline minus that reserve."""
    import time

    from unet_tf.checkpoints import TimeBudget

    class SlowValidation(keras.callbacks.Callback):
        def on_test_end(self, logs=None):
            time.sleep(0.5)

    x = np.zeros((64, 4), np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, x[:, :1], batch_size=8, epochs=1, validation_data=(x, x[:, :1]), verbose=0)  # traced
    started = time.monotonic()
    guard = TimeBudget(started + 4.0, reserve_s=1.5, first_epoch_end_s=0.1, log=lambda *_: None)
    slow_step = keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_, **__: time.sleep(0.05))
    model.fit(x, x[:, :1], batch_size=8, epochs=1000, validation_data=(x, x[:, :1]), verbose=0,
              callbacks=[SlowValidation(), slow_step, guard])
    ended = time.monotonic()
    assert guard.stopped_at is not None
    assert guard.epoch_end_s >= 0.5                 # the slow validation was measured
    assert ended <= started + 4.0 - 1.5 + 0.5        # the reserve is still there
