"""The model contract: every architecture and variant goes through the same matrix.

A new architecture gets shapes at odd sizes and several depths and channel
counts, the size errors, the ``.keras`` round trip and gradients by adding one
line to ``CONTRACT``; add it to ``FITTED`` and mark it for export to have it
trained with ``model.fit`` and exported to SavedModel and TFLite with parity.
"""
import keras
import numpy as np
import pytest

from unet_tf import deploy, sizes
from unet_tf.models import ARCHITECTURES, build_model

#: name -> (architecture, options, export it?). Exports cost 10-20 s each on 2
#: CPU cores, so three of them cover every op: residual blocks, attention gates
#: (nearest and bilinear), valid crops, U-Net++ averaged and pruned.
CONTRACT = {
    "unet": ("unet", {}, False),
    "unet_valid": ("unet", dict(padding="valid", batch_norm=True), False),
    "unet_residual": ("unet", dict(residual=True, batch_norm=True), False),
    "unet_residual_valid": ("unet", dict(residual=True, padding="valid"), False),
    "unet_attention": ("unet", dict(attention=True, upsampling="bilinear"), False),
    "unet_attention_valid": ("unet", dict(attention=True, padding="valid", batch_norm=True), False),
    "unet_residual_attention_valid": ("unet", dict(residual=True, attention=True, padding="valid",
                                                   batch_norm=True), True),
    "unetpp_final": ("unetpp", dict(batch_norm=True, head_weights=[1, 2]), False),  # 1..depth
    "unetpp_average": ("unetpp", dict(inference_mode="average", residual=True), False),
    "unetpp_average_residual_bilinear": ("unetpp", dict(inference_mode="average", residual=True,
                                                        batch_norm=True, upsampling="bilinear"), True),
    "unetpp_pruned": ("unetpp", dict(inference_mode=1, attention=True), False),
    "unetpp_pruned_attention": ("unetpp", dict(inference_mode=1, attention=True), True),
    "unetpp_no_deep_supervision": ("unetpp", dict(deep_supervision=False), False),
    "unetpp_valid": ("unetpp", dict(padding="valid", residual=True, attention=True,
                                    inference_mode="average"), False),
    "unet3p": ("unet3p", dict(), False),
    # CGM gating, averaged heads, every bilinear resize factor, residual encoder blocks.
    "unet3p_cgm_average": ("unet3p", dict(cgm=True, inference_mode="average", residual=True,
                                          skip_filters=3), True),
    # Pretrained-encoder U-Nets (weights=None here: tests never download). Depth 1..3
    # cuts the encoder at stride 2**depth; 3 input channels go straight in, 1 is
    # repeated, 2 pass a 1x1 projection.
    "encoder_mobilenetv2": ("encoder_unet", dict(encoder="mobilenetv2", encoder_alpha=0.35), True),
    "encoder_efficientnetb0": ("encoder_unet", dict(encoder="efficientnetb0", attention=True,
                                                    upsampling="bilinear"), False),
}
EXPORTED = sorted(name for name, (_, _, export) in CONTRACT.items() if export)


def _model(name, depth=2, num_classes=2, in_channels=1, **extra):
    arch, options, _ = CONTRACT[name]
    options = dict(options, **extra)
    if "head_weights" in options:  # one weight per head: as many as the depth
        options["head_weights"] = [1 + i for i in range(depth)]
    options.setdefault("base_filters", 4)
    options.setdefault("dropout", 0.0)
    return build_model(arch, num_classes=num_classes, depth=depth, in_channels=in_channels,
                       **options)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_every_registered_architecture_is_in_the_contract():
    assert {arch for arch, _, _ in CONTRACT.values()} == set(ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(CONTRACT))
@pytest.mark.parametrize("depth,channels,num_classes", [(1, 3, 1), (2, 1, 3), (3, 2, 2)])
def test_output_shapes_at_odd_sizes(name, depth, channels, num_classes):
    model = _model(name, depth=depth, num_classes=num_classes, in_channels=channels)
    h = sizes.nearest_valid_input_sizes(37, depth, model.padding)[1]
    w = sizes.nearest_valid_input_sizes(53, depth, model.padding)[1]
    y = model(np.zeros((2, h, w, channels), "float32"), training=False)
    assert tuple(y.shape) == (2, model.output_size(h), model.output_size(w), num_classes)
    assert tuple(y.shape) == model.compute_output_shape((2, h, w, channels))
    if model.padding == "same":
        assert (model.output_size(h), model.output_size(w)) == (h, w)


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_invalid_size_names_the_valid_ones(name):
    model = _model(name, depth=2)
    bad = 50 if model.padding == "same" else 61
    below, above = sizes.nearest_valid_input_sizes(bad, 2, model.padding)
    with pytest.raises(ValueError, match=f"{below} or {above}"):
        model(np.zeros((1, bad, bad, 1), "float32"))


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_keras_round_trip_gives_identical_outputs(tmp_path, name):
    model = _model(name)
    size = sizes.nearest_valid_input_sizes(44, 2, model.padding)[1]
    x = np.random.default_rng(1).random((2, size, size, 1), dtype=np.float32)
    expected = _np(model(x, training=False))
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(_np(loaded(x, training=False)), expected)


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_gradients_reach_every_trainable_weight(name):
    import tensorflow as tf
    model = _model(name, batch_norm=True)
    size = sizes.nearest_valid_input_sizes(32, 2, model.padding)[1]
    x = tf.random.uniform((2, size, size, 1), seed=1)
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        heads = out if isinstance(out, (list, tuple)) else [out]
        loss = tf.add_n([tf.reduce_mean(tf.square(h - 0.3)) for h in heads])
    grads = tape.gradient(loss, model.trainable_weights)
    assert len(grads) == len(model.trainable_weights) > 0
    unused = set()
    if getattr(model, "inference_mode", "final") not in ("final", "average"):
        unused = {w.path for w in model.trainable_weights}  # pruned: only a sub-network runs
    for weight, grad in zip(model.trainable_weights, grads):
        if weight.path in unused:
            continue
        assert grad is not None, weight.path
        assert float(tf.reduce_max(tf.abs(grad))) > 0, weight.path


# One fit per architecture and per kind of block (tracing a train step costs 5-15 s
# on 2 cores); test_overfit.py and test_variants.py overfit the others.
FITTED = sorted({"unet", "unetpp_final", "unet_residual_attention_valid", "unet3p_cgm_average"})


@pytest.mark.parametrize("name", FITTED)
def test_model_fit_lowers_the_loss(name):
    from unet_tf import losses, metrics
    keras.utils.set_random_seed(0)
    model = _model(name, batch_norm=True, num_classes=1)
    size = sizes.nearest_valid_input_sizes(32, 2, model.padding)[1]
    out = model.output_size(size)
    rng = np.random.default_rng(0)
    x = rng.random((8, size, size, 1), dtype=np.float32)
    margin = (size - out) // 2
    y = (x[:, margin:margin + out, margin:margin + out, 0] > 0.5).astype("int32")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses.DiceCrossEntropy(),
                  metrics=[metrics.Dice(1)])
    history = model.fit(x, y, batch_size=4, epochs=6, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert np.isfinite(history["dice"][-1])


@pytest.mark.parametrize("name", EXPORTED)
def test_export_to_saved_model_and_tflite_with_parity(tmp_path, monkeypatch, name):
    from unet_tf.deploy import export as export_module
    # saved_model_cli only fills the report's text and costs a TensorFlow start.
    monkeypatch.setattr(export_module, "saved_model_cli", lambda path: "")
    model = _model(name, num_classes=1)
    model.save(tmp_path / "model.keras")
    size = sizes.nearest_valid_input_sizes(32, 2, model.padding)[1]
    options = deploy.ExportOptions(tflite_sizes=[(size, size)], tflite_variants=("float32",),
                                   latency_runs=1)
    report = deploy.export_model(tmp_path / "model.keras", tmp_path / "out", options=options,
                                 log=lambda *_: None)  # raises ExportError on any breach
    saved, tflite = report["artifacts"]
    assert saved["ok"] and tflite["ok"] and tflite["max_abs_diff"] <= 1e-5
    assert saved["max_abs_diff"] <= 1e-5
    assert not any(op.startswith(("FLEX", "VAR_HANDLE")) for op in tflite["ops"])
    assert report["metadata"]["depth"] == model.depth
