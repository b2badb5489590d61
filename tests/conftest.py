"""Shared test settings: quiet TensorFlow, and small deterministic inputs."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def cells(tmp_path_factory):
    """A small synthetic binary dataset on disk, written once per session (read it, never write
    into it): train/ (4) and val/ (2) with images/, masks/ (0/255) and instances/, 64x64."""
    from unet_tf.data import synthetic

    root = tmp_path_factory.mktemp("cells") / "data"
    synthetic.write_dataset(root, n=6, size=64, seed=1)
    return root


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running tests, kept out of the default run")


@pytest.fixture(scope="session")
def trained_binary_model():
    """A tiny same-padding U-Net trained briefly on synthetic cells (session-wide, ~5 s).

    Untrained models predict about 0.5 everywhere, which makes mask comparisons
    meaningless; this one makes confident, mostly right predictions.
    """
    import keras

    from unet_tf import losses
    from unet_tf.data import synthetic
    from unet_tf.models import UNet

    keras.utils.set_random_seed(0)
    images, instances = synthetic.synthetic_cells(8, 64, seed=3)
    x = images.astype("float32") / 255.0
    y = (instances > 0).astype("int32")
    model = UNet(num_classes=1, depth=2, base_filters=8, dropout=0.0, batch_norm=True,
                 in_channels=1)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=losses.DiceCrossEntropy())
    model.fit(np.repeat(x, 30, 0), np.repeat(y, 30, 0), batch_size=4, epochs=1, verbose=0)
    return model, x, y


@pytest.fixture(scope="session")
def saved_binary_model(tmp_path_factory, trained_binary_model):
    """``trained_binary_model`` saved as a ``.keras`` file (read it, write reports elsewhere)."""
    model, _, _ = trained_binary_model
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path
