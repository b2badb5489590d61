import keras
import numpy as np
import pytest

from unet_tf import sizes
from unet_tf.models import UNet


def _tiny(**kwargs):
    kwargs.setdefault("base_filters", 4)
    kwargs.setdefault("dropout", 0.0)
    return UNet(**kwargs)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_output_shapes_for_every_depth(depth, padding):
    size = sizes.nearest_valid_input_sizes(48, depth, padding)[1]
    model = _tiny(num_classes=3, depth=depth, padding=padding)
    y = model(np.zeros((1, size, size, 1), "float32"))
    expected = size if padding == "same" else size - {1: 16, 2: 40, 3: 88, 4: 184}[depth]
    assert tuple(y.shape) == (1, expected, expected, 3)
    assert model.output_size(size) == expected


@pytest.mark.parametrize("num_classes", [1, 3])
@pytest.mark.parametrize("channels", [1, 3])
def test_heads_and_input_channels(num_classes, channels):
    model = _tiny(num_classes=num_classes, depth=2, in_channels=channels)
    y = keras.ops.convert_to_numpy(model(np.random.rand(2, 32, 32, channels).astype("float32")))
    assert y.shape == (2, 32, 32, num_classes)
    if num_classes == 1:
        assert (y > 0).all() and (y < 1).all()  # sigmoid
    else:
        np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)  # softmax


def test_paper_size_572_to_388():
    model = _tiny(num_classes=2, depth=4, padding="valid", in_channels=1)
    assert model.compute_output_shape((1, 572, 572, 1)) == (1, 388, 388, 2)
    y = model(np.zeros((1, 572, 572, 1), "float32"))
    assert tuple(y.shape) == (1, 388, 388, 2)


def test_paper_configuration_channels_and_parameters():
    model = UNet(num_classes=2, depth=4, base_filters=64, padding="valid", in_channels=1)
    assert model.bottleneck.filters == 1024
    assert [e.conv_block.filters for e in model.encoders] == [64, 128, 256, 512]
    assert model.count_params() == 31_030_658


def test_logits_head_and_dynamic_shape():
    model = _tiny(num_classes=3, depth=2, logits=True, in_channels=1)
    y = keras.ops.convert_to_numpy(model(np.random.rand(1, 32, 48, 1).astype("float32")))
    assert y.shape == (1, 32, 48, 3)
    assert not np.allclose(y.sum(-1), 1.0)
    assert model.compute_output_shape((None, None, None, 1)) == (None, None, None, 3)


@pytest.mark.parametrize("padding,bad", [("same", 50), ("valid", 61)])
def test_bad_input_size_names_valid_sizes(padding, bad):
    model = _tiny(depth=2, padding=padding, in_channels=1)
    below, above = sizes.nearest_valid_input_sizes(bad, 2, padding)
    with pytest.raises(ValueError) as err:
        model(np.zeros((1, bad, 64, 1), "float32"))
    assert f"{below} or {above}" in str(err.value)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("num_classes", [1, 3])
def test_keras_round_trip_gives_identical_outputs(tmp_path, padding, num_classes):
    model = _tiny(num_classes=num_classes, depth=2, padding=padding, batch_norm=True,
                  dropout=0.5, in_channels=2)
    size = 64 if padding == "same" else 60
    x = np.random.default_rng(1).random((2, size, size, 2), dtype=np.float32)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, UNet)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)), expected)


def test_from_config_rebuilds_the_same_architecture():
    model = _tiny(num_classes=2, depth=3, padding="valid", upsampling="bilinear",
                  batch_norm=True, in_channels=3)
    clone = UNet.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
    assert [w.path for w in clone.weights] == [w.path for w in model.weights]


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        UNet(num_classes=0)
    with pytest.raises(ValueError, match="padding"):
        UNet(padding="full")
