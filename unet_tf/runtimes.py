"""One way to load and run a model: a ``.keras`` file, a run folder, a SavedModel or a ``.tflite``.

Every loader returns a :class:`Runtime`: a batch function from float32
``(N, h, w, C)`` model inputs to probabilities, with the facts that tiled
inference needs (geometry, classes, the input normalisation and the training
masks' palette). ``unet_tf.inference``, ``predict``, ``evaluate`` and the
exporter's checks all go through here.
"""
from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import sizes
from .errors import UnetTfError
from .run import find_run, model_sidecar

__all__ = ["ModelError", "Runtime", "KerasRuntime", "load_runtime", "load_keras_model", "resolve_model",
           "saved_model_runtime", "tflite_runtime", "read_export_metadata", "to_probabilities",
           "tflite_interpreter", "run_tflite", "tflite_ops"]


class ModelError(UnetTfError, ValueError):
    """A model file that cannot be used as it is."""


@dataclass
class Runtime:
    """A model behind a uniform call: float32 ``(N, h, w, C)`` in, probabilities out.

    Attributes:
        predict: The batch function.
        depth, padding: The U-Net geometry (for valid sizes and margins).
        num_classes: Output channels (1: binary sigmoid).
        in_channels: Input channels.
        input_scale: Factor from raw pixel values to the model's input.
        fixed_shape: ``(h, w)`` for runtimes with a fixed input shape (TFLite).
        max_batch: Largest batch the runtime takes (TFLite: its batch size).
        name: What runs the model (``keras``, ``saved_model``, ``tflite:<variant>``).
        palette: The training masks' class colours ``[(r, g, b), ...]`` when
            they were colour (or grey-level) coded, so predictions can be
            written in the same encoding; None otherwise.
        normalisation: The input normalisation as data (see ``unet_tf.run``).
    """
    predict: Callable[[np.ndarray], np.ndarray]
    depth: int
    padding: str
    num_classes: int
    in_channels: int
    input_scale: float = 1.0 / 255.0
    fixed_shape: tuple[int, int] | None = None
    max_batch: int | None = None
    name: str = "keras"
    palette: list | None = None
    normalisation: dict | None = None

    def output_size(self, size: int) -> int:
        return sizes.output_size(size, self.depth, self.padding)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.predict(batch)


def to_probabilities(y: np.ndarray, num_classes: int, logits: bool) -> np.ndarray:
    """A model's raw output as probabilities: sigmoid or softmax of logits, else as is."""
    if not logits:
        return y
    if num_classes == 1:
        return 1 / (1 + np.exp(-y))
    e = np.exp(y - y.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def tf_probabilities(y, num_classes: int, logits: bool):
    """:func:`to_probabilities` inside a TensorFlow graph (serving, compiled inference)."""
    import tensorflow as tf
    y = tf.cast(y, tf.float32)
    if not logits:
        return y
    return tf.sigmoid(y) if num_classes == 1 else tf.nn.softmax(y, axis=-1)


# --------------------------------------------------------------------------- Keras
_KERAS_FUNCTIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def KerasRuntime(model, input_scale: float | None = None) -> Runtime:  # noqa: N802 - reads as a class
    """Wraps a Keras U-Net: one compiled inference function, logits turned into probabilities."""
    import tensorflow as tf
    channels = int(model.in_channels or 1)
    if model not in _KERAS_FUNCTIONS:  # trace once per model, not once per call
        _KERAS_FUNCTIONS[model] = _keras_function(model, channels)
    run = _KERAS_FUNCTIONS[model]
    return Runtime(predict=lambda batch: run(tf.constant(batch, tf.float32)).numpy(),
                   depth=int(model.depth), padding=model.padding, num_classes=int(model.num_classes),
                   in_channels=channels,
                   input_scale=1.0 / 255.0 if input_scale is None else float(input_scale))


def _keras_function(model, channels: int):
    import tensorflow as tf
    logits = bool(getattr(model, "logits", False))
    num_classes = int(model.num_classes)

    # One trace for every tile shape and batch size.
    @tf.function(input_signature=[tf.TensorSpec((None, None, None, channels), tf.float32)])
    def run(x):
        return tf_probabilities(model(x, training=False), num_classes, logits)

    return run


def resolve_model(model):
    """A run folder means its best model; anything else is returned as is."""
    if isinstance(model, (str, Path)) and Path(model).is_dir() and find_run(model):
        from .run import load_run
        best = load_run(model).model_path("best")
        if best.is_file():
            return best
    return model


def load_keras_model(path):
    """Loads a ``.keras`` U-Net (a file or a run folder) without its optimizer state.

    Raises:
        FileNotFoundError: no such file.
        ModelError: the weights are not finite.
    """
    import keras

    import unet_tf  # noqa: F401 - registers the custom classes with Keras
    from .checkpoints import weights_are_finite
    path = Path(resolve_model(path))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file; pass a .keras file or a run folder")
    model = keras.models.load_model(path, compile=False)
    if not weights_are_finite(model):
        raise ModelError(f"{path}: the model has NaN or infinite weights (its training diverged); "
                         "use a checkpoint from before the divergence or train again")
    return model


# --------------------------------------------------------------------------- exported
def read_export_metadata(path) -> dict:
    """The metadata an export wrote beside a SavedModel or a ``.tflite`` file."""
    path = Path(path)
    for candidate in (path / "assets.extra" / "unet_tf.json", path.with_suffix(".json")):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    raise ValueError(f"{path}: no unet_tf metadata found (assets.extra/unet_tf.json or a .json "
                     "next to the .tflite file); was it exported with unet-tf export?")


def _palette(meta: dict):
    """The class colours of exported metadata (``labels.palette``; older exports: ``palette``)."""
    labels = meta.get("labels")
    return labels.get("palette") if isinstance(labels, dict) else meta.get("palette")


def _exported_runtime(meta: dict, predict, input_scale, name, **extra) -> Runtime:
    return Runtime(predict=predict, depth=meta["depth"], padding=meta["padding"],
                   num_classes=meta["num_classes"], in_channels=meta["in_channels"],
                   input_scale=input_scale or meta["input_scale"], name=name,
                   palette=_palette(meta), normalisation=meta.get("normalisation"), **extra)


def saved_model_runtime(path, input_scale: float | None = None) -> Runtime:
    """A :class:`Runtime` over an exported SavedModel's ``serve_tile`` signature."""
    import tensorflow as tf
    meta = read_export_metadata(path)
    fn = tf.saved_model.load(str(path)).signatures["serve_tile"]

    def predict(batch):
        y = fn(images=tf.constant(batch, tf.float32))["output"].numpy()
        return to_probabilities(y, meta["num_classes"], meta.get("logits", False))

    return _exported_runtime(meta, predict, input_scale, "saved_model")


def tflite_interpreter(path_or_bytes, num_threads=None, xnnpack: bool = True):
    """A LiteRT interpreter, tensors allocated; ``xnnpack=False`` runs the builtin kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    kwargs = {"num_threads": num_threads}
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if isinstance(path_or_bytes, (bytes, bytearray)):
        interp = Interpreter(model_content=bytes(path_or_bytes), **kwargs)
    else:
        interp = Interpreter(model_path=str(path_or_bytes), **kwargs)
    interp.allocate_tensors()
    return interp


def tflite_ops(interp) -> list[str]:
    """The sorted set of op names in a LiteRT model."""
    return sorted({op["op_name"] for op in interp._get_ops_details()})  # noqa: SLF001 - LiteRT's only op listing


def run_tflite(interp, batch: np.ndarray) -> np.ndarray:
    """Runs a fixed-shape LiteRT model on float inputs, (de)quantizing integer models."""
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    results = []
    for x in batch:
        x = x[None].astype(np.float32)
        if inp["dtype"] in (np.uint8, np.int8):
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out["dtype"] in (np.uint8, np.int8):
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        results.append(y[0].astype(np.float32))
    return np.stack(results)


def tflite_runtime(path, num_threads: int | None = None, input_scale: float | None = None) -> Runtime:
    """A :class:`Runtime` over an exported ``.tflite`` file (fixed input shape)."""
    meta = read_export_metadata(path)
    interp = tflite_interpreter(path, num_threads=num_threads)
    shape = tuple(int(v) for v in interp.get_input_details()[0]["shape"][1:3])

    def predict(batch):
        return to_probabilities(run_tflite(interp, batch), meta["num_classes"],
                                meta.get("logits", False))

    return _exported_runtime(meta, predict, input_scale, f"tflite:{meta.get('variant', '')}",
                             fixed_shape=shape, max_batch=1)


# --------------------------------------------------------------------------- any
def load_runtime(model, *, input_scale: float | None = None,
                 num_threads: int | None = None) -> Runtime:
    """A :class:`Runtime` for a Keras model, a ``.keras`` file, a run folder, a
    SavedModel folder or a ``.tflite`` file.

    Args:
        model: The model or its path.
        input_scale: Overrides the normalisation factor recorded with the model.
        num_threads: LiteRT threads (``.tflite`` only).

    Raises:
        FileNotFoundError: no such path.
        ValueError: the path is not a model.
    """
    if isinstance(model, Runtime):
        return model
    if not isinstance(model, (str, Path)):
        return KerasRuntime(model, input_scale)
    path = Path(resolve_model(model))
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file or folder")
    if path.suffix == ".keras":
        info = model_sidecar(path)
        scale = input_scale if input_scale is not None else info.get("input_scale")
        runtime = KerasRuntime(load_keras_model(path), scale)
        runtime.palette = (info.get("labels") or {}).get("palette")
        runtime.normalisation = info.get("normalisation")
        return runtime
    if path.suffix == ".tflite":
        return tflite_runtime(path, num_threads=num_threads, input_scale=input_scale)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return saved_model_runtime(path, input_scale=input_scale)
    raise ValueError(f"{path}: not a model; expected a .keras file, a run folder, a SavedModel "
                     "folder or a .tflite file")
