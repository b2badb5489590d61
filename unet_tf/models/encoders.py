"""Pretrained ``keras.applications`` encoders for the U-Net: the one table of tap layers.

Each encoder is tapped at strides 2, 4, 8, 16 (the skips) and 32 (the
bottleneck); ``build_encoder(name, depth=d)`` returns a functional model with
the first ``d`` of those outputs. The layer names were read off the
applications built with ``weights=None`` (Keras 3.15; the same names in every
EfficientNet B0..B7); ``tests/models/test_encoders.py`` checks each tap's stride.

Every encoder takes 3-channel images in the units its ImageNet weights were
trained with; :func:`preprocess` maps the U-Net's inputs (``[0, 1]``) to them
inside the model, so data pipelines and exported graphs stay unchanged:

- ``mobilenetv2``: ``[-1, 1]`` (``2x - 1``),
- ``efficientnetb0..b7``: ``[0, 255]`` (the application rescales and
  normalises itself with its own ``Rescaling`` and ``Normalization`` layers),
- ``resnet50``: "caffe": RGB to BGR, ``[0, 255]`` minus the ImageNet channel means.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

__all__ = ["ENCODERS", "ENCODER_BN_MOMENTUM", "EncoderSpec", "build_encoder", "preprocess",
           "encoder_names"]


@dataclass(frozen=True)
class EncoderSpec:
    """One ``keras.applications`` encoder: its constructor, tap layers and input convention."""
    application: str
    #: Layer outputs at strides 2, 4, 8, 16 and 32, in that order.
    taps: tuple[str, str, str, str, str]
    #: ``"tf"`` ([-1, 1]), ``"raw"`` ([0, 255]) or ``"caffe"`` (BGR, mean-subtracted [0, 255]).
    preprocessing: str


_EFFICIENTNET_TAPS = ("block2a_expand_activation", "block3a_expand_activation",
                      "block4a_expand_activation", "block6a_expand_activation", "top_activation")

#: ``--encoder`` name -> spec. THE table of tap layers.
ENCODERS: dict[str, EncoderSpec] = {
    "mobilenetv2": EncoderSpec("MobileNetV2", ("block_1_expand_relu", "block_3_expand_relu",
                                               "block_6_expand_relu", "block_13_expand_relu",
                                               "out_relu"), "tf"),
    **{f"efficientnetb{i}": EncoderSpec(f"EfficientNetB{i}", _EFFICIENTNET_TAPS, "raw")
       for i in range(8)},
    "resnet50": EncoderSpec("ResNet50", ("conv1_relu", "conv2_block3_out", "conv3_block4_out",
                                         "conv4_block6_out", "conv5_block3_out"), "caffe"),
}

#: Batch-norm momentum of the encoders' layers (keras.applications use 0.99 or
#: 0.999): as in the U-Net's blocks, so that the moving statistics follow the
#: new data within the few hundred steps small datasets train for; with 0.999 a
#: randomly initialised encoder predicts nothing useful at inference for
#: thousands of steps. A frozen encoder's batch norm does not update them at all.
ENCODER_BN_MOMENTUM = 0.9
#: Caffe-style means (BGR order, [0, 255] units) that ResNet50's ImageNet weights expect.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
#: ImageNet standard deviations (RGB): Keras's EfficientNet stores them as the
#: variance of its Normalization layer and divides by their square root once
#: more with an extra Rescaling layer when built with weights="imagenet".
_IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def encoder_names() -> list[str]:
    return list(ENCODERS)


def _spec(name: str) -> EncoderSpec:
    if name not in ENCODERS:
        raise ValueError(f"encoder {name!r} is not one of {', '.join(ENCODERS)}")
    return ENCODERS[name]


def preprocess(x, name: str):
    """Map inputs in ``[0, 1]`` with 3 channels (RGB) to what encoder ``name`` expects."""
    mode = _spec(name).preprocessing
    if mode == "tf":
        return x * 2.0 - 1.0
    if mode == "raw":
        return x * 255.0
    bgr = ops.concatenate([x[..., 2:3], x[..., 1:2], x[..., 0:1]], axis=-1)  # CONCATENATION
    mean = ops.convert_to_tensor(np.asarray(_CAFFE_MEAN_BGR, np.float32), dtype=x.dtype)
    return bgr * 255.0 - mean


@contextlib.contextmanager
def _global_policy(name: str | None):
    """keras.applications layers take the global dtype policy: let them follow the model's."""
    if name is None:
        yield
        return
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _application(name: str, weights, alpha: float):
    spec = _spec(name)
    constructor = getattr(keras.applications, spec.application)
    extra = {"alpha": alpha} if spec.application == "MobileNetV2" else {}
    return constructor(include_top=False, weights=weights, input_shape=(None, None, 3), **extra)


def _normalization_layers(model) -> list:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)]


def refresh_normalization(model) -> None:
    """Keras's ``Normalization`` keeps a snapshot of its mean and variance, taken when
    they are loaded; ``set_weights`` does not retake it. Call after ``set_weights``."""
    for layer in _normalization_layers(model):
        layer.finalize_state()


def _match_imagenet_efficientnet(app) -> None:
    """Give an EfficientNet with ImageNet statistics the extra division that
    ``keras.applications`` adds as a separate ``Rescaling`` layer for ``weights="imagenet"``.

    Its ``Normalization`` holds the ImageNet standard deviations as its variance
    (tensorflow/tensorflow#49930), so it divides by
    ``sqrt(std)`` where ``std`` is meant; Keras divides by ``sqrt(std)`` once
    more. Here the variance becomes ``std**2`` instead: the same result without a
    layer that only ``weights="imagenet"`` creates (so a model rebuilt from its
    configuration has the same structure whatever its weights were). An encoder
    whose statistics are not ImageNet's (trained from ``weights=None``) is left as it is.
    """
    for layer in _normalization_layers(app):
        variance = np.asarray(keras.ops.convert_to_numpy(layer.adapt_variance)).reshape(-1)
        if variance.shape == (3,) and np.allclose(variance, _IMAGENET_STDDEV_RGB, atol=1e-6):
            layer.adapt_variance.assign(np.reshape(variance * np.asarray(_IMAGENET_STDDEV_RGB),
                                                   layer.adapt_variance.shape))
            layer.finalize_state()


def build_encoder(name: str, weights=None, depth: int = 5, alpha: float = 1.0,
                  dtype_policy: str | None = None) -> keras.Model:
    """The encoder ``name`` as a functional model with outputs at strides ``2 .. 2**depth``.

    Args:
        name: a key of :data:`ENCODERS`.
        weights: ``None`` (random initialization), ``"imagenet"`` (Keras
            downloads the weights into ``~/.keras/models`` on first use) or the
            path of a weights file as Keras saves it (``.h5`` as downloaded by
            ``keras.applications``, or ``.weights.h5`` from ``save_weights``) of the
            application built with ``include_top=False``.
        depth: outputs to tap, 1..5 (5: strides 2, 4, 8, 16 and 32).
        alpha: MobileNetV2's width multiplier (ImageNet weights exist for 0.35,
            0.5, 0.75, 1.0, 1.3 and 1.4); other encoders take only 1.0.
        dtype_policy: the dtype policy its layers use (default: the global one).

    Input: ``(batch, H, W, 3)`` preprocessed images (see :func:`preprocess`).
    Returns: a ``keras.Model`` whose outputs are the ``depth`` tap layers' outputs.
    """
    spec = _spec(name)
    if not 1 <= int(depth) <= len(spec.taps):
        raise ValueError(f"encoder {name!r} has {len(spec.taps)} levels (strides 2 .. 32): "
                         f"depth must be 1..{len(spec.taps)}, got {depth}")
    if spec.application != "MobileNetV2" and float(alpha) != 1.0:
        raise ValueError(f"encoder_alpha is MobileNetV2's width multiplier; {name} takes 1.0, "
                         f"got {alpha}")
    if weights not in (None, "imagenet") and not os.path.isfile(weights):
        raise FileNotFoundError(f"encoder_weights {weights!r}: no such file (give None, "
                                f"'imagenet' or the path of a weights file)")
    with _global_policy(dtype_policy):
        app = _application(name, None, alpha)
        if weights == "imagenet":  # Keras downloads them; same layers, so same weight order
            app.set_weights(_application(name, "imagenet", alpha).get_weights())
            refresh_normalization(app)
        elif weights is not None:
            app.load_weights(weights)
        if weights is not None:
            _match_imagenet_efficientnet(app)
        for layer in app.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = ENCODER_BN_MOMENTUM
        outputs = [app.get_layer(layer).output for layer in spec.taps[:int(depth)]]
        return keras.Model(app.input, outputs, name=f"{name}_encoder")
