"""U-Net 3+: full-scale deep supervision, the classification-guided module, options and errors.

Shapes at odd sizes, the ``.keras`` round trip, gradients, ``model.fit`` and
export parity run in the model contract (tests/models/test_contract.py).
"""
import keras
import numpy as np
import pytest

from unet_tf import losses
from unet_tf.models import UNet3Plus
from unet_tf.models.unet3p import FullScaleNode, image_labels


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _model(**options):
    options.setdefault("num_classes", 1)
    options.setdefault("depth", 2)
    options.setdefault("base_filters", 4)
    options.setdefault("dropout", 0.0)
    options.setdefault("in_channels", 1)
    return UNet3Plus(**options)


@pytest.mark.parametrize("depth,channels,num_classes", [(2, 1, 1), (3, 3, 4)])
def test_training_returns_every_head_at_the_input_size(depth, channels, num_classes):
    model = _model(depth=depth, in_channels=channels, num_classes=num_classes)
    x = np.random.default_rng(0).random((2, 32, 48, channels), dtype=np.float32)
    heads = model(x, training=True)
    assert len(heads) == depth + 1  # every decoder node and the bottleneck
    assert all(tuple(h.shape) == (2, 32, 48, num_classes) for h in heads)
    # Outside training: one tensor, the final head (the last one).
    inferred = model.heads(x)
    np.testing.assert_allclose(_np(model(x)), _np(inferred[-1]), atol=1e-6)
    # Every decoder node has (depth + 1) * skip_filters channels; skip_filters defaults to base_filters.
    assert model.skip_filters == 4
    assert model.nodes[0].fuse.filters == (depth + 1) * 4


def test_average_mode_is_the_mean_of_the_heads():
    model = _model(inference_mode="average", skip_filters=3)
    x = np.random.default_rng(1).random((1, 32, 32, 1), dtype=np.float32)
    heads = [_np(h) for h in model.heads(x)]
    np.testing.assert_allclose(_np(model(x)), np.mean(heads, axis=0), atol=1e-6)
    final = model.with_inference_mode("final")
    np.testing.assert_allclose(_np(final(x)), heads[-1], atol=1e-6)


def test_without_deep_supervision_there_is_one_head():
    model = _model(deep_supervision=False)
    x = np.zeros((1, 32, 32, 1), np.float32)
    assert tuple(model(x, training=True).shape) == (1, 32, 32, 1)
    assert len(model.head_convs) == 1 and len(model.heads(x)) == 1


@pytest.mark.parametrize("options,match", [
    (dict(padding="valid"), "padding='same'"),
    (dict(attention=True), "attention"),
    (dict(inference_mode="average", deep_supervision=False), "deep_supervision"),
    (dict(inference_mode=1), "'final' or 'average'"),
    (dict(head_weights=[1, 1]), "3 values"),
    (dict(skip_filters=0), "skip_filters"),
])
def test_bad_options_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        _model(**options)


def test_sizes_follow_the_unet_rule():
    with pytest.raises(ValueError, match="28 or 32"):
        _model()(np.zeros((1, 30, 32, 1), np.float32))


def test_full_scale_node_resamples_every_input_to_its_level():
    node = FullScaleNode(skip_filters=2, num_inputs=4)
    enc = [np.zeros((1, 16, 16, 3), np.float32), np.zeros((1, 8, 8, 5), np.float32)]
    deeper = [np.zeros((1, 4, 4, 7), np.float32), np.zeros((1, 2, 2, 9), np.float32)]
    assert tuple(node(enc, deeper).shape) == (1, 8, 8, 8)
    with pytest.raises(ValueError, match="joins 4 maps"):
        node(enc, deeper[:1])


def _set_presence(model, present: bool):
    """Make the CGM say "present" or "absent" for every image (zero kernel, biased)."""
    kernel, bias = model.cgm_conv.get_weights()
    bias = np.array([-5.0, 5.0] if present else [5.0, -5.0], np.float32)
    model.cgm_conv.set_weights([np.zeros_like(kernel), bias])


@pytest.mark.parametrize("num_classes,logits", [(1, False), (3, False), (1, True), (3, True)])
def test_cgm_absent_empties_the_mask_and_present_leaves_it(num_classes, logits):
    model = _model(cgm=True, num_classes=num_classes, logits=logits, inference_mode="average")
    x = np.random.default_rng(2).random((2, 32, 32, 1), dtype=np.float32)
    ungated = np.mean([_np(h) for h in model.heads(x)], axis=0)
    _set_presence(model, present=True)
    np.testing.assert_allclose(_np(model(x)), ungated, atol=1e-6)
    _set_presence(model, present=False)
    out = _np(model(x))
    probs = _np(keras.activations.sigmoid(out) if num_classes == 1 else keras.activations.softmax(out)) \
        if logits else out
    if num_classes == 1:
        assert probs.max() < 1e-6  # no foreground anywhere
    else:
        np.testing.assert_allclose(probs[..., 0], 1.0, atol=1e-6)  # background everywhere
        assert probs[..., 1:].max() < 1e-6
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    presence = _np(model.presence(x))
    assert presence.shape == (2, 2) and (presence[:, 0] > presence[:, 1]).all()


def test_image_labels_from_sparse_and_one_hot_masks():
    sparse = np.zeros((3, 4, 4), np.int32)
    sparse[1, 0, 0] = 2
    sparse[2, 1, 1] = 255  # ignored: not an object
    np.testing.assert_array_equal(_np(image_labels(sparse)), [0, 1, 0])
    np.testing.assert_array_equal(_np(image_labels(sparse[..., None], ignore_index=None)), [0, 1, 1])
    onehot = np.eye(3, dtype=np.float32)[np.minimum(sparse, 2)]
    np.testing.assert_array_equal(_np(image_labels(onehot)), [0, 1, 1])


def test_training_loss_weighs_the_heads_and_adds_the_cgm_cross_entropy():
    model = _model(cgm=True, head_weights=[1, 2, 5])
    model.compile(optimizer="adam", loss=losses.DiceLoss())
    rng = np.random.default_rng(3)
    x = rng.random((2, 32, 32, 1), dtype=np.float32)
    y = np.zeros((2, 32, 32), np.int32)
    y[0, 4:9, 4:9] = 1  # image 0 has an object, image 1 has none
    outputs = model(x, training=True)
    total = float(model.compute_loss(x, y, outputs))
    heads, presence = outputs[:-1], _np(outputs[-1])
    seg = sum(w * float(losses.DiceLoss()(y, h)) for w, h in zip([0.125, 0.25, 0.625], heads))
    target = np.array([[0.0, 1.0], [1.0, 0.0]])
    p = np.clip(presence, 1e-7, 1 - 1e-7)
    bce = -(target * np.log(p) + (1 - target) * np.log(1 - p)).mean()
    assert total == pytest.approx(seg + bce, rel=1e-5)


@pytest.mark.slow  # model.fit of U-Net 3+ with the CGM runs in the contract (FITTED)
def test_overfits_one_image():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((1, 32, 32, 1), dtype=np.float32) * 0.2
    y = np.zeros((1, 32, 32), np.int32)
    y[0, 6:20, 10:26] = 1
    x[0, 6:20, 10:26, 0] += 0.6
    model = _model(depth=2, base_filters=8, cgm=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses.HybridLoss())
    model.fit(x, y, batch_size=1, epochs=30, verbose=0)
    mask = _np(model(x))[0, ..., 0] > 0.5
    dice = 2 * (mask & (y[0] == 1)).sum() / (mask.sum() + (y[0] == 1).sum())
    assert dice > 0.9


def test_training_config_maps_to_unet3p():
    from unet_tf.config import TrainConfig
    from unet_tf.training import build_model
    config = TrainConfig(arch="unet3p", depth=2, base_filters=4, skip_filters=3, cgm=True,
                         deep_supervision=False, plan=False)
    model = build_model(config, num_classes=2, in_channels=1)
    assert isinstance(model, UNet3Plus)
    assert (model.skip_filters, model.cgm, model.deep_supervision, model.depth) == (3, True, False, 2)
    for bad in (dict(arch="unet3p", padding="valid"), dict(cgm=True), dict(skip_filters=8)):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


@pytest.mark.slow
def test_train_unet3p_with_cgm_and_the_hybrid_loss(tmp_path):
    from unet_tf.config import TrainConfig
    from unet_tf.training import train
    config = TrainConfig(out=str(tmp_path / "run"), arch="unet3p", cgm=True, loss="hybrid",
                         depth=2, epochs=2, steps_per_epoch=2, synthetic_images=6, tile_size=64,
                         base_filters=4, batch_size=2, plan=False, verbose=0)
    result = train(config)
    loaded = keras.models.load_model(result.best_model)
    assert isinstance(loaded, UNet3Plus) and loaded.cgm
    assert result.report["dice"] is not None
