"""unet-tf: U-Net for image segmentation in Keras 3 / TensorFlow.

The public API is imported lazily, so ``import unet_tf.weights`` (numpy only)
does not pay for importing TensorFlow::

    from unet_tf import UNet, losses, metrics, data
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "UNet": ("unet_tf.model", "UNet"),
    "UNetPlusPlus": ("unet_tf.unetpp", "UNetPlusPlus"),
    "ConvBlock": ("unet_tf.blocks", "ConvBlock"),
    "EncoderBlock": ("unet_tf.blocks", "EncoderBlock"),
    "DecoderBlock": ("unet_tf.blocks", "DecoderBlock"),
    "unet_weight_map": ("unet_tf.weights", "unet_weight_map"),
}
_SUBMODULES = {"augment", "blocks", "cli", "data", "datasets", "export", "inference", "io",
               "losses", "metrics", "model", "predict", "sizes", "tiling", "training", "unetpp",
               "weights"}

__all__ = sorted(set(_LAZY) | _SUBMODULES)


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"unet_tf.{name}")
    raise AttributeError(f"module 'unet_tf' has no attribute {name!r}")
