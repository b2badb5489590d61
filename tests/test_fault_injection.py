"""A run killed with SIGKILL at any point resumes to a consistent run folder (slow)."""
import csv
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.slow

EPOCHS = 4
# The child trains a tiny run; KILL_AT names the moment it kills itself with SIGKILL.
CHILD = r'''
import os, signal, sys
from unet_tf import checkpoints, training
from unet_tf.config import TrainConfig
import keras

kill_at, data, out, resume = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if kill_at == "first_epoch":
    original = training._callbacks
    class Die(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                die()
    training._callbacks = lambda *a, **k: (lambda r: (r[0] + [Die()], r[1], r[2]))(original(*a, **k))
elif kill_at in ("after_commit", "mid_publish"):
    publish, copy, calls = checkpoints.publish, checkpoints._atomic_copy, []
    def publish_then_die(out, state):
        if state.epoch == 2 and kill_at == "after_commit":
            die()
        return publish(out, state)
    def copy_then_die(source, target):
        copy(source, target)
        if target.name == "last.keras" and "epoch-0002" in source.name and kill_at == "mid_publish":
            die()
    checkpoints.publish = publish_then_die
    checkpoints._atomic_copy = copy_then_die
elif kill_at == "final_report":
    training.evaluate_items = lambda *a, **k: die()
config = TrainConfig(plan=False, data=data, out=out, depth=2, base_filters=4, tile_size=32, batch_size=4,
                     epochs=%d, steps_per_epoch=3, verbose=0, resume=resume, seed=0)
training.train(config)
''' % EPOCHS


def _run(kill_at, data, out, resume):
    return subprocess.run([sys.executable, "-c", CHILD, kill_at, str(data), str(out),
                           "1" if resume else "0"], capture_output=True, text=True, timeout=900)


def _history(out):
    with open(out / "history.csv") as f:
        return list(csv.DictReader(f))


def _weights(path):
    return keras.models.load_model(path, compile=False).get_weights()


@pytest.mark.parametrize("kill_at", ["first_epoch", "after_commit", "mid_publish", "final_report"])
def test_killed_run_resumes_to_a_consistent_folder(cells, tmp_path, kill_at):
    out = tmp_path / "run"
    killed = _run(kill_at, cells, out, resume=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    finished = _run("never", cells, out, resume=True)
    assert finished.returncode == 0, finished.stderr[-3000:]
    rows = _history(out)
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    state = json.loads((out / "state.json").read_text())
    best = json.loads((out / "best.json").read_text())
    scores = [float(r["val_dice"]) for r in rows]
    assert best["epoch"] == state["best"]["epoch"] == int(np.argmax(scores)) + 1
    assert best["val_dice"] == pytest.approx(max(scores))
    for got, want in zip(_weights(out / "best.keras"),
                         _weights(out / "checkpoints" / state["best"]["checkpoint"])):
        np.testing.assert_array_equal(got, want)
    report = json.loads((out / "report.json").read_text())
    assert report["best_epoch"] == best["epoch"]
