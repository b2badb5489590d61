"""The architectures by name, and one function that builds any of them.

A new architecture is a module in ``unet_tf/models/`` with a ``UNetBase``
subclass, and one line in ``ARCHITECTURES``; the command line's ``--arch``,
the model-contract tests and the exporter pick it up from here.
"""
from __future__ import annotations

from .encoder_unet import EncoderUNet
from .unet import UNet, UNetBase
from .unet3p import UNet3Plus
from .unetpp import UNetPlusPlus

__all__ = ["ARCHITECTURES", "build_model"]

#: ``--arch`` name -> model class.
ARCHITECTURES: dict[str, type[UNetBase]] = {
    "unet": UNet,
    "unetpp": UNetPlusPlus,
    "unet3p": UNet3Plus,
    # A U-Net decoder on a keras.applications encoder; on the command line
    # ``--arch unet --encoder NAME`` (the encoder U-Net is a U-Net).
    "encoder_unet": EncoderUNet,
}


def build_model(arch: str = "unet", **options) -> UNetBase:
    """Builds the architecture named ``arch``.

    Args:
        arch: A key of ``ARCHITECTURES``.
        **options: The model's constructor arguments (``num_classes``,
            ``depth``, ``base_filters``, ...).

    Returns:
        The model, built when ``in_channels`` is given.

    Raises:
        ValueError: for an unknown ``arch``.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"--arch {arch!r} is not one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**options)
