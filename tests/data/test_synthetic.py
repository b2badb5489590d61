"""Tests for the synthetic cell dataset (numpy + OpenCV only, fast)."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from unet_tf.data.synthetic import synthetic_cells, touching_pairs, write_dataset

SIZE = 128  # small images keep the suite fast; radii scale with size


@pytest.fixture(scope="module")
def batch():
    return synthetic_cells(8, SIZE, seed=3)


def _four_adjacent_different(inst: np.ndarray) -> int:
    """Number of 4-neighbour pixel pairs belonging to two different instances."""
    count = 0
    for a, b in ((inst[:-1, :], inst[1:, :]), (inst[:, :-1], inst[:, 1:])):
        count += int(np.sum((a > 0) & (b > 0) & (a != b)))
    return count


def test_shapes_and_dtypes(batch):
    images, instances = batch
    assert images.shape == (8, SIZE, SIZE, 1) and images.dtype == np.uint8
    assert instances.shape == (8, SIZE, SIZE) and instances.dtype == np.uint16
    rgb, inst3 = synthetic_cells(2, 64, seed=1, channels=3, dtype=np.uint16)
    assert rgb.shape == (2, 64, 64, 3) and rgb.dtype == np.uint16
    assert inst3.shape == (2, 64, 64)
    assert rgb.max() > 255  # really uses the 16-bit range


def test_uint16_matches_uint8_up_to_quantisation():
    img8, inst8 = synthetic_cells(2, 64, seed=5)
    img16, inst16 = synthetic_cells(2, 64, seed=5, dtype=np.uint16)
    np.testing.assert_array_equal(inst8, inst16)
    assert np.abs(img16 / 257.0 - img8).max() <= 1.0


def test_deterministic_and_independent_of_n():
    a_img, a_inst = synthetic_cells(2, 64, seed=7)
    b_img, b_inst = synthetic_cells(4, 64, seed=7)
    np.testing.assert_array_equal(a_img, b_img[:2])
    np.testing.assert_array_equal(a_inst, b_inst[:2])
    c_img, _ = synthetic_cells(2, 64, seed=8)
    assert not np.array_equal(a_img, c_img)  # the seed matters
    assert not np.array_equal(b_img[0], b_img[1])  # samples differ from each other


def test_instance_ids_contiguous(batch):
    _, instances = batch
    for inst in instances:
        ids = np.unique(inst)
        assert ids[0] == 0
        assert len(ids) >= 3  # some cells in every image
        np.testing.assert_array_equal(ids, np.arange(len(ids)))  # 0..K, no holes


def test_instances_never_4_adjacent_and_are_components(batch):
    _, instances = batch
    for inst in instances:
        assert _four_adjacent_different(inst) == 0
        # Hence the binary mask separates them: one 4-component per instance.
        n_comp, _ = cv2.connectedComponents((inst > 0).astype(np.uint8), connectivity=4)
        assert n_comp - 1 == int(inst.max())


def test_touching_pairs_exist(batch):
    _, instances = batch
    counts = [len(touching_pairs(inst)) for inst in instances]
    assert sum(counts) >= len(instances)  # on average >= 1 touching pair per image
    assert sum(c > 0 for c in counts) >= len(instances) // 2
    # More touching requested -> more touching pairs.
    _, more = synthetic_cells(8, SIZE, seed=3, touching=1.0)
    _, none = synthetic_cells(8, SIZE, seed=3, touching=0.0)
    n_more = sum(len(touching_pairs(i)) for i in more)
    n_none = sum(len(touching_pairs(i)) for i in none)
    assert n_more > sum(counts) > n_none


def test_touching_pairs_helper():
    inst = np.zeros((6, 8), np.uint16)
    inst[1:4, 0:2] = 1
    inst[1:4, 3:5] = 2  # 1-px gap from cell 1
    inst[1:4, 7] = 3  # 2-px gap from cell 2
    assert touching_pairs(inst) == {(1, 2)}
    assert touching_pairs(inst, max_dist=3.0) == {(1, 2), (2, 3)}


def test_cells_brighter_than_background(batch):
    images, instances = batch
    for img, inst in zip(images[..., 0].astype(float), instances):
        assert img[inst > 0].mean() > img[inst == 0].mean() + 40
    # RGB is brightfield (H&E-like): cells absorb light, so they are darker.
    rgb, inst3 = synthetic_cells(2, SIZE, seed=3, channels=3)
    grey = rgb.astype(float).mean(-1)
    assert grey[inst3 > 0].mean() < grey[inst3 == 0].mean() - 40
    # ... and stained: nuclei purple, cytoplasm pink -> red and blue above green.
    cells = rgb[inst3 > 0].astype(float)
    assert cells[:, 0].mean() > cells[:, 1].mean() + 20
    assert cells[:, 2].mean() > cells[:, 1].mean() + 20


def test_touching_gap_is_a_faint_dark_line(batch):
    images, instances = batch
    gaps, cells, backgrounds = [], [], []
    for img, inst in zip(images[..., 0].astype(float), instances):
        p = np.pad(inst, 1)
        left, right, up, down = p[1:-1, :-2], p[1:-1, 2:], p[:-2, 1:-1], p[2:, 1:-1]
        gap = (inst == 0) & (((left > 0) & (right > 0) & (left != right))
                             | ((up > 0) & (down > 0) & (up != down)))
        gaps.append(img[gap])
        cells.append(img[inst > 0])
        backgrounds.append(img[inst == 0])
    gap_mean, cell_mean = np.concatenate(gaps).mean(), np.concatenate(cells).mean()
    background = np.concatenate(backgrounds).mean()
    assert np.concatenate(gaps).size > 20
    assert gap_mean < 0.8 * cell_mean  # visibly darker than the cells ...
    assert gap_mean > 2 * background  # ... but far from background: thin and blurred


def test_foreground_fraction_sane(batch):
    _, instances = batch
    frac = (instances > 0).mean(axis=(1, 2))
    assert 0.10 <= frac.mean() <= 0.60
    assert frac.min() > 0.02 and frac.max() < 0.8


def test_fast_enough():
    start = time.perf_counter()
    synthetic_cells(32, 256, seed=0)
    assert time.perf_counter() - start < 4.0  # target < 2 s; slack for loaded CI machines


def test_invalid_arguments():
    with pytest.raises(ValueError, match="channels"):
        synthetic_cells(1, 64, channels=2)
    with pytest.raises(ValueError, match="dtype"):
        synthetic_cells(1, 64, dtype=np.float32)
    with pytest.raises(ValueError, match="touching"):
        synthetic_cells(1, 64, touching=1.5)


def _read(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def test_write_dataset_splits(tmp_path):
    root = write_dataset(tmp_path / "data", n=8, size=64, seed=2, val_fraction=0.25)
    assert root == (tmp_path / "data").absolute()
    images, instances = synthetic_cells(8, 64, seed=2)
    train = sorted(p.name for p in (root / "train" / "images").iterdir())
    val = sorted(p.name for p in (root / "val" / "images").iterdir())
    assert len(train) == 6 and len(val) == 2
    assert val == ["cell_006.png", "cell_007.png"]
    for split, names in (("train", train), ("val", val)):
        for sub in ("masks", "instances"):
            assert sorted(p.name for p in (root / split / sub).iterdir()) == names
        for name in names:
            i = int(name[5:8])
            img = _read(root / split / "images" / name)
            mask = _read(root / split / "masks" / name)
            inst = _read(root / split / "instances" / name)
            assert img.dtype == np.uint8 and img.shape == (64, 64)
            np.testing.assert_array_equal(img, images[i, ..., 0])
            assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
            np.testing.assert_array_equal(mask > 0, instances[i] > 0)
            assert inst.dtype == np.uint16
            np.testing.assert_array_equal(inst, instances[i])
    readme = (root / "README.txt").read_text()
    assert "synthetic" in readme.lower() and "seed=2" in readme and "n=8" in readme
    # No temporary folders left next to root.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_write_dataset_flat_rgb(tmp_path):
    root = write_dataset(tmp_path / "flat", n=3, size=64, seed=4, channels=3, splits=False)
    assert sorted(p.name for p in root.iterdir()) == ["README.txt", "images", "instances",
                                                      "masks"]
    images, _ = synthetic_cells(3, 64, seed=4, channels=3)
    assert len(list((root / "images").iterdir())) == 3
    img = _read(root / "images" / "cell_001.png")
    # Stored as a real RGB PNG: cv2 reads it back as BGR.
    np.testing.assert_array_equal(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), images[1])


def test_write_dataset_refuses_to_overwrite(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="data") as err:
        write_dataset(root, n=2, size=32)
    assert "new path" in str(err.value) and "delete" in str(err.value)
    assert (root / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temp folder left
    # An empty folder is fine, and overwrite=True replaces a non-empty one.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (write_dataset(empty, n=2, size=32) / "train" / "images").is_dir()
    write_dataset(root, n=2, size=32, overwrite=True)
    assert not (root / "keep.txt").exists() and (root / "README.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "empty"]
