import keras
import numpy as np
import pytest

from unet_tf import losses

EPS = 1e-7


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _ref_ce(labels, probs, weights=None, ignore=255, class_weights=None):
    """Numpy reference: weighted CE summed over valid pixels / number of valid pixels."""
    valid = labels != ignore
    lab = np.where(valid, labels, 0)
    if probs.shape[-1] == 1:
        p = np.clip(probs[..., 0], EPS, 1 - EPS)
        ce = -(lab * np.log(p) + (1 - lab) * np.log(1 - p))
    else:
        p = np.clip(np.take_along_axis(probs, lab[..., None], -1)[..., 0], EPS, 1)
        ce = -np.log(p)
    w = valid.astype(np.float64)
    if weights is not None:
        w = w * weights
    if class_weights is not None:
        w = w * np.asarray(class_weights)[lab]
    return (w * ce).sum() / max(valid.sum(), 1)


def _ref_dice(labels, probs, ignore=255, smooth=1.0):
    valid = (labels != ignore)[..., None]
    lab = np.where(valid[..., 0], labels, 0)
    if probs.shape[-1] == 1:
        target = lab[..., None].astype(float)
    else:
        target = np.eye(probs.shape[-1])[lab]
    p, t = probs * valid, target * valid
    inter = (p * t).sum((0, 1, 2))
    den = p.sum((0, 1, 2)) + t.sum((0, 1, 2))
    return 1 - ((2 * inter + smooth) / (den + smooth)).mean()


@pytest.fixture
def multiclass(rng):
    labels = rng.integers(0, 3, size=(2, 8, 8))
    labels[0, :2] = 255
    logits = rng.normal(size=(2, 8, 8, 3)).astype(np.float32) * 3
    return labels, logits


def test_weighted_ce_matches_numpy_with_weight_map_and_ignore(multiclass, rng):
    labels, logits = multiclass
    weights = rng.uniform(0.5, 10, size=labels.shape).astype(np.float32)
    probs = _softmax(logits)
    loss = losses.WeightedCrossEntropy()
    got = float(loss(labels, probs, sample_weight=weights))
    np.testing.assert_allclose(got, _ref_ce(labels, probs, weights), rtol=1e-5)
    got_logits = float(losses.WeightedCrossEntropy(from_logits=True)(labels, logits, weights))
    np.testing.assert_allclose(got_logits, _ref_ce(labels, probs, weights), rtol=1e-4)


def test_weighted_ce_class_weights_and_one_hot(multiclass):
    labels, logits = multiclass
    probs = _softmax(logits)
    cw = [0.2, 1.0, 3.0]
    got = float(losses.WeightedCrossEntropy(class_weights=cw)(labels, probs))
    np.testing.assert_allclose(got, _ref_ce(labels, probs, class_weights=cw), rtol=1e-5)
    # one-hot labels, ignored pixels as all-zero rows, give the same value
    onehot = np.eye(3)[np.where(labels == 255, 0, labels)] * (labels != 255)[..., None]
    got_1h = float(losses.WeightedCrossEntropy(class_weights=cw)(onehot, probs))
    np.testing.assert_allclose(got_1h, got, rtol=1e-6)


def test_binary_ce_sparse_shapes_and_logits(rng):
    labels = rng.integers(0, 2, size=(2, 8, 8, 1))
    labels[1, 0, 0, 0] = 255
    logits = rng.normal(size=(2, 8, 8, 1)).astype(np.float32)
    probs = 1 / (1 + np.exp(-logits))
    ref = _ref_ce(labels[..., 0], probs)
    np.testing.assert_allclose(float(losses.WeightedCrossEntropy()(labels, probs)), ref, rtol=1e-5)
    np.testing.assert_allclose(float(losses.WeightedCrossEntropy()(labels[..., 0], probs)), ref, rtol=1e-5)
    np.testing.assert_allclose(
        float(losses.WeightedCrossEntropy(from_logits=True)(labels, logits)), ref, rtol=1e-4)


@pytest.mark.parametrize("channels", [1, 3])
def test_dice_matches_numpy(channels, rng):
    labels = rng.integers(0, max(channels, 2), size=(2, 8, 8))
    labels[0, 0] = 255
    logits = rng.normal(size=(2, 8, 8, channels)).astype(np.float32)
    probs = 1 / (1 + np.exp(-logits)) if channels == 1 else _softmax(logits)
    np.testing.assert_allclose(float(losses.DiceLoss()(labels, probs)), _ref_dice(labels, probs), rtol=1e-5)
    np.testing.assert_allclose(
        float(losses.DiceLoss(from_logits=True)(labels, logits)), _ref_dice(labels, probs), rtol=1e-4)


def test_dice_uses_sample_weight_as_mask(rng):
    labels = rng.integers(0, 2, size=(1, 8, 8))
    probs = rng.random((1, 8, 8, 1)).astype(np.float32)
    weights = np.ones((1, 8, 8), np.float32) * 7.0
    weights[0, :4] = 0
    masked = labels.copy()
    masked[0, :4] = 255
    got = float(losses.DiceLoss()(labels, probs, sample_weight=weights))
    np.testing.assert_allclose(got, _ref_dice(masked, probs), rtol=1e-5)


def test_dice_ce_is_the_weighted_sum(multiclass):
    labels, logits = multiclass
    probs = _softmax(logits)
    got = float(losses.DiceCrossEntropy(dice_weight=0.3, ce_weight=2.0)(labels, probs))
    np.testing.assert_allclose(got, 0.3 * _ref_dice(labels, probs) + 2.0 * _ref_ce(labels, probs), rtol=1e-5)


@pytest.mark.parametrize("loss_cls", [losses.WeightedCrossEntropy, losses.DiceLoss, losses.DiceCrossEntropy])
def test_numerically_safe(loss_cls):
    empty = np.zeros((2, 8, 8), np.int32)  # all background
    ignored = np.full((2, 8, 8), 255)  # nothing valid at all
    huge = np.full((2, 8, 8, 3), 0.0, np.float32)
    huge[..., 1] = 1e4  # confident and wrong
    for from_logits, pred in [(True, huge), (True, -huge), (False, _softmax(huge)),
                              (True, np.full((2, 8, 8, 1), -1e4, np.float32)),
                              (False, np.zeros((2, 8, 8, 1), np.float32))]:
        for labels in (empty, ignored):
            value = float(loss_cls(from_logits=from_logits)(labels, pred))
            assert np.isfinite(value), (loss_cls, from_logits, labels.max())
    # a perfect prediction on an all-background batch costs (almost) nothing
    perfect = np.zeros((2, 8, 8, 1), np.float32)
    assert float(loss_cls()(empty, perfect)) < 1e-3


@pytest.mark.parametrize("loss_cls", [losses.WeightedCrossEntropy, losses.DiceLoss, losses.DiceCrossEntropy])
def test_losses_serialize(loss_cls):
    loss = loss_cls(from_logits=True, ignore_index=7, class_weights=[1.0, 2.0])
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(clone) is loss_cls and clone.get_config() == loss.get_config()


def test_get_by_name():
    assert isinstance(losses.get("dice-ce"), losses.DiceCrossEntropy)
    with pytest.raises(ValueError, match="wce, dice, dice_ce"):
        losses.get("lovasz")
