"""``import unet_tf`` is all a user needs to load a saved model; the CLI starts without TensorFlow."""
import subprocess
import sys

import keras
import numpy as np

from unet_tf import losses, metrics
from unet_tf.models import UNetPlusPlus


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_a_compiled_model_loads_after_only_import_unet_tf(tmp_path):
    model = UNetPlusPlus(num_classes=1, depth=2, base_filters=4, in_channels=1, residual=True,
                         attention=True)
    model.compile(optimizer="adam", loss=losses.WeightedCrossEntropy(),
                  metrics=[metrics.Dice(1), metrics.MeanIoU(1)])
    x = np.zeros((1, 32, 32, 1), "float32")
    model.train_on_batch(x, np.zeros((1, 32, 32), "int32"))
    model.save(tmp_path / "best.keras")
    expected = keras.ops.convert_to_numpy(model(x)).sum()
    proc = _run(
        "import unet_tf, keras, numpy as np\n"
        f"m = keras.models.load_model({str(tmp_path / 'best.keras')!r})\n"
        "print(type(m).__name__, type(m.loss).__name__, "
        "float(keras.ops.convert_to_numpy(m(np.zeros((1, 32, 32, 1), 'float32'))).sum()))\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    name, loss, total = proc.stdout.split()[-3:]
    assert (name, loss) == ("UNetPlusPlus", "WeightedCrossEntropy")
    assert abs(float(total) - float(expected)) < 1e-3


def test_keras_imported_first_also_registers(tmp_path):
    model = UNetPlusPlus(num_classes=2, depth=2, base_filters=4, in_channels=1)
    model.save(tmp_path / "m.keras")
    proc = _run("import keras, unet_tf\n"
                f"print(type(keras.models.load_model({str(tmp_path / 'm.keras')!r})).__name__)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "UNetPlusPlus"


def test_the_cli_and_numpy_modules_start_without_tensorflow():
    proc = _run("import sys, unet_tf, unet_tf.cli, unet_tf.data.weights, unet_tf.data.check\n"
                "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
