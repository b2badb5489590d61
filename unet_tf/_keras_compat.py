"""Every use of private Keras API, in one place.

Each function works around one upstream problem, named in its docstring. They
are checked against the Keras versions in ``KNOWN_GOOD`` (``setup.cfg`` bounds
keras to them); ``tests/test_keras_compat.py`` fails loudly when a new Keras
renames or drops a private name used here, so an upgrade cannot break training
silently.
"""
from __future__ import annotations

import warnings

import keras

__all__ = ["KNOWN_GOOD", "PRIVATE_NAMES", "check_keras_version", "missing_private_names",
           "build_from_local_batch"]

#: Keras minor versions the private names below were checked against.
KNOWN_GOOD = ((3, 3), (3, 15))

#: (object, attribute) pairs this module relies on.
PRIVATE_NAMES = (
    ("keras.Model", "_maybe_symbolic_build"),
    ("keras.Model", "_symbolic_build"),
)


def _version() -> tuple[int, int]:
    major, minor = keras.__version__.split(".")[:2]
    return int(major), int(minor)


def check_keras_version() -> bool:
    """Warns (once) when Keras is newer than the versions checked here.

    Returns:
        True when the installed Keras lies within ``KNOWN_GOOD``.
    """
    low, high = KNOWN_GOOD
    ok = low <= _version() <= high
    if not ok:
        warnings.warn(f"unet_tf was tested with Keras {low[0]}.{low[1]} to {high[0]}.{high[1]}, "
                      f"found {keras.__version__}; multi-worker training relies on private "
                      "Keras API (unet_tf/_keras_compat.py)", stacklevel=2)
    return ok


def missing_private_names() -> list[str]:
    """The private names of ``PRIVATE_NAMES`` this Keras no longer has."""
    owners = {"keras.Model": keras.Model}
    return [f"{owner}.{name}" for owner, name in PRIVATE_NAMES
            if not hasattr(owners[owner], name)]


def build_from_local_batch(model: keras.Model, iterator) -> bool:
    """Builds a model's training state from this worker's own first batch.

    Keras 3 builds its optimizer and metric state from a batch that it first
    reduces with ``strategy.reduce``, which fails under
    ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585). This takes the
    first batch of ``iterator`` (a Keras epoch iterator), keeps this worker's
    values and calls ``Model._symbolic_build`` on them.

    Args:
        model: The model, compiled under a multi-worker strategy.
        iterator: Keras's epoch iterator, as ``_maybe_symbolic_build`` gets it.

    Returns:
        True when the model was built here.
    """
    import tensorflow as tf

    strategy = getattr(model, "_distribute_strategy", None)
    if iterator is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    for _, _, batches in iterator:
        batch = next(batches)
        break
    local = tf.nest.map_structure(
        lambda v: v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v, batch)
    with strategy.scope():
        model._symbolic_build(data_batch=local)
    return True
