"""A tiny U-Net must be able to memorise one image with each loss (real model.fit)."""
import keras
import numpy as np
import pytest

from unet_tf import losses, metrics
from unet_tf.models import UNet


def _one_image(num_classes):
    yy, xx = np.mgrid[:64, :64]
    labels = np.zeros((64, 64), np.int32)
    labels[(yy - 20) ** 2 + (xx - 22) ** 2 < 100] = 1
    labels[(yy - 44) ** 2 + (xx - 40) ** 2 < 140] = 2 if num_classes == 3 else 1
    rng = np.random.default_rng(0)
    image = (0.1 + 0.4 * (labels > 0) + 0.4 * (labels == 2) + rng.normal(0, 0.05, labels.shape))
    return image[None, ..., None].astype(np.float32), labels[None]


@pytest.mark.parametrize("loss_name", ["wce", "dice", "dice_ce"])
@pytest.mark.parametrize("num_classes", [1, 3])
def test_tiny_unet_overfits_one_image(loss_name, num_classes):
    keras.utils.set_random_seed(0)
    image, labels = _one_image(num_classes)
    weights = np.ones(labels.shape, np.float32)
    model = UNet(num_classes=num_classes, depth=2, base_filters=16, dropout=0.0, in_channels=1)
    dice = metrics.Dice(num_classes)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=losses.get(loss_name), metrics=[dice])
    steps = 80  # one epoch of 80 copies: far less per-epoch overhead than 80 epochs
    model.fit(np.repeat(image, steps, 0), np.repeat(labels, steps, 0),
              sample_weight=np.repeat(weights, steps, 0), epochs=1, batch_size=1, verbose=0)
    dice.reset_state()
    dice.update_state(labels, model(image, training=False))
    assert float(dice.result()) > 0.9
