"""Verify an exported SavedModel in a fresh process that does not import unet_tf.

Run by ``unet_tf.export`` as ``python -c <this source> SAVED_MODEL CASES.npz META_JSON``;
prints one JSON line with the results. Only TensorFlow, NumPy and TF Serving's
protos are imported, as on a serving machine.
"""
import json
import sys
import time

import numpy as np
import tensorflow as tf


def _spec(fn):
    inputs = fn.structured_input_signature[1]
    outputs = fn.structured_outputs
    describe = lambda s: {"dtype": s.dtype.name, "shape": s.shape.as_list()}  # noqa: E731
    return {"inputs": {k: describe(v) for k, v in inputs.items()},
            "outputs": {k: describe(v) for k, v in outputs.items()}}


def _expect(condition, message, problems):
    if not condition:
        problems.append(message)


def main(path, cases_path, meta_path):
    # One thread, like the TFLite latencies in the same report.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    meta = json.loads(open(meta_path).read())
    c, k = meta["in_channels"], meta["num_classes"]
    loaded = tf.saved_model.load(path)
    signatures = {name: _spec(fn) for name, fn in loaded.signatures.items()}
    problems = []
    _expect(set(signatures) >= {"serving_default", "serve_float", "serve_png", "serve_tile"},
            f"signatures are {sorted(signatures)}", problems)
    default = signatures.get("serving_default", {})
    _expect(default.get("inputs") == {"images": {"dtype": "uint8", "shape": [None, None, None, c]}},
            f"serving_default inputs {default.get('inputs')}", problems)
    _expect(default.get("outputs") == {
        "probabilities": {"dtype": "float32", "shape": [None, None, None, k]},
        "mask": {"dtype": "uint8", "shape": [None, None, None]}},
        f"serving_default outputs {default.get('outputs')}", problems)
    _expect(signatures.get("serve_float", {}).get("inputs", {}).get("images", {}).get("dtype") == "float32",
            "serve_float input is not float32", problems)
    _expect(signatures.get("serve_png", {}).get("inputs") == {"image_bytes": {"dtype": "string", "shape": [None]}},
            f"serve_png inputs {signatures.get('serve_png', {}).get('inputs')}", problems)

    cases = np.load(cases_path)
    n = len([key for key in cases.files if key.startswith("image_")])
    max_diff, shapes = 0.0, []
    for i in range(n):
        image, expected = cases[f"image_{i}"], cases[f"expected_{i}"]
        shapes.append(list(image.shape))
        out = loaded.signatures["serving_default"](images=tf.constant(image[None]))
        probs = out["probabilities"].numpy()[0]
        _expect(probs.shape == expected.shape, f"shape {probs.shape} != {expected.shape}", problems)
        if probs.shape == expected.shape:
            max_diff = max(max_diff, float(np.abs(probs - expected).max()))
        mask = out["mask"].numpy()[0]
        floats = cases[f"float_{i}"]
        probs_f = loaded.signatures["serve_float"](images=tf.constant(floats[None]))["probabilities"].numpy()[0]
        if probs_f.shape == expected.shape:
            max_diff = max(max_diff, float(np.abs(probs_f - expected).max()))
        png = tf.io.encode_png(tf.constant(image)).numpy()
        mask_png = loaded.signatures["serve_png"](image_bytes=tf.constant([png]))["mask_png"].numpy()[0]
        decoded = tf.io.decode_png(mask_png).numpy()[..., 0]
        want = mask * 255 if k == 1 else mask
        _expect(np.array_equal(decoded, want), f"serve_png mask differs for {image.shape}", problems)

    replayed = 0
    try:
        from tensorflow_serving.apis import prediction_log_pb2
        warmup = f"{path}/assets.extra/tf_serving_warmup_requests"
        for raw in tf.data.TFRecordDataset(warmup):
            log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
            request = log.predict_log.request
            fn = loaded.signatures[request.model_spec.signature_name]
            kwargs = {key: tf.constant(tf.make_ndarray(t)) for key, t in request.inputs.items()}
            result = fn(**kwargs)
            _expect(all(np.all(np.isfinite(v.numpy())) for v in result.values() if v.dtype.is_floating),
                    f"warmup record {replayed} gave non-finite output", problems)
            replayed += 1
    except ImportError:
        problems.append("tensorflow-serving-api is not installed: cannot replay warmup records")
    _expect(replayed > 0, "no warmup records replayed", problems)

    x = tf.constant(np.zeros((1, 256, 256, c), np.uint8))
    fn = loaded.signatures["serving_default"]
    fn(images=x)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        fn(images=x)
        times.append((time.perf_counter() - start) * 1000)
    ok = not problems and max_diff <= 1e-5
    print(json.dumps({"ok": ok, "problems": problems, "max_abs_diff": max_diff, "shapes": shapes,
                      "warmup_replayed": replayed, "signatures": signatures,
                      "latency_ms": float(np.median(times)), "unet_tf_imported": "unet_tf" in sys.modules}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
