"""Tests for unet_tf.data.augment (numpy/OpenCV data augmentation; no TensorFlow)."""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from unet_tf.data import augment as A
from unet_tf.data.augment import AugmentConfig, augment_sample, dense_displacement_field, elastic_deform

IGNORE = 255


# ------------------------------------------------------------------------------ helpers
def _smooth_sample(h=192, w=160, channels=3):
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    chans = [0.5 + 0.4 * np.sin(r / 17.0) * np.cos(c / 23.0),
             0.5 + 0.3 * np.cos((r + c) / 29.0),
             0.5 + 0.2 * np.sin(c / 13.0)]
    image = np.stack(chans[:channels], axis=-1).astype(np.float32)
    label = (np.sin(r / 21.0) * np.cos(c / 27.0) > 0).astype(np.int64)
    label += 2 * ((r - h // 2) ** 2 + (c - w // 2) ** 2 < (min(h, w) // 4) ** 2)
    label[:10, :10] = IGNORE
    weight = (1.0 + np.sin(r / 19.0) * np.cos(c / 11.0)).astype(np.float32)
    return image, label, weight


def _square_sample(size=128, half=28, offset=(6, -9)):
    """Bright square (image) whose label is the same square, off-centre so flips/rotations move it."""
    image = np.full((size, size, 1), 0.1, np.float32)
    label = np.zeros((size, size), np.int32)
    r0, c0 = size // 2 + offset[0] - half, size // 2 + offset[1] - half
    image[r0:r0 + 2 * half, c0:c0 + 2 * half] = 0.9
    label[r0:r0 + 2 * half, c0:c0 + 2 * half] = 1
    return image, label


def _only(**on) -> AugmentConfig:
    """Everything off except the given fields."""
    return dataclasses.replace(AugmentConfig.none(), **on)


def _label_borders(label):
    from scipy import ndimage
    return ndimage.maximum_filter(label, 3) != ndimage.minimum_filter(label, 3)


def _elasticdeform_field(coarse, shape):
    """elasticdeform's true dense field: deform coordinate ramps with order=1 (exact for ramps)."""
    import elasticdeform

    rr, cc = np.meshgrid(np.arange(shape[0], dtype=np.float64), np.arange(shape[1], dtype=np.float64),
                         indexing="ij")
    out_r, out_c = elasticdeform.deform_grid([rr, cc], coarse, order=1, mode="mirror", axis=[(0, 1)] * 2)
    return np.stack([out_r - rr, out_c - cc])


ALL_SINGLE = {
    "elastic": dict(elastic=True),
    "flip": dict(flip=True),
    "rot90": dict(rot90=True),
    "rotate": dict(rotate_degrees=15.0),
    "shift": dict(shift=0.05),
    "scale": dict(scale=(0.9, 1.1)),
}
GRAY_SINGLE = {"brightness": dict(brightness=0.1), "contrast": dict(contrast=0.2), "gamma": dict(gamma=0.2)}


# ------------------------------------------------------------------------------ build guard
def test_elasticdeform_imports_and_runs_under_numpy2():
    import elasticdeform

    assert int(np.__version__.split(".")[0]) >= 2
    x = np.arange(64, dtype=np.float64).reshape(8, 8)
    out = elasticdeform.deform_grid(x, np.zeros((2, 3, 3)), order=1, mode="mirror")
    np.testing.assert_allclose(out, x, atol=1e-12)  # zero displacement is the identity


# ------------------------------------------------------------------------------ elastic parity
@pytest.mark.parametrize("shape,points", [((160, 160), 3), ((97, 131), 3), ((64, 80), 5), ((50, 70), (2, 4))])
def test_dense_field_matches_elasticdeform(shape, points):
    coarse = A.random_coarse_displacement(np.random.default_rng(0), points, sigma=3.0)
    ours = dense_displacement_field(coarse, shape)
    assert ours.shape == (2,) + shape and ours.dtype == np.float32
    ref = _elasticdeform_field(coarse, shape)
    m = int(np.ceil(np.abs(ours).max())) + 2  # ramps are only exact where no mirroring happened
    assert np.abs(ours - ref)[:, m:-m, m:-m].max() <= 1e-3
    assert np.abs(ours).max() > 0.5  # a non-trivial field was compared


def test_dense_field_matches_spline_everywhere_including_borders():
    # elasticdeform == scipy cubic spline (mirror) of the coarse grid at cp = (P-1) j / (n-1).
    from scipy import ndimage

    coarse = A.random_coarse_displacement(np.random.default_rng(1), 4, sigma=10.0)
    H, W = 90, 120
    R, C = np.meshgrid(3 * np.arange(H) / (H - 1), 3 * np.arange(W) / (W - 1), indexing="ij")
    ref = np.stack([ndimage.map_coordinates(coarse[d], [R, C], order=3, mode="mirror") for d in range(2)])
    assert np.abs(dense_displacement_field(coarse, (H, W)) - ref).max() <= 1e-3
    # control points sit on the corners (spacing (size-1)/(points-1)), so corners are interpolated
    np.testing.assert_allclose(dense_displacement_field(coarse, (H, W))[:, [0, -1]][:, :, [0, -1]],
                               coarse[:, [0, -1]][:, :, [0, -1]], atol=1e-3)


@pytest.mark.parametrize("interpolation,tol", [("cubic", 0.02), ("bspline", 1e-4), ("linear", 1e-4)])
def test_image_and_label_parity_with_elasticdeform(interpolation, tol):
    image, label, weight = _smooth_sample()
    coarse = A.random_coarse_displacement(np.random.default_rng(3), 3, sigma=10.0)
    ours = elastic_deform(image, label, weight, label.astype(np.int32), coarse=coarse,
                          interpolation=interpolation)
    ref = elastic_deform(image, label, weight, label.astype(np.int32), coarse=coarse,
                         backend="elasticdeform", interpolation=interpolation)
    m = 24
    img_err = np.abs(ours[0] - ref[0])[m:-m, m:-m].max()
    assert img_err <= tol, img_err
    assert np.abs(ours[2] - ref[2])[m:-m, m:-m].max() <= 1e-4  # weights: linear in both
    for k in (1, 3):  # labels and instances
        diff = ours[k] != ref[k]
        assert diff.mean() <= 0.005
        assert not np.any(diff & ~_label_borders(ref[k]))
    # the deformation really moved things (otherwise parity is vacuous)
    assert np.abs(ours[0] - image).max() > 0.1 and (ours[1] != label).mean() > 0.01


# ------------------------------------------------------------------------------ alignment / semantics
@pytest.mark.parametrize("name", list(ALL_SINGLE) + ["all"])
@pytest.mark.parametrize("backend", ["opencv", "elasticdeform"])
def test_labels_follow_image(name, backend):
    image, label = _square_sample()
    on = ALL_SINGLE.get(name, {k: v for d in ALL_SINGLE.values() for k, v in d.items()})
    cfg = dataclasses.replace(_only(**on), backend=backend)
    moved = False
    for seed in range(4):
        out_img, out_lab, _, _ = augment_sample(image, label, config=cfg, seed=seed)
        pred = out_img[..., 0] > 0.5
        gt = out_lab == 1
        iou = (pred & gt).sum() / (pred | gt).sum()
        assert iou > 0.95, (name, seed, iou)
        moved |= not np.array_equal(out_lab, label)
    assert moved, f"{name} never changed the sample"


def test_label_values_stay_in_input_set_with_ignore_index():
    image, label, weight = _smooth_sample()
    label[90:100, :] = IGNORE  # an ignore band through the centre survives any augmentation
    instances = (label * 1000 + 7).astype(np.int32)  # ids far from 0..255
    for backend in ("opencv", "elasticdeform"):
        cfg = AugmentConfig(backend=backend, elastic_sigma=15.0)
        for seed in range(3):
            _, lab, _, inst = augment_sample(image, label, weight, instances, config=cfg, seed=seed)
            assert lab.dtype == label.dtype and inst.dtype == instances.dtype
            assert set(np.unique(lab)) <= set(np.unique(label))
            assert IGNORE in set(np.unique(lab))  # nearest keeps the ignore value, never blends it
            assert not np.array_equal(lab, label)
            assert set(np.unique(inst)) <= set(np.unique(instances))


def test_int64_ids_beyond_int32_are_exact():
    image, label, _ = _smooth_sample(64, 64)
    ids = label.astype(np.int64) * (1 << 40) + 3
    _, _, _, out = augment_sample(image, label, None, ids, config=AugmentConfig(), seed=5)
    assert out.dtype == np.int64 and set(np.unique(out)) <= set(np.unique(ids))
    assert not np.array_equal(out, ids)


@pytest.mark.parametrize("backend", ["opencv", "elasticdeform"])
def test_rgb_channels_not_mixed(backend):
    values = np.array([0.2, 0.5, 0.8], np.float32)
    image = np.ones((96, 96, 3), np.float32) * values
    label = np.zeros((96, 96), np.int32)
    cfg = AugmentConfig(backend=backend, brightness=0, contrast=0, gamma=0, elastic_sigma=15.0)
    for seed in range(3):
        out = augment_sample(image, label, config=cfg, seed=seed)[0]
        for c in range(3):  # channel c only holds the value of channel c
            np.testing.assert_allclose(out[..., c], values[c], atol=1e-4)
    # with gray-value changes each channel stays constant (per-channel contrast around its mean)
    out = augment_sample(image, label, config=dataclasses.replace(cfg, brightness=0.1, contrast=0.2), seed=1)[0]
    assert np.all(out.std(axis=(0, 1)) < 1e-4) and np.all(np.diff(out.mean(axis=(0, 1))) > 0.2)


def test_more_than_four_channels():
    rng = np.random.default_rng(0)
    image = rng.random((48, 56, 6)).astype(np.float32)
    label = rng.integers(0, 3, (48, 56)).astype(np.uint8)
    cfg = _only(rotate_degrees=15.0, elastic=True)
    out = augment_sample(image, label, config=cfg, seed=2)[0]
    assert out.shape == image.shape and out.dtype == np.float32
    # channels are independent: channel 5 alone gives the same result as within the stack
    solo = augment_sample(np.ascontiguousarray(image[..., 5:6]), label, config=cfg, seed=2)[0]
    np.testing.assert_allclose(out[..., 5:6], solo, atol=1e-6)


def test_flip_and_rot90_are_exact_permutations():
    rng = np.random.default_rng(0)
    image = rng.random((40, 40, 2)).astype(np.float32)
    label = rng.integers(0, 5, (40, 40)).astype(np.int16)
    dihedral = [np.rot90(f, k) for f in (label, label[::-1]) for k in range(4)]
    seen = set()
    for seed in range(24):
        img, lab, _, _ = augment_sample(image, label, config=_only(flip=True, rot90=True), seed=seed)
        idx = [i for i, d in enumerate(dihedral) if np.array_equal(lab, d)]
        assert len(idx) == 1
        seen.add(idx[0])
        # the image got exactly the same permutation (no interpolation)
        ref = [np.rot90(f, k) for f in (image, image[::-1]) for k in range(4)][idx[0]]
        assert np.array_equal(img, ref)
    assert len(seen) >= 6


def test_rot90_non_square_keeps_window_inside():
    rng = np.random.default_rng(0)
    image = rng.random((60, 90, 1)).astype(np.float32)
    label = rng.integers(0, 3, (60, 90)).astype(np.int32)
    for seed in range(8):  # odd quarter turns need the rotated window to fit: (50, 50) does
        img, lab, _, _ = augment_sample(image, label, config=_only(rot90=True), seed=seed, out_shape=(50, 50))
        assert img.shape == (50, 50, 1) and lab.shape == (50, 50)
    ks = {A._sample_geometry_and_gray(_only(rot90=True), s, (60, 90), (60, 90))[0].matrix[0, 0] for s in range(16)}
    assert ks <= {1.0, -1.0}  # full-size non-square output: only 0 / 180 degrees


# ------------------------------------------------------------------------------ config / determinism
def test_same_seed_same_output_different_seed_different():
    image, label, weight = _smooth_sample(96, 96)
    cfg = AugmentConfig()
    a = augment_sample(image, label, weight, label, config=cfg, seed=7)
    b = augment_sample(image, label, weight, label, config=cfg, seed=np.int64(7))
    c = augment_sample(image, label, weight, label, config=cfg, seed=8)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])
    augment_sample(image, label, config=cfg, seed=-3)  # tf seeds can be negative


def test_thread_safe():
    image, label, weight = _smooth_sample(96, 96)
    cfg = AugmentConfig()
    seq = [augment_sample(image, label, weight, config=cfg, seed=s) for s in range(8)]
    with ThreadPoolExecutor(4) as pool:
        par = list(pool.map(lambda s: augment_sample(image, label, weight, config=cfg, seed=s), range(8)))
    for x, y in zip(seq, par):
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) and np.array_equal(x[2], y[2])


def test_none_is_exact_identity_and_returns_fresh_arrays():
    image, label, weight = _smooth_sample(64, 80)
    instances = label.astype(np.int32) + 1
    out = augment_sample(image, label, weight, instances, config=AugmentConfig.none(), seed=123)
    for x, y in zip(out, (image, label, weight, instances)):
        assert np.array_equal(x, y) and x.dtype == y.dtype
        assert not np.shares_memory(x, y)
    assert augment_sample(image, label, config=AugmentConfig.none(), seed=0)[2:] == (None, None)


@pytest.mark.parametrize("name", list(ALL_SINGLE) + list(GRAY_SINGLE))
def test_each_augmentation_switches_on_and_off(name):
    image, label, weight = _smooth_sample(64, 64)
    on = {**ALL_SINGLE, **GRAY_SINGLE}[name]
    changed = False
    for seed in range(6):
        out = augment_sample(image, label, weight, config=_only(**on), seed=seed)
        changed |= not np.array_equal(out[0], image)
        if name in GRAY_SINGLE:  # gray-value changes never touch label / weight
            assert np.array_equal(out[1], label) and np.array_equal(out[2], weight)
    assert changed, name
    # the same config with that entry switched off is the identity
    off = {k: (False if isinstance(v, bool) else (1.0, 1.0) if k == "scale" else 0.0) for k, v in on.items()}
    out = augment_sample(image, label, weight, config=_only(**off), seed=0)
    assert np.array_equal(out[0], image) and np.array_equal(out[1], label)


def test_gray_changes_do_not_change_geometry_draws():
    image, label, _ = _smooth_sample(64, 64)
    geo = AugmentConfig(brightness=0, contrast=0, gamma=0)
    for seed in range(3):
        a = augment_sample(image, label, config=geo, seed=seed)[1]
        b = augment_sample(image, label, config=AugmentConfig(), seed=seed)[1]
        assert np.array_equal(a, b)


def test_gamma_clips_negative_values():
    image = np.linspace(-1, 1, 64 * 64, dtype=np.float32).reshape(64, 64, 1)
    label = np.zeros((64, 64), np.int32)
    out = augment_sample(image, label, config=_only(gamma=0.5), seed=1)[0]
    assert out.min() >= 0 and out.dtype == np.float32
    assert np.all(out[image < 0] == 0)


def test_config_roundtrip_and_validation():
    cfg = AugmentConfig(rotate_degrees=5.0, scale=[0.8, 1.2], backend="elasticdeform")
    assert cfg.scale == (0.8, 1.2)
    d = cfg.to_dict()
    assert d["scale"] == [0.8, 1.2] and AugmentConfig.from_dict(d) == cfg
    none = AugmentConfig.none()
    assert not none.elastic and not none.flip and not none.rot90 and none.scale == (1.0, 1.0)
    assert none.rotate_degrees == none.shift == none.brightness == none.contrast == none.gamma == 0
    with pytest.raises(ValueError):
        AugmentConfig.from_dict({"rotate": 3})
    with pytest.raises(ValueError):
        AugmentConfig(backend="scipy")
    with pytest.raises(ValueError):
        AugmentConfig(contrast=1.0)


# ------------------------------------------------------------------------------ out_shape
def test_out_shape_crop_is_centre_window():
    image, label, weight = _smooth_sample(96, 120)
    out = augment_sample(image, label, weight, config=AugmentConfig.none(), seed=0, out_shape=(64, 70))
    assert out[0].shape == (64, 70, 3) and out[1].shape == out[2].shape == (64, 70)
    r0, c0 = (96 - 64) // 2, (120 - 70) // 2
    assert np.array_equal(out[0], image[r0:r0 + 64, c0:c0 + 70])
    assert np.array_equal(out[1], label[r0:r0 + 64, c0:c0 + 70])
    with pytest.raises(ValueError):
        augment_sample(image, label, config=AugmentConfig(), seed=0, out_shape=(97, 10))


@pytest.mark.parametrize("backend", ["opencv", "elasticdeform"])
def test_out_shape_equals_crop_of_full_output(backend):
    # The elastic field lives on the full frame, so a tile is a window of the full result.
    # (Square frame: for non-square frames the odd quarter turns depend on out_shape.)
    image, label, weight = _smooth_sample(112, 112)
    cfg = AugmentConfig(backend=backend, interpolation="linear")
    r0, c0 = (112 - 64) // 2, (112 - 70) // 2
    for seed in range(3):
        full = augment_sample(image, label, weight, config=cfg, seed=seed)
        tile = augment_sample(image, label, weight, config=cfg, seed=seed, out_shape=(64, 70))
        crop = [x[r0:r0 + 64, c0:c0 + 70] for x in full[:3]]
        # contrast uses the mean of the returned window: compare the geometry (label, weight)
        assert (tile[1] != crop[1]).mean() < 0.001
        np.testing.assert_allclose(tile[2], crop[2], atol=1e-3)
