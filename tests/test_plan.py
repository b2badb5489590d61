"""The training plan: fingerprint, invariances, normalisation, sizes, schedule (numpy only)."""
import json

import numpy as np
import pytest

from unet_tf import plan as P
from unet_tf.plan import object_stats
from unet_tf.plan.memory import valid_output

GiB = 2**30


# ----------------------------------------------------------------------------- synthetic data
def _ellipse(shape, cy, cx, ry, rx):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _image_for(label, rng, dtype=np.uint8, levels=(30, 200), saturation=None):
    """A noisy image whose foreground is brighter than the background, clipped like a sensor."""
    lo, hi = levels
    img = np.where(label > 0, hi, lo).astype(np.float64) + rng.normal(0, (hi - lo) * 0.05, label.shape)
    if np.dtype(dtype).kind in "ui":
        img = np.clip(img, 0, saturation or np.iinfo(dtype).max)
    return img.astype(dtype)[..., None]


def lateral_set(n, seed, size=(64, 64)):
    """Class 1 always in the left half, class 2 in the right half (random shapes and positions)."""
    rng = np.random.default_rng(seed)
    h, w = size
    for _ in range(n):
        label = np.zeros(size, np.uint8)
        for cls, (x0, x1) in ((1, (0, w // 2)), (2, (w // 2, w))):
            rx, ry = rng.uniform(4, 10), rng.uniform(5, 14)
            cx = rng.uniform(x0 + rx, x1 - rx)
            cy = rng.uniform(ry, h - ry)
            label[_ellipse(size, cy, cx, ry, rx)] = cls
        yield _image_for(label, rng), label, None


def sky_set(n, seed, size=(60, 80)):
    """Class 1 in the top third (wavy border), class 2 in the bottom third, class 3 small objects anywhere."""
    rng = np.random.default_rng(seed)
    h, w = size
    rows = np.arange(h)[:, None]
    for _ in range(n):
        wave = rng.uniform(1, 4) * np.sin(np.arange(w) / rng.uniform(5, 15) + rng.uniform(0, 6))
        label = np.zeros(size, np.uint8)
        label[rows < h / 3 + wave] = 1
        label[rows > 2 * h / 3 + wave] = 2
        for _ in range(rng.integers(1, 4)):
            label[_ellipse(size, rng.uniform(0, h), rng.uniform(0, w), 3, 3)] = 3
        yield _image_for(label, rng), label, None


def blob_set(n, seed, size=(64, 64), touching=False, dtype=np.uint8, levels=(30, 200), saturation=None):
    """Rotation-invariant random blobs (nuclei); with instances, optionally in touching pairs."""
    rng = np.random.default_rng(seed)
    h, w = size
    for _ in range(n):
        inst = np.zeros(size, np.int32)
        next_id = 1
        for _ in range(rng.integers(3, 7)):
            r = rng.uniform(3, 6)
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
            centres = [(cy, cx)]
            if touching:  # a second blob right next to the first
                centres.append((cy, min(cx + 2 * r, w - 1)))
            for y, x in centres:
                inst[_ellipse(size, y, x, r, r) & (inst == 0)] = next_id
                next_id += 1
        label = (inst > 0).astype(np.uint8)
        yield _image_for(label, rng, dtype, levels, saturation), label, inst


def _fp(samples, **kw):
    kw.setdefault("num_classes", int(kw.pop("k", 2)))
    return P.fingerprint_arrays(samples, **kw)


def _flips(fp):
    inv = P.detect_invariances(fp)
    return inv["hflip"], inv["vflip"], inv["rot90"]


# ----------------------------------------------------------------------------- invariances
def test_lateralised_pair_turns_off_hflip_and_rot90():
    fp = _fp(lateral_set(24, 0), k=3)
    inv = P.detect_invariances(fp)
    assert not inv["hflip"] and not inv["rot90"]
    assert inv["vflip"]
    assert "class 1 lies in the left half" in inv["hflip_reason"]
    assert "the mirror image of class 2" in inv["hflip_reason"]  # rule (a) names the left/right pair
    samples = list(lateral_set(24, 0))
    for other in (_fp(lateral_set(24, 7), k=3), _fp(samples[:12], k=3), _fp(samples[12:], k=3)):
        assert _flips(other) == (False, True, False)


def test_sky_ground_turns_off_vflip_and_rot90_keeps_hflip():
    fp = _fp(sky_set(24, 0), k=4, class_names=["background", "sky", "ground", "thing"])
    inv = P.detect_invariances(fp)
    assert inv["hflip"] and not inv["vflip"] and not inv["rot90"]
    assert "sky" in inv["vflip_reason"] and "top half" in inv["vflip_reason"]
    samples = list(sky_set(24, 0))
    for other in (_fp(sky_set(24, 3), k=4), _fp(samples[:12], k=4), _fp(samples[12:], k=4)):
        assert _flips(other) == (True, False, False)


def test_random_blobs_keep_all_flips_and_rotations():
    fp = _fp(blob_set(24, 0))
    assert _flips(fp) == (True, True, True)
    samples = list(blob_set(24, 0))
    for other in (_fp(blob_set(24, 5)), _fp(samples[:12]), _fp(samples[12:]), _fp(samples[:4])):
        assert _flips(other) == (True, True, True)


def test_horizontal_layers_turn_off_rot90_only():
    """Layers stacked symmetrically (OCT-like): flips keep them plausible, quarter turns do not."""
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(12):
        label = np.zeros((64, 64), np.uint8)
        rows = np.arange(64)[:, None] + rng.uniform(-2, 2) * np.sin(np.arange(64) / 9.0)
        label[(rows // 8) % 2 == 1] = 1
        samples.append((_image_for(label, rng), label, None))
    inv = P.detect_invariances(_fp(samples))
    assert inv["hflip"] and inv["vflip"] and not inv["rot90"]
    assert "horizontally" in inv["rot90_reason"]


def test_too_few_images_keep_defaults():
    fp = _fp(list(lateral_set(2, 0)), k=3)
    inv = P.detect_invariances(fp)
    assert inv["hflip"] and inv["vflip"] and inv["rot90"]
    assert "too few" in inv["hflip_reason"]


# ----------------------------------------------------------------------------- fingerprint
def test_fingerprint_statistics_and_json_round_trip():
    fp = _fp(blob_set(10, 0, touching=True))
    assert fp.n_images == 10 and fp.channels == 1 and fp.dtype == "uint8"
    assert fp.bit_depth == 8 and fp.height == {"min": 64, "median": 64.0, "max": 64}
    assert fp.sizes == [[64, 64, 10]] and fp.n_distinct_sizes == 1
    assert fp.objects_source == "instances" and fp.touching_share > 0.9
    assert 6 <= fp.objects_per_image["median"] <= 14
    assert 5 < fp.object_diameter < 13
    assert sum(fp.class_frequency) == pytest.approx(1.0)
    assert np.asarray(fp.priors).shape == (2, 8, 8)
    np.testing.assert_allclose(np.asarray(fp.priors).sum(0), 1.0, atol=1e-5)
    assert fp.foreground_percentiles["50"][0] > fp.percentiles["50"][0]
    text = json.dumps(fp.to_dict())
    assert P.Fingerprint.from_dict(json.loads(text)) == fp


def test_objects_counted_as_present_ids_and_components():
    label = np.zeros((32, 32), np.uint8)
    inst = np.zeros((32, 32), np.int32)
    inst[2:6, 2:6], inst[2:6, 7:11], inst[20:25, 20:25] = 5, 900, 77  # ids 5 and 900 touch (1 px gap)
    label[inst > 0] = 1
    image = np.zeros((32, 32, 3), np.uint8)
    fp = _fp([(image, label, inst)] * 3)
    assert fp.objects_per_image["median"] == 3 and fp.touching_share == pytest.approx(2 / 3)
    fp = _fp([(image, label, None)] * 3)  # components of the semantic mask: the same objects
    assert fp.objects_source == "components" and fp.objects_per_image["median"] == 3
    assert fp.touching_share == pytest.approx(2 / 3)


def test_opencv_and_scipy_object_paths_agree(monkeypatch):
    rng = np.random.default_rng(2)
    label = np.kron(rng.integers(0, 4, (12, 16)), np.ones((6, 6), int)).astype(np.uint8)
    label[rng.random(label.shape) < 0.05] = 0  # holes and thin gaps
    inst = np.kron(np.arange(12 * 16).reshape(12, 16) % 7, np.ones((6, 6), int))
    fast = (object_stats.component_objects(label, [1, 2, 3]), object_stats.instance_objects(inst))
    monkeypatch.setattr(object_stats, "opencv", lambda: None)
    slow = (object_stats.component_objects(label, [1, 2, 3]), object_stats.instance_objects(inst))
    for (n1, t1, d1), (n2, t2, d2) in zip(fast, slow):
        assert (n1, t1) == (n2, t2) and n1 > 5 and t1 > 0
        np.testing.assert_allclose(np.sort(d1), np.sort(d2))


def test_void_is_excluded_and_bad_labels_are_named():
    label = np.array([[0, 1], [255, 255]], np.uint8)
    fp = _fp([(np.zeros((2, 2), np.uint8), label, None)])
    assert fp.class_pixels == [1, 1] and fp.void_share == 0.5
    with pytest.raises(ValueError, match="label value 7"):
        _fp([(np.zeros((2, 2), np.uint8), np.full((2, 2), 7, np.uint8), None)])
    with pytest.raises(ValueError, match="empty"):
        _fp([])
    with pytest.raises(ValueError, match="channels"):
        _fp([(np.zeros((4, 4, c)), np.zeros((4, 4), int), None) for c in (1, 3)])


def test_reservoir_percentiles_follow_a_large_stream():
    rng = np.random.default_rng(1)
    samples = ((rng.integers(0, 4096, (300, 300, 1)).astype(np.uint16), np.zeros((300, 300), np.uint8), None)
               for _ in range(6))
    fp = _fp(samples)
    assert fp.percentiles["50"][0] == pytest.approx(2048, rel=0.02)
    assert fp.percentiles["99.5"][0] == pytest.approx(4075, rel=0.01)
    assert fp.effective_bits == 12 and fp.bit_depth == 16


# ----------------------------------------------------------------------------- normalisation
def test_8bit_scales_by_255():
    norm = P.choose_normalisation(_fp(blob_set(8, 0)))
    assert norm["scheme"] == "scale" and norm["params"]["scale"] == pytest.approx(1 / 255)


def test_12bit_in_uint16_stable_uses_dataset_percentiles():
    fp = _fp(blob_set(12, 0, dtype=np.uint16, levels=(600, 3600), saturation=4095))  # 12-bit camera
    assert fp.bit_depth == 16 and fp.effective_bits == 12
    norm = P.choose_normalisation(fp)
    assert norm["scheme"] == "percentile", norm["reason"]
    low, high = norm["params"]["low"][0], norm["params"]["high"][0]
    assert 150 < low < 600 and 3500 < high <= 4095
    # sparse cells (1-5% of the pixels) move each image's p99, not its exposure: still stable
    sparse = _fp(blob_set(40, 1, size=(128, 128), dtype=np.uint16, levels=(600, 3600), saturation=4095))
    assert sparse.image_range_cv[0] > 0.1 and sparse.intensity_variation < 0.05
    assert P.choose_normalisation(sparse)["scheme"] == "percentile"
    x = P.apply_normalisation(np.array([[0, 2000, 65535]], np.uint16), norm)
    assert x.min() == 0.0 and x.max() == 1.0
    plan = P.make_plan(fp, time_budget_s=600, memory_budget_bytes=4 * GiB, seconds_per_step=0.05)
    spec = P.normalisation_spec(plan)  # the flat record of unet_tf.data.normalise
    assert spec == {"scheme": "percentile", "low": [low], "high": [high], "dtype": "uint16", "bits": 12}


def test_per_image_varying_range_uses_zscore():
    rng = np.random.default_rng(4)
    samples = []
    for image, label, _ in blob_set(12, 0, dtype=np.float32, levels=(100, 900)):
        samples.append((image * rng.uniform(0.2, 5) + rng.uniform(-500, 500), label, None))
    fp = _fp(samples)
    norm = P.choose_normalisation(fp)
    assert norm["scheme"] == "zscore_per_image", norm["reason"]
    assert fp.intensity_variation > P.INTENSITY_VARIATION_MAX
    # the same in 16 bits (MRI-like: a gain per image, no offset)
    samples16 = [(np.clip(im * rng.uniform(0.2, 5), 0, 65535).astype(np.uint16), lab, None)
                 for im, lab, _ in blob_set(12, 1, dtype=np.float32, levels=(100, 900))]
    assert P.choose_normalisation(_fp(samples16))["scheme"] == "zscore_per_image"
    x = P.apply_normalisation(samples[0][0], norm)
    assert abs(float(x.mean())) < 1e-4 and float(x.std()) == pytest.approx(1.0, abs=1e-3)


def test_float_in_unit_range_is_kept():
    samples = [(im.astype(np.float32) / 255, lab, None) for im, lab, _ in blob_set(6, 0)]
    norm = P.choose_normalisation(_fp(samples))
    assert norm["scheme"] == "scale" and norm["params"]["scale"] == 1.0


# ----------------------------------------------------------------------------- memory and sizes
def _paper_count_by_hand():
    """The paper's U-Net, layer by layer: (k*k*c_in + 1) * c_out per convolution."""
    conv = lambda k, cin, cout: (k * k * cin + 1) * cout
    total = conv(3, 1, 64) + conv(3, 64, 64)
    for c in (64, 128, 256, 512):  # contracting path and bottleneck
        total += conv(3, c, 2 * c) + conv(3, 2 * c, 2 * c)
    for c in (1024, 512, 256, 128):  # up-convolution halves, then two convolutions on the concat
        total += conv(2, c, c // 2) + conv(3, c, c // 2) + conv(3, c // 2, c // 2)
    return total + conv(1, 64, 2)


def test_parameter_count_of_the_paper_unet():
    assert _paper_count_by_hand() == 31_030_658  # "31.03 M", also unet_tf's model test
    assert P.parameter_count(4, 64, 1, 2) == 31_030_658
    # batch norm: no conv bias, gamma/beta/mean/variance per channel instead (3 more per conv)
    assert P.parameter_count(4, 64, 1, 2, batch_norm=True) == 31_030_658 + 3 * 2 * sum(
        64 * 2**l for l in range(5)) + 3 * 2 * sum(64 * 2**l for l in range(4))


def test_activation_memory_formula():
    per = P.activation_bytes_per_pixel(1, 8, batch_norm=False, in_channels=1, num_outputs=2)
    # level 0: 2 convs x 2 tensors x 8 + pooled 8/4; bottleneck (2x2+1) x 16 / 4;
    # decoder 0: up 8 + concat 16 + 2 x 2 x 8; extras 1 + 2 x 2 + 2
    floats = (32 + 2) + 5 * 16 / 4 + (8 + 16 + 32) + 7
    assert per == pytest.approx(floats * 4 * P.GRADIENT_FACTOR)
    assert P.activation_bytes_per_pixel(4, 16) < P.activation_bytes_per_pixel(4, 32)
    assert P.activation_bytes_per_pixel(4, 16, arch="unetpp") > P.activation_bytes_per_pixel(4, 16)


def _sized_fp(h, w, n=3):
    return _fp([(np.zeros((h, w, 1), np.uint8), np.zeros((h, w), np.uint8), None)] * n)


def test_small_images_get_a_whole_image_tile():
    fp = _sized_fp(181, 217)
    r = P.choose_tile_and_batch(fp, 4, 16, 8 * GiB)
    assert r["tile_size"] == 224 and 2 <= r["batch_size"] <= 16
    assert "whole image" in r["tile_reason"]
    assert P.choose_depth(fp)["depth"] == 4
    assert P.choose_depth(_sized_fp(40, 30))["depth"] == 3


def test_large_images_are_capped_and_memory_shrinks_the_tile():
    fp = _sized_fp(1024, 2048)
    assert P.choose_tile_and_batch(fp, 4, 16, 64 * GiB)["tile_size"] == 512
    small = P.choose_tile_and_batch(fp, 4, 16, 0.5 * GiB)
    assert small["tile_size"] < 512 and "shrunk" in small["tile_reason"]
    assert small["memory_bytes"] <= 0.5 * GiB * P.MEMORY_USABLE_SHARE
    with pytest.raises(ValueError, match="--memory-budget"):
        P.choose_tile_and_batch(fp, 4, 16, 1 * 2**20)


def test_valid_padding_tiles_follow_the_unet_size_rule():
    assert P.is_valid_tile(572, 4, "valid") and valid_output(572, 4) == 388
    assert not P.is_valid_tile(570, 4, "valid")
    tile = P.whole_image_tile(217, 4, "valid")
    assert P.is_valid_tile(tile, 4, "valid") and valid_output(tile, 4) >= 217
    assert valid_output(tile - 16, 4) is None or valid_output(tile - 16, 4) < 217


def test_images_smaller_than_any_tile_are_an_error():
    with pytest.raises(ValueError, match="12x10 px.*16 px"):
        P.choose_depth(_sized_fp(12, 10))


# ----------------------------------------------------------------------------- schedule
def test_parse_duration_and_bytes():
    assert P.parse_duration("15m") == 900 and P.parse_duration("90s") == 90
    assert P.parse_duration("1h30m") == 5400 and P.parse_duration("600") == 600
    assert P.parse_bytes("8G") == 8 * GiB and P.parse_bytes("512M") == 512 * 2**20
    assert P.parse_bytes("1.5GiB") == int(1.5 * GiB) and P.parse_bytes("1000") == 1000
    for bad in ("15x", "", "m", "-5", "0"):
        with pytest.raises(ValueError, match="--time-budget"):
            P.parse_duration(bad)
    for bad in ("8Q", "lots", "0"):
        with pytest.raises(ValueError, match="--memory-budget"):
            P.parse_bytes(bad)


def test_schedule_follows_the_budget_and_warms_up():
    s = P.plan_schedule(0.1, 900)
    assert s["steps"] == s["epochs"] * s["steps_per_epoch"]
    train = 900 - P.STARTUP_S - P.VALIDATION_SHARE * 900 - P.report_reserve(900)
    assert train / 0.1 - s["epochs"] <= s["steps"] <= train / 0.1
    assert P.MIN_VALIDATIONS <= s["epochs"] <= P.MAX_VALIDATIONS
    lr = s["lr_schedule"]
    assert P.learning_rate_at(0, lr) < P.learning_rate_at(lr["warmup_steps"], lr) == pytest.approx(1e-3)
    assert P.learning_rate_at(s["steps"], lr) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="--time-budget 20s is too short.*at least"):
        P.plan_schedule(0.5, 20)


def test_steps_do_not_depend_on_the_number_of_images():
    plans = [P.make_plan(_fp(blob_set(n, 0)), time_budget_s=600, memory_budget_bytes=8 * GiB,
                         seconds_per_step=0.05) for n in (3, 400)]
    for name in ("steps", "steps_per_epoch", "epochs", "tile_size", "batch_size"):
        assert plans[0][name] == plans[1][name], name


# ----------------------------------------------------------------------------- loss and sampling
def test_touching_instances_choose_the_weight_map():
    loss = P.choose_loss(_fp(blob_set(8, 0, touching=True)))
    assert loss["loss"] == "wce" and loss["weight_map"] and loss["class_weights"] == "balanced"


def test_rare_classes_choose_dice_ce_and_oversampling():
    fp = _fp(sky_set(8, 0), k=4)  # class 3: small objects, under 5% of the pixels
    loss, sampling = P.choose_loss(fp), P.choose_sampling(fp)
    assert loss["loss"] == "dice_ce"
    assert sampling["rare_classes"] == [3] and sampling["rare_class_share"] == pytest.approx(0.33)
    assert loss["class_weights"] is None  # the dice term balances; weights over-predicted
    w = P.class_weights_from_frequency(fp.class_frequency)
    assert w[3] == max(w) and all(0.1 <= v <= 10 for v in w)
    assert P.choose_sampling(_fp(lateral_set(4, 0), k=3))["rare_class_share"] in (0.0, 0.33)


def test_model_size_widens_only_with_enough_steps():
    cost = lambda d, f, t, b: 0.05 * (f / 16) ** 2
    wide = P.choose_model_size(cost, 3600, depth=4, layout=(128, 8))
    narrow = P.choose_model_size(cost, 300, depth=4, layout=(128, 8))
    assert wide["base_filters"] == 32 and narrow["base_filters"] == 16
    assert "steps" in narrow["reason"]


# ----------------------------------------------------------------------------- the plan
def test_plan_entries_overrides_json_and_table():
    fp = _fp(sky_set(12, 0), k=4)
    plan = P.make_plan(fp, time_budget_s=900, memory_budget_bytes=4 * GiB, seconds_per_step=0.1,
                       overrides={"tile_size": 96, "flip": True, "seed": 3})
    for name in ("hflip", "vflip", "flip", "rot90", "tile_size", "batch_size", "depth", "base_filters",
                 "loss", "normalisation", "class_weights", "rare_class_share", "steps",
                 "steps_per_epoch", "epochs", "lr_schedule", "learning_rate"):
        assert name in plan.entries, name
        assert plan.entries[name].reason
    assert plan["tile_size"] == 96 and plan.entries["tile_size"].overridden
    assert plan.entries["tile_size"].reason == "set by the user"
    assert plan["vflip"] is True and plan.entries["vflip"].overridden  # the user's --flip wins
    assert plan["rot90"] is False and not plan.entries["rot90"].overridden
    assert plan["seed"] == 3 and plan.entries["seed"].overridden
    restored = P.Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert restored.values() == plan.values() and restored.fingerprint == fp
    user_norm = P.make_plan(fp, time_budget_s=900, memory_budget_bytes=4 * GiB, seconds_per_step=0.1,
                            overrides={"normalisation": "percentile", "loss": "wce"})
    assert set(user_norm["normalisation_params"]) == {"low", "high"}  # params follow the user's scheme
    assert user_norm["weight_map"] is True
    table = P.format_plan(plan)
    assert "tile_size*" in table and "set by the user" in table and "images" in table


def test_single_image_is_planned_with_a_warning_and_errors_are_named():
    fp = _fp(blob_set(1, 0))
    plan = P.make_plan(fp, time_budget_s=600, memory_budget_bytes=2 * GiB)
    assert any("Only 1 training image" in w for w in plan.warnings)
    with pytest.raises(ValueError, match="--time-budget"):
        P.make_plan(fp, time_budget_s=35, memory_budget_bytes=2 * GiB, seconds_per_step=1.0)
    with pytest.raises(ValueError, match="--memory-budget"):
        P.make_plan(fp, time_budget_s=600, memory_budget_bytes=2**20)
    with pytest.raises(ValueError, match="smaller than the smallest tile"):
        P.make_plan(_sized_fp(8, 8), time_budget_s=600, memory_budget_bytes=2 * GiB)
    empty = P.Fingerprint.from_dict({**fp.to_dict(), "n_images": 0})
    with pytest.raises(ValueError, match="empty"):
        P.make_plan(empty, time_budget_s=600, memory_budget_bytes=2 * GiB)


def test_the_planner_does_not_import_tensorflow():
    import subprocess
    import sys
    code = ("import sys, unet_tf.plan; "
            "sys.exit(any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_size_timed_exactly_keeps_its_measured_time():
    """Step times scaled from the reference tile give way to an exact measurement of
    the chosen size (autoplan times it), and the steps follow the measured time."""
    fp = _sized_fp(400, 400, n=12)

    def timer(depth, filters, tile, batch):
        return 0.05 * (tile * tile * batch) / (128 * 128 * 8) * filters / 16
    timer.measured = {}
    first = P.make_plan(fp, time_budget_s=900, memory_budget_bytes=8 * GiB, seconds_per_step=timer)
    chosen = tuple(int(first[k]) for k in ("depth", "base_filters", "tile_size", "batch_size"))
    timer.measured[chosen] = 1.25 * first.details["seconds_per_step"]
    second = P.make_plan(fp, time_budget_s=900, memory_budget_bytes=8 * GiB, seconds_per_step=timer)
    assert tuple(int(second[k]) for k in ("depth", "base_filters", "tile_size", "batch_size")) == chosen
    assert second.details["seconds_per_step"] == pytest.approx(timer.measured[chosen])
    assert second["steps"] < first["steps"]
    assert second.details["train_seconds"] <= first.details["train_seconds"] * 1.01


def test_a_share_just_below_the_touching_limit_reads_as_below_it():
    from unet_tf.plan.classes import _percent_below
    assert _percent_below(0.0996, 0.10) == "9.96%" and _percent_below(0.05, 0.10) == "5.0%"
