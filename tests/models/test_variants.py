"""U-Net variants: residual blocks, attention gates, U-Net++ with deep supervision."""
import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from unet_tf import losses, metrics, sizes
from unet_tf.data import synthetic as datasets
from unet_tf.models.blocks import AttentionGate, ConvBlock, DecoderBlock
from unet_tf.models import UNet
from unet_tf.models import UNetPlusPlus


def _tiny(cls=UNet, **kwargs):
    kwargs.setdefault("base_filters", 4)
    kwargs.setdefault("dropout", 0.0)
    kwargs.setdefault("in_channels", 1)
    return cls(**kwargs)


def _size(depth, padding, near=48):
    return sizes.nearest_valid_input_sizes(near, depth, padding)[1]


def _np(x):
    return keras.ops.convert_to_numpy(x)


# --------------------------------------------------------------------------- residual blocks
@pytest.mark.parametrize("padding,trim", [("same", 0), ("valid", 4)])
def test_residual_block_identity_and_projection_shortcuts(padding, trim):
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 4)).astype("float32")
    same_channels = ConvBlock(4, padding=padding, residual=True)
    same_channels.build(x.shape)
    assert same_channels.shortcut is None  # identity
    # With the second convolution silenced, the block is act(shortcut): the (cropped) input.
    same_channels.conv2.kernel.assign(np.zeros(same_channels.conv2.kernel.shape, "float32"))
    expected = np.maximum(x[:, trim // 2:16 - trim // 2, trim // 2:16 - trim // 2], 0)
    np.testing.assert_allclose(_np(same_channels(x)), expected, atol=1e-6)

    projected = ConvBlock(6, padding=padding, residual=True, batch_norm=True)
    y = projected(x, training=False)
    assert projected.shortcut.kernel.shape == (1, 1, 4, 6) and projected.shortcut_norm is not None
    assert tuple(y.shape) == (2, 16 - trim, 16 - trim, 6)
    assert projected.compute_output_shape(x.shape) == tuple(y.shape)


def test_old_block_configs_load_without_the_new_arguments():
    config = ConvBlock(4).get_config()
    assert config.pop("residual") is False
    assert ConvBlock.from_config(config).residual is False
    config = DecoderBlock(4).get_config()
    del config["residual"], config["attention"]
    block = DecoderBlock.from_config(config)
    assert block.gate is None and block.conv_block.residual is False
    unet_config = UNet(depth=2, base_filters=4).get_config()
    del unet_config["residual"], unet_config["attention"]
    assert UNet.from_config(unet_config).get_config()["residual"] is False


# --------------------------------------------------------------------------- attention gates
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_attention_decoder_gates_the_cropped_skip(padding):
    block = DecoderBlock(4, padding=padding, attention=True)
    x = np.random.rand(1, 6, 6, 8).astype("float32")
    skip = np.random.rand(1, 12 if padding == "same" else 18, 12 if padding == "same" else 18,
                          4).astype("float32")
    block.build(x.shape, skip.shape)
    y = block(x, skip)
    assert tuple(y.shape) == block.compute_output_shape(x.shape, skip.shape)
    assert block.gate.interpolation == ("nearest" if padding == "valid" else "bilinear")
    assert DecoderBlock.from_config(block.get_config()).get_config() == block.get_config()


def test_attention_gate_computes_the_additive_attention_formula():
    import tensorflow as tf
    rng = np.random.default_rng(0)
    x = rng.random((1, 8, 8, 3)).astype("float32")
    g = rng.normal(size=(1, 4, 4, 5)).astype("float32")
    gate = AttentionGate(2)
    gate.build(x.shape, g.shape)
    gate.theta_x.kernel.assign(np.full((2, 2, 3, 2), 0.05, "float32"))
    gate.phi_g.kernel.assign(np.full((1, 1, 5, 2), 0.1, "float32"))
    gate.psi.kernel.assign(np.ones((1, 1, 2, 1), "float32"))
    gate.psi.bias.assign(np.full((1,), -0.5, "float32"))
    # alpha = sigmoid(psi(relu(W_x x + W_g g))) on the 4x4 grid, then bilinear to 8x8.
    theta = 0.05 * x.reshape(1, 4, 2, 4, 2, 3).sum(axis=(2, 4, 5))
    phi = 0.1 * g.sum(-1)
    alpha = 1 / (1 + np.exp(-(2 * np.maximum(theta + phi, 0) - 0.5)))
    alpha = tf.image.resize(alpha[..., None], (8, 8), method="bilinear").numpy()
    np.testing.assert_allclose(_np(gate(x, g)), x * alpha, rtol=1e-5, atol=1e-6)
    assert 0 < alpha.min() and alpha.max() < 1


# --------------------------------------------------------------------------- U-Net++ shapes
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_unetpp_output_and_head_shapes(depth, padding):
    size = _size(depth, padding)
    model = _tiny(UNetPlusPlus, num_classes=3, depth=depth, padding=padding)
    x = np.random.default_rng(0).random((2, size, size, 1), dtype=np.float32)
    out = model.output_size(size)
    assert model.compute_output_shape((2, size, size, 1)) == (2, out, out, 3)
    y = _np(model(x))
    heads = [_np(h) for h in model.heads(x)]
    assert y.shape == (2, out, out, 3) and len(heads) == depth
    assert all(h.shape == y.shape for h in heads)
    np.testing.assert_allclose(y, heads[-1], atol=1e-6)  # "final": the deepest head
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
    # Same channels as U-Net at every level; the nested nodes add parameters.
    unet = _tiny(num_classes=3, depth=depth, padding=padding)
    assert tuple(unet(x).shape) == y.shape
    if depth > 1:
        assert model.count_params() > unet.count_params()
    assert len(model.nodes) == depth * (depth + 1) // 2


def test_unetpp_inference_modes_combine_the_heads():
    model = _tiny(UNetPlusPlus, depth=3)
    x = np.random.default_rng(0).random((1, 32, 32, 1), dtype=np.float32)
    heads = [_np(h) for h in model.heads(x)]
    average = model.with_inference_mode("average")
    np.testing.assert_allclose(_np(average(x)), np.mean(heads, axis=0), atol=1e-6)
    for depth in (1, 2, 3):
        np.testing.assert_allclose(_np(model.with_inference_mode(depth)(x)), heads[depth - 1],
                                   atol=1e-6)


def test_pruned_unetpp_computes_only_its_subnetwork():
    model = _tiny(UNetPlusPlus, depth=3)
    x = np.random.default_rng(0).random((1, 32, 32, 1), dtype=np.float32)
    pruned = model.with_inference_mode(1)
    # Poison every node X^{i,j} with i + j > 1: the pruned output must not see them.
    poisoned = [model.encoders[2], model.bottleneck] + [
        model._node(i, j) for j, i in model._node_order() if i + j > 1]
    for layer in poisoned:
        for layer_weight in layer.weights:
            pruned_weight = next(w for w in pruned.weights if w.path == layer_weight.path)
            pruned_weight.assign(np.full(pruned_weight.shape, np.nan, "float32"))
    assert np.isfinite(_np(pruned(x))).all()
    full = model.with_inference_mode("final")
    full.set_weights(pruned.get_weights())
    assert np.isnan(_np(full(x))).all()


def test_valid_padding_variants_tile_exactly():
    """Every nested skip is centre-cropped: a sub-tile on the 2**depth grid gives
    exactly the matching part of the large tile's output (overlap-tile relies on it)."""
    depth, small = 2, _size(2, "valid", 60)
    big = small + 4 * 2**depth
    x = np.random.default_rng(0).random((1, big, big, 1), dtype=np.float32)
    for model in (_tiny(UNetPlusPlus, depth=depth, padding="valid", attention=True, residual=True,
                        inference_mode="average"),
                  _tiny(depth=depth, padding="valid", attention=True, residual=True)):
        full, out = _np(model(x)), model.output_size(small)
        for offset in (0, 2**depth, 3 * 2**depth):
            part = _np(model(x[:, offset:offset + small, offset:offset + small]))
            np.testing.assert_allclose(part, full[:, offset:offset + out, offset:offset + out],
                                       atol=1e-6)


def test_invalid_unetpp_arguments():
    with pytest.raises(ValueError, match="prune depth"):
        UNetPlusPlus(depth=3, inference_mode=4)
    with pytest.raises(ValueError, match="inference_mode"):
        UNetPlusPlus(depth=3, inference_mode="mean")
    with pytest.raises(ValueError, match="needs deep_supervision"):
        UNetPlusPlus(depth=3, deep_supervision=False, inference_mode="average")
    with pytest.raises(ValueError, match="3 values"):
        UNetPlusPlus(depth=3, head_weights=[1, 1])
    with pytest.raises(ValueError, match="positive sum"):
        UNetPlusPlus(depth=2, head_weights=[0, 0])


# --------------------------------------------------------------------------- serialization
# The round trip of every variant is in test_contract.py.
def test_mixed_precision_survives_reload(tmp_path):
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _tiny(UNetPlusPlus, depth=2, residual=True, attention=True, batch_norm=True)
        model.save(tmp_path / "model.keras")
    finally:
        keras.mixed_precision.set_global_policy(previous)
    loaded = keras.models.load_model(tmp_path / "model.keras")
    compute = {layer.dtype_policy.compute_dtype for layer in loaded._flatten_layers()
               if layer.name != "probabilities"}
    assert compute == {"bfloat16"}
    assert loaded(np.zeros((1, 32, 32, 1), "float32")).dtype == "float32"


# --------------------------------------------------------------------------- deep supervision loss
def _batch():
    rng = np.random.default_rng(0)
    x = rng.random((2, 32, 32, 1), dtype=np.float32)
    return x, (rng.random((2, 32, 32)) > 0.5).astype("int32")


@pytest.mark.parametrize("head_weights", [[1, 0, 0], [1, 2, 3], None])
def test_deep_supervision_loss_weights_each_head_as_configured(head_weights):
    x, y = _batch()
    keras.utils.set_random_seed(0)
    model = _tiny(UNetPlusPlus, depth=3, head_weights=head_weights)
    loss = losses.get("dice_ce")
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss)
    head_losses = [float(loss(y, head)) for head in model.heads(x, training=True)]
    assert len(set(np.round(head_losses, 6))) == 3  # the heads differ, so the weights matter
    weights = np.asarray(head_weights or [1, 1, 1], np.float64)
    expected = float(np.dot(weights / weights.sum(), head_losses))
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    if head_weights == [1, 0, 0]:
        assert logs["loss"] == pytest.approx(head_losses[0], rel=1e-6)


def test_deep_supervision_trains_every_weighted_head_only():
    x, y = _batch()
    model = _tiny(UNetPlusPlus, depth=3, head_weights=[1, 0, 1])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.get("dice_ce"))
    before = [conv.kernel.numpy().copy() for conv in model.head_convs]
    model.train_on_batch(x, y)
    changed = [not np.allclose(b, conv.kernel.numpy()) for b, conv in zip(before, model.head_convs)]
    assert changed == [True, False, True]
    # Validation uses the inference output (one tensor): the plain loss of the final head.
    loss = losses.get("dice_ce")
    val = model.evaluate(x, y, return_dict=True, verbose=0)["loss"]
    assert val == pytest.approx(float(loss(y, model(x, training=False))), rel=1e-5)


# Export parity of every variant: test_contract.py.


# --------------------------------------------------------------------------- overfitting
def _one_image():
    yy, xx = np.mgrid[:64, :64]
    labels = (((yy - 20) ** 2 + (xx - 22) ** 2 < 100) | ((yy - 44) ** 2 + (xx - 40) ** 2 < 140))
    image = 0.1 + 0.5 * labels + np.random.default_rng(0).normal(0, 0.05, labels.shape)
    return image[None, ..., None].astype(np.float32), labels[None].astype(np.int32)


# Residual blocks and attention gates share one U-Net here: each overfit costs ~8 s.
@pytest.mark.parametrize("name,cls,kwargs", [
    ("unet_residual_attention", UNet, dict(residual=True, attention=True)),
    ("unetpp_deep_supervision", UNetPlusPlus, dict()),
])
def test_tiny_variant_overfits_one_image(name, cls, kwargs):
    keras.utils.set_random_seed(0)
    image, labels = _one_image()
    model = cls(num_classes=1, depth=2, base_filters=16, dropout=0.0, in_channels=1, **kwargs)
    dice = metrics.Dice(1)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=losses.get("dice_ce"), metrics=[dice])
    steps = 80
    model.fit(np.repeat(image, steps, 0), np.repeat(labels, steps, 0), epochs=1, batch_size=1,
              verbose=0)
    dice.reset_state()
    dice.update_state(labels, model(image, training=False))
    assert float(dice.result()) > 0.9, name


# --------------------------------------------------------------------------- command line
def test_cli_trains_unetpp_with_residual_blocks_and_attention(tmp_path):
    from unet_tf.cli import main
    datasets.write_dataset(tmp_path / "data", n=6, size=64, seed=1)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "--no-plan", "--data", str(tmp_path / "data"), "--out", str(out), "--arch", "unetpp",
        "--residual", "--attention", "--epochs", "1", "--depth", "2", "--base-filters", "4",
        "--tile-size", "32", "--batch-size", "4", "--steps-per-epoch", "2", "--verbose", "0"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["arch"], config["residual"], config["attention"],
            config["deep_supervision"]) == ("unetpp", True, True, True)
    best = keras.models.load_model(out / "best.keras", compile=False)
    assert isinstance(best, UNetPlusPlus) and best.residual and best.attention
    assert best.deep_supervision and len(best.head_convs) == 2
    assert "Validation dice" in result.output
