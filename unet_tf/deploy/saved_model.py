"""The SavedModel for TF Serving: the serving graph, warmup records and the fresh-process check.

Signatures (inputs of any height and width; the graph pads to a size the model
accepts, by mirroring, and crops back):

- ``serving_default``: ``images`` uint8 ``[batch, H, W, C]`` -> ``probabilities``
  float32 ``[batch, H, W, K]`` and ``mask`` uint8 ``[batch, H, W]``. The
  training normalisation happens inside.
- ``serve_float``: ``images`` float32, already normalised -> the same outputs.
- ``serve_png``: ``image_bytes`` string ``[batch]`` (PNG or JPEG) -> ``mask_png``
  string ``[batch]``: class indices, binary masks as 0/255.
- ``serve_tile``: float32 tiles of a valid input size -> the raw model output
  (used by ``unet_tf.runtimes`` for overlap-tile prediction).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .. import sizes
from ..errors import ExportError
from ..data.normalise import normalise
from ..run import legacy_normalisation
from ..runtimes import tf_probabilities

__all__ = ["export_metadata", "float32_clone", "is_float32", "write_saved_model", "write_warmup",
           "verify_saved_model", "saved_model_cli", "next_version", "atomic_dir_replace"]


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


def is_float32(model) -> bool:
    """True when the model computes in float32 (its blocks share its dtype policy)."""
    return model.dtype_policy.compute_dtype == "float32"


def export_metadata(model, info: dict) -> dict:
    step = 2 ** model.depth
    min_in = sizes.nearest_valid_input_sizes(1, model.depth, model.padding)[1]
    return {
        "format": "unet_tf", "version": 1,
        "depth": int(model.depth), "padding": model.padding, "num_classes": int(model.num_classes),
        "in_channels": int(model.in_channels), "logits": bool(getattr(model, "logits", False)),
        "input_scale": float(info.get("input_scale", 1.0 / 255.0)),
        "normalisation": info.get("normalisation")
        or legacy_normalisation(float(info.get("input_scale", 1.0 / 255.0))),
        "labels": info.get("labels"),
        "plan": info.get("plan"),
        "class_names": (info.get("labels") or {}).get("class_names"),
        "palette": (info.get("labels") or {}).get("palette"),
        "size_step": step, "min_input": min_in,
        "min_output": sizes.output_size(min_in, model.depth, model.padding),
        "margin": (min_in - sizes.output_size(min_in, model.depth, model.padding)) // 2,
    }


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
    y = tf_probabilities(model(x, training=False), meta["num_classes"], meta["logits"])
    return y[:, :h, :w, :]


def _normalise_uint8(images, norm: dict):
    """``unet_tf.data.normalise.normalise`` in the graph, for uint8 images: the
    8-bit values are first brought to the training images' units by bit depth."""
    import tensorflow as tf
    x = tf.cast(images, tf.float32)
    scheme = norm.get("scheme", "scale")
    if scheme == "zscore_per_image":
        mean, variance = tf.nn.moments(x, axes=[1, 2], keepdims=True)
        return (x - mean) / tf.maximum(tf.sqrt(variance), 1e-6)
    bits = int(norm.get("bits") or 0)
    if norm.get("dtype") != "uint8":
        x = x / 255.0 * float(2**bits - 1) if bits else x / 255.0 / float(norm.get("scale", 1.0))
    if scheme == "scale":
        return x * float(norm["scale"])
    low = tf.constant(norm["low"], tf.float32)
    high = tf.constant(norm["high"], tf.float32)
    return (tf.clip_by_value(x, low, high) - low) / tf.maximum(high - low, 1e-6)


def _mask(probabilities, num_classes: int, threshold: float):
    import tensorflow as tf
    if num_classes == 1:
        return tf.cast(probabilities[..., 0] >= threshold, tf.uint8)
    return tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8)


def write_saved_model(model, meta: dict, path: Path, threshold: float) -> None:
    import keras
    import tensorflow as tf

    c, k = meta["in_channels"], meta["num_classes"]
    norm = meta["normalisation"]
    archive = keras.export.ExportArchive()
    archive.track(model)

    def outputs(x):
        probabilities = _padded_call(model, meta, x)
        return {"probabilities": probabilities, "mask": _mask(probabilities, k, threshold)}

    def serve_uint8(images):
        return outputs(_normalise_uint8(images, norm))

    def serve_float(images):
        return outputs(images)

    def serve_png(image_bytes):
        def one(data):
            image = tf.io.decode_image(data, channels=c, dtype=tf.uint8, expand_animations=False)
            mask = outputs(_normalise_uint8(image[None], norm))["mask"][0]
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


def write_warmup(path: Path, meta: dict, model_name: str, shapes) -> int:
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
                ("serve_float", "images", tf.make_tensor_proto(normalise(image[0], meta["normalisation"])[None])),
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


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] \
        if model_dir.exists() else []
    return max(versions, default=0) + 1


def _keras_reference(model, meta: dict, images: list[np.ndarray]) -> list[np.ndarray]:
    """What the serving graph must give: the Keras model on the mirror-padded image, cropped."""
    from ..tiling import window
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


def verify_saved_model(path: Path, model, meta: dict) -> dict:
    """Check the SavedModel in a fresh process that does not import unet_tf."""
    rng = np.random.default_rng(1)
    c = meta["in_channels"]
    shapes = [(37, 53), (64, 64), (meta["min_input"] + 1, 2 * meta["size_step"] + 3)]
    uint8_images = [rng.integers(0, 256, (h, w, c), dtype=np.uint8) for h, w in shapes]
    # The serving graph normalises uint8 images as unet_tf.data.normalise does.
    floats = [normalise(im, meta["normalisation"]) for im in uint8_images]
    expected = _keras_reference(model, meta, floats)
    with tempfile.TemporaryDirectory() as tmp:
        arrays = {f"image_{i}": im for i, im in enumerate(uint8_images)}
        arrays |= {f"float_{i}": f for i, f in enumerate(floats)}
        arrays |= {f"expected_{i}": e for i, e in enumerate(expected)}
        np.savez(Path(tmp) / "cases.npz", **arrays)
        script = (Path(__file__).parent / "verify_saved_model.py").read_text()
        # -c with the source (not the file path): the child must not see the
        # package folder on sys.path, so it cannot import unet_tf by accident.
        (Path(tmp) / "meta.json").write_text(json.dumps(meta))
        proc = subprocess.run([sys.executable, "-c", script, str(path), str(Path(tmp) / "cases.npz"),
                               str(Path(tmp) / "meta.json")], capture_output=True, text=True, cwd=tmp,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=600)
    if proc.returncode != 0:
        raise ExportError(f"SavedModel verification failed in a fresh process:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def saved_model_cli(path: Path) -> str:
    exe = Path(sys.executable).parent / "saved_model_cli"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    proc = subprocess.run(cmd + ["show", "--dir", str(path), "--all"], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    return proc.stdout if proc.returncode == 0 else f"saved_model_cli failed: {proc.stderr[-2000:]}"


def atomic_dir_replace(tmp: Path, final: Path, force: bool) -> None:
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
