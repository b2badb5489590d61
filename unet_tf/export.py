"""Export a trained ``.keras`` U-Net for TF Serving (SavedModel) and edge devices (TFLite/LiteRT).

``export_model`` writes, under ``out``::

    <name>/<version>/saved_model.pb, variables/      TF Serving's versioned layout
    <name>/<version>/assets.extra/tf_serving_warmup_requests
    <name>/<version>/assets.extra/unet_tf.json       geometry and preprocessing
    tflite/<name>_<h>x<w>_<variant>.tflite (+ .json) float32, float16, dynamic_int8, int8
    export_report.json                               sizes, parity, latency, ops

and proves each artifact against the Keras model: the SavedModel in a fresh
Python process that does not import ``unet_tf``, the TFLite files with the
LiteRT interpreter (``ai_edge_litert``). A parity breach, a Flex (select TF)
op or a variable op fails the export with :class:`ExportError`.

SavedModel signatures (inputs of any height and width; the graph pads to a
size the model accepts, by mirroring, and crops back):

- ``serving_default``: ``images`` uint8 ``[batch, H, W, C]`` -> ``probabilities``
  float32 ``[batch, H, W, K]`` and ``mask`` uint8 ``[batch, H, W]``. The
  training normalisation (``input_scale``) happens inside.
- ``serve_float``: ``images`` float32, already normalised -> the same outputs.
- ``serve_png``: ``image_bytes`` string ``[batch]`` (PNG or JPEG) -> ``mask_png``
  string ``[batch]``: class indices, binary masks as 0/255.
- ``serve_tile``: float32 tiles of a valid input size -> the raw model output
  (used by ``unet_tf.inference`` for overlap-tile prediction).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import sizes
from .files import atomic_write, atomic_write_json

__all__ = ["ExportError", "ExportOptions", "export_model", "load_keras_model", "float32_clone",
           "saved_model_runtime", "tflite_runtime", "GPU_DELEGATE_OPS", "TFLITE_VARIANTS"]

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


class ExportError(RuntimeError):
    """An artifact failed its checks (parity, ops) or could not be written."""


@dataclass
class ExportOptions:
    """What to export and how strictly to check it.

    Attributes:
        name: model name in the TF Serving layout (``OUT/<name>/<version>``).
        version: version number; default one more than the highest present.
        force: replace an existing version.
        tflite_sizes: one fixed TFLite input shape per entry, ``(height, width)``.
        tflite_variants: subset of ``TFLITE_VARIANTS``.
        calibration_tiles: tiles for full-integer calibration (at least 64).
        latency_runs: timed runs per artifact for the median latency.
        tolerance_float32, tolerance_float16: max abs diff allowed against Keras.
        min_int8_dice: mask dice against Keras required of the int8 variants.
        threshold: probability threshold of binary masks.
    """
    name: str = "unet"
    version: int | None = None
    force: bool = False
    tflite_sizes: list = field(default_factory=lambda: [(256, 256)])
    tflite_variants: tuple = TFLITE_VARIANTS
    calibration_tiles: int = 64
    latency_runs: int = 10
    tolerance_float32: float = 1e-5
    # float16 weights keep 11 significant bits: about 5e-4 relative error per
    # weight, which a trained model's logits turn into a few 1e-3 in probability
    # (3.6e-3 and 4.1e-3 for two trainings of the demo model). The gate leaves
    # room for that and still fails broken conversions, which are off by 0.1 or more.
    tolerance_float16: float = 1e-2
    min_int8_dice: float = 0.98
    threshold: float = 0.5


# --------------------------------------------------------------------------- model
def load_keras_model(path):
    """Load a ``.keras`` U-Net (custom classes registered) without its optimizer."""
    import keras

    from . import losses, metrics, model  # noqa: F401 - register the custom classes
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file; pass a .keras file or a run folder")
    return keras.models.load_model(path, compile=False)


def float32_clone(model):
    """The same network and weights with float32 compute (for mixed-precision models)."""
    import keras
    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        clone = type(model).from_config(model.get_config())
        if not clone.built:
            clone.build((None, None, None, model.in_channels))
    finally:
        keras.mixed_precision.set_global_policy(policy)
    clone.set_weights(model.get_weights())
    return clone


def _is_float32(model) -> bool:
    return all(layer.dtype_policy.compute_dtype == "float32" for layer in model._flatten_layers())


def _metadata(model, info: dict) -> dict:
    step = 2 ** model.depth
    min_in = sizes.nearest_valid_input_sizes(1, model.depth, model.padding)[1]
    return {
        "format": "unet_tf", "version": 1,
        "depth": int(model.depth), "padding": model.padding, "num_classes": int(model.num_classes),
        "in_channels": int(model.in_channels), "logits": bool(getattr(model, "logits", False)),
        "input_scale": float(info.get("input_scale", 1.0 / 255.0)),
        "class_names": (info.get("labels") or {}).get("class_names"),
        "palette": (info.get("labels") or {}).get("palette"),
        "size_step": step, "min_input": min_in,
        "min_output": sizes.output_size(min_in, model.depth, model.padding),
        "margin": (min_in - sizes.output_size(min_in, model.depth, model.padding)) // 2,
    }


# --------------------------------------------------------------------------- graph
def _reflect_gather(x, before, after, axis):
    """Mirror-extend ``x`` along ``axis`` by any amounts, with index arithmetic (no Python if)."""
    import tensorflow as tf
    n = tf.shape(x)[axis]
    idx = tf.range(-before, n + after)
    period = tf.maximum(2 * (n - 1), 1)
    idx = tf.math.floormod(idx, period)
    idx = tf.where(idx < n, idx, period - idx)
    idx = tf.minimum(idx, n - 1)  # n == 1: everything maps to 0
    return tf.gather(x, idx, axis=axis)


def _padded_call(model, meta: dict, images):
    """Run the model on any H x W: mirror-pad to an accepted size, predict, crop to H x W."""
    import tensorflow as tf
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    step, min_out, margin = meta["size_step"], meta["min_output"], meta["margin"]

    def target(n):  # smallest accepted output size >= n
        extra = tf.maximum(n - min_out, 0)
        return min_out + (extra + step - 1) // step * step

    out_h, out_w = target(h), target(w)
    x = _reflect_gather(images, margin, out_h - h + margin, axis=1)
    x = _reflect_gather(x, margin, out_w - w + margin, axis=2)
    y = tf.cast(model(x, training=False), tf.float32)
    if meta["logits"]:
        y = tf.sigmoid(y) if meta["num_classes"] == 1 else tf.nn.softmax(y, axis=-1)
    return y[:, :h, :w, :]


def _mask(probabilities, num_classes: int, threshold: float):
    import tensorflow as tf
    if num_classes == 1:
        return tf.cast(probabilities[..., 0] >= threshold, tf.uint8)
    return tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8)


def _write_saved_model(model, meta: dict, path: Path, threshold: float) -> None:
    import keras
    import tensorflow as tf

    c, k = meta["in_channels"], meta["num_classes"]
    scale = meta["input_scale"]
    archive = keras.export.ExportArchive()
    archive.track(model)

    def outputs(x):
        probabilities = _padded_call(model, meta, x)
        return {"probabilities": probabilities, "mask": _mask(probabilities, k, threshold)}

    def serve_uint8(images):
        return outputs(tf.cast(images, tf.float32) * scale)

    def serve_float(images):
        return outputs(images)

    def serve_png(image_bytes):
        def one(data):
            image = tf.io.decode_image(data, channels=c, dtype=tf.uint8, expand_animations=False)
            mask = outputs(tf.cast(image[None], tf.float32) * scale)["mask"][0]
            if k == 1:
                mask = mask * 255
            return tf.io.encode_png(mask[..., None])
        return {"mask_png": tf.map_fn(one, image_bytes, fn_output_signature=tf.string)}

    def serve_tile(images):
        return {"output": tf.cast(model(images, training=False), tf.float32)}

    spec = lambda dtype, name: [tf.TensorSpec((None, None, None, c), dtype, name=name)]  # noqa: E731
    archive.add_endpoint("serving_default", serve_uint8, spec(tf.uint8, "images"))
    archive.add_endpoint("serve_float", serve_float, spec(tf.float32, "images"))
    archive.add_endpoint("serve_png", serve_png, [tf.TensorSpec((None,), tf.string, name="image_bytes")])
    archive.add_endpoint("serve_tile", serve_tile, spec(tf.float32, "images"))
    archive.write_out(str(path), verbose=False)


def _write_warmup(path: Path, meta: dict, model_name: str, shapes) -> int:
    """TF Serving warmup records: one PredictRequest per signature and shape."""
    import cv2
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    c = meta["in_channels"]
    rng = np.random.default_rng(0)
    records = []
    for h, w in shapes:
        image = rng.integers(0, 256, (1, h, w, c), dtype=np.uint8)
        ok, png = cv2.imencode(".png", image[0][..., ::-1] if c == 3 else image[0])
        for signature, key, tensor in (
                ("serving_default", "images", tf.make_tensor_proto(image)),
                ("serve_float", "images", tf.make_tensor_proto(image.astype(np.float32) * meta["input_scale"])),
                ("serve_png", "image_bytes", tf.make_tensor_proto([png.tobytes()]))):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
            request.inputs[key].CopyFrom(tensor)
            records.append(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record.SerializeToString())
    return len(records)


# --------------------------------------------------------------------------- SavedModel
def _next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] \
        if model_dir.exists() else []
    return max(versions, default=0) + 1


def _keras_reference(model, meta: dict, images: list[np.ndarray]) -> list[np.ndarray]:
    """What the serving graph must give: the Keras model on the mirror-padded image, cropped."""
    from .tiling import window
    outs = []
    for image in images:
        h, w = image.shape[:2]
        in_h = sizes.input_size_for_output(h, meta["depth"], meta["padding"])
        in_w = sizes.input_size_for_output(w, meta["depth"], meta["padding"])
        m = meta["margin"]
        canvas = window(image, -m, -m, in_h, in_w, "mirror")
        y = np.asarray(model(canvas[None].astype(np.float32), training=False), np.float32)[0]
        outs.append(y[:h, :w])
    return outs


def _verify_saved_model(path: Path, model, meta: dict) -> dict:
    """Check the SavedModel in a fresh process that does not import unet_tf."""
    rng = np.random.default_rng(1)
    c = meta["in_channels"]
    shapes = [(37, 53), (64, 64), (meta["min_input"] + 1, 2 * meta["size_step"] + 3)]
    uint8_images = [rng.integers(0, 256, (h, w, c), dtype=np.uint8) for h, w in shapes]
    floats = [im.astype(np.float32) * meta["input_scale"] for im in uint8_images]
    expected = _keras_reference(model, meta, floats)
    with tempfile.TemporaryDirectory() as tmp:
        arrays = {f"image_{i}": im for i, im in enumerate(uint8_images)}
        arrays |= {f"expected_{i}": e for i, e in enumerate(expected)}
        np.savez(Path(tmp) / "cases.npz", **arrays)
        script = (Path(__file__).parent / "_verify_saved_model.py").read_text()
        # -c with the source (not the file path): the child must not see the package
        # folder on sys.path, where unet_tf/io.py would shadow the standard library.
        proc = subprocess.run([sys.executable, "-c", script, str(path), str(Path(tmp) / "cases.npz"),
                               json.dumps(meta)], capture_output=True, text=True, cwd=tmp,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=600)
    if proc.returncode != 0:
        raise ExportError(f"SavedModel verification failed in a fresh process:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _saved_model_cli(path: Path) -> str:
    exe = Path(sys.executable).parent / "saved_model_cli"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    proc = subprocess.run(cmd + ["show", "--dir", str(path), "--all"], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    return proc.stdout if proc.returncode == 0 else f"saved_model_cli failed: {proc.stderr[-2000:]}"


def _atomic_dir_replace(tmp: Path, final: Path, force: bool) -> None:
    if final.exists():
        if not force:
            raise FileExistsError(f"{final}: this version exists; pass --force to replace it, "
                                  "or --version N for a new one")
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


# --------------------------------------------------------------------------- TFLite
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


def _interpreter(path_or_bytes, num_threads=None, xnnpack: bool = True):
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
    return sorted({op["op_name"] for op in interp._get_ops_details()})  # noqa: SLF001


def _run_tflite(interp, batch: np.ndarray) -> np.ndarray:
    """Run a fixed-shape LiteRT model on float inputs, (de)quantizing where the model is integer."""
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


def _median_latency_ms(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def _mask_dice(a: np.ndarray, b: np.ndarray, num_classes: int, threshold: float) -> float:
    from .inference import to_labels
    la, lb = to_labels(a, threshold), to_labels(b, threshold)
    classes = [1] if num_classes == 1 else range(num_classes)
    scores = []
    for k in classes:
        pa, pb = la == k, lb == k
        denom = pa.sum() + pb.sum()
        if denom:
            scores.append(2 * (pa & pb).sum() / denom)
    return float(np.mean(scores)) if scores else 1.0


def _export_tflite(model, meta: dict, shape, variant: str, out_dir: Path, name: str,
                   calibration, check_tiles: np.ndarray, options: ExportOptions) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        fixed = Path(tmp) / "fixed"
        _fixed_shape_saved_model(model, shape, meta["in_channels"], fixed)
        content = _convert(fixed, variant, calibration)
    interp = _interpreter(content, num_threads=1)
    plain = _interpreter(content, num_threads=1, xnnpack=False)
    ops = tflite_ops(plain)  # without XNNPACK, whose delegate node would hide the ops
    forbidden = [op for op in ops if op.upper().startswith(_FORBIDDEN_OP_PREFIXES)]
    if forbidden:
        raise ExportError(f"TFLite {variant} {shape}: non-builtin or variable ops {forbidden}; "
                          f"all ops: {ops}")
    expected = np.asarray(model(check_tiles, training=False), np.float32)
    got = _run_tflite(interp, check_tiles)
    no_xnn = _run_tflite(plain, check_tiles[:1])
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
    entry["latency_ms"] = _median_latency_ms(lambda: _run_tflite(interp, check_tiles[:1]),
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


def _tiles(items, shape, count: int, seed: int = 0) -> np.ndarray:
    """``count`` real tiles of ``shape`` from the dataset's images (mirror-extended when small)."""
    from .tiling import window
    rng = np.random.default_rng(seed)
    tiles = []
    while len(tiles) < count and items:
        item = items[len(tiles) % len(items)]
        h, w = item.pixels.shape[:2]
        top = int(rng.integers(0, max(h - shape[0], 0) + 1))
        left = int(rng.integers(0, max(w - shape[1], 0) + 1))
        tile = window(item.pixels, top, left, shape[0], shape[1], "mirror")
        tiles.append(tile.astype(np.float32) * np.float32(item.scale))
    return np.stack(tiles)


# --------------------------------------------------------------------------- main
def _load_info(model_path: Path, data: str | None) -> dict:
    from .inference import _sidecar
    info = dict(_sidecar(model_path))
    if data:
        info["root"] = data
    return info


def _calibration_items(info: dict):
    root = info.get("root")
    if not root or not Path(root).exists():
        return None
    from .data import WeightMapConfig, load_data
    # Calibration needs images only: skip the weight maps.
    bundle = load_data(root, input_scale=info.get("input_scale"), val_fraction=0.2,
                       weight_map=WeightMapConfig(enabled=False))
    return bundle


def export_model(model_path, out, *, data: str | None = None,
                 options: ExportOptions | None = None, log=print) -> dict:
    """Export ``model_path`` (a ``.keras`` file or a run folder) into ``out``; returns the report.

    Raises:
        FileExistsError: the version exists and ``options.force`` is off.
        ExportError: an artifact failed its checks (nothing half-written is left).
    """
    options = options or ExportOptions()
    # Absolute paths: the verification runs in a fresh process in another folder.
    model_path = Path(model_path).resolve()
    if model_path.is_dir():
        model_path = model_path / "best.keras"
    info = _load_info(model_path, data)
    model = load_keras_model(model_path)
    if not _is_float32(model):
        log("Mixed-precision model: exporting a float32 clone with the same weights.")
        model = float32_clone(model)
    meta = _metadata(model, info)
    out = Path(out).resolve()
    model_dir = out / options.name
    version = options.version or _next_version(model_dir)
    final = model_dir / str(version)
    if final.exists() and not options.force:
        raise FileExistsError(f"{final}: this version exists; pass --force to replace it, "
                              "or --version N for a new one")
    bad_variants = set(options.tflite_variants) - set(TFLITE_VARIANTS)
    if bad_variants:
        raise ValueError(f"unknown TFLite variants {sorted(bad_variants)}; choose from {TFLITE_VARIANTS}")
    for h, w in options.tflite_sizes:
        for s in (h, w):
            sizes.check_input_size(int(s), meta["depth"], meta["padding"])
    model_dir.mkdir(parents=True, exist_ok=True)
    report = {"model": str(model_path), "metadata": meta, "artifacts": []}

    # SavedModel, written to a temporary folder and renamed into place once verified.
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-tmp-", dir=model_dir))
    try:
        log(f"Writing SavedModel {final}")
        _write_saved_model(model, meta, tmp, options.threshold)
        (tmp / "assets.extra").mkdir(exist_ok=True)
        (tmp / "assets.extra" / "unet_tf.json").write_text(json.dumps(meta, indent=2))
        n_warmup = _write_warmup(tmp / "assets.extra" / "tf_serving_warmup_requests", meta,
                                 options.name, [(64, 64), (37, 53)])
        verification = _verify_saved_model(tmp, model, meta)
        if not verification["ok"]:
            raise ExportError("SavedModel does not match the Keras model: " + json.dumps(verification))
        _atomic_dir_replace(tmp, final, options.force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    report["artifacts"].append({
        "kind": "saved_model", "path": str(final), "size_bytes": _dir_size(final),
        "max_abs_diff": verification["max_abs_diff"], "warmup_records": n_warmup,
        "latency_ms": verification["latency_ms"], "signatures": verification["signatures"],
        "ok": True})
    report["saved_model_cli"] = _saved_model_cli(final)

    if options.tflite_variants and options.tflite_sizes:
        tflite_dir = out / "tflite"
        tflite_dir.mkdir(parents=True, exist_ok=True)
        bundle = _calibration_items(info) if "int8" in options.tflite_variants else None
        for shape in options.tflite_sizes:
            shape = (int(shape[0]), int(shape[1]))
            calibration = _tiles(bundle.train, shape, options.calibration_tiles) if bundle else None
            check_items = (bundle.val or bundle.train) if bundle else None
            check = (_tiles(check_items, shape, 4, seed=1) if check_items
                     else np.random.default_rng(2).random((2, *shape, meta["in_channels"]), dtype=np.float32))
            for variant in options.tflite_variants:
                log(f"Converting TFLite {variant} {shape[0]}x{shape[1]}")
                try:
                    entry = _export_tflite(model, meta, shape, variant, tflite_dir, options.name,
                                           calibration, check, options)
                except ExportError as err:  # the others still get their chance
                    entry = {"variant": variant, "shape": list(shape), "ok": False, "error": str(err)}
                if variant == "int8" and calibration is not None:
                    entry["calibration_tiles"] = len(calibration)
                report["artifacts"].append({"kind": "tflite"} | entry)
    report_path = out / "export_report.json"
    atomic_write_json(report_path, report, default=str)
    log(format_report(report))
    failures = [a["error"] for a in report["artifacts"] if not a["ok"]]
    if failures:
        raise ExportError(f"{len(failures)} artifact(s) failed their checks and were not written "
                          f"(details in {report_path}):\n" + "\n".join(f"- {f}" for f in failures))
    return report


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def format_report(report: dict) -> str:
    """The export report as a table: artifact, size, parity against Keras, latency."""
    rows = [("artifact", "size", "vs keras", "latency (1 thread)")]
    for a in report["artifacts"]:
        label = "SavedModel" if a["kind"] == "saved_model" else f"tflite {a['variant']} {a['shape'][0]}x{a['shape'][1]}"
        if not a["ok"]:
            rows.append((label, "-", "FAILED (not written)", "-"))
            continue
        parity = (f"max|diff| {a['max_abs_diff']:.2e}" if "max_abs_diff" in a
                  else f"mask dice {a['mask_dice']:.4f}")
        rows.append((label, f"{a['size_bytes'] / 1e6:.2f} MB", parity, f"{a['latency_ms']:.1f} ms"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in rows)


# --------------------------------------------------------------------------- runtimes
def _find_metadata(path: Path) -> dict:
    for candidate in (path / "assets.extra" / "unet_tf.json", path.with_suffix(".json")):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    raise ValueError(f"{path}: no unet_tf metadata found (assets.extra/unet_tf.json or a .json "
                     "next to the .tflite file); was it exported with unet-tf export?")


def saved_model_runtime(path, input_scale: float | None = None):
    """A :class:`unet_tf.inference.Runtime` over an exported SavedModel's ``serve_tile`` signature."""
    import tensorflow as tf

    from .inference import Runtime
    path = Path(path)
    meta = _find_metadata(path)
    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures["serve_tile"]

    def predict(batch):
        return _probabilities(fn(images=tf.constant(batch, tf.float32))["output"].numpy(), meta)

    return Runtime(predict=predict, depth=meta["depth"], padding=meta["padding"],
                   num_classes=meta["num_classes"], in_channels=meta["in_channels"],
                   input_scale=input_scale or meta["input_scale"], name="saved_model",
                   palette=meta.get("palette"))


def tflite_runtime(path, num_threads: int | None = None, input_scale: float | None = None):
    """A :class:`unet_tf.inference.Runtime` over an exported ``.tflite`` file (fixed shape)."""
    from .inference import Runtime
    path = Path(path)
    meta = _find_metadata(path)
    interp = _interpreter(path, num_threads=num_threads)
    shape = tuple(int(v) for v in interp.get_input_details()[0]["shape"][1:3])

    def predict(batch):
        return _probabilities(_run_tflite(interp, batch), meta)

    return Runtime(predict=predict, depth=meta["depth"], padding=meta["padding"],
                   num_classes=meta["num_classes"], in_channels=meta["in_channels"],
                   input_scale=input_scale or meta["input_scale"], fixed_shape=shape,
                   max_batch=1, name=f"tflite:{meta.get('variant', '')}",
                   palette=meta.get("palette"))


def _probabilities(y: np.ndarray, meta: dict) -> np.ndarray:
    """The raw model output of a logits model turned into probabilities (else as is)."""
    if not meta.get("logits"):
        return y
    if meta["num_classes"] == 1:
        return 1 / (1 + np.exp(-y))
    e = np.exp(y - y.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
