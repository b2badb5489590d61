"""The tf.data pipeline on real files: formats in, (image, label, weight) tiles out."""
import json

import cv2
import numpy as np
import pytest

from unet_tf import data, losses, metrics
from unet_tf.data.augment import AugmentConfig
from unet_tf.models import UNet
from unet_tf.tiling import reflect_index, window


@pytest.fixture(scope="module")
def bundle(cells):
    return data.load_data(cells)


def _take(ds, n=1):
    return [tuple(t.numpy() for t in batch) for batch in ds.take(n)]


def test_load_data_normalises_and_caches_weight_maps(bundle):
    assert bundle.num_classes == 1 and bundle.in_channels == 1
    assert len(bundle.train) + len(bundle.val) == 6 and bundle.val
    assert bundle.input_scale == pytest.approx(1 / 255)
    item = bundle.train[0]
    assert item.image.dtype == np.float32 and 0 <= item.image.min() and item.image.max() <= 1
    # Held in memory as stored (8-bit) and narrow labels: a quarter of float32 / int32.
    assert item.pixels.dtype == np.uint8 and item.label.dtype == np.uint8
    np.testing.assert_allclose(item.image, item.pixels / 255.0, rtol=1e-6)
    assert set(np.unique(item.label)) <= {0, 1}
    assert item.instances is not None and item.instances.max() > 1
    # The border term puts large weights in the gaps between touching cells.
    assert max(it.weight.max() for it in bundle.train) > 5
    assert item.weight.shape == item.label.shape and item.weight.min() > 0


@pytest.mark.parametrize("padding,tile,out", [("same", 48, 48), ("valid", 60, 20)])
def test_train_tiles_have_the_model_geometry(bundle, padding, tile, out):
    ds = data.train_dataset(bundle.train, tile_size=tile, batch_size=3, depth=2, padding=padding,
                            augment=AugmentConfig(), spec=bundle.spec, seed=0)
    image, label, weight = _take(ds)[0]
    assert image.shape == (3, tile, tile, 1) and image.dtype == np.float32
    assert label.shape == (3, out, out) and label.dtype == np.int32
    assert weight.shape == (3, out, out) and weight.dtype == np.float32
    assert set(np.unique(label)) <= {0, 1}
    assert np.all(weight[label == 255] == 0)


def test_valid_padding_tiles_carry_centred_context(bundle):
    """Without augmentation the label tile is the centre of the image tile's footprint."""
    ds = data.train_dataset(bundle.train, tile_size=60, batch_size=4, depth=2, padding="valid",
                            augment=None, spec=bundle.spec, seed=3)
    image, label, _ = _take(ds)[0]
    for im, lb in zip(image, label):
        centre = im[20:40, 20:40, 0]
        if 0 < lb.mean() < 1:
            assert centre[lb == 1].mean() > centre[lb == 0].mean()


def test_labels_follow_the_image_through_augmentation(bundle):
    ds = data.train_dataset(bundle.train, tile_size=48, batch_size=8, depth=2, padding="same",
                            augment=AugmentConfig(), spec=bundle.spec, seed=5)
    image, label, _ = _take(ds)[0]
    fg = image[..., 0][label == 1].mean()
    bg = image[..., 0][label == 0].mean()
    assert fg > bg + 0.15  # synthetic cells are much brighter than the background


def test_same_seed_same_batches(bundle):
    make = lambda seed: data.train_dataset(bundle.train, tile_size=48, batch_size=2, depth=2,  # noqa: E731
                                           augment=AugmentConfig(), spec=bundle.spec, seed=seed)
    a, b, c = _take(make(7), 3), _take(make(7), 3), _take(make(8), 3)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0][0], c[0][0])


def test_val_tiles_cover_every_image_exactly(bundle):
    images, labels, weights = data.val_tiles(bundle.val, 48, depth=2)
    h, w = bundle.val[0].label.shape
    per_image = (-(-h // 48)) * (-(-w // 48))
    assert len(images) == per_image * len(bundle.val)
    ds = data.val_dataset(bundle.val, tile_size=48, batch_size=4, depth=2)
    assert sum(int(b[0].shape[0]) for b in ds) == len(images)


def test_val_dataset_streams_the_same_tiles_as_val_tiles(bundle):
    images, labels, weights = data.val_tiles(bundle.val, tile_size=48, depth=2)
    batches = _take(data.val_dataset(bundle.val, tile_size=48, batch_size=5, depth=2), 100)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), images)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), labels)
    np.testing.assert_array_equal(np.concatenate([b[2] for b in batches]), weights)


def test_val_tiles_mark_pixels_outside_the_image_as_ignored():
    b = data.load_arrays([np.ones((20, 30, 1), np.uint8) * 200] * 2, [np.ones((20, 30), np.int32)] * 2)
    images, labels, weights = data.val_tiles(b.val, 32, depth=2)
    assert images.shape == (1, 32, 32, 1)
    assert np.all(labels[0, 20:, :] == 255) and np.all(labels[0, :, 30:] == 255)
    assert np.all(weights[0, 20:, :] == 0) and np.all(labels[0, :20, :30] == 1)


def test_model_fit_uses_weight_maps_as_sample_weights(bundle):
    ds = data.train_dataset(bundle.train, tile_size=48, batch_size=2, depth=2,
                            augment=AugmentConfig(), spec=bundle.spec, seed=0)
    val = data.val_dataset(bundle.val, tile_size=48, batch_size=2, depth=2)
    model = UNet(1, depth=2, base_filters=4, in_channels=1)
    model.compile("adam", loss=losses.WeightedCrossEntropy(), metrics=[metrics.Dice(1)])
    history = model.fit(ds, validation_data=val, steps_per_epoch=3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and "val_dice" in history.history
    # The weights matter: the same batch with weights doubled doubles the loss.
    image, label, weight = _take(ds)[0]
    pred = model(image)
    loss = losses.WeightedCrossEntropy()
    assert float(loss(label, pred, 2 * weight)) == pytest.approx(2 * float(loss(label, pred, weight)), rel=1e-5)


def test_palette_dataset_gives_a_softmax_model(tmp_path):
    palette = {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 0, 255)}
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    json.dump([{"name": "void", "color": [0, 0, 0], "ignore": True},
               {"name": "red", "color": [255, 0, 0]}, {"name": "blue", "color": [0, 0, 255]},
               {"name": "green", "color": [0, 255, 0]}], open(tmp_path / "classes.json", "w"))
    rng = np.random.default_rng(0)
    for i in range(3):
        idx = rng.integers(0, 4, (40, 40))
        rgb = np.zeros((40, 40, 3), np.uint8)
        rgb[idx == 1], rgb[idx == 2], rgb[idx == 3] = (255, 0, 0), (0, 0, 255), (0, 255, 0)
        cv2.imwrite(str(tmp_path / "masks" / f"p{i}.png"), rgb[..., ::-1])
        cv2.imwrite(str(tmp_path / "images" / f"p{i}.jpg"), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    b = data.load_data(tmp_path, val_fraction=0.34)
    assert b.num_classes == 3 and b.in_channels == 3
    labels = np.concatenate([it.label.ravel() for it in b.train])
    assert set(np.unique(labels)) <= {0, 1, 2, 255} and (labels == 255).any()
    ds = data.train_dataset(b.train, tile_size=32, batch_size=2, depth=2, augment=AugmentConfig(),
                            spec=b.spec, seed=0)
    image, label, weight = _take(ds)[0]
    assert image.shape == (2, 32, 32, 3)
    assert np.all(weight[label == 255] == 0)
    del palette


def test_sixteen_bit_images_keep_their_range(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(2):
        img = np.full((32, 32), 1000, np.uint16)
        img[8:24, 8:24] = 4000  # a 12-bit camera
        mask = np.zeros((32, 32), np.uint8)
        mask[8:24, 8:24] = 255
        cv2.imwrite(str(tmp_path / "images" / f"s{i}.tif"), img)
        cv2.imwrite(str(tmp_path / "masks" / f"s{i}.png"), mask)
    b = data.load_data(tmp_path)
    assert b.input_scale == pytest.approx(1 / 4095)
    assert b.train[0].image.max() == pytest.approx(4000 / 4095, rel=1e-5)


def test_grey_images_among_rgb_become_rgb(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        shape = (32, 32) if i == 0 else (32, 32, 3)
        cv2.imwrite(str(tmp_path / "images" / f"p{i}.png"), rng.integers(0, 255, shape, dtype=np.uint8))
        mask = np.zeros((32, 32), np.uint8)
        mask[8:24, 8:24] = 255
        cv2.imwrite(str(tmp_path / "masks" / f"p{i}.png"), mask)
    b = data.load_data(tmp_path, val_fraction=0.0)
    assert b.in_channels == 3
    grey = next(it for it in b.train if it.name == "p0")
    assert grey.image.shape == (32, 32, 3)
    np.testing.assert_array_equal(grey.image[..., 0], grey.image[..., 2])


def test_mirror_windows_of_any_size():
    a = np.arange(5)
    np.testing.assert_array_equal(reflect_index(np.arange(-6, 11), 5),
                                  [2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2])
    big = window(np.arange(12).reshape(3, 4), -5, -5, 13, 14)
    assert big.shape == (13, 14)
    np.testing.assert_array_equal(window(a[:, None], -2, 0, 9, 1)[:, 0],
                                  np.pad(a, (2, 2), mode="reflect"))


def test_reopen_gaps_separates_touching_instances():
    inst = np.zeros((5, 8), np.int32)
    inst[1:4, 1:4] = 1
    inst[1:4, 4:7] = 2  # touching cell 1: no gap left after a deformation
    label = (inst > 0).astype(np.int32)
    label[0, 0] = 255
    out = data.reopen_gaps(label, inst)
    assert np.all(out[1:4, 4] == 0)  # the larger id's border pixels became background
    assert np.all(out[1:4, 1:4] == 1) and np.all(out[1:4, 5:7] == 1)
    assert out[0, 0] == 255
    import cv2 as _cv2
    assert _cv2.connectedComponents((out == 1).astype(np.uint8), connectivity=4)[0] == 3


def test_training_tiles_keep_gaps_between_touching_cells(bundle):
    """After augmentation, touching cells still come out as separate components."""
    ds = data.train_dataset(bundle.train, tile_size=48, batch_size=8, depth=2,
                            augment=AugmentConfig(), spec=bundle.spec, seed=1)
    import cv2 as _cv2
    for image, label, weight in _take(ds, 2):
        for lb, w in zip(label, weight):
            fg = (lb == 1).astype(np.uint8)
            # the border term marks gaps: where it is high the label must be background
            assert np.all(lb[w > 8] == 0)
            assert _cv2.connectedComponents(fg, connectivity=4)[0] >= 1


def test_void_values_outside_uint8_keep_wide_labels():
    # Labels are narrowed to uint8 only when the void value fits: tiles pad with it.
    images = [np.full((22, 26, 1), 100, np.uint8)] * 2    # not a multiple of the 4-px output tile
    labels = [np.tile(np.arange(26) % 2, (22, 1)).astype(np.int32)] * 2
    b = data.load_arrays(images, labels, ignore_index=-100)
    assert b.train[0].label.dtype == np.int32
    _, label, weight = data.val_tiles(b.val, tile_size=44, depth=2, padding="valid", ignore_index=-100)
    assert label.dtype == np.int32 and label.shape[1:] == (4, 4) and weight.shape == label.shape
