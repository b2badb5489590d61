"""Segmentation metrics that accumulate counts over batches.

Each metric keeps per-class confusion counts in its state and computes the
score from the totals, so an epoch's value is the dataset-level score, not the
mean of per-batch scores.

Predictions are made hard before counting: ``p >= threshold`` for one output
channel (binary), ``argmax`` otherwise. Labels follow the losses' conventions
(sparse or one-hot; ``ignore_index`` pixels are skipped). ``sample_weight`` is
used only as a mask (pixels of weight 0 are skipped), because ``model.fit``
passes the dataset's weight map to the metrics as well.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = ["Dice", "MeanIoU", "PixelAccuracy", "confusion_counts", "PixelCounts"]


def _hard_labels(y_pred, threshold: float, from_logits: bool):
    """Predicted class per pixel, int32 (batch, H, W)."""
    y_pred = ops.cast(y_pred, "float32")
    if y_pred.shape[-1] == 1:
        p = ops.sigmoid(y_pred[..., 0]) if from_logits else y_pred[..., 0]
        return ops.cast(p >= threshold, "int32")
    return ops.cast(ops.argmax(y_pred, axis=-1), "int32")


def _true_labels(y_true, num_channels: int, ignore_index):
    """Label per pixel (int32) and a 0/1 validity mask, for sparse or one-hot labels."""
    if len(y_true.shape) == 4 and y_true.shape[-1] > 1 and num_channels > 1:
        valid = ops.sum(ops.cast(y_true, "float32"), axis=-1) > 0
        return ops.cast(ops.argmax(y_true, axis=-1), "int32"), valid
    labels = ops.cast(y_true, "int32")
    if len(labels.shape) == 4:
        labels = labels[..., 0]
    valid = ops.ones_like(labels, dtype="bool") if ignore_index is None else labels != ignore_index
    return labels, valid


def confusion_counts(y_true, y_pred, num_classes: int, threshold=0.5, from_logits=False,
                     ignore_index=255, sample_weight=None):
    """Per-class true positives, predicted counts and true counts, as float32 vectors.

    ``num_classes`` counts classes, so a binary model has 2 (background, foreground).
    """
    pred = _hard_labels(y_pred, threshold, from_logits)
    labels, valid = _true_labels(y_true, y_pred.shape[-1], ignore_index)
    if sample_weight is not None:
        sample_weight = ops.cast(sample_weight, "float32")
        if len(sample_weight.shape) == 4:
            sample_weight = sample_weight[..., 0]
        valid = ops.logical_and(valid, sample_weight > 0)
    valid = ops.reshape(ops.cast(valid, "float32"), (-1, 1))
    pred_1h = ops.one_hot(ops.reshape(pred, (-1,)), num_classes, dtype="float32") * valid
    true_1h = ops.one_hot(ops.reshape(labels, (-1,)), num_classes, dtype="float32") * valid
    return (ops.sum(pred_1h * true_1h, axis=0), ops.sum(pred_1h, axis=0), ops.sum(true_1h, axis=0))


class _ConfusionMetric(keras.metrics.Metric):
    """Base: accumulates per-class intersections and prediction/target sizes."""

    def __init__(self, num_classes=1, threshold=0.5, from_logits=False, ignore_index=255,
                 name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        self.threshold = float(threshold)
        self.from_logits = bool(from_logits)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        # A binary model (one sigmoid channel) has two classes to count.
        self.count_classes = max(2, self.num_classes)
        shape = (self.count_classes,)
        self.intersection = self.add_variable(shape, initializer="zeros", name="intersection")
        self.predicted = self.add_variable(shape, initializer="zeros", name="predicted")
        self.actual = self.add_variable(shape, initializer="zeros", name="actual")

    def update_state(self, y_true, y_pred, sample_weight=None):
        tp, pred, true = confusion_counts(y_true, y_pred, self.count_classes, self.threshold,
                                          self.from_logits, self.ignore_index, sample_weight)
        self.intersection.assign_add(tp)
        self.predicted.assign_add(pred)
        self.actual.assign_add(true)

    def reset_state(self):
        for v in (self.intersection, self.predicted, self.actual):
            v.assign(ops.zeros_like(v))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, threshold=self.threshold,
                      from_logits=self.from_logits, ignore_index=self.ignore_index)
        return config


def _mean_present(scores, present, foreground_only: bool = False):
    """Mean of ``scores`` over the classes present (from class 1 on with
    ``foreground_only``: background left out)."""
    if foreground_only:
        scores, present = scores[1:], present[1:]
    present = ops.cast(present, "float32")
    return ops.sum(scores * present) / ops.maximum(ops.sum(present), 1.0)


@keras.saving.register_keras_serializable(package="unet_tf")
class Dice(_ConfusionMetric):
    """Dice coefficient ``2 |P & T| / (|P| + |T|)`` of hard predictions.

    ``result()`` is the foreground dice for a binary model, and the mean over
    classes present in the prediction or the target otherwise (or the dice of
    one class with ``class_id``). With ``foreground_only`` the mean leaves
    class 0 (background) out, as segmentation papers report it; for a binary
    model that is the same foreground dice. ``per_class()`` gives every
    class's score (NaN for a class absent from both).
    """

    def __init__(self, num_classes=1, class_id=None, threshold=0.5, from_logits=False,
                 ignore_index=255, name="dice", dtype=None, foreground_only=False):
        super().__init__(num_classes, threshold, from_logits, ignore_index, name, dtype)
        self.class_id = None if class_id is None else int(class_id)
        self.foreground_only = bool(foreground_only)

    def _scores(self):
        denominator = self.predicted + self.actual
        return 2.0 * self.intersection / ops.maximum(denominator, 1e-12), denominator > 0

    def result(self):
        scores, present = self._scores()
        if self.class_id is not None:
            return scores[self.class_id]
        if self.num_classes == 1:
            return scores[1]
        return _mean_present(scores, present, self.foreground_only)

    def per_class(self) -> np.ndarray:
        scores, present = self._scores()
        return np.where(ops.convert_to_numpy(present), ops.convert_to_numpy(scores), np.nan)

    def get_config(self):
        config = super().get_config()
        config["class_id"] = self.class_id
        config["foreground_only"] = self.foreground_only
        return config


@keras.saving.register_keras_serializable(package="unet_tf")
class MeanIoU(_ConfusionMetric):
    """Intersection over union of hard predictions, averaged over classes.

    A binary model counts background and foreground (as ``keras.metrics.MeanIoU``
    does); classes absent from both prediction and target are left out of the
    mean. With ``foreground_only`` class 0 is left out too (for a binary model:
    the foreground IoU). ``per_class()`` gives every class's IoU (NaN when absent).
    """

    def __init__(self, num_classes=1, threshold=0.5, from_logits=False, ignore_index=255,
                 name="mean_iou", dtype=None, foreground_only=False):
        super().__init__(num_classes, threshold, from_logits, ignore_index, name, dtype)
        self.foreground_only = bool(foreground_only)

    def _scores(self):
        union = self.predicted + self.actual - self.intersection
        return self.intersection / ops.maximum(union, 1e-12), union > 0

    def result(self):
        return _mean_present(*self._scores(), self.foreground_only)

    def get_config(self):
        config = super().get_config()
        config["foreground_only"] = self.foreground_only
        return config

    def per_class(self) -> np.ndarray:
        scores, present = self._scores()
        return np.where(ops.convert_to_numpy(present), ops.convert_to_numpy(scores), np.nan)


@keras.saving.register_keras_serializable(package="unet_tf")
class PixelAccuracy(_ConfusionMetric):
    """Fraction of valid pixels whose predicted class is right."""

    def __init__(self, num_classes=1, threshold=0.5, from_logits=False, ignore_index=255,
                 name="pixel_accuracy", dtype=None):
        super().__init__(num_classes, threshold, from_logits, ignore_index, name, dtype)

    def result(self):
        return ops.sum(self.intersection) / ops.maximum(ops.sum(self.actual), 1.0)


class PixelCounts:
    """Per-class counts over whole images in numpy, and the scores they give.

    The full-image counterpart of the metrics above, for evaluation outside
    ``model.fit`` (``report.json``, ``unet-tf evaluate``): ``add`` each image's
    labels and prediction, then ``scores()``.
    """

    def __init__(self, num_classes: int):
        self.num_classes = int(num_classes)
        k = max(2, self.num_classes)
        self.tp, self.predicted, self.actual = np.zeros(k), np.zeros(k), np.zeros(k)

    def add(self, truth: np.ndarray, pred: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Count one image; returns its per-class true positives."""
        k = len(self.tp)
        t, p = truth[valid].astype(np.int64), pred[valid].astype(np.int64)
        if t.size and t.max() >= k:
            raise ValueError(f"label {int(t.max())} but the model has {k} classes")
        tp = np.bincount(t[t == p], minlength=k)[:k]
        self.tp += tp
        self.predicted += np.bincount(p, minlength=k)[:k]
        self.actual += np.bincount(t, minlength=k)[:k]
        return tp

    def scores(self) -> dict:
        """Per-class dice and IoU (None for absent classes), their means, pixel accuracy.

        ``dice`` is the foreground dice for a binary model, else the mean over
        all classes; ``mean_iou`` the mean IoU over all classes (background
        included, also for binary models). ``dice_foreground`` and
        ``iou_foreground`` are the means over classes 1..K-1, background left
        out, as the field reports them (binary: the foreground class's score).
        Classes absent from both prediction and truth are left out of every mean.
        """
        denominator = self.predicted + self.actual
        dice = np.where(denominator > 0, 2 * self.tp / np.maximum(denominator, 1), np.nan)
        union = denominator - self.tp
        iou = np.where(union > 0, self.tp / np.maximum(union, 1), np.nan)
        fg = dice[1:] if self.num_classes == 1 else dice
        mean = lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else None  # noqa: E731
        clean = lambda v: [None if np.isnan(x) else float(x) for x in v]  # noqa: E731
        return {"dice_per_class": clean(dice), "iou_per_class": clean(iou),
                "dice": mean(fg), "mean_iou": mean(iou),
                "dice_foreground": mean(dice[1:]), "iou_foreground": mean(iou[1:]),
                "pixel_accuracy": float(self.tp.sum() / max(self.actual.sum(), 1)),
                "pixels": int(self.actual.sum())}
