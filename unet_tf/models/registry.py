"""The architectures by name, and one function that builds any of them.

A new architecture is a module in ``unet_tf/models/`` with a ``UNetBase``
subclass, and one line in ``ARCHITECTURES``; the command line's ``--arch``,
the model-contract tests and the exporter pick it up from here.
"""
from __future__ import annotations

from .unet import UNet, UNetBase
from .unetpp import UNetPlusPlus

__all__ = ["ARCHITECTURES", "build_model"]

#: ``--arch`` name -> model class.
ARCHITECTURES: dict[str, type[UNetBase]] = {
    "unet": UNet,
    "unetpp": UNetPlusPlus,
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
