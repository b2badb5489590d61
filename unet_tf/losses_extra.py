"""More segmentation losses: focal, Tversky (and focal Tversky), soft IoU, MS-SSIM, and the
U-Net 3+ hybrid loss. Re-exported by ``unet_tf.losses``; ``losses.get`` builds them by name.

They follow the rules of ``unet_tf.losses`` (label formats, ``ignore_index``,
``from_logits``, replica scaling):

- ``FocalLoss`` is a per-pixel loss like the cross-entropy: ``sample_weight``
  (the weight map) and ``class_weights`` multiply each pixel's term, and the
  sum over valid pixels is divided by the number of valid pixels.
- ``TverskyLoss`` and ``IoULoss`` are region losses like the dice: computed
  over the whole batch, ``sample_weight`` only masks (weight 0: left out),
  ``class_weights`` weigh the mean over classes, binary outputs use the
  foreground only.
- ``MSSSIMLoss`` compares each image's probability map with its target map,
  channel by channel: ``1 - MS-SSIM``, averaged over images and channels
  (``class_weights`` weigh the channels; binary outputs: the foreground).
  SSIM is a windowed statistic, so ignored and zero-weight pixels cannot be
  dropped: both maps are set to 0 there, where they then agree.
- ``HybridLoss`` sums the three losses of U-Net 3+: focal + MS-SSIM + IoU.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .losses import _EPS, _SegmentationLoss

__all__ = ["FocalLoss", "TverskyLoss", "IoULoss", "MSSSIMLoss", "HybridLoss", "ms_ssim",
           "MSSSIM_POWER_FACTORS"]

#: The five scales' exponents of Wang et al. (2003), as ``tf.image.ssim_multiscale`` uses.
MSSSIM_POWER_FACTORS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _log_probabilities(y_pred, from_logits: bool):
    """``(log p, log(1 - p))`` for sigmoid outputs, ``log p`` for softmax outputs."""
    y_pred = ops.cast(y_pred, "float32")
    if y_pred.shape[-1] == 1:
        if from_logits:  # log sigmoid(x) = -softplus(-x), log(1 - sigmoid(x)) = -softplus(x)
            return -ops.softplus(-y_pred), -ops.softplus(y_pred)
        p = ops.clip(y_pred, _EPS, 1.0 - _EPS)
        return ops.log(p), ops.log(1.0 - p)
    if from_logits:
        return ops.log_softmax(y_pred, axis=-1), None
    return ops.log(ops.clip(y_pred, _EPS, 1.0)), None


def _region_terms(loss, y_true, y_pred, sample_weight):
    """The batch sums ``(tp, fp, fn)`` per class of the masked probabilities and targets."""
    probs, target = loss.masked_maps(y_true, y_pred, sample_weight)
    axes = (0, 1, 2)
    tp = ops.sum(probs * target, axis=axes)
    fp = ops.sum(probs * (1.0 - target), axis=axes)
    fn = ops.sum((1.0 - probs) * target, axis=axes)
    return tp, fp, fn


@keras.saving.register_keras_serializable(package="unet_tf")
class FocalLoss(_SegmentationLoss):
    """Focal loss (Lin et al., 2017): ``-(1 - p_t)**gamma * log(p_t)`` per pixel.

    Binary outputs: ``t (1-p)**g (-log p) + (1-t) p**g (-log(1-p))``; softmax
    outputs: ``sum_c t_c (1-p_c)**g (-log p_c)``. ``gamma=0`` is the
    cross-entropy. ``class_weights`` are the paper's ``alpha`` (per class, or
    background/foreground for one sigmoid channel); the weight map
    (``sample_weight``) multiplies each pixel's term.

    Args:
        gamma: focusing parameter (2 in the paper).
        from_logits, ignore_index, class_weights: as in ``WeightedCrossEntropy``.
    """

    def __init__(self, gamma=2.0, from_logits=False, ignore_index=255, class_weights=None,
                 name="focal_loss", **kwargs):
        super().__init__(from_logits=from_logits, ignore_index=ignore_index,
                         class_weights=class_weights, name=name, **kwargs)
        self.gamma = float(gamma)

    def pixel_loss(self, target, y_pred):
        """Per-pixel focal loss ``(batch, H, W)``."""
        log_p, log_q = _log_probabilities(y_pred, self.from_logits)
        if log_q is not None:  # sigmoid
            t = target[..., 0]
            lp, lq = log_p[..., 0], log_q[..., 0]
            return -(t * ops.power(ops.exp(lq), self.gamma) * lp
                     + (1.0 - t) * ops.power(ops.exp(lp), self.gamma) * lq)
        modulating = ops.power(ops.maximum(1.0 - ops.exp(log_p), 0.0), self.gamma)
        return -ops.sum(target * modulating * log_p, axis=-1)

    def compute(self, y_true, y_pred, sample_weight=None):
        target, weights, valid = self.weighted_targets(y_true, y_pred, sample_weight)
        return ops.sum(weights * self.pixel_loss(target, y_pred)) / ops.maximum(ops.sum(valid), 1.0)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="unet_tf")
class TverskyLoss(_SegmentationLoss):
    """Tversky loss (Salehi et al., 2017), and the focal Tversky loss (Abraham & Khan, 2019).

    Per class, over the whole batch::

        TI_c = (TP_c + s) / (TP_c + alpha FP_c + beta FN_c + s)
        loss = mean_c (1 - TI_c) ** gamma

    ``alpha = beta = 0.5`` is the dice loss (with smoothing ``2 s``), ``alpha = beta = 1``
    the soft IoU.
    ``beta > alpha`` weighs missed foreground more (Salehi et al.: alpha 0.3,
    beta 0.7, the default). ``gamma = 1`` is the Tversky loss; the focal
    Tversky loss writes the exponent as ``1 / gamma_paper`` with
    ``gamma_paper = 4/3``: ``gamma = 0.75`` here.

    Args:
        alpha, beta: weights of the false positives and false negatives.
        gamma: exponent of ``1 - TI`` (1: plain Tversky).
        smooth, include_background, from_logits, ignore_index, class_weights:
            as in ``DiceLoss``.
    """

    def __init__(self, alpha=0.3, beta=0.7, gamma=1.0, smooth=1.0, include_background=True,
                 from_logits=False, ignore_index=255, class_weights=None, name="tversky_loss",
                 **kwargs):
        super().__init__(from_logits=from_logits, ignore_index=ignore_index,
                         class_weights=class_weights, name=name, **kwargs)
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.smooth = float(smooth)
        self.include_background = bool(include_background)

    def compute(self, y_true, y_pred, sample_weight=None):
        tp, fp, fn = _region_terms(self, y_true, y_pred, sample_weight)
        index = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        terms = ops.power(ops.maximum(1.0 - index, 0.0), self.gamma)
        return self.class_mean(terms, self.include_background)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta,
                "gamma": self.gamma, "smooth": self.smooth,
                "include_background": self.include_background}


@keras.saving.register_keras_serializable(package="unet_tf")
class IoULoss(_SegmentationLoss):
    """Soft Jaccard (IoU) loss: ``1 - mean_c (I_c + s) / (U_c + s)`` over the whole batch,
    ``I = sum p t``, ``U = sum p + sum t - I`` (Rahman & Wang, 2016; U-Net 3+'s IoU term).

    Args: as in ``DiceLoss``.
    """

    def __init__(self, smooth=1.0, include_background=True, from_logits=False, ignore_index=255,
                 class_weights=None, name="iou_loss", **kwargs):
        super().__init__(from_logits=from_logits, ignore_index=ignore_index,
                         class_weights=class_weights, name=name, **kwargs)
        self.smooth = float(smooth)
        self.include_background = bool(include_background)

    def compute(self, y_true, y_pred, sample_weight=None):
        tp, fp, fn = _region_terms(self, y_true, y_pred, sample_weight)
        iou = (tp + self.smooth) / (tp + fp + fn + self.smooth)  # U = TP + FP + FN
        return 1.0 - self.class_mean(iou, self.include_background)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth,
                "include_background": self.include_background}


def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """The normalised 2-D Gaussian of ``tf.image.ssim`` (MATLAB's ``fspecial``)."""
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-0.5 * (coords[:, None] ** 2 + coords[None, :] ** 2) / sigma**2)
    return (g / g.sum()).astype(np.float32)


def _ssim_terms(x, y, kernel, c1: float, c2: float):
    """Mean SSIM and mean contrast-structure per image and channel: ``(batch, C)`` each."""
    channels = x.shape[-1]
    k = ops.convert_to_tensor(np.tile(kernel[:, :, None, None], (1, 1, channels, 1)))

    def blur(v):
        return ops.depthwise_conv(v, k, strides=1, padding="valid")

    mu_x, mu_y = blur(x), blur(y)
    num0 = 2.0 * mu_x * mu_y
    den0 = ops.square(mu_x) + ops.square(mu_y)
    luminance = (num0 + c1) / (den0 + c1)
    cs = (2.0 * blur(x * y) - num0 + c2) / (blur(ops.square(x) + ops.square(y)) - den0 + c2)
    return ops.mean(luminance * cs, axis=(1, 2)), ops.mean(cs, axis=(1, 2))


def _halve(v):
    """2x2 average pooling; odd sizes first repeat their last row/column (symmetric pad),
    as ``tf.image.ssim_multiscale`` does."""
    h, w = v.shape[1], v.shape[2]
    if h % 2:
        v = ops.concatenate([v, v[:, -1:]], axis=1)
    if w % 2:
        v = ops.concatenate([v, v[:, :, -1:]], axis=2)
    return ops.average_pool(v, pool_size=2, strides=2, padding="valid")


def ms_ssim(x, y, max_val=1.0, power_factors=MSSSIM_POWER_FACTORS, filter_size=11,
            filter_sigma=1.5, k1=0.01, k2=0.03, eps=1e-6):
    """Multi-scale SSIM per image and channel, ``(batch, C)``, for ``(batch, H, W, C)`` images.

    The computation of ``tf.image.ssim_multiscale`` (which also averages over
    channels), with one change for training: each scale's term is clamped to
    ``eps`` rather than to 0 before the fractional power, whose gradient is
    infinite at 0. One scale per power factor; the images must have at least
    ``filter_size * 2**(scales - 1)`` pixels per side (see :func:`scales_for`).
    """
    kernel = _gaussian_kernel(int(filter_size), float(filter_sigma))
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    x, y = ops.cast(x, "float32"), ops.cast(y, "float32")
    terms = []
    for scale in range(len(power_factors)):
        if scale:
            x, y = _halve(x), _halve(y)
        ssim, cs = _ssim_terms(x, y, kernel, c1, c2)
        terms.append(cs if scale < len(power_factors) - 1 else ssim)
    result = None
    for term, power in zip(terms, power_factors):
        factor = ops.power(ops.maximum(term, eps), float(power))
        result = factor if result is None else result * factor
    return result


def scales_for(size: int, filter_size: int = 11, most: int = len(MSSSIM_POWER_FACTORS)) -> int:
    """How many MS-SSIM scales an image of ``size`` pixels (its shorter side) allows:
    each scale halves it, and the coarsest must still hold the ``filter_size`` window."""
    scales = 0
    while scales < most and size >= filter_size:
        scales += 1
        size = (size + 1) // 2
    return scales


@keras.saving.register_keras_serializable(package="unet_tf")
class MSSSIMLoss(_SegmentationLoss):
    """``1 - MS-SSIM`` between the predicted probabilities and the target maps.

    Per image and channel (binary outputs: the foreground channel), averaged
    over images and channels (weighted by ``class_weights``). Ignored pixels
    (``ignore_index``, zero ``sample_weight``) are set to 0 in both maps.

    Small tiles: MS-SSIM's five scales need 176 px (11 px at 1/16); with
    ``scales=None`` the loss uses as many scales as the tile allows (at least
    one: 11 px; 32 px tiles get 2, 64 px 3, 128 px 4, 176 px all 5) and the
    first that many power factors, rescaled to sum to 1. ``scales=N`` fixes it.

    Args:
        power_factors: the exponents per scale (default Wang et al.'s five).
        scales: number of scales (``None``: as many as the tile allows).
        filter_size, filter_sigma, k1, k2: SSIM's Gaussian window and constants.
        from_logits, ignore_index, class_weights: as in ``DiceLoss``.
    """

    def __init__(self, power_factors=MSSSIM_POWER_FACTORS, scales=None, filter_size=11,
                 filter_sigma=1.5, k1=0.01, k2=0.03, from_logits=False, ignore_index=255,
                 class_weights=None, name="ms_ssim_loss", **kwargs):
        super().__init__(from_logits=from_logits, ignore_index=ignore_index,
                         class_weights=class_weights, name=name, **kwargs)
        self.power_factors = [float(p) for p in power_factors]
        self.scales = None if scales is None else int(scales)
        if self.scales is not None and not 1 <= self.scales <= len(self.power_factors):
            raise ValueError(f"scales must be 1..{len(self.power_factors)}, got {scales}")
        self.filter_size = int(filter_size)
        self.filter_sigma = float(filter_sigma)
        self.k1, self.k2 = float(k1), float(k2)

    def factors_for(self, height, width) -> list[float]:
        """The power factors used for tiles of ``height`` x ``width`` (sum 1 when truncated)."""
        count = self.scales
        if count is None:
            sides = [s for s in (height, width) if s is not None]
            count = scales_for(min(sides), self.filter_size, len(self.power_factors)) if sides \
                else len(self.power_factors)
        side = min([s for s in (height, width) if s is not None], default=None)
        if count < 1 or (side is not None and side < self.filter_size * 2 ** (count - 1)):
            raise ValueError(f"MS-SSIM with {count} scale(s) and an {self.filter_size}-px window "
                             f"needs tiles of at least {self.filter_size * 2 ** (max(count, 1) - 1)} "
                             f"px, got {height}x{width}")
        factors = self.power_factors[:count]
        if count == len(self.power_factors):
            return factors
        total = sum(factors)
        return [f / total for f in factors]

    def compute(self, y_true, y_pred, sample_weight=None):
        probs, target = self.masked_maps(y_true, y_pred, sample_weight)
        # The product has a static size if either the prediction or the labels have one.
        scores = ms_ssim(probs, target, 1.0, self.factors_for(probs.shape[1], probs.shape[2]),
                         self.filter_size, self.filter_sigma, self.k1, self.k2)
        per_channel = 1.0 - ops.mean(scores, axis=0)
        return self.class_mean(per_channel, include_background=True)

    def get_config(self):
        return {**super().get_config(), "power_factors": list(self.power_factors),
                "scales": self.scales, "filter_size": self.filter_size,
                "filter_sigma": self.filter_sigma, "k1": self.k1, "k2": self.k2}


@keras.saving.register_keras_serializable(package="unet_tf")
class HybridLoss(_SegmentationLoss):
    """U-Net 3+'s hybrid loss: ``focal + MS-SSIM + IoU`` (Huang et al., 2020), each weighted.

    The weight map weights the focal term; the MS-SSIM and IoU terms use it as a mask.

    Args:
        focal_weight, ms_ssim_weight, iou_weight: the terms' weights (1 each in the paper).
        gamma: the focal term's focusing parameter.
        scales: the MS-SSIM term's scales (``None``: as many as the tile allows).
        smooth: the IoU term's smoothing.
        from_logits, ignore_index, class_weights: passed to each term.
    """

    def __init__(self, focal_weight=1.0, ms_ssim_weight=1.0, iou_weight=1.0, gamma=2.0,
                 scales=None, smooth=1.0, from_logits=False, ignore_index=255,
                 class_weights=None, name="hybrid_loss", **kwargs):
        super().__init__(from_logits=from_logits, ignore_index=ignore_index,
                         class_weights=class_weights, name=name, **kwargs)
        self.focal_weight = float(focal_weight)
        self.ms_ssim_weight = float(ms_ssim_weight)
        self.iou_weight = float(iou_weight)
        self.gamma = float(gamma)
        self.scales = None if scales is None else int(scales)
        self.smooth = float(smooth)
        common = dict(from_logits=from_logits, ignore_index=ignore_index,
                      class_weights=class_weights)
        self.focal = FocalLoss(gamma=gamma, **common)
        self.ms_ssim = MSSSIMLoss(scales=scales, **common)
        self.iou = IoULoss(smooth=smooth, **common)

    def compute(self, y_true, y_pred, sample_weight=None):
        return (self.focal_weight * self.focal.compute(y_true, y_pred, sample_weight)
                + self.ms_ssim_weight * self.ms_ssim.compute(y_true, y_pred, sample_weight)
                + self.iou_weight * self.iou.compute(y_true, y_pred, sample_weight))

    def get_config(self):
        return {**super().get_config(), "focal_weight": self.focal_weight,
                "ms_ssim_weight": self.ms_ssim_weight, "iou_weight": self.iou_weight,
                "gamma": self.gamma, "scales": self.scales, "smooth": self.smooth}
