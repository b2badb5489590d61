"""TFLite / LiteRT artifacts: conversion, builtin-op rule, parity with Keras, latency.

Each variant (float32, float16, dynamic-range int8, full int8 with uint8 input
and output) is converted from a fixed-shape SavedModel, run with the LiteRT
interpreter with and without XNNPACK, compared with the Keras model, and
written (to a temporary name, then renamed) only when it passes.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..files import atomic_write, atomic_write_json
from ..inference import to_labels
from ..metrics import PixelCounts
from ..runtimes import run_tflite, tflite_interpreter, tflite_ops
from ..tiling import window

__all__ = ["TFLITE_VARIANTS", "GPU_DELEGATE_OPS", "export_tflite", "sample_tiles", "median_latency_ms"]

TFLITE_VARIANTS = ("float32", "float16", "dynamic_int8", "int8")

#: Builtin ops the LiteRT GPU delegate runs (from its documented op list); the
#: report flags any other op, which would fall back to the CPU.
GPU_DELEGATE_OPS = frozenset({
    "ABS", "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CAST", "CONCATENATION", "CONV_2D", "COS",
    "CUMSUM", "DENSITY", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "DIV", "ELU",
    "EQUAL", "EXP", "FLOOR", "FLOOR_DIV", "FLOOR_MOD", "FULLY_CONNECTED", "GATHER", "GREATER",
    "GREATER_EQUAL", "HARD_SWISH", "LESS", "LESS_EQUAL", "LEAKY_RELU", "LOG", "LOGICAL_AND",
    "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MIRROR_PAD", "MUL", "NEG",
    "NOT_EQUAL", "ONE_HOT", "PACK", "PAD", "PADV2", "PRELU", "QUANTIZE", "REDUCE_MAX",
    "REDUCE_MIN", "REDUCE_PROD", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SELECT", "SELECT_V2", "SIN", "SLICE", "SOFTMAX",
    "SPACE_TO_DEPTH", "SPLIT", "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "STRIDED_SLICE", "SUB",
    "SUM", "TANH", "TILE", "TRANSPOSE", "TRANSPOSE_CONV", "ARG_MAX", "ARG_MIN",
})
_FORBIDDEN_OP_PREFIXES = ("FLEX", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE")


def _fixed_shape_saved_model(model, shape, channels: int, path: Path) -> None:
    import keras
    import tensorflow as tf
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default", lambda images: {"output": tf.cast(model(images, training=False), tf.float32)},
        [tf.TensorSpec((1, shape[0], shape[1], channels), tf.float32, name="images")])
    archive.write_out(str(path), verbose=False)


def _convert(saved_model: Path, variant: str, calibration: np.ndarray | None) -> bytes:
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        if calibration is None or len(calibration) == 0:
            raise ExportError("the int8 variant needs calibration tiles from the training data: "
                              "export from a run folder, or pass --data")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([tile[None].astype(np.float32)] for tile in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    try:
        return converter.convert()
    except Exception as err:  # noqa: BLE001 - the converter raises many types
        raise ExportError(f"TFLite conversion ({variant}) failed; the model must use builtin ops "
                          f"only: {err}") from err


def median_latency_ms(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def _mask_dice(got: np.ndarray, expected: np.ndarray, num_classes: int, threshold: float) -> float:
    """The masks' dice, counted as the metrics count it (binary: foreground; else the
    mean over the classes present); 1.0 when neither mask has any of them."""
    counts = PixelCounts(num_classes)
    truth = to_labels(expected, threshold)
    counts.add(truth, to_labels(got, threshold), np.ones(truth.shape, bool))
    dice = counts.scores()["dice"]
    return 1.0 if dice is None else dice


def export_tflite(model, meta: dict, shape, variant: str, out_dir: Path, name: str,
                   calibration, check_tiles: np.ndarray, options) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        fixed = Path(tmp) / "fixed"
        _fixed_shape_saved_model(model, shape, meta["in_channels"], fixed)
        content = _convert(fixed, variant, calibration)
    interp = tflite_interpreter(content, num_threads=1)
    plain = tflite_interpreter(content, num_threads=1, xnnpack=False)
    ops = tflite_ops(plain)  # without XNNPACK, whose delegate node would hide the ops
    forbidden = [op for op in ops if op.upper().startswith(_FORBIDDEN_OP_PREFIXES)]
    if forbidden:
        raise ExportError(f"TFLite {variant} {shape}: non-builtin or variable ops {forbidden}; "
                          f"all ops: {ops}")
    expected = np.asarray(model(check_tiles, training=False), np.float32)
    got = run_tflite(interp, check_tiles)
    no_xnn = run_tflite(plain, check_tiles[:1])
    entry = {"variant": variant, "shape": list(shape), "ops": ops,
             "gpu_unsupported_ops": [op for op in ops if op not in GPU_DELEGATE_OPS],
             "input_dtype": np.dtype(interp.get_input_details()[0]["dtype"]).name,
             "output_dtype": np.dtype(interp.get_output_details()[0]["dtype"]).name,
             "input_quantization": [float(v) for v in interp.get_input_details()[0]["quantization"]],
             "output_quantization": [float(v) for v in interp.get_output_details()[0]["quantization"]],
             "xnnpack_off_max_abs_diff": float(np.abs(no_xnn - got[:1]).max())}
    if variant in ("float32", "float16"):
        diff = float(np.abs(got - expected).max())
        limit = options.tolerance_float32 if variant == "float32" else options.tolerance_float16
        entry |= {"max_abs_diff": diff, "tolerance": limit}
        ok = diff <= limit and entry["xnnpack_off_max_abs_diff"] <= max(limit, 1e-5)
    else:
        dice = _mask_dice(got, expected, meta["num_classes"], options.threshold)
        entry |= {"mask_dice": dice, "min_dice": options.min_int8_dice}
        ok = dice >= options.min_int8_dice
    entry["latency_ms"] = median_latency_ms(lambda: run_tflite(interp, check_tiles[:1]),
                                             options.latency_runs)
    entry["ok"] = bool(ok)
    if not ok:
        raise ExportError(f"TFLite {variant} {shape[0]}x{shape[1]} does not match the Keras model: "
                          + json.dumps({k: entry[k] for k in entry if k != "ops"}))
    # Only a verified model is written: temporary file, then rename.
    file_name = f"{name}_{shape[0]}x{shape[1]}_{variant}.tflite"
    path = out_dir / file_name
    atomic_write(path, content)
    atomic_write_json(out_dir / f"{path.stem}.json", meta | {"variant": variant, "shape": list(shape)})
    entry |= {"path": str(path), "size_bytes": len(content)}
    return entry


def sample_tiles(items, shape, count: int, seed: int = 0) -> np.ndarray:
    """``count`` real tiles of ``shape`` from the dataset's images (mirror-extended when small)."""
    rng = np.random.default_rng(seed)
    tiles = []
    while len(tiles) < count and items:
        item = items[len(tiles) % len(items)]
        h, w = item.pixels.shape[:2]
        top = int(rng.integers(0, max(h - shape[0], 0) + 1))
        left = int(rng.integers(0, max(w - shape[1], 0) + 1))
        tile = window(item.pixels, top, left, shape[0], shape[1], "mirror")
        tiles.append(item.to_input(tile))
    return np.stack(tiles)
