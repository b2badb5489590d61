"""Focal, Tversky, IoU, MS-SSIM and hybrid losses against numpy / TensorFlow references."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from unet_tf import losses
from unet_tf.losses_extra import MSSSIM_POWER_FACTORS, ms_ssim, scales_for

EPS = 1e-7


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _targets(labels, channels, ignore=255):
    valid = labels != ignore
    lab = np.where(valid, labels, 0)
    target = lab[..., None].astype(float) if channels == 1 else np.eye(channels)[lab]
    return target, valid.astype(float)


def _ref_focal(labels, probs, gamma, weights=None, class_weights=None):
    target, valid = _targets(labels, probs.shape[-1])
    p = np.clip(probs, EPS, 1 - EPS if probs.shape[-1] == 1 else 1)
    if probs.shape[-1] == 1:
        t, q = target[..., 0], p[..., 0]
        fl = -(t * (1 - q) ** gamma * np.log(q) + (1 - t) * q ** gamma * np.log(1 - q))
    else:
        fl = -(target * (1 - p) ** gamma * np.log(p)).sum(-1)
    w = valid.copy()
    if weights is not None:
        w *= weights
    if class_weights is not None:
        lab = np.where(labels != 255, labels, 0)
        w *= np.asarray(class_weights)[lab]
    return (w * fl).sum() / max(valid.sum(), 1)


def _ref_region(labels, probs, kind, alpha=0.3, beta=0.7, gamma=1.0, smooth=1.0):
    target, valid = _targets(labels, probs.shape[-1])
    p, t = probs * valid[..., None], target * valid[..., None]
    tp = (p * t).sum((0, 1, 2))
    fp = (p * (1 - t)).sum((0, 1, 2))
    fn = ((1 - p) * t).sum((0, 1, 2))
    if kind == "iou":
        return 1 - ((tp + smooth) / (tp + fp + fn + smooth)).mean()
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return ((1 - index) ** gamma).mean()


@pytest.fixture
def multiclass(rng):
    labels = rng.integers(0, 3, size=(2, 8, 8))
    labels[0, :2] = 255
    logits = rng.normal(size=(2, 8, 8, 3)).astype(np.float32) * 3
    return labels, logits


@pytest.fixture
def binary(rng):
    labels = rng.integers(0, 2, size=(2, 8, 8))
    labels[1, 3] = 255
    logits = rng.normal(size=(2, 8, 8, 1)).astype(np.float32) * 3
    return labels, logits


@pytest.mark.parametrize("case", ["binary", "multiclass"])
@pytest.mark.parametrize("from_logits", [False, True])
def test_focal_matches_numpy(request, case, from_logits):
    labels, logits = request.getfixturevalue(case)
    probs = _sigmoid(logits) if logits.shape[-1] == 1 else _softmax(logits)
    weights = np.random.default_rng(1).uniform(0.5, 3, labels.shape).astype(np.float32)
    class_weights = [0.5, 2.0] if case == "binary" else [0.5, 1.0, 2.0]
    loss = losses.FocalLoss(gamma=2.0, from_logits=from_logits, class_weights=class_weights)
    got = float(loss(labels, logits if from_logits else probs.astype(np.float32), weights))
    assert got == pytest.approx(_ref_focal(labels, probs, 2.0, weights, class_weights), rel=1e-4)


def test_focal_with_gamma_0_is_the_cross_entropy(multiclass):
    labels, logits = multiclass
    focal = losses.FocalLoss(gamma=0.0, from_logits=True)(labels, logits)
    ce = losses.WeightedCrossEntropy(from_logits=True)(labels, logits)
    assert float(focal) == pytest.approx(float(ce), rel=1e-5)


def test_one_hot_labels_give_the_sparse_result(multiclass):
    labels, logits = multiclass
    onehot = np.eye(3, dtype=np.float32)[np.where(labels == 255, 0, labels)]
    onehot[labels == 255] = 0  # an all-zero row is an ignored pixel
    for loss in (losses.FocalLoss(from_logits=True), losses.TverskyLoss(from_logits=True),
                 losses.IoULoss(from_logits=True), losses.MSSSIMLoss(from_logits=True, scales=1,
                                                                     filter_size=3)):
        assert float(loss(onehot, logits)) == pytest.approx(float(loss(labels, logits)), rel=1e-5)


@pytest.mark.parametrize("case", ["binary", "multiclass"])
def test_tversky_and_iou_match_numpy(request, case):
    labels, logits = request.getfixturevalue(case)
    probs = (_sigmoid(logits) if logits.shape[-1] == 1 else _softmax(logits)).astype(np.float32)
    got = float(losses.TverskyLoss(alpha=0.3, beta=0.7, gamma=0.75)(labels, probs))
    assert got == pytest.approx(_ref_region(labels, probs, "tversky", gamma=0.75), rel=1e-4)
    assert float(losses.IoULoss()(labels, probs)) == pytest.approx(
        _ref_region(labels, probs, "iou"), rel=1e-4)
    # Tversky with alpha = beta = 0.5 is the dice loss (whose smoothing counts twice).
    half = losses.TverskyLoss(alpha=0.5, beta=0.5, smooth=0.5)(labels, probs)
    assert float(half) == pytest.approx(float(losses.DiceLoss()(labels, probs)), rel=1e-5)


def test_region_losses_use_sample_weight_as_a_mask(binary):
    labels, logits = binary
    weights = np.ones(labels.shape, np.float32) * 3.0
    weights[0, :4] = 0.0
    masked = labels.copy()
    masked[0, :4] = 255
    for loss in (losses.TverskyLoss(from_logits=True), losses.IoULoss(from_logits=True)):
        assert float(loss(labels, logits, weights)) == pytest.approx(float(loss(masked, logits)),
                                                                      rel=1e-6)


@pytest.mark.parametrize("shape,factors", [((2, 64, 64, 1), MSSSIM_POWER_FACTORS[:3]),
                                           ((2, 33, 45, 2), (0.4, 0.6)),
                                           ((1, 176, 176, 1), MSSSIM_POWER_FACTORS)])
def test_ms_ssim_matches_tensorflow(shape, factors):
    rng = np.random.default_rng(0)
    a = rng.random(shape).astype(np.float32)
    b = np.clip(a + 0.2 * rng.normal(size=shape), 0, 1).astype(np.float32)
    expected = tf.image.ssim_multiscale(a, b, 1.0, power_factors=factors).numpy()
    got = keras.ops.convert_to_numpy(ms_ssim(a, b, 1.0, power_factors=factors)).mean(-1)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_ms_ssim_loss_uses_the_scales_a_tile_allows(rng):
    assert [scales_for(s) for s in (10, 11, 32, 64, 128, 176, 512)] == [0, 1, 2, 3, 4, 5, 5]
    loss = losses.MSSSIMLoss()
    factors = loss.factors_for(32, 48)
    assert len(factors) == 2 and sum(factors) == pytest.approx(1.0)
    labels = rng.integers(0, 2, size=(2, 32, 32))
    probs = rng.random((2, 32, 32, 1)).astype(np.float32)
    expected = 1 - tf.image.ssim_multiscale(probs, labels[..., None].astype(np.float32), 1.0,
                                            power_factors=factors).numpy().mean()
    assert float(loss(labels, probs)) == pytest.approx(expected, abs=2e-5)
    assert float(loss(labels, labels[..., None].astype(np.float32))) == pytest.approx(0, abs=1e-5)
    with pytest.raises(ValueError, match="at least 22 px"):
        losses.MSSSIMLoss(scales=2).factors_for(16, 16)


def test_ms_ssim_gradients_stay_finite_at_a_perfect_prediction(rng):
    labels = rng.integers(0, 2, size=(2, 32, 32))
    logits = tf.Variable((labels[..., None] * 20.0 - 10.0).astype(np.float32))
    with tf.GradientTape() as tape:
        value = losses.HybridLoss(from_logits=True)(labels, logits)
    grad = tape.gradient(value, logits)
    assert np.isfinite(grad.numpy()).all() and np.isfinite(float(value))


def test_hybrid_is_focal_plus_ms_ssim_plus_iou(multiclass):
    labels, logits = multiclass
    labels = np.repeat(np.repeat(labels, 2, 1), 2, 2)  # 16 px: one 11-px scale
    logits = np.repeat(np.repeat(logits, 2, 1), 2, 2)
    weights = np.random.default_rng(4).uniform(0.5, 2, labels.shape).astype(np.float32)
    hybrid = losses.HybridLoss(from_logits=True, focal_weight=2.0, class_weights=[1, 2, 3])
    parts = [losses.FocalLoss(from_logits=True, class_weights=[1, 2, 3]),
             losses.MSSSIMLoss(from_logits=True, class_weights=[1, 2, 3]),
             losses.IoULoss(from_logits=True, class_weights=[1, 2, 3])]
    expected = sum(w * float(p(labels, logits, weights)) for w, p in zip([2, 1, 1], parts))
    assert float(hybrid(labels, logits, weights)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["focal", "tversky", "iou", "msssim", "hybrid"])
def test_get_by_name_and_serialization(name):
    loss = losses.get(name, ignore_index=7)
    assert loss.ignore_index == 7
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is type(loss) and again.get_config() == loss.get_config()


def test_focal_tversky_name_sets_the_exponent():
    assert losses.get("focal_tversky").gamma == 0.75
    with pytest.raises(ValueError, match="hybrid"):
        losses.get("nope")
