"""Tests for unet_tf.data.weights (U-Net weight map; numpy/OpenCV, no TensorFlow).

The reference below is the textbook computation with scipy: one full-image
exact Euclidean distance transform per instance, then the two smallest
distances per pixel. The fast implementation must match it to 1e-5.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from unet_tf.data import weights as W
from unet_tf.data.weights import instances_from_mask, unet_weight_map

ATOL = 1e-5


# ------------------------------------------------------------------------------ reference
def reference_weight_map(mask, w0=10.0, sigma=5.0, class_weights="balanced", background=0,
                         ignore_index=None, instances=None, connectivity=4):
    """Straightforward float64 weight map (scipy), following the documented rules."""
    mask = np.asarray(mask).astype(np.int64)
    valid = np.ones(mask.shape, bool) if ignore_index is None else mask != ignore_index
    present = set(np.unique(mask[valid]).tolist())
    binary = present <= {0, 1} or present <= {0, 255}
    fg = valid & (mask != background)
    if instances is not None:
        inst = np.where(valid, np.asarray(instances).astype(np.int64), 0)
        ids = [i for i in np.unique(inst) if i != 0]
        pieces = [inst == i for i in ids]
        classes = fg.astype(np.int64) if binary else mask
        bg = valid & (mask == background) & (inst == 0)
    else:
        if binary:
            structure = ndi.generate_binary_structure(2, 1 if connectivity == 4 else 2)
            lab, n = ndi.label(fg, structure)
            pieces = [lab == i for i in range(1, n + 1)]
        else:
            pieces = [fg & (mask == i) for i in np.unique(mask[fg])]
        classes = fg.astype(np.int64)
        bg = valid & ~fg

    if class_weights is None:
        wc = np.ones(mask.shape)
    else:
        values, counts = np.unique(classes[valid], return_counts=True)
        if class_weights == "balanced":
            table = {v: valid.sum() / (len(values) * c) for v, c in zip(values, counts)}
        else:
            table = {v: class_weights[v] for v in values}
        wc = np.vectorize(lambda v: table.get(v, 0.0), otypes=[float])(classes)
    wc = np.where(valid, wc, 0.0)

    if len(pieces) < 2:
        return wc
    dist = np.stack([ndi.distance_transform_edt(~p) for p in pieces])
    dist.sort(axis=0)
    border = w0 * np.exp(-(dist[0] + dist[1]) ** 2 / (2.0 * sigma**2))
    return wc + np.where(bg, border, 0.0)


def assert_matches_reference(mask, **kw):
    fast = unet_weight_map(mask, **kw)
    ref = reference_weight_map(mask, **kw)
    assert fast.dtype == np.float32
    assert fast.shape == np.asarray(mask).shape[:2]
    err = float(np.abs(fast.astype(np.float64) - ref).max())
    assert err <= ATOL, f"max abs diff {err:.3g} > {ATOL}"
    return fast, ref


# ------------------------------------------------------------------------------ synthetic maps
def random_cells(shape, n, rng, r_min=4.0, r_max=12.0, touch=0.4, margin=0):
    """Instance map with up to ``n`` non-overlapping ellipses, some 1-2 px apart."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    labels = np.zeros(shape, np.int32)
    centers = []
    k = 0
    for _ in range(50 * n):
        if k == n:
            break
        a = rng.uniform(r_min, r_max)
        b = a * rng.uniform(0.5, 1.0)
        th = rng.uniform(0, np.pi)
        if centers and rng.random() < touch:
            cy, cx, ra = centers[rng.integers(len(centers))]
            phi = rng.uniform(0, 2 * np.pi)
            dist = ra + a + rng.uniform(0.5, 2.5)
            cy, cx = cy + dist * np.sin(phi), cx + dist * np.cos(phi)
        else:
            cy, cx = rng.uniform(margin, h - margin), rng.uniform(margin, w - margin)
        u = (yy - cy) * np.cos(th) + (xx - cx) * np.sin(th)
        v = -(yy - cy) * np.sin(th) + (xx - cx) * np.cos(th)
        cell = (u / a) ** 2 + (v / b) ** 2 <= 1
        if cell.any() and not labels[cell].any():
            k += 1
            labels[cell] = k
            centers.append((cy, cx, a))
    return labels


# ------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("seed,shape,n,sigma,w0", [
    (0, (128, 128), 12, 5.0, 10.0),
    (1, (96, 160), 15, 5.0, 10.0),    # non-square
    (2, (150, 90), 10, 3.0, 10.0),
    (3, (128, 128), 14, 8.0, 20.0),   # wide border: large crops
    (4, (64, 200), 9, 2.0, 5.0),
    (5, (120, 120), 20, 5.0, 10.0),
])
def test_matches_reference_on_random_instance_maps(seed, shape, n, sigma, w0):
    rng = np.random.default_rng(seed)
    labels = random_cells(shape, n, rng)
    assert len(np.unique(labels)) - 1 >= 4
    fast, ref = assert_matches_reference(labels, sigma=sigma, w0=w0)
    # The border term is really there (not a trivially passing comparison).
    assert (ref - reference_weight_map(labels, w0=0.0)).max() > 1.0


def test_matches_reference_many_small_random_maps():
    rng = np.random.default_rng(10)
    for _ in range(25):
        shape = tuple(rng.integers(20, 70, size=2))
        labels = random_cells(shape, int(rng.integers(2, 9)), rng, r_min=2.0, r_max=8.0)
        assert_matches_reference(labels, sigma=float(rng.uniform(1.0, 9.0)),
                                 w0=float(rng.uniform(1.0, 20.0)))


def test_sigma_larger_than_image_matches_reference():
    labels = random_cells((60, 50), 6, np.random.default_rng(11))
    assert_matches_reference(labels, sigma=40.0)


def test_non_convex_and_split_instances_match_reference():
    yy, xx = np.mgrid[:120, :140]
    labels = np.zeros((120, 140), np.int32)
    r = np.hypot(yy - 60, xx - 60)
    labels[(r >= 25) & (r <= 32) & (xx < 80)] = 1                 # a C-shaped ring
    labels[r <= 21] = 2                                            # a cell inside the ring
    labels[(np.hypot(yy - 60, xx - 104) <= 10)] = 3                # just outside the opening
    labels[5:12, 5:30] = 4                                         # one id in two pieces
    labels[108:115, 100:130] = 4
    labels[20:24, 100:135] = 5                                     # long thin cell
    fast, ref = assert_matches_reference(labels)
    # In the 3 px gap between the ring and cell 2 the border term is large.
    assert fast[60, 37] > fast[60, 2] + 5.0


def test_binary_mask_is_split_into_connected_components():
    labels = random_cells((128, 128), 14, np.random.default_rng(6), touch=0.6)
    binary = (labels > 0).astype(np.uint8)
    # Cells touching only by a corner stay apart with 4-connectivity.
    binary[100:110, 100:110] = 1
    binary[110:120, 110:120] = 1
    fast, _ = assert_matches_reference(binary)
    assert_matches_reference(binary * 255)
    assert_matches_reference(binary, connectivity=8)
    # The split happened: a 0/1 map has a border term between its blobs.
    assert fast.max() > unet_weight_map(binary, w0=0.0).max() + 1.0


def test_non_contiguous_and_large_ids_give_the_same_map():
    labels = random_cells((110, 130), 12, np.random.default_rng(7))
    remap = np.array([0] + [7 * k + 1000 for k in range(1, labels.max() + 1)], np.int64)
    sparse = remap[labels]
    sparse[labels == 3] = 2**40          # huge id
    sparse[labels == 5] = -17            # negative id (background is 0)
    fast, _ = assert_matches_reference(sparse)
    # OpenCV's distance transform is exact to ~1 float32 ulp, not bit-reproducible.
    np.testing.assert_allclose(fast, unet_weight_map(labels), rtol=0, atol=1e-6)


def test_explicit_instances_keep_ids_that_a_binary_rule_would_split():
    mask = np.zeros((60, 90), np.int32)
    mask[10:30, 10:30] = 1
    mask[10:30, 32:52] = 1       # touching: the binary rule splits these two...
    mask[40:50, 70:80] = 1
    inst = np.zeros_like(mask)
    inst[10:30, 10:52] = 1       # ...but the instance map says it is one cell
    inst[10:30, 30:32] = 0
    inst[40:50, 70:80] = 2
    split = unet_weight_map(mask)
    given = unet_weight_map(mask, instances=inst)
    assert_matches_reference(mask, instances=inst)
    assert split[20, 30] > 8.0                # gap between two instances
    assert given[20, 30] < split[20, 30] - 5  # no such gap inside one instance


def test_instances_with_semantic_mask_uses_mask_values_as_classes():
    rng = np.random.default_rng(8)
    inst = random_cells((100, 100), 10, rng)
    semantic = np.where(inst > 0, 1 + inst % 3, 0)   # classes 0..3
    fast, _ = assert_matches_reference(semantic, instances=inst)
    only_classes = unet_weight_map(semantic, instances=np.zeros_like(inst))
    assert len(np.unique(only_classes)) == 4
    assert np.isclose(only_classes.mean(), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------ border term
@pytest.mark.parametrize("gap", [1, 2])
def test_border_term_peaks_in_the_gap_between_touching_cells(gap):
    mask = np.zeros((100, 160), np.int32)
    mask[20:60, 20:60] = 1
    mask[20:60, 60 + gap:100 + gap] = 2
    w = unet_weight_map(mask)
    wc = unet_weight_map(mask, w0=0.0)
    bg = mask == 0
    wc_bg = float(wc[bg][0])
    gap_vals = w[20:60, 60:60 + gap]
    # In the gap d1 = 1, d2 = gap: term = w0 exp(-(1 + gap)^2 / (2 sigma^2)).
    expected = wc_bg + 10.0 * math.exp(-((1 + gap) ** 2) / 50.0)
    np.testing.assert_allclose(gap_vals[5:-5], expected, atol=1e-5)
    assert gap_vals.min() > wc_bg + 0.8 * 10.0
    away = bg.copy()
    away[12:68, 52:68 + gap] = False          # background more than ~8 px from the gap
    assert gap_vals.min() > w[away].max() + 5.0
    # Far from the cells the border term vanishes.
    assert w[95, 155] - wc_bg < 1e-3
    assert w[0:5, 120:].max() - wc_bg < 1e-3


def test_border_term_only_on_background():
    labels = random_cells((90, 90), 10, np.random.default_rng(9))
    w = unet_weight_map(labels)
    wc = unet_weight_map(labels, w0=0.0)
    np.testing.assert_array_equal(w[labels > 0], wc[labels > 0])
    assert (w[labels == 0] >= wc[labels == 0]).all()


def test_isolated_cells_far_apart_have_no_border_term():
    mask = np.zeros((200, 200), np.int32)
    mask[10:20, 10:20] = 1
    mask[170:180, 170:180] = 2        # ~212 px apart: term ~ exp(-900)
    w = unet_weight_map(mask)
    np.testing.assert_array_equal(w, unet_weight_map(mask, w0=0.0))


def test_crops_are_much_smaller_than_full_images():
    # The speed comes from computing each distance transform in a small crop.
    labels = random_cells((512, 512), 50, np.random.default_rng(12), r_min=8, r_max=20)
    ids, y0, y1, x0, x1 = W._instance_table(labels, labels > 0)
    m = 5.0 * math.sqrt(2 * math.log(10.0 / W._BORDER_TOL))
    inst, tiles = W._border_tiles(y0, y1, x0, x1, m, labels.shape)
    area = ((tiles[:, 1] - tiles[:, 0] + 1) * (tiles[:, 3] - tiles[:, 2] + 1)).sum()
    assert len(ids) >= 45
    assert area < 1.5 * labels.size          # vs len(ids) full images for the reference


def test_threaded_and_single_threaded_paths_agree(monkeypatch):
    labels = random_cells((200, 240), 30, np.random.default_rng(17))
    monkeypatch.setattr(W, "_n_threads", lambda total: 3)      # force helper threads
    threaded = unet_weight_map(labels)
    monkeypatch.setattr(W, "_n_threads", lambda total: 1)
    single = unet_weight_map(labels)
    np.testing.assert_allclose(threaded, single, rtol=0, atol=1e-6)
    assert_matches_reference(labels)


def test_helper_thread_errors_are_raised(monkeypatch):
    labels = random_cells((120, 120), 12, np.random.default_rng(18))
    monkeypatch.setattr(W, "_n_threads", lambda total: 2)
    real = W._crop_distance
    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real(*args)

    monkeypatch.setattr(W, "_crop_distance", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        unet_weight_map(labels)


def test_concurrent_calls_from_several_threads():
    # Data pipelines call this from many threads; scratch buffers are per thread.
    from concurrent.futures import ThreadPoolExecutor

    maps = [random_cells((150, 170), 20, np.random.default_rng(30 + i)) for i in range(6)]
    expected = [unet_weight_map(m) for m in maps]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(unet_weight_map, maps * 3))
    for i, g in enumerate(got):
        np.testing.assert_allclose(g, expected[i % len(maps)], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------ class weights
def test_balanced_class_weights_average_to_one_and_invert_frequency():
    labels = random_cells((80, 120), 8, np.random.default_rng(13))
    wc = unet_weight_map(labels, w0=0.0)
    assert np.isclose(wc.mean(), 1.0, atol=1e-5)
    fg = labels > 0
    n_fg, n_bg = fg.sum(), (~fg).sum()
    np.testing.assert_allclose(wc[fg], labels.size / (2 * n_fg), rtol=1e-6)
    np.testing.assert_allclose(wc[~fg], labels.size / (2 * n_bg), rtol=1e-6)


def test_dict_and_none_class_weights():
    labels = random_cells((80, 120), 8, np.random.default_rng(14))
    fg = labels > 0
    wd = unet_weight_map(labels, w0=0.0, class_weights={0: 0.5, 1: 3.0})
    np.testing.assert_array_equal(wd, np.where(fg, 3.0, 0.5).astype(np.float32))
    wn = unet_weight_map(labels, w0=0.0, class_weights=None)
    np.testing.assert_array_equal(wn, np.ones(labels.shape, np.float32))
    assert_matches_reference(labels, class_weights={0: 0.5, 1: 3.0})
    assert_matches_reference(labels, class_weights=None)
    with pytest.raises(ValueError, match="no entry"):
        unet_weight_map(labels, class_weights={0: 1.0})
    with pytest.raises(ValueError):
        unet_weight_map(labels, class_weights="inverse")


# ------------------------------------------------------------------------------ ignore_index
def test_ignore_index_gets_zero_weight_and_is_not_an_instance():
    labels = random_cells((100, 100), 10, np.random.default_rng(15))
    mask = (labels > 0).astype(np.int32)
    mask[40:60, :] = np.where(mask[40:60, :] == 0, 255, mask[40:60, :])  # an ignored band
    mask[0:3, 0:3] = 255
    w = unet_weight_map(mask, ignore_index=255)
    assert (w[mask == 255] == 0).all()
    assert (w[mask != 255] > 0).all()
    wc = unet_weight_map(mask, w0=0.0, ignore_index=255)
    assert np.isclose(wc[mask != 255].mean(), 1.0, atol=1e-5)
    assert_matches_reference(mask, ignore_index=255)
    # Instance maps too: ignored pixels neither split nor join instances.
    inst = labels.copy()
    inst[45:55, :] = np.where(inst[45:55, :] == 0, 99, inst[45:55, :])
    assert_matches_reference(inst, ignore_index=99)


def test_ignored_gap_between_cells_still_counts_as_distance():
    mask = np.zeros((50, 80), np.int32)
    mask[10:40, 10:35] = 1
    mask[10:40, 40:70] = 2
    mask[10:40, 35:38] = 7            # ignored strip between the two cells
    w = unet_weight_map(mask, ignore_index=7)
    assert (w[10:40, 35:38] == 0).all()
    assert_matches_reference(mask, ignore_index=7)
    # At x = 38, cell 1 is 4 px away through the strip, cell 2 is 2 px away:
    # term = 10 exp(-36 / 50) ~ 4.9.
    assert w[25, 38] > w[25, 75] + 4.0


# ------------------------------------------------------------------------------ edge cases
def test_empty_mask_is_class_weight_only():
    w = unet_weight_map(np.zeros((33, 47), np.uint8))
    assert w.dtype == np.float32 and w.shape == (33, 47)
    np.testing.assert_array_equal(w, 1.0)


def test_single_instance_has_no_border_term():
    mask = np.zeros((64, 48), np.int32)
    mask[10:30, 5:25] = 5
    w = unet_weight_map(mask)
    assert np.isfinite(w).all()
    np.testing.assert_array_equal(w, unet_weight_map(mask, w0=0.0))
    assert_matches_reference(mask)


def test_all_foreground_and_bool_and_float_masks():
    np.testing.assert_array_equal(unet_weight_map(np.ones((20, 30), np.uint8)), 1.0)
    labels = random_cells((60, 70), 6, np.random.default_rng(16))
    binary = labels > 0
    np.testing.assert_allclose(unet_weight_map(binary), unet_weight_map(binary.astype(np.uint8)),
                               rtol=0, atol=1e-6)
    ref = unet_weight_map(labels)
    np.testing.assert_allclose(unet_weight_map(labels.astype(np.float32)), ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(unet_weight_map(labels[..., None]), ref, rtol=0, atol=1e-6)
    with pytest.raises(TypeError):
        unet_weight_map(labels + 0.5)


def test_invalid_arguments():
    mask = np.zeros((10, 10), np.int32)
    with pytest.raises(ValueError):
        unet_weight_map(mask, sigma=0.0)
    with pytest.raises(ValueError):
        unet_weight_map(mask, w0=-1.0)
    with pytest.raises(ValueError):
        unet_weight_map(mask, connectivity=6)
    with pytest.raises(ValueError):
        unet_weight_map(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ValueError):
        unet_weight_map(mask, instances=np.zeros((9, 10), np.int32))


def test_instances_from_mask_connectivity():
    mask = np.zeros((30, 30), np.uint8)
    mask[5:10, 5:10] = 1
    mask[10:15, 10:15] = 1          # touches the first only at a corner
    mask[20:25, 2:28] = 255
    four = instances_from_mask(mask)
    eight = instances_from_mask(mask, connectivity=8)
    assert four.dtype == np.int32
    assert four.max() == 3 and eight.max() == 2
    assert four[7, 7] != four[12, 12] and eight[7, 7] == eight[12, 12]
    assert (four[mask == 0] == 0).all()
    ignored = instances_from_mask(mask, ignore_index=255)
    assert ignored.max() == 2 and (ignored[20:25] == 0).all()
    with pytest.raises(ValueError):
        instances_from_mask(mask, connectivity=5)
