"""Pretrained-encoder U-Nets: tap strides, weights from files, preprocessing, freezing, TFLite.

Encoders are built with ``weights=None`` or from local files: nothing is
downloaded ("imagenet" is checked with Keras's download replaced by a local
file). MobileNetV2 (alpha 0.35) and EfficientNetB0 run in the default suite;
ResNet50 and EfficientNetB1..B7 in the slow one. Shapes at odd sizes, the
``.keras`` round trip, gradients and export parity run in the model contract.
"""
import keras
import numpy as np
import pytest

from unet_tf import losses
from unet_tf.models import ENCODERS, EncoderUNet, FreezeEncoder
from unet_tf.models.encoders import build_encoder, preprocess

DEFAULT = ["mobilenetv2", "efficientnetb0"]
SLOW = sorted(set(ENCODERS) - set(DEFAULT))


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _alpha(name):
    return 0.35 if name == "mobilenetv2" else 1.0


def _application(name, weights=None):
    spec = ENCODERS[name]
    extra = {"alpha": 0.35} if name == "mobilenetv2" else {}
    return getattr(keras.applications, spec.application)(
        include_top=False, weights=weights, input_shape=(None, None, 3), **extra)


def _randomize_statistics(model, seed=0):
    """Non-default batch-norm statistics, so that a load that skips them would show."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))


def _check_taps(name, size=64):
    encoder = build_encoder(name, depth=5, alpha=_alpha(name))
    outs = encoder(np.zeros((1, size, size, 3), np.float32))
    assert [tuple(o.shape[1:3]) for o in outs] == [(size // 2**k, size // 2**k) for k in range(1, 6)]


@pytest.mark.parametrize("name", DEFAULT)
def test_taps_sit_at_strides_2_to_32(name):
    _check_taps(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_taps_sit_at_strides_2_to_32_slow(name):
    _check_taps(name)


def test_preprocessing_matches_keras_applications():
    x = np.random.default_rng(0).random((1, 4, 4, 3), dtype=np.float32)
    apps = keras.applications
    np.testing.assert_allclose(_np(preprocess(x, "mobilenetv2")),
                               apps.mobilenet_v2.preprocess_input(x * 255.0), atol=1e-5)
    np.testing.assert_allclose(_np(preprocess(x, "resnet50")),
                               apps.resnet50.preprocess_input(x * 255.0), atol=1e-4)
    np.testing.assert_allclose(_np(preprocess(x, "efficientnetb3")),
                               apps.efficientnet.preprocess_input(x * 255.0), atol=1e-4)


def test_sizes_must_be_multiples_of_32_and_options_are_checked():
    model = EncoderUNet(encoder="mobilenetv2", encoder_alpha=0.35, base_filters=4, in_channels=1)
    with pytest.raises(ValueError, match="32 or 64"):
        model(np.zeros((1, 48, 64, 1), np.float32))
    assert tuple(model(np.zeros((1, 64, 32, 1), np.float32)).shape) == (1, 64, 32, 1)
    for options, match in [(dict(padding="valid"), "padding='same'"), (dict(depth=6), "1..5"),
                           (dict(encoder="vgg16"), "not one of"),
                           (dict(encoder="resnet50", encoder_alpha=0.5), "alpha"),
                           (dict(encoder_weights="/no/such/file.h5"), "no such file")]:
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            EncoderUNet(**{"encoder": "mobilenetv2", **options})


@pytest.mark.parametrize("suffix", [".weights.h5", pytest.param(".h5", marks=pytest.mark.slow)])
def test_encoder_weights_from_a_local_file_give_the_saved_encoders_outputs(tmp_path, suffix):
    app = _application("mobilenetv2")
    _randomize_statistics(app)
    path = tmp_path / f"encoder{suffix}"
    if suffix == ".h5":
        app.save(path)  # the legacy HDF5 format that keras.applications downloads
    else:
        app.save_weights(path)
    taps = keras.Model(app.input, [app.get_layer(n).output for n in ENCODERS["mobilenetv2"].taps])
    model = EncoderUNet(encoder="mobilenetv2", encoder_alpha=0.35, encoder_weights=str(path),
                        base_filters=4, in_channels=3)
    x = np.random.default_rng(1).random((2, 64, 64, 3), dtype=np.float32)
    for got, expected in zip(model.encoder(model.encoder_inputs(x)), taps(x * 2.0 - 1.0)):
        np.testing.assert_allclose(_np(got), _np(expected), atol=1e-5)
    # A saved model carries its weights: loading it never reads the file again.
    model.save(tmp_path / "model.keras")
    path.unlink()
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.get_config()["encoder_weights"] == str(path)
    np.testing.assert_array_equal(_np(loaded(x)), _np(model(x)))


def test_imagenet_weights_match_keras_applications(tmp_path, monkeypatch):
    """``encoder_weights="imagenet"`` gives the encoder of ``EfficientNetB0(weights="imagenet")``
    (with its extra rescaling), here with Keras's download replaced by a local file."""
    fake = _application("efficientnetb0")
    _randomize_statistics(fake)
    norm = next(layer for layer in fake.layers if isinstance(layer, keras.layers.Normalization))
    norm.adapt_mean.assign(np.reshape([0.485, 0.456, 0.406], norm.adapt_mean.shape))
    norm.adapt_variance.assign(np.reshape([0.229, 0.224, 0.225], norm.adapt_variance.shape))
    path = tmp_path / "efficientnetb0_notop.h5"
    fake.save(path)
    import keras.src.utils.file_utils as file_utils  # what keras.applications downloads with
    monkeypatch.setattr(file_utils, "get_file", lambda *args, **kwargs: str(path))

    reference = _application("efficientnetb0", weights="imagenet")
    taps = keras.Model(reference.input,
                       [reference.get_layer(n).output for n in ENCODERS["efficientnetb0"].taps])
    x = np.random.default_rng(2).random((1, 32, 32, 3), dtype=np.float32)
    expected = [_np(t) for t in taps(x * 255.0)]
    models = [EncoderUNet(encoder="efficientnetb0", encoder_weights=weights, base_filters=4,
                          in_channels=3)
              for weights in ("imagenet", str(path))]  # the downloaded file, given by path, too
    for model in models:
        for got, want in zip(model.encoder(model.encoder_inputs(x)), expected):
            np.testing.assert_allclose(_np(got), want, atol=1e-4, rtol=1e-4)
    # The match survives set_weights (float32 clones for export use it).
    clone = EncoderUNet.from_config(models[0].get_config())
    clone.set_weights(models[0].get_weights())
    np.testing.assert_allclose(_np(clone(x)), _np(models[0](x)), atol=1e-5)


def test_grey_images_are_repeated_into_rgb():
    rgb = EncoderUNet(encoder="mobilenetv2", encoder_alpha=0.35, depth=2, base_filters=4,
                      in_channels=3)
    grey = EncoderUNet(encoder="mobilenetv2", encoder_alpha=0.35, depth=2, base_filters=4,
                       in_channels=1)
    grey.set_weights(rgb.get_weights())  # no extra layer for 1 or 3 channels
    x = np.random.default_rng(3).random((2, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(_np(grey(x)), _np(rgb(np.repeat(x, 3, -1))), atol=1e-6)


def _encoder_state(model):
    return [np.array(_np(w)) for w in model.encoder.weights]


def _changed(before, after):
    return any(not np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("frozen_at_construction",
                         [False, pytest.param(True, marks=pytest.mark.slow)])
def test_freeze_encoder_epochs_then_fine_tune(frozen_at_construction):
    keras.utils.set_random_seed(0)
    model = EncoderUNet(encoder="mobilenetv2", encoder_alpha=0.35, depth=2, base_filters=4,
                        in_channels=1, freeze_encoder=frozen_at_construction)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses.DiceCrossEntropy())
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1), dtype=np.float32)
    y = (x[..., 0] > 0.5).astype("int32")
    states = [_encoder_state(model)]
    head = [np.array(_np(model.head.kernel))]

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            states.append(_encoder_state(self.model))
            head.append(np.array(_np(self.model.head.kernel)))

    model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[FreezeEncoder(1), Record()])
    # Epoch 0: the encoder (weights and batch-norm statistics) stays as it was; the decoder trains.
    assert not _changed(states[0], states[1]) and _changed(head[0], head[1])
    # Epoch 1: everything trains.
    assert _changed(states[1], states[2])
    assert model.encoder.trainable


def test_frozen_encoder_has_no_trainable_weights():
    model = EncoderUNet(encoder="mobilenetv2", encoder_alpha=0.35, depth=2, base_filters=4,
                        in_channels=1, freeze_encoder=True)
    encoder_paths = {w.path for w in model.encoder.weights}
    assert not encoder_paths & {w.path for w in model.trainable_weights}
    assert model.get_config()["freeze_encoder"] is True


def _tflite(model, size, variant, tiles=None):
    import tempfile
    from pathlib import Path

    from unet_tf.deploy.tflite import _convert, _fixed_shape_saved_model
    from unet_tf.runtimes import run_tflite, tflite_interpreter, tflite_ops
    if tiles is None:
        tiles = np.random.default_rng(0).random((4, size, size, model.in_channels), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        _fixed_shape_saved_model(model, (size, size), model.in_channels, Path(tmp) / "m")
        content = _convert(Path(tmp) / "m", variant, tiles if variant == "int8" else None)
    interp = tflite_interpreter(content, num_threads=1, xnnpack=False)
    ops = tflite_ops(interp)
    assert not [op for op in ops if op.upper().startswith(("FLEX", "VAR_HANDLE", "CUSTOM"))], ops
    return run_tflite(interp, tiles[:1]), _np(model(tiles[:1], training=False)), interp


def _check_tflite(name, depth=5, float32=True):
    model = EncoderUNet(encoder=name, encoder_alpha=_alpha(name), base_filters=4, in_channels=1,
                        depth=depth)
    if float32:
        got, expected, _ = _tflite(model, 32, "float32")
        np.testing.assert_allclose(got, expected, atol=1e-5)
    got, _, interp = _tflite(model, 32, "int8")  # calibrated on 4 tiles; uint8 in and out
    assert interp.get_input_details()[0]["dtype"] == np.uint8
    assert got.shape == (1, 32, 32, 1)


def test_mobilenetv2_converts_to_tflite_int8():
    # float32 parity: the model contract; the whole encoders: the slow test below.
    _check_tflite("mobilenetv2", depth=2, float32=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_converts_to_tflite_float32_and_int8(name):
    _check_tflite(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenetv2", "efficientnetb0"])
def test_overfits_one_image(name):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((1, 64, 64, 1), dtype=np.float32) * 0.2
    y = np.zeros((1, 64, 64), np.int32)
    y[0, 10:40, 20:52] = 1
    x[0, 10:40, 20:52, 0] += 0.6
    model = EncoderUNet(encoder=name, encoder_alpha=_alpha(name), base_filters=8, in_channels=1,
                        dropout=0.0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=losses.DiceCrossEntropy())
    model.fit(np.repeat(x, 4, 0), np.repeat(y, 4, 0), batch_size=4, epochs=60, verbose=0)
    mask = _np(model(x))[0, ..., 0] > 0.5
    dice = 2 * (mask & (y[0] == 1)).sum() / (mask.sum() + (y[0] == 1).sum())
    assert dice > 0.9
    # The trained model's full-integer TFLite version, calibrated on the image, agrees.
    got, _, _ = _tflite(model, 64, "int8", tiles=np.concatenate([x, x[:, ::-1], x[:, :, ::-1]]))
    int8 = got[0, ..., 0] > 0.5
    assert 2 * (int8 & mask).sum() / (int8.sum() + mask.sum()) > 0.95


def test_training_config_maps_to_the_encoder_unet():
    from unet_tf.config import TrainConfig
    from unet_tf.training import build_model
    config = TrainConfig(encoder="mobilenetv2", depth=5, base_filters=4, plan=False,
                         freeze_encoder_epochs=2)
    model = build_model(config, num_classes=1, in_channels=1)
    assert isinstance(model, EncoderUNet) and model.encoder_name == "mobilenetv2"
    assert model.depth == 5 and model.encoder_weights is None
    for bad in (dict(encoder="resnet50", arch="unetpp"), dict(encoder="resnet50", depth=6),
                dict(encoder_weights="imagenet"), dict(freeze_encoder_epochs=1)):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


@pytest.mark.slow
def test_train_with_an_encoder_frozen_then_fine_tuned(tmp_path):
    from unet_tf.config import TrainConfig
    from unet_tf.training import train
    config = TrainConfig(out=str(tmp_path / "run"), encoder="mobilenetv2", depth=5,
                         freeze_encoder_epochs=1, loss="focal", epochs=2, steps_per_epoch=2,
                         synthetic_images=6, tile_size=64, base_filters=4, batch_size=2,
                         plan=False, verbose=0)
    result = train(config)
    loaded = keras.models.load_model(result.best_model)
    assert isinstance(loaded, EncoderUNet) and loaded.depth == 5
    assert len(result.history["loss"]) == 2 and np.isfinite(result.history["loss"]).all()
