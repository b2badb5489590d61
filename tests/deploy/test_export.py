"""Export: a SavedModel for TF Serving and TFLite files for LiteRT, proven against Keras."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from unet_tf import deploy as export
from unet_tf import training
from unet_tf.data import synthetic as datasets
from unet_tf.deploy import saved_model, tflite
from unet_tf.config import TrainConfig
from unet_tf.inference import predict_tiled
from unet_tf.runtimes import load_runtime


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run folder (binary cells, same padding)."""
    tmp = tmp_path_factory.mktemp("export")
    datasets.write_dataset(tmp / "data", n=6, size=64, seed=2)
    config = TrainConfig(plan=False, data=str(tmp / "data"), out=str(tmp / "run"), depth=2, base_filters=4,
                         tile_size=32, batch_size=4, steps_per_epoch=6, epochs=2, verbose=0)
    training.train(config)
    return tmp / "run"


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    options = export.ExportOptions(tflite_sizes=[(32, 48)], latency_runs=2)
    report = export.export_model(run, out, options=options, log=lambda *_: None)
    return out, report


def test_every_artifact_is_written_and_checked(exported):
    out, report = exported
    version = out / "unet" / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    assert (version / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0
    saved = json.loads((out / "export_report.json").read_text())
    kinds = [(a["kind"], a.get("variant")) for a in saved["artifacts"]]
    assert kinds == [("saved_model", None), ("tflite", "float32"), ("tflite", "float16"),
                     ("tflite", "dynamic_int8"), ("tflite", "int8")]
    for artifact in saved["artifacts"]:
        assert artifact["ok"] and artifact["size_bytes"] > 0 and artifact["latency_ms"] > 0
    sm, f32, f16, dyn, int8 = saved["artifacts"]
    assert sm["max_abs_diff"] <= 1e-5 and sm["warmup_records"] == 6
    assert f32["max_abs_diff"] <= 1e-5 and f16["max_abs_diff"] <= 1e-3
    assert dyn["mask_dice"] >= 0.98 and int8["mask_dice"] >= 0.98
    assert int8["input_dtype"] == "uint8" and int8["output_dtype"] == "uint8"
    assert int8["calibration_tiles"] >= 64
    for artifact in saved["artifacts"][1:]:
        assert "CONV_2D" in artifact["ops"]
        assert not any(op.startswith(("FLEX", "VAR_HANDLE")) for op in artifact["ops"])
    assert "serving_default" in saved["saved_model_cli"] and "serve_png" in saved["saved_model_cli"]


def test_saved_model_serves_odd_sizes_in_a_fresh_process_without_unet_tf(exported):
    out, _ = exported
    script = textwrap.dedent("""
        import sys, numpy as np, tensorflow as tf
        m = tf.saved_model.load(sys.argv[1])
        assert set(m.signatures) >= {"serving_default", "serve_float", "serve_png"}
        x = np.random.default_rng(0).integers(0, 256, (2, 37, 53, 1), dtype=np.uint8)
        out = m.signatures["serving_default"](images=tf.constant(x))
        assert out["probabilities"].shape == (2, 37, 53, 1) and out["probabilities"].dtype == tf.float32
        assert out["mask"].shape == (2, 37, 53) and out["mask"].dtype == tf.uint8
        f = m.signatures["serve_float"](images=tf.constant(x.astype(np.float32) / 255))
        assert np.abs(f["probabilities"].numpy() - out["probabilities"].numpy()).max() < 1e-6
        png = tf.io.encode_png(tf.constant(x[0])).numpy()
        mask = tf.io.decode_png(m.signatures["serve_png"](image_bytes=tf.constant([png]))["mask_png"][0])
        assert mask.shape == (37, 53, 1)
        assert np.array_equal(mask.numpy()[..., 0], out["mask"].numpy()[0] * 255)
        assert "unet_tf" not in sys.modules
        print("OK")
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(out / "unet" / "1")], capture_output=True,
                          text=True, cwd=str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")


def test_runtimes_give_the_same_masks(run, exported):
    out, _ = exported
    image = np.random.default_rng(3).random((70, 90, 1), dtype=np.float32)
    # The same tiles for every runtime: the TFLite file's fixed 32x48 shape.
    keras_probs = predict_tiled(load_runtime(run / "best.keras"), image, tile_size=(32, 48))
    sm_probs = predict_tiled(load_runtime(out / "unet" / "1"), image, tile_size=(32, 48))
    tfl = load_runtime(out / "tflite" / "unet_32x48_float32.tflite")
    assert tfl.fixed_shape == (32, 48)
    tfl_probs = predict_tiled(tfl, image)
    np.testing.assert_allclose(sm_probs, keras_probs, atol=1e-5)
    np.testing.assert_allclose(tfl_probs, keras_probs, atol=1e-4)
    assert np.array_equal(sm_probs >= 0.5, keras_probs >= 0.5)


def test_relative_paths_from_the_command_line(run, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from unet_tf.cli import main
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["export", str(run), "--out", "relative/exports", "--no-tflite"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "relative" / "exports" / "unet" / "1" / "saved_model.pb").is_file()


def test_existing_version_is_not_overwritten(run, exported):
    out, _ = exported
    before = (out / "unet" / "1" / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="--force"):
        export.export_model(run, out, options=export.ExportOptions(version=1, tflite_variants=()),
                            log=lambda *_: None)
    assert (out / "unet" / "1" / "saved_model.pb").stat().st_mtime_ns == before
    assert not [p for p in (out / "unet").iterdir() if p.name.startswith(".")]


def test_parity_breach_fails_the_export(run, tmp_path, monkeypatch):
    original = saved_model._keras_reference

    def off_by_a_bit(model, meta, images):
        return [e + 1e-3 for e in original(model, meta, images)]

    monkeypatch.setattr(saved_model, "_keras_reference", off_by_a_bit)
    with pytest.raises(export.ExportError, match="does not match"):
        export.export_model(run, tmp_path, options=export.ExportOptions(tflite_variants=()),
                            log=lambda *_: None)
    assert not (tmp_path / "unet" / "1").exists()  # nothing half-written


def test_flex_op_fails_the_export(run, tmp_path, monkeypatch):
    import tensorflow as tf
    original = tflite._fixed_shape_saved_model

    def with_flex_op(model, shape, channels, path):
        import keras
        archive = keras.export.ExportArchive()
        archive.track(model)
        # tf.linalg.det has no TFLite builtin: it needs a Flex (select TF) op.
        archive.add_endpoint(
            "serving_default",
            lambda images: {"output": model(images) + tf.linalg.det(images[..., :2, :2, 0])[..., None, None, None]},
            [tf.TensorSpec((1, shape[0], shape[1], channels), tf.float32, name="images")])
        archive.write_out(str(path), verbose=False)

    monkeypatch.setattr(tflite, "_fixed_shape_saved_model", with_flex_op)
    with pytest.raises(export.ExportError, match="builtin ops"):
        export.export_model(run, tmp_path, options=export.ExportOptions(
            tflite_sizes=[(32, 32)], tflite_variants=("float32",)), log=lambda *_: None)
    del original
