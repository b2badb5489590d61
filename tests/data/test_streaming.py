"""Data larger than memory: the path choice, streamed tiles against in-memory ones, shards."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from unet_tf.cli import main
from unet_tf.data import pipeline, shards, streaming, synthetic
from unet_tf.data.augment import AugmentConfig
from unet_tf.data.images import read_image
from unet_tf.data.scan import Header, footprint, image_header
from unet_tf.errors import DatasetError

QUIET = dict(log=lambda *_: None)
TINY = ["--no-plan", "--depth", "2", "--base-filters", "4", "--tile-size", "32", "--batch-size", "4",
        "--steps-per-epoch", "3", "--epochs", "1", "--verbose", "0"]


@pytest.fixture(scope="module")
def packed(cells, tmp_path_factory):
    """The ``cells`` dataset packed into one-record shards (4 train, 2 val)."""
    out = tmp_path_factory.mktemp("shards") / "cells"
    shards.pack(cells, out, shard_size=1, workers=2, **QUIET)
    return out


def _batches(ds, n):
    it = iter(ds)
    return [tuple(a.numpy() for a in next(it)) for _ in range(n)]


def _same_tiles(a, b):
    """Images and labels bit for bit; weight maps to 1e-5 (unet_weight_map's result
    depends on its thread count in the last float bit)."""
    for (xa, ya, wa), (xb, yb, wb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_allclose(wa, wb, atol=1e-5)


# --------------------------------------------------------------------------- headers, choice
def test_headers_give_the_decoded_size_and_the_footprint_follows(tmp_path):
    import cv2
    cases = {"grey.png": np.zeros((30, 40), np.uint8), "deep.png": np.zeros((30, 40), np.uint16),
             "rgba.png": np.zeros((30, 40, 4), np.uint8), "photo.jpg": np.zeros((30, 40, 3), np.uint8),
             "stack.tif": np.zeros((30, 40), np.float32), "rgb.tif": np.zeros((30, 40, 3), np.uint16)}
    for name, array in cases.items():
        cv2.imwrite(str(tmp_path / name), array)
        header, image = image_header(tmp_path / name), read_image(tmp_path / name)
        assert (header.height, header.width, header.channels, header.dtype) == \
            (*image.shape, image.dtype.name), name
    # pixels + uint8 label + float32 weight map + int32 instance ids
    assert footprint(Header(512, 512, 3, "uint16")) == 512 * 512 * (6 + 1 + 4 + 4)


def test_the_budget_chooses_the_path_and_the_log_says_why(cells):
    lines = []
    small = streaming.open_data(cells, memory_budget="200K", log=lines.append)
    assert isinstance(small, streaming.StreamBundle)
    assert "do not fit: streamed from the folder" in lines[0] and "100 KiB" in lines[0]
    lines.clear()
    big = streaming.open_data(cells, memory_budget="1G", log=lines.append)
    assert type(big) is pipeline.DataBundle and "they fit: kept in memory" in lines[0]
    forced = streaming.open_data(cells, memory_budget="1G", data_path="stream", **QUIET)
    assert isinstance(forced, streaming.StreamBundle)
    assert len(forced.train) == 4 and forced.val.names == ["cell_004", "cell_005"]
    assert forced.steps_per_epoch(32, 4, depth=2) == big.steps_per_epoch(32, 4, depth=2)


def test_a_budget_below_one_image_is_refused_by_name(cells, tmp_path):
    with pytest.raises(ValueError, match=r"--memory-budget 20K: one image .*cell_\d+\.png"):
        streaming.open_data(cells, memory_budget="20K", **QUIET)
    result = CliRunner().invoke(main, ["train", "--data", str(cells), "--out", str(tmp_path / "r"),
                                       "--memory-budget", "20K", *TINY])
    assert result.exit_code == 1 and "--memory-budget 20K" in result.output
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- tiles
def test_one_image_streams_the_in_memory_tiles(tmp_path):
    """With one training image and the tile shuffle off, tile k of the stream is
    tile k of the in-memory sampler (same crops, augmentation, weight map)."""
    root = synthetic.write_dataset(tmp_path / "one", n=2, size=64, seed=4, val_fraction=0.5)
    memory = streaming.open_data(root, data_path="memory", **QUIET)
    stream = streaming.open_data(root, data_path="stream", **QUIET)
    common = dict(tile_size=32, batch_size=4, depth=2, augment=AugmentConfig(), spec=memory.spec,
                  seed=3)
    expected = _batches(pipeline.train_dataset(memory.train, **common), 6)
    got = _batches(stream.train.tf_train_dataset(**common, shuffle_buffer=1), 6)
    _same_tiles(expected, got)


def test_streamed_batches_have_the_in_memory_statistics(cells, packed):
    """Several images: streamed tiles come image by image through a shuffle buffer,
    so the order differs; the batch statistics agree."""
    memory = streaming.open_data(cells, data_path="memory", **QUIET)
    common = dict(tile_size=32, batch_size=8, depth=2, augment=AugmentConfig(), spec=memory.spec,
                  seed=1)

    def stats(items):
        batches = _batches(pipeline.train_dataset(items, **common), 40)
        x, y, w = (np.stack([b[i] for b in batches]) for i in range(3))
        return np.array([x.mean(), (y == 1).mean(), w.mean()])

    reference = stats(memory.train)
    for source in (cells, packed):
        got = stats(streaming.open_data(source, data_path="stream", **QUIET).train)
        np.testing.assert_allclose(got, reference, rtol=0.1)


def test_streamed_validation_tiles_are_the_in_memory_ones(cells, packed):
    memory = streaming.open_data(cells, data_path="memory", **QUIET)
    expected = list(pipeline.val_dataset(memory.val, tile_size=32, batch_size=3, depth=2))
    for source in (cells, packed):
        stream = streaming.open_data(source, data_path="stream", **QUIET)
        ds = pipeline.val_dataset(stream.val, tile_size=32, batch_size=3, depth=2)
        assert int(ds.cardinality()) == len(expected)  # Keras knows where validation ends
        _same_tiles([tuple(a.numpy() for a in b) for b in expected],
                    [tuple(a.numpy() for a in b) for b in ds])
        capped = pipeline.val_dataset(stream.val, tile_size=32, batch_size=4, depth=2, max_tiles=4)
        assert sum(len(b[0]) for b in capped) == 4  # one whole image of the two


def test_a_streamed_split_decodes_one_image_at_a_time(cells, packed):
    import keras

    from unet_tf import training
    from unet_tf.models import UNet
    memory = streaming.open_data(cells, data_path="memory", **QUIET)
    keras.utils.set_random_seed(0)
    model = UNet(num_classes=1, depth=2, base_filters=4, in_channels=1)
    expected = training.evaluate_items(model, memory.val, 1, tile_size=32)
    for source in (cells, packed):
        stream = streaming.open_data(source, data_path="stream", **QUIET)
        items = list(stream.val)                        # names without decoding
        assert [it.name for it in items] == ["cell_004", "cell_005"]
        assert stream.val._slot.item is None
        report = training.evaluate_items(model, items, 1, tile_size=32)
        assert json.dumps(report, sort_keys=True) == json.dumps(expected, sort_keys=True)
        assert stream.val._slot.owner is items[-1]       # only the last image stays decoded
        np.testing.assert_array_equal(stream.val[0].pixels, memory.val[0].pixels)


def test_a_bad_mask_met_while_streaming_is_named(cells, tmp_path, monkeypatch):
    from unet_tf.data import scan
    root = tmp_path / "data"
    shutil.copytree(cells, root)
    bad = root / "train" / "masks" / "cell_002.png"
    bad.write_bytes(bad.read_bytes()[:40])               # its header reads, its pixels do not
    monkeypatch.setattr(scan, "MAX_SCANNED_MASKS", 1)    # the quick check reads cell_000 only
    stream = streaming.open_data(root, data_path="stream", **QUIET)
    ds = pipeline.train_dataset(stream.train, tile_size=32, batch_size=4, depth=2, spec=stream.spec)
    with pytest.raises(DatasetError, match="cell_002.png"):
        with streaming.data_errors(stream):
            _batches(ds, 20)


# --------------------------------------------------------------------------- shards
def test_pack_then_train_from_the_shards(cells, tmp_path):
    out = tmp_path / "shards"
    result = CliRunner().invoke(main, ["pack", str(cells), "--out", str(out), "--shard-size", "12K"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "dataset.json").read_text())
    assert (meta["format"], meta["version"]) == (shards.FORMAT, shards.FORMAT_VERSION)
    assert meta["splits"]["train"]["images"] == 4 and meta["splits"]["val"]["images"] == 2
    assert meta["labels"]["mode"] == "binary" and meta["normalisation"]["bits"] == 8
    assert len(meta["shards"]) >= 3 and not list(out.glob(".*"))
    result = CliRunner().invoke(main, ["check-data", str(out)])
    assert result.exit_code == 0 and "every record reads back" in result.output
    assert re.search(r"train\s+4\s+2\s+64x64", result.output), result.output
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(out), "--out", str(run),
                                       "--data-path", "stream", *TINY])
    assert result.exit_code == 0, result.output
    assert "streamed from the shards" in result.output
    report = json.loads((run / "report.json").read_text())
    assert report["images"] == 2
    assert json.loads((run / "config.json").read_text())["data"] == str(out.resolve())
    _evaluate_and_calibrate_from_shards(cells, out, run)


def _evaluate_and_calibrate_from_shards(cells, out, run):
    """evaluate reads a shard folder record by record, with the folder's scores;
    the int8 calibration of an export reads the run's shards."""
    from unet_tf.deploy.export import _calibration_items
    from unet_tf.deploy.tflite import sample_tiles
    from unet_tf.evaluate import evaluate_folder
    from unet_tf.run import model_sidecar
    from_shards = evaluate_folder(run / "best.keras", out, split="all", out=run / "shards.json")
    from_folder = evaluate_folder(run / "best.keras", cells, split="all", out=run / "folder.json")
    assert from_shards["images"] == from_folder["images"] == 6
    assert sorted(e["name"] for e in from_shards["per_image"]) == \
        sorted(e["name"] for e in from_folder["per_image"])
    assert from_shards["dice"] == pytest.approx(from_folder["dice"], abs=1e-9)
    assert from_shards["object_metrics"]["n_true"] == from_folder["object_metrics"]["n_true"] > 0
    assert evaluate_folder(run / "best.keras", out, out=run / "v.json")["split"] == "val"
    assert "training images" in evaluate_folder(run / "best.keras", out, split="train",
                                                out=run / "tr.json")["note"]
    with pytest.raises(DatasetError, match="no images in split test"):
        evaluate_folder(run / "best.keras", out, split="test", out=run / "t.json")
    bundle = _calibration_items(run / "best.keras", model_sidecar(run / "best.keras"))
    assert len(bundle.train) == 4 and len(bundle.val) == 2
    tiles = sample_tiles(bundle.train, (32, 32), 8)
    assert tiles.shape == (8, 32, 32, 1) and 0 <= tiles.min() and tiles.max() <= 1 and tiles.std() > 0


def test_an_interrupted_pack_resumes_and_leaves_nothing_half_written(cells, tmp_path, monkeypatch):
    fresh = tmp_path / "fresh"
    shards.pack(cells, fresh, shard_size=1, workers=1, **QUIET)
    out = tmp_path / "out"
    real, calls = shards._encode_sample, []

    def flaky(*args):
        calls.append(1)
        if len(calls) >= 6 + 4:                          # 6 size probes, then the 4th record
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(shards, "_encode_sample", flaky)
    with pytest.raises(KeyboardInterrupt):
        shards.pack(cells, out, shard_size=1, workers=1, **QUIET)
    done = sorted(p.name for p in out.glob("*.tfrecord"))
    assert len(done) == 3 and not (out / "dataset.json").exists()
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]   # nothing half-written
    with pytest.raises(DatasetError, match="unfinished pack"):
        streaming.open_data(out, **QUIET)
    (out / ".val-00000-of-00002.tfrecord.tmp-1-2").write_bytes(b"left by a killed pack")
    stamps = {name: os.stat(out / name).st_mtime_ns for name in done}
    monkeypatch.setattr(shards, "_encode_sample", real)
    lines = []
    result = shards.pack(cells, out, shard_size=1, workers=2, log=lines.append)
    assert (result.written, result.skipped) == (3, 3) and "3 of 6 shards are complete" in lines[0]
    assert {name: os.stat(out / name).st_mtime_ns for name in done} == stamps
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in fresh.iterdir())
    for shard in fresh.glob("*.tfrecord"):
        assert (out / shard.name).read_bytes() == shard.read_bytes()


def test_damaged_shards_name_the_shard_and_the_record(packed, tmp_path):
    root = tmp_path / "shards"
    shutil.copytree(packed, root)
    meta = json.loads((root / "dataset.json").read_text())
    first = root / meta["shards"][0]["file"]
    data = first.read_bytes()
    first.write_bytes(data[:-40])                        # truncated
    with pytest.raises(DatasetError, match=rf"{first.name}: record 0 is truncated"):
        streaming.open_data(root, **QUIET)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF                      # same size, corrupt payload
    first.write_bytes(bytes(flipped))
    stream = streaming.open_data(root, data_path="stream", **QUIET)
    ds = pipeline.train_dataset(stream.train, tile_size=32, batch_size=4, depth=2, spec=stream.spec)
    with pytest.raises(DatasetError, match=rf"{first.name}: record 0 is corrupt"):
        with streaming.data_errors(stream):
            _batches(ds, 10)
    result = CliRunner().invoke(main, ["check-data", str(root)])
    assert result.exit_code == 1 and f"{first.name}: record 0 is corrupt" in result.output


def test_shards_of_another_format_version_are_refused(packed, tmp_path):
    root = tmp_path / "shards"
    shutil.copytree(packed, root)
    meta = json.loads((root / "dataset.json").read_text())
    meta["version"] = shards.FORMAT_VERSION + 1
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=rf"format version {shards.FORMAT_VERSION + 1}.*reads "
                                           rf"version {shards.FORMAT_VERSION}"):
        streaming.open_data(root, **QUIET)
    result = CliRunner().invoke(main, ["check-data", str(root)])
    assert result.exit_code == 1 and "format version" in result.output


def test_shards_load_into_memory_as_the_folder_does(cells, packed):
    folder = streaming.open_data(cells, data_path="memory", **QUIET)
    packed_bundle = streaming.open_data(packed, **QUIET)  # small: in memory
    assert type(packed_bundle) is pipeline.DataBundle
    assert packed_bundle.normalisation == folder.normalisation
    for a, b in zip(folder.train + folder.val, packed_bundle.train + packed_bundle.val):
        assert a.name == b.name
        for name in ("pixels", "label", "instances"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


# --------------------------------------------------------------------------- slow
def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_on_shards_train_like_one(tmp_path):
    """Each worker reads its own shards; the two together reach the loss one
    worker reaches on the same data (within this tiny model's noise)."""
    root = synthetic.write_dataset(tmp_path / "data", n=12, size=64, seed=2)
    out = tmp_path / "shards"
    shards.pack(root, out, shard_size=1, **QUIET)        # 9 train shards
    args = ["--data", str(out), "--epochs", "3", "--verbose", "2", "--no-plan", "--depth", "2",
            "--base-filters", "8", "--tile-size", "32", "--batch-size", "8", "--steps-per-epoch", "8",
            "--no-augment", "--data-path", "stream", "--seed", "1"]
    script = str(Path(__file__).parents[2] / "train.py")
    base = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    single = subprocess.run([sys.executable, script, *args, "--out", str(tmp_path / "one")],
                            env=base, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(base, TF_CONFIG=json.dumps({"cluster": cluster,
                                               "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, script, *args, "--strategy", "multiworker",
                                       "--out", str(tmp_path / "two")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        logs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    read = [sorted(line.split(": ", 1)[1].split(", ")) for log in logs for line in log.splitlines()
            if "of the 9 train shards" in line]
    assert len(read) == 2 and not set(read[0]) & set(read[1])      # by file, disjoint
    assert len(read[0]) + len(read[1]) == 9

    def final_loss(text):
        lines = [line for line in text.splitlines() if "val_dice" in line]
        return float(lines[-1].split("loss: ")[1].split()[0])
    one, two = final_loss(single.stdout + single.stderr), final_loss(logs[0])
    print(f"final training loss: one worker {one}, two workers {two}")
    assert final_loss(logs[1]) == two                    # all-reduced: in step
    assert abs(two - one) < 0.25 * one, (one, two)


PEAK = """
import sys
from unet_tf.data import pipeline, streaming
bundle = streaming.open_data(sys.argv[1], data_path="stream", log=lambda *_: None)
ds = pipeline.train_dataset(bundle.train, tile_size=128, batch_size=8, spec=bundle.spec)
it = iter(ds)
for _ in range(60):
    next(it)
for _ in pipeline.val_dataset(bundle.val, tile_size=128, batch_size=8):
    pass
for item in bundle.val:
    item.image
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec (the test process's size).
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0])
"""


@pytest.mark.slow
def test_streaming_memory_does_not_grow_with_the_dataset(tmp_path):
    """Peak memory streaming 100 and 500 images of 512x512 (decoded: 250 MiB and
    1.2 GiB) stays within 1.2x."""
    peaks = {}
    for n in (100, 500):
        root = synthetic.write_dataset(tmp_path / f"d{n}", n=n, size=512, seed=0)
        done = subprocess.run([sys.executable, "-c", PEAK, str(root)], capture_output=True,
                              text=True, timeout=600,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        assert done.returncode == 0, done.stderr[-3000:]
        peaks[n] = int(done.stdout.split()[-1]) * 1024
    print(f"peak memory streaming 100 / 500 images: {peaks[100] / 2**20:.0f} / "
          f"{peaks[500] / 2**20:.0f} MiB")
    assert peaks[500] < 1.2 * peaks[100], peaks


def test_the_report_cap_of_a_streamed_split_decodes_no_image(cells, monkeypatch):
    from unet_tf.autoplan import report_image_cap
    from unet_tf.config import TrainConfig
    from unet_tf.plan.result import Plan
    bundle = streaming.open_data(cells, data_path="stream", **QUIET)

    def no_decoding(self, attr):
        raise AssertionError(f"{self.name}: decoded for its {attr}")

    monkeypatch.setattr(streaming.LazyItem, "__getattr__", no_decoding)
    plan = Plan(entries={}, fingerprint=None, details={"seconds_per_step": 60.0})
    config = TrainConfig(tile_size=32, batch_size=1, time_budget="1m")
    assert report_image_cap(config, plan, bundle.train) == 1       # 4 images, 1 within the share
    assert report_image_cap(config.replace(time_budget="10h"), plan, bundle.train) is None


def test_stream_and_in_memory_flags_choose_the_path(cells, tmp_path):
    result = CliRunner().invoke(main, ["train", "--data", str(cells), "--out", str(tmp_path / "s"),
                                       "--stream", *TINY])
    assert result.exit_code == 0, result.output
    assert "--data-path stream: streamed" in result.output
    result = CliRunner().invoke(main, ["train", "--data", str(cells), "--out", str(tmp_path / "m"),
                                       "--in-memory", "--data-path", "stream", *TINY])
    assert result.exit_code == 2 and "contradicts --data-path stream" in result.output
    assert not (tmp_path / "m").exists()
