import keras
import numpy as np
import pytest

from unet_tf.models.blocks import ConvBlock, DecoderBlock, EncoderBlock


@pytest.mark.parametrize("padding,trim", [("same", 0), ("valid", 4)])
def test_conv_block_shapes_and_config(padding, trim):
    block = ConvBlock(6, padding=padding, batch_norm=True, dropout=0.2)
    x = np.random.rand(2, 20, 24, 3).astype("float32")
    y = block(x, training=False)
    assert tuple(y.shape) == (2, 20 - trim, 24 - trim, 6)
    assert block.compute_output_shape((2, 20, 24, 3)) == tuple(y.shape)
    assert block.compute_output_shape((None, None, None, 3)) == (None, None, None, 6)
    clone = ConvBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()
    # batch norm replaces the conv bias
    assert block.conv1.bias is None and len(block.norm1.weights) == 4


def test_conv_block_kernels_are_not_identical():
    # Keras 3 unseeded initializers repeat values when one instance is shared.
    block = ConvBlock(4, kernel_initializer=keras.initializers.HeNormal())
    block.build((None, 8, 8, 4))
    assert not np.allclose(block.conv1.kernel.numpy(), block.conv2.kernel.numpy())


def test_encoder_block_returns_skip_and_pooled():
    block = EncoderBlock(4, padding="valid")
    skip, pooled = block(np.zeros((1, 20, 20, 1), "float32"))
    assert tuple(skip.shape) == (1, 16, 16, 4) and tuple(pooled.shape) == (1, 8, 8, 4)
    assert block.compute_output_shape((1, 20, 20, 1)) == ((1, 16, 16, 4), (1, 8, 8, 4))
    assert EncoderBlock.from_config(block.get_config()).get_config() == block.get_config()


@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_decoder_block(upsampling, padding):
    block = DecoderBlock(4, padding=padding, upsampling=upsampling)
    x = np.random.rand(1, 6, 6, 8).astype("float32")
    skip_size = 12 if padding == "same" else 18
    skip = np.random.rand(1, skip_size, skip_size, 4).astype("float32")
    block.build(x.shape, skip.shape)
    y = block(x, skip)
    expected = 12 if padding == "same" else 8
    assert tuple(y.shape) == (1, expected, expected, 4)
    assert block.compute_output_shape(x.shape, skip.shape) == tuple(y.shape)
    config = block.get_config()
    assert config["upsampling"] == upsampling
    assert DecoderBlock.from_config(config).get_config() == config


def test_decoder_crops_the_centre_of_the_skip():
    """With valid padding the concatenated skip is the centre of the encoder map."""
    from unet_tf.models.blocks import center_crop
    skip = np.arange(1 * 10 * 10 * 1, dtype="float32").reshape(1, 10, 10, 1)
    out = keras.ops.convert_to_numpy(center_crop(skip, 4, 6))
    np.testing.assert_array_equal(out, skip[:, 3:7, 2:8, :])


def test_bad_options_raise():
    with pytest.raises(ValueError, match="padding"):
        ConvBlock(4, padding="reflect")
    with pytest.raises(ValueError, match="upsampling"):
        DecoderBlock(4, upsampling="nearest")
