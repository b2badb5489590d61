import keras
import numpy as np
import pytest

from unet_tf import sizes
from unet_tf.inference import predict_image, predict_tiled, prepare_image, to_labels
from unet_tf.runtimes import KerasRuntime
from unet_tf.models import UNet
from unet_tf.tiling import window


@pytest.fixture(scope="module")
def valid_model():
    keras.utils.set_random_seed(1)
    return UNet(num_classes=2, depth=2, base_filters=4, padding="valid", dropout=0.0, in_channels=1)


@pytest.fixture(scope="module")
def same_model():
    keras.utils.set_random_seed(2)
    return UNet(num_classes=1, depth=2, base_filters=4, padding="same", batch_norm=True,
                in_channels=3)


def _full_pass_valid(model, image):
    """One pass over the whole (mirror-extrapolated) image: the reference for tiling."""
    h, w = image.shape[:2]
    margin = (60 - model.output_size(60)) // 2
    size_h = sizes.input_size_for_output(h, model.depth, "valid")
    size_w = sizes.input_size_for_output(w, model.depth, "valid")
    canvas = window(image, -margin, -margin, size_h, size_w, "mirror")
    out = keras.ops.convert_to_numpy(model(canvas[None], training=False))[0]
    return out[:h, :w]


@pytest.mark.parametrize("shape", [(97, 131), (45, 33), (20, 20)])
def test_valid_tiling_equals_one_full_pass(valid_model, shape, rng):
    image = rng.random(shape + (1,), dtype=np.float32)
    tiled = predict_tiled(valid_model, image, tile_size=60, batch_size=3)
    assert tiled.shape == shape + (2,)
    np.testing.assert_allclose(tiled, _full_pass_valid(valid_model, image), atol=1e-4)


def test_same_tiling_agrees_with_full_pass(trained_binary_model):
    model, x, _ = trained_binary_model
    image = np.concatenate([np.concatenate([x[0], x[1]], 1), np.concatenate([x[2], x[3]], 1)], 0)
    full = keras.ops.convert_to_numpy(model(image[None], training=False))[0]
    tiled = predict_tiled(model, image, tile_size=64, overlap=32)
    assert tiled.shape == full.shape == (128, 128, 1)
    labels = to_labels(full, 0.5)
    assert 0.05 < labels.mean() < 0.95  # a real segmentation, not all one class
    assert (to_labels(tiled, 0.5) == labels).mean() >= 0.995


def test_no_seams_on_constant_input(trained_binary_model, monkeypatch):
    """Blended tiles match one full pass; plain abutting tiles would show their borders."""
    import unet_tf.inference as inference
    model, _, _ = trained_binary_model
    image = np.full((320, 320, 1), 0.4, np.float32)
    full = keras.ops.convert_to_numpy(model(image[None], training=False))[0, ..., 0]
    blended = predict_tiled(model, image, tile_size=128, overlap=32)[..., 0]
    monkeypatch.setattr(inference, "_blend_window", lambda h, w, p: np.ones((h, w), np.float32))
    abutting = predict_tiled(model, image, tile_size=128, overlap=0)[..., 0]
    inner = slice(48, -48)  # away from the image border, where both see the same padding
    seam_error = np.abs(abutting - full)[inner, inner].max()
    blend_error = np.abs(blended - full)[inner, inner].max()
    assert seam_error > 0.05  # the test can tell a seam
    assert blend_error < 0.05 and blend_error < 0.1 * seam_error


def test_odd_sizes_and_tiny_images(same_model, rng):
    for shape in [(7, 5), (33, 65), (1, 40)]:
        out = predict_tiled(same_model, rng.random(shape + (3,), dtype=np.float32), tile_size=64)
        assert out.shape == shape + (1,)
        assert np.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()


def test_tta_flips_are_averaged(valid_model, rng):
    image = rng.random((40, 52, 1), dtype=np.float32)
    plain = predict_tiled(valid_model, image, tile_size=60)
    tta = predict_tiled(valid_model, image, tile_size=60, tta=True)
    flipped = predict_tiled(valid_model, np.ascontiguousarray(image[:, ::-1]), tile_size=60)[:, ::-1]
    assert tta.shape == plain.shape
    assert not np.allclose(tta, plain)
    # averaging is linear: TTA sits between the plain and the mirrored predictions' range
    lo = np.minimum(plain, flipped).min()
    assert tta.min() >= lo - 1e-5
    d4 = predict_tiled(valid_model, image, tile_size=60, tta="d4")
    np.testing.assert_allclose(d4.sum(-1), 1.0, atol=1e-5)


def test_bad_tile_size_names_valid_sizes(valid_model):
    with pytest.raises(ValueError, match="Nearest valid input sizes: 60 or 64"):
        predict_tiled(valid_model, np.zeros((50, 50, 1), np.float32), tile_size=61)


def test_prepare_image_matches_channels():
    rgb = np.full((4, 4, 3), 255, np.uint8)
    assert prepare_image(rgb, 1, 1 / 255).shape == (4, 4, 1)
    assert prepare_image(rgb[..., 0], 3, 1 / 255).shape == (4, 4, 3)
    np.testing.assert_allclose(prepare_image(rgb, 3, 1 / 255), 1.0)
    with pytest.raises(ValueError, match="channels"):
        prepare_image(np.zeros((4, 4, 5)), 3, 1.0)


def test_predict_image_uses_the_runtime_scale(same_model, rng):
    raw = rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)
    runtime = KerasRuntime(same_model, input_scale=1 / 255)
    a = predict_image(runtime, raw, tile_size=64)
    b = predict_tiled(same_model, raw.astype(np.float32) / 255, tile_size=64)
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_an_8192_image_is_predicted_with_memory_bounded_by_the_tile_batch():
    """Peak numpy memory: the image, the (H, W, K) result and its weights, plus one tile batch."""
    import tracemalloc
    keras.utils.set_random_seed(0)
    model = UNet(1, depth=2, base_filters=4, batch_norm=True, in_channels=1)
    image = np.zeros((8192, 8192, 1), np.float32)
    image[::64] = 1.0
    tracemalloc.start()
    probs = predict_tiled(model, image, tile_size=512, batch_size=2)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert probs.shape == (8192, 8192, 1) and np.isfinite(probs[::97, ::97]).all()
    plane = 8192 * 8192 * 4
    assert peak < 2 * plane + 64 * 2**20  # result + weights + tiles, never every tile's output
