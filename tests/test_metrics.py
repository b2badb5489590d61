import numpy as np
import pytest

from unet_tf import metrics


def _ref_counts(labels, pred, k, ignore=255):
    valid = labels != ignore
    tp = np.array([((pred == c) & (labels == c) & valid).sum() for c in range(k)], float)
    p = np.array([((pred == c) & valid).sum() for c in range(k)], float)
    t = np.array([((labels == c) & valid).sum() for c in range(k)], float)
    return tp, p, t


def _batches(rng, k):
    out = []
    for n in (1, 3):
        labels = rng.integers(0, k, size=(n, 8, 8))
        labels[0, 0, :3] = 255
        out.append((labels, rng.random((n, 8, 8, k)).astype(np.float32)))
    return out


def test_multiclass_metrics_accumulate_over_batches(rng):
    k = 3
    batches = _batches(rng, k)
    dice, iou, acc = metrics.Dice(k), metrics.MeanIoU(k), metrics.PixelAccuracy(k)
    for labels, probs in batches:
        for m in (dice, iou, acc):
            m.update_state(labels, probs)
    labels = np.concatenate([b[0].reshape(-1) for b in batches])
    pred = np.concatenate([b[1].argmax(-1).reshape(-1) for b in batches])
    tp, p, t = _ref_counts(labels, pred, k)
    np.testing.assert_allclose(float(dice.result()), np.mean(2 * tp / (p + t)), rtol=1e-6)
    np.testing.assert_allclose(float(iou.result()), np.mean(tp / (p + t - tp)), rtol=1e-6)
    np.testing.assert_allclose(float(acc.result()), tp.sum() / t.sum(), rtol=1e-6)
    np.testing.assert_allclose(dice.per_class(), 2 * tp / (p + t), rtol=1e-6)
    # the dataset-level value differs from the mean of per-batch values in general
    per_batch = []
    for labels_b, probs_b in batches:
        m = metrics.Dice(k)
        m.update_state(labels_b, probs_b)
        per_batch.append(float(m.result()))
    assert abs(np.mean(per_batch) - float(dice.result())) > 1e-6
    for m in (dice, iou, acc):
        m.reset_state()
        assert float(m.result()) == 0.0


def test_binary_threshold_logits_and_weight_mask(rng):
    labels = rng.integers(0, 2, size=(2, 8, 8, 1))
    logits = rng.normal(size=(2, 8, 8, 1)).astype(np.float32)
    weights = np.ones((2, 8, 8), np.float32)
    weights[1] = 0  # weight 0 removes pixels
    dice = metrics.Dice(1, from_logits=True, threshold=0.7)
    dice.update_state(labels, logits, sample_weight=weights * 5)
    pred = (1 / (1 + np.exp(-logits[0, ..., 0])) >= 0.7).astype(int)
    tp, p, t = _ref_counts(labels[0, ..., 0], pred, 2)
    np.testing.assert_allclose(float(dice.result()), 2 * tp[1] / (p[1] + t[1]), rtol=1e-6)
    iou = metrics.MeanIoU(1, from_logits=True, threshold=0.7)
    iou.update_state(labels, logits, sample_weight=weights)
    np.testing.assert_allclose(float(iou.result()), np.mean(tp / (p + t - tp)), rtol=1e-6)


def test_empty_masks_are_safe():
    labels = np.zeros((1, 8, 8), np.int32)
    probs = np.zeros((1, 8, 8, 1), np.float32)
    dice = metrics.Dice(1)
    dice.update_state(labels, probs)
    assert np.isfinite(float(dice.result()))
    assert np.isnan(dice.per_class()[1])  # foreground absent from both
    iou = metrics.MeanIoU(1)
    iou.update_state(labels, probs)
    assert float(iou.result()) == pytest.approx(1.0)  # background only, all right
    acc = metrics.PixelAccuracy(1)
    acc.update_state(np.full((1, 8, 8), 255), probs)  # nothing valid
    assert float(acc.result()) == 0.0


def test_metric_config_round_trip():
    m = metrics.Dice(4, class_id=2, threshold=0.3, ignore_index=0)
    clone = metrics.Dice.from_config(m.get_config())
    assert clone.get_config() == m.get_config()


def test_foreground_means_leave_the_background_out(rng):
    k = 4
    labels = rng.integers(0, k, size=(2, 16, 16))
    labels[:, :4] = 0                                   # a large, easy background
    probs = rng.random((2, 16, 16, k)).astype(np.float32)
    probs[:, :4, :, 0] += 2.0
    tp, p, t = _ref_counts(labels, probs.argmax(-1), k)
    dice = 2 * tp / (p + t)
    iou = tp / (p + t - tp)
    fg_dice = metrics.Dice(k, foreground_only=True, name="dice_fg")
    fg_iou = metrics.MeanIoU(k, foreground_only=True)
    all_dice = metrics.Dice(k)
    for m in (fg_dice, fg_iou, all_dice):
        m.update_state(labels, probs)
    assert float(fg_dice.result()) == pytest.approx(dice[1:].mean(), abs=1e-6)
    assert float(fg_iou.result()) == pytest.approx(iou[1:].mean(), abs=1e-6)
    assert float(all_dice.result()) == pytest.approx(dice.mean(), abs=1e-6)
    assert fg_dice.name == "dice_fg"

    counts = metrics.PixelCounts(k)
    for lab, pr in zip(labels, probs):
        counts.add(lab, pr.argmax(-1), lab != 255)
    scores = counts.scores()
    assert scores["dice_foreground"] == pytest.approx(dice[1:].mean())
    assert scores["iou_foreground"] == pytest.approx(iou[1:].mean())
    assert scores["dice"] == pytest.approx(dice.mean())          # all classes, as before
    assert scores["mean_iou"] == pytest.approx(iou.mean())


def test_binary_foreground_dice_is_the_foreground_class():
    labels = np.zeros((1, 8, 8), int)
    labels[0, 2:6, 2:6] = 1
    probs = np.zeros((1, 8, 8, 1), np.float32)
    probs[0, 2:6, 3:7] = 0.9
    m = metrics.Dice(1, foreground_only=True)
    m.update_state(labels, probs)
    assert float(m.result()) == pytest.approx(2 * 12 / 32)
    counts = metrics.PixelCounts(1)
    counts.add(labels[0], (probs[0, ..., 0] >= 0.5).astype(int), np.ones((8, 8), bool))
    scores = counts.scores()
    assert scores["dice_foreground"] == scores["dice"] == pytest.approx(2 * 12 / 32)
    assert scores["iou_foreground"] == pytest.approx(12 / 20)


def test_foreground_metrics_serialise():
    import keras
    for m in (metrics.Dice(3, foreground_only=True, name="dice_fg"),
              metrics.MeanIoU(3, foreground_only=True, name="iou_fg")):
        config = keras.saving.serialize_keras_object(m)
        clone = keras.saving.deserialize_keras_object(config)
        assert type(clone) is type(m) and clone.foreground_only and clone.name == m.name
        assert clone.get_config() == m.get_config()
