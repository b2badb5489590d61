"""unet-tf: U-Net for image segmentation in Keras 3 / TensorFlow.

The public API is imported lazily, so ``import unet_tf.data.weights`` (numpy
only) and ``unet-tf --help`` do not pay for importing TensorFlow::

    from unet_tf import UNet, losses, metrics, data

``import unet_tf`` is enough for ``keras.models.load_model("run/best.keras")``:
the custom classes (models, blocks, losses, metrics) are registered with Keras
as soon as Keras is imported, before or after this package.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_LAZY = {
    "UNet": ("unet_tf.models", "UNet"),
    "UNetPlusPlus": ("unet_tf.models", "UNetPlusPlus"),
    "UNet3Plus": ("unet_tf.models", "UNet3Plus"),
    "EncoderUNet": ("unet_tf.models", "EncoderUNet"),
    "build_model": ("unet_tf.models", "build_model"),
    "ConvBlock": ("unet_tf.models", "ConvBlock"),
    "EncoderBlock": ("unet_tf.models", "EncoderBlock"),
    "DecoderBlock": ("unet_tf.models", "DecoderBlock"),
    "unet_weight_map": ("unet_tf.data.weights", "unet_weight_map"),
}
_SUBMODULES = {"cli", "config", "data", "deploy", "errors", "files", "inference", "losses",
               "metrics", "models", "objects", "plan", "plots", "predict", "run", "runtimes",
               "sizes", "tiling", "training"}
#: Modules whose import registers every custom Keras class.
_REGISTERING = ("unet_tf.models", "unet_tf.losses", "unet_tf.metrics")

__all__ = sorted(set(_LAZY) | _SUBMODULES)


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"unet_tf.{name}")
    raise AttributeError(f"module 'unet_tf' has no attribute {name!r}")


def register_keras_objects() -> None:
    """Imports the modules that register the custom classes with Keras."""
    for module in _REGISTERING:
        importlib.import_module(module)


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Registers the custom classes right after Keras finishes importing.

    Keras resolves a saved ``unet_tf>UNet`` only through its registry, so the
    classes must be registered before ``load_model``; importing them here
    eagerly would make every ``import unet_tf`` (and ``unet-tf --help``) pay
    for TensorFlow. This finder wraps Keras's own loader once and steps aside.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        # The finder stays until Keras is actually executed: TensorFlow probes
        # with importlib.util.find_spec("keras") at import, and that spec is
        # thrown away (the import proper asks again).
        index = sys.meta_path.index(self) if self in sys.meta_path else None
        if index is not None:
            sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec("keras")
        finally:
            if index is not None:
                sys.meta_path.insert(index, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            exec_module(module)
            register_keras_objects()

        spec.loader.exec_module = exec_then_register
        return spec


if "keras" in sys.modules:
    register_keras_objects()
elif not any(isinstance(f, _RegisterAfterKeras) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())
