"""Segmentation losses: weighted cross-entropy (the paper's), soft dice, and both.

Conventions shared by every loss here:

- ``y_pred`` is ``(batch, H, W, C)``: probabilities, or logits with
  ``from_logits=True``. ``C == 1`` is a binary task (sigmoid), ``C >= 2`` is
  ``C`` mutually exclusive classes (softmax).
- ``y_true`` is either sparse integer labels ``(batch, H, W)`` or
  ``(batch, H, W, 1)`` (binary tasks: 0/1), or one-hot ``(batch, H, W, C)``.
- Pixels labelled ``ignore_index`` (sparse), or whose one-hot row is all zero,
  count nowhere: not in the loss, not in its normalisation.
- ``sample_weight`` ``(batch, H, W)``, typically the U-Net weight map that the
  dataset yields as its third element, multiplies the per-pixel cross-entropy.
  The dice loss uses it only as a mask: pixels of weight 0 are left out.
- Reduction: the cross-entropy is the weighted sum over valid pixels divided by
  the number of valid pixels in the batch; the dice is computed over the whole
  batch (all images together), which is stable when an image has no foreground.
"""
from __future__ import annotations

import keras
from keras import ops

__all__ = ["WeightedCrossEntropy", "DiceLoss", "DiceCrossEntropy", "FocalLoss", "TverskyLoss",
           "IoULoss", "MSSSIMLoss", "HybridLoss", "get"]

_EPS = 1e-7


def _to_onehot_and_mask(y_true, num_channels: int, ignore_index):
    """Return ``(target, valid)``: float targets (batch, H, W, K) and a 0/1 mask (batch, H, W).

    ``K`` is 1 for binary predictions and ``num_channels`` otherwise.
    """
    sparse = len(y_true.shape) == 3 or y_true.shape[-1] == 1 or num_channels == 1
    if not sparse:  # one-hot (or soft) labels; an all-zero row marks an ignored pixel
        target = ops.cast(y_true, "float32")
        return target, ops.cast(ops.sum(target, axis=-1) > 0, "float32")
    labels = ops.cast(y_true, "int32")
    if len(labels.shape) == 4:
        labels = labels[..., 0]
    if ignore_index is None:
        valid = ops.ones_like(labels, dtype="float32")
    else:
        valid = ops.cast(ops.not_equal(labels, ignore_index), "float32")
    labels = labels * ops.cast(valid, "int32")  # ignored pixels become class 0, masked out below
    if num_channels == 1:
        return ops.cast(labels, "float32")[..., None], valid
    return ops.one_hot(labels, num_channels, dtype="float32"), valid


def _pixel_weights(valid, sample_weight, as_mask: bool):
    if sample_weight is None:
        return valid
    sample_weight = ops.cast(sample_weight, "float32")
    if len(sample_weight.shape) == 4:
        sample_weight = sample_weight[..., 0]
    if as_mask:
        sample_weight = ops.cast(sample_weight > 0, "float32")
    return valid * sample_weight


def _class_weight_map(target, class_weights):
    """Per-pixel weight from per-class weights: (batch, H, W)."""
    w = ops.convert_to_tensor(class_weights, dtype="float32")
    if target.shape[-1] == 1:  # binary: weights for background (0) and foreground (1)
        t = target[..., 0]
        return (1.0 - t) * w[0] + t * w[1]
    return ops.sum(target * w, axis=-1)


def _cross_entropy(target, y_pred, from_logits: bool):
    """Per-pixel cross-entropy (batch, H, W), stable for probabilities near 0/1 and large logits."""
    y_pred = ops.cast(y_pred, "float32")
    if y_pred.shape[-1] == 1:
        t, p = target[..., 0], y_pred[..., 0]
        if from_logits:  # max(x, 0) - x t + log(1 + exp(-|x|)), never overflows
            return ops.relu(p) - p * t + ops.log1p(ops.exp(-ops.abs(p)))
        p = ops.clip(p, _EPS, 1.0 - _EPS)
        return -(t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p))
    log_p = ops.log_softmax(y_pred, axis=-1) if from_logits else ops.log(ops.clip(y_pred, _EPS, 1.0))
    return -ops.sum(target * log_p, axis=-1)


def _probabilities(y_pred, from_logits: bool):
    y_pred = ops.cast(y_pred, "float32")
    if not from_logits:
        return y_pred
    return ops.sigmoid(y_pred) if y_pred.shape[-1] == 1 else ops.softmax(y_pred, axis=-1)


def _scale_for_replicas(value):
    """Divide by the replicas in sync, as Keras's own losses do.

    Each replica's loss is summed over replicas when gradients are all-reduced;
    without this, N replicas would train with N times the gradient.
    """
    if keras.backend.backend() != "tensorflow":  # other backends: Keras scales itself
        return value
    import tensorflow as tf
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return value if replicas == 1 else value * (1.0 / replicas)


class _SegmentationLoss(keras.losses.Loss):
    """Base class: handles label formats, ``ignore_index`` and ``sample_weight``."""

    def __init__(self, from_logits=False, ignore_index=255, class_weights=None,
                 name=None, **kwargs):
        kwargs.pop("reduction", None)  # the reduction is fixed, see the module docstring
        super().__init__(name=name, **kwargs)
        self.from_logits = bool(from_logits)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def __call__(self, y_true, y_pred, sample_weight=None):
        return _scale_for_replicas(self.compute(y_true, y_pred, sample_weight))

    def call(self, y_true, y_pred):
        return self.compute(y_true, y_pred, None)

    def compute(self, y_true, y_pred, sample_weight=None):  # pragma: no cover - abstract
        raise NotImplementedError

    # The label and weight preparation every loss of the family starts from.
    def weighted_targets(self, y_true, y_pred, sample_weight):
        """``(target, weights, valid)`` for pixel-wise losses: one-hot targets, each
        pixel's weight (the weight map times the class weight, 0 when ignored)
        and the valid-pixel mask the mean divides by."""
        target, valid = _to_onehot_and_mask(y_true, y_pred.shape[-1], self.ignore_index)
        weights = _pixel_weights(valid, sample_weight, as_mask=False)
        if self.class_weights is not None:
            weights = weights * _class_weight_map(target, self.class_weights)
        return target, weights, valid

    def masked_maps(self, y_true, y_pred, sample_weight):
        """``(probabilities, target)`` with ignored and zero-weight pixels set to 0
        in both, for losses over whole regions."""
        target, valid = _to_onehot_and_mask(y_true, y_pred.shape[-1], self.ignore_index)
        mask = _pixel_weights(valid, sample_weight, as_mask=True)[..., None]
        return _probabilities(y_pred, self.from_logits) * mask, target * mask

    def class_mean(self, scores, include_background: bool):
        """Mean of per-class ``scores`` weighted by ``class_weights``; class 0 left
        out when ``include_background`` is off (softmax outputs only)."""
        weights = ops.ones_like(scores) if self.class_weights is None else ops.convert_to_tensor(
            self.class_weights[-scores.shape[0]:], dtype="float32")
        if not include_background and scores.shape[0] > 1:
            scores, weights = scores[1:], weights[1:]
        return ops.sum(scores * weights) / ops.maximum(ops.sum(weights), _EPS)

    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)
        config.update(from_logits=self.from_logits, ignore_index=self.ignore_index,
                      class_weights=self.class_weights)
        return config


@keras.saving.register_keras_serializable(package="unet_tf")
class WeightedCrossEntropy(_SegmentationLoss):
    """Pixel-wise cross-entropy weighted by the U-Net weight map.

    Binary (sigmoid) for one output channel, categorical (softmax) otherwise.
    The weight map arrives as ``sample_weight``, so ``model.fit`` on a dataset
    of ``(image, label, weight_map)`` trains with the paper's energy function.

    Args:
        from_logits: ``y_pred`` holds logits.
        ignore_index: sparse label value excluded from the loss (None: none).
        class_weights: optional per-class weights (length C, or 2 for binary:
            background, foreground), multiplied into the pixel weights.
    """

    def __init__(self, from_logits=False, ignore_index=255, class_weights=None,
                 name="weighted_cross_entropy", **kwargs):
        super().__init__(from_logits=from_logits, ignore_index=ignore_index,
                         class_weights=class_weights, name=name, **kwargs)

    def compute(self, y_true, y_pred, sample_weight=None):
        target, weights, valid = self.weighted_targets(y_true, y_pred, sample_weight)
        ce = _cross_entropy(target, y_pred, self.from_logits)
        return ops.sum(weights * ce) / ops.maximum(ops.sum(valid), 1.0)


@keras.saving.register_keras_serializable(package="unet_tf")
class DiceLoss(_SegmentationLoss):
    """Soft dice loss, ``1 - mean_c (2 |P_c T_c| + s) / (|P_c| + |T_c| + s)``.

    Args:
        smooth: the smoothing term ``s``; it keeps the loss finite and makes a
            class absent from both prediction and target count as a perfect 1.
        include_background: with softmax outputs, include class 0 in the mean.
            Binary (sigmoid) outputs always use the foreground only.
        from_logits, ignore_index: as in :class:`WeightedCrossEntropy`.
        class_weights: optional per-class weights for the mean over classes.
    """

    def __init__(self, smooth=1.0, include_background=True, from_logits=False,
                 ignore_index=255, class_weights=None, name="dice_loss", **kwargs):
        super().__init__(from_logits=from_logits, ignore_index=ignore_index,
                         class_weights=class_weights, name=name, **kwargs)
        self.smooth = float(smooth)
        self.include_background = bool(include_background)

    def compute(self, y_true, y_pred, sample_weight=None):
        probs, target = self.masked_maps(y_true, y_pred, sample_weight)
        axes = (0, 1, 2)
        intersection = ops.sum(probs * target, axis=axes)
        denominator = ops.sum(probs, axis=axes) + ops.sum(target, axis=axes)
        dice = (2.0 * intersection + self.smooth) / (denominator + self.smooth)
        return 1.0 - self.class_mean(dice, self.include_background)

    def get_config(self):
        config = super().get_config()
        config.update(smooth=self.smooth, include_background=self.include_background)
        return config


@keras.saving.register_keras_serializable(package="unet_tf")
class DiceCrossEntropy(_SegmentationLoss):
    """``dice_weight * DiceLoss + ce_weight * WeightedCrossEntropy``, as U-Net++ and nnU-Net use.

    The weight map (``sample_weight``) weights the cross-entropy term; the dice
    term uses it as a mask.
    """

    def __init__(self, dice_weight=1.0, ce_weight=1.0, smooth=1.0, include_background=True,
                 from_logits=False, ignore_index=255, class_weights=None,
                 name="dice_cross_entropy", **kwargs):
        super().__init__(from_logits=from_logits, ignore_index=ignore_index,
                         class_weights=class_weights, name=name, **kwargs)
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.smooth = float(smooth)
        self.include_background = bool(include_background)
        self.dice = DiceLoss(smooth=smooth, include_background=include_background,
                             from_logits=from_logits, ignore_index=ignore_index,
                             class_weights=class_weights)
        self.cross_entropy = WeightedCrossEntropy(from_logits=from_logits,
                                                  ignore_index=ignore_index,
                                                  class_weights=class_weights)

    def compute(self, y_true, y_pred, sample_weight=None):
        return (self.dice_weight * self.dice.compute(y_true, y_pred, sample_weight)
                + self.ce_weight * self.cross_entropy.compute(y_true, y_pred, sample_weight))

    def get_config(self):
        config = super().get_config()
        config.update(dice_weight=self.dice_weight, ce_weight=self.ce_weight, smooth=self.smooth,
                      include_background=self.include_background)
        return config


# Focal, Tversky, IoU, MS-SSIM and hybrid losses live in losses_extra.py (this
# module's helpers above are theirs too); imported here, after those helpers.
from .losses_extra import FocalLoss, HybridLoss, IoULoss, MSSSIMLoss, TverskyLoss  # noqa: E402

_BY_NAME = {
    "wce": WeightedCrossEntropy, "weighted_ce": WeightedCrossEntropy,
    "cross_entropy": WeightedCrossEntropy, "ce": WeightedCrossEntropy,
    "dice": DiceLoss, "dice_ce": DiceCrossEntropy, "dice+ce": DiceCrossEntropy,
    "focal": FocalLoss, "tversky": TverskyLoss, "focal_tversky": TverskyLoss, "iou": IoULoss,
    "jaccard": IoULoss, "msssim": MSSSIMLoss, "ms_ssim": MSSSIMLoss, "hybrid": HybridLoss,
}
#: The names ``--loss`` offers.
NAMES = ("wce", "dice", "dice_ce", "focal", "tversky", "iou", "msssim", "hybrid")


def get(name: str, **kwargs) -> keras.losses.Loss:
    """Build a loss by its command-line name (one of ``NAMES``; ``focal_tversky`` gives
    ``TverskyLoss(gamma=0.75)`` unless ``gamma`` is given)."""
    key = name.lower().replace("-", "_")
    if key not in _BY_NAME:
        raise ValueError(f"Unknown loss {name!r}: choose one of {', '.join(NAMES)}")
    if key == "focal_tversky":
        kwargs.setdefault("gamma", 0.75)
    return _BY_NAME[key](**kwargs)
