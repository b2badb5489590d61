"""Dataset files on disk: discovery (layouts), reading, label decoding and validation.

Every test writes real image files into tmp_path with OpenCV; images are tiny
so the whole file runs in a few seconds.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from unet_tf.data import check
from unet_tf.data.check import check_dataset, format_report, load_dataset
from unet_tf.data.images import read_image
from unet_tf.data.label_inference import infer_label_spec
from unet_tf.data.labels import (LabelSpec, decode_mask, load_classes_json, load_mask, load_sample,
                                 read_instances, read_mask_raw)
from unet_tf.data.layouts import find_samples
from unet_tf.data.split import split_samples
from unet_tf.errors import DatasetError

from dataset_writers import H, W, binary_mask, image, make_pairs, png_indexed, write

# --------------------------------------------------------------------------- helpers


def problems_with(report, text: str) -> list[str]:
    return [p for p in report.problems if text in p]


# --------------------------------------------------------------------------- reading


def test_read_image_rgb_order_and_gray_axis(tmp_path):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 200  # red
    out = read_image(write(tmp_path / "rgb.png", rgb))
    assert out.shape == (H, W, 3) and out[0, 0].tolist() == [200, 0, 0]
    gray = read_image(write(tmp_path / "g.png", image(7, channels=1)))
    assert gray.shape == (H, W, 1) and gray.dtype == np.uint8


def test_read_image_16bit_preserved(tmp_path):
    arr = np.arange(H * W, dtype=np.uint16).reshape(H, W) * 1000
    out = read_image(write(tmp_path / "deep.png", arr))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out[..., 0], arr)
    tif = read_image(write(tmp_path / "deep.tif", np.dstack([arr, arr, arr])))
    assert tif.dtype == np.uint16 and tif.shape == (H, W, 3) and tif.max() == arr.max()


def test_read_image_float_tiff(tmp_path):
    arr = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    out = read_image(write(tmp_path / "f.tif", arr))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], arr)


def test_read_image_drops_alpha_unless_asked(tmp_path):
    bgra = np.zeros((H, W, 4), np.uint8)
    bgra[..., 2] = 250  # red in BGR order
    bgra[..., 3] = 128
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), bgra)
    assert read_image(path).shape == (H, W, 3)
    assert read_image(path)[0, 0].tolist() == [250, 0, 0]
    assert read_image(path, keep_alpha=True)[0, 0].tolist() == [250, 0, 0, 128]


def test_read_non_ascii_path(tmp_path):
    path = write(tmp_path / "données" / "bild_ü.png", image(42))
    assert read_image(path)[0, 0, 0] == 42


def test_read_corrupt_file_names_path(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png" * 4)
    with pytest.raises(DatasetError, match="broken.png.*unreadable or corrupt"):
        read_image(bad)


def test_read_mask_equal_rgb_channels_is_gray(tmp_path):
    mask = np.dstack([binary_mask()] * 3)
    raw = read_mask_raw(write(tmp_path / "m.png", mask))
    assert raw.shape == (H, W)
    assert set(np.unique(raw).tolist()) == {0, 255}


def test_read_mask_indexed_png_gives_indices(tmp_path):
    idx = np.array([[0, 1, 2, 255]] * 2, np.uint8)
    palette = [(0, 0, 0), (128, 0, 0), (0, 128, 0)] + [(0, 0, 0)] * 252 + [(224, 224, 192)]
    path = png_indexed(tmp_path / "voc.png", idx, palette)
    np.testing.assert_array_equal(read_mask_raw(path), idx)
    colours = read_mask_raw(path, expand_palette=True)
    assert colours.shape == (2, 4, 3) and colours[0, 1].tolist() == [128, 0, 0]


def test_read_instances_16bit(tmp_path):
    inst = np.zeros((H, W), np.uint16)
    inst[:2, :2] = 300
    inst[4:, 4:] = 1
    out = read_instances(write(tmp_path / "inst.png", inst))
    assert out.dtype == np.int32 and out[0, 0] == 300 and out[5, 5] == 1


# --------------------------------------------------------------------------- label modes


def test_binary_0_255(tmp_path):
    root = make_pairs(tmp_path)
    samples, spec = load_dataset(root)
    assert spec.mode == "binary" and spec.num_labels == 2
    labels = load_mask(samples["all"][0].mask_path, spec)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, binary_mask() // 255)


def test_binary_0_1(tmp_path):
    root = make_pairs(tmp_path, mask_fn=lambda: binary_mask(1))
    samples, spec = load_dataset(root)
    assert spec.mode == "binary"
    labels = load_mask(samples["all"][1].mask_path, spec)
    assert labels.sum() == (H // 2) * W and labels.max() == 1


def index_mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[:, 2:4] = 1
    mask[:, 4:6] = 2
    mask[:, 6:] = 255  # void
    return mask


def test_index_with_void(tmp_path):
    root = make_pairs(tmp_path, mask_fn=index_mask)
    samples, spec = load_dataset(root)
    assert spec.mode == "index" and spec.num_labels == 3 and spec.ignore_index == 255
    labels = load_mask(samples["all"][0].mask_path, spec)
    assert labels[0].tolist() == [0, 0, 1, 1, 2, 2, 255, 255]


def test_index_num_classes_overrides(tmp_path):
    root = make_pairs(tmp_path, mask_fn=index_mask)
    _, spec = load_dataset(root, num_classes=5)
    assert spec.mode == "index" and spec.num_labels == 5


def test_indexed_png_masks_are_index_mode(tmp_path):
    palette = [(0, 0, 0), (128, 0, 0), (0, 128, 0)] + [(0, 0, 0)] * 252 + [(224, 224, 192)]
    for i in range(2):
        write(tmp_path / "images" / f"{i}.jpg", image(50))
        png_indexed(tmp_path / "masks" / f"{i}.png", index_mask(), palette)
    _, spec = load_dataset(tmp_path)
    assert spec.mode == "index" and spec.num_labels == 3


PALETTE_CLASSES = [
    {"name": "void", "color": [0, 0, 0], "ignore": True},
    {"name": "building", "color": [128, 0, 0]},
    {"name": "grass", "color": [0, 128, 0]},
    {"name": "sky", "color": [128, 128, 128]},
]


def palette_mask() -> np.ndarray:
    mask = np.zeros((H, W, 3), np.uint8)   # void (black) by default
    mask[:, 2:4] = (128, 0, 0)
    mask[:, 4:6] = (0, 128, 0)
    mask[:, 6:] = (128, 128, 128)
    return mask


def test_palette_with_void_colour(tmp_path):
    root = make_pairs(tmp_path, mask_fn=palette_mask)
    (root / "classes.json").write_text(json.dumps(PALETTE_CLASSES))
    samples, spec = load_dataset(root)
    assert spec.mode == "palette" and spec.num_labels == 3
    assert spec.class_names == ["building", "grass", "sky"]
    assert spec.ignore_colors == [(0, 0, 0)]
    labels = load_mask(samples["all"][0].mask_path, spec)
    assert labels[0].tolist() == [255, 255, 0, 0, 1, 1, 2, 2]


def test_palette_top_level_void_list_and_hex(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps({"classes": [{"name": "a", "color": "#ff0000"},
                                            {"name": "b", "color": [0, 0, 255]}],
                                "void": [[0, 0, 0], [255, 255, 255]]}))
    names, palette, ignore = load_classes_json(path)
    assert names == ["a", "b"]
    assert palette == [(255, 0, 0), (0, 0, 255)]
    assert ignore == [(0, 0, 0), (255, 255, 255)]


def test_label_spec_roundtrip():
    spec = LabelSpec("palette", 2, 255, ["a", "b"], [(1, 2, 3), (4, 5, 6)], [(0, 0, 0)])
    again = LabelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


def test_decode_mask_strict_errors():
    spec = LabelSpec("index", 3)
    with pytest.raises(DatasetError, match="values 3 are outside 0..2"):
        decode_mask(np.array([[0, 2, 3]], np.uint8), spec)
    lenient = decode_mask(np.array([[0, 7]], np.uint8), spec, strict=False)
    assert lenient.tolist() == [[0, 255]]
    pal = LabelSpec("palette", 1, palette=[(1, 2, 3)])
    with pytest.raises(DatasetError, match=r"\(9, 9, 9\)"):
        decode_mask(np.full((1, 2, 3), 9, np.uint8), pal)


# --------------------------------------------------------------------------- layouts


def test_different_extension_for_mask(tmp_path):
    root = make_pairs(tmp_path, image_name="{i}.jpg", mask_name="{i}.tif")
    samples = find_samples(root)["all"]
    assert [s.name for s in samples] == ["s0", "s1", "s2"]
    assert samples[0].image_path.suffix == ".jpg" and samples[0].mask_path.suffix == ".tif"


def test_mask_suffix_matching(tmp_path):
    root = make_pairs(tmp_path, mask_name="{i}_mask.png")
    samples = find_samples(root)["all"]
    assert len(samples) == 3
    assert all(s.mask_path.name == f"{s.name}_mask.png" for s in samples)


def test_unknown_but_common_suffix_and_image_suffix(tmp_path):
    make_pairs(tmp_path / "camvid", mask_name="{i}_L.png")       # CamVid style
    make_pairs(tmp_path / "deepglobe", image_name="{i}_sat.jpg", mask_name="{i}_mask.png")
    assert len(find_samples(tmp_path / "camvid")["all"]) == 3
    globe = find_samples(tmp_path / "deepglobe")["all"]
    assert [s.mask_path.name for s in globe] == ["s0_mask.png", "s1_mask.png", "s2_mask.png"]


def test_dominant_suffix_resolves_prefix_clash(tmp_path):
    # "a_1_x" could be image "a" + "_1_x" or image "a_1" + "_x"; "_x" is the common suffix.
    for stem in ("a", "a_1", "b"):
        write(tmp_path / "images" / f"{stem}.png", image())
        write(tmp_path / "masks" / f"{stem}_x.png", binary_mask())
    pairs = {s.name: s.mask_path.name for s in find_samples(tmp_path)["all"]}
    assert pairs == {"a": "a_x.png", "a_1": "a_1_x.png", "b": "b_x.png"}


def test_folder_aliases_and_images_dir_as_root(tmp_path):
    for i in range(2):
        write(tmp_path / "imgs" / f"{i}.png", image())
        write(tmp_path / "gt" / f"{i}.png", binary_mask())
    assert len(find_samples(tmp_path)["all"]) == 2
    assert len(find_samples(tmp_path / "imgs")["all"]) == 2
    assert len(find_samples(tmp_path / "gt")["all"]) == 2


def test_split_folders_vs_flat(tmp_path):
    make_pairs(tmp_path / "split" / "train", n=4)
    make_pairs(tmp_path / "split" / "valid", n=2)
    write(tmp_path / "split" / "test" / "images" / "t0.png", image())  # unlabelled test
    found = find_samples(tmp_path / "split")
    assert list(found) == ["train", "val", "test"]
    assert [len(v) for v in found.values()] == [4, 2, 1]
    assert found["test"][0].mask_path is None
    flat = find_samples(make_pairs(tmp_path / "flat", n=5))
    assert list(flat) == ["all"] and len(flat["all"]) == 5


def test_split_inside_images_folder(tmp_path):
    for split, n in (("train", 3), ("val", 1)):
        for i in range(n):
            write(tmp_path / "images" / split / f"{i}.png", image())
            write(tmp_path / "masks" / split / f"{i}.png", binary_mask())
    found = find_samples(tmp_path)
    assert {k: len(v) for k, v in found.items()} == {"train": 3, "val": 1}


def test_multipage_tiff_stack(tmp_path):
    pages = [np.full((H, W), 10 * i, np.uint8) for i in range(4)]
    labels = [binary_mask() if i % 2 else np.zeros((H, W), np.uint8) for i in range(4)]
    assert cv2.imwritemulti(str(tmp_path / "train-volume.tif"), pages)
    assert cv2.imwritemulti(str(tmp_path / "train-labels.tif"), labels)
    assert cv2.imwritemulti(str(tmp_path / "test-volume.tif"), pages[:2])
    samples, spec = load_dataset(tmp_path)
    assert [len(samples["train"]), len(samples["test"])] == [4, 2]
    third = samples["train"][3]
    assert third.name == "train-volume[3]" and third.page == 3
    img, lab = load_sample(third, spec)
    assert img.shape == (H, W, 1) and img[0, 0, 0] == 30
    np.testing.assert_array_equal(lab, binary_mask() // 255)
    assert load_sample(samples["train"][2], spec)[1].sum() == 0
    assert samples["test"][0].mask_path is None


def test_stack_page_count_mismatch(tmp_path):
    pages = [np.zeros((H, W), np.uint8)] * 3
    cv2.imwritemulti(str(tmp_path / "em-volume.tif"), pages)
    cv2.imwritemulti(str(tmp_path / "em-masks.tif"), pages[:2])
    report = check_dataset(tmp_path)
    hits = problems_with(report, "em-volume.tif has 3 pages")
    assert hits and "em-masks.tif has 2" in hits[0]


def test_instances_folder(tmp_path):
    root = make_pairs(tmp_path, n=2)
    write(root / "instances" / "s0.png", np.ones((H, W), np.uint16) * 500)
    write(root / "instances" / "s1.png", np.ones((H + 1, W), np.uint16))
    samples = find_samples(root)["all"]
    assert samples[0].instance_path.name == "s0.png"
    report = check_dataset(root)
    assert problems_with(report, "s1.png: instance map size 7x8 differs")


# --------------------------------------------------------------------------- bad inputs


def test_image_without_mask(tmp_path):
    root = make_pairs(tmp_path, n=2)
    write(root / "images" / "lonely.png", image())
    report = check_dataset(root)
    assert problems_with(report, "lonely.png: image without mask")


def test_mask_without_image(tmp_path):
    root = make_pairs(tmp_path, n=2)
    write(root / "masks" / "orphan.png", binary_mask())
    report = check_dataset(root)
    assert problems_with(report, "orphan.png: mask without image")


def test_ambiguous_mask_names(tmp_path):
    root = make_pairs(tmp_path, n=1)
    write(root / "masks" / "s0_mask.png", binary_mask())   # second mask for s0
    report = check_dataset(root)
    assert problems_with(report, "all match image 's0'")


def test_size_mismatch(tmp_path):
    root = make_pairs(tmp_path, n=2)
    write(root / "masks" / "s1.png", binary_mask(h=H + 2))
    report = check_dataset(root)
    hits = problems_with(report, "s1.png: mask size 8x8 differs")
    assert hits and "6x8" in hits[0]


def test_out_of_range_label(tmp_path):
    root = make_pairs(tmp_path, n=2, mask_fn=index_mask)
    bad = index_mask()
    bad[0, 0] = 9
    write(root / "masks" / "s1.png", bad)
    report = check_dataset(root, num_classes=3)
    hits = problems_with(report, "s1.png: label values 9 are outside 0..2")
    assert len(hits) == 1 and "s0.png" not in hits[0]


def test_corrupt_file(tmp_path):
    root = make_pairs(tmp_path, n=2)
    (root / "images" / "s1.png").write_bytes(b"\x00garbage\xff" * 20)
    report = check_dataset(root)
    assert problems_with(report, "s1.png: unreadable or corrupt")


def test_grey_images_among_rgb_are_a_warning_not_a_problem(tmp_path):
    root = make_pairs(tmp_path, n=3)
    write(root / "images" / "s2.png", image(channels=1))
    report = check_dataset(root)
    assert report.ok, report.problems
    assert any("1 greyscale image among RGB" in w and "s2.png" in w for w in report.warnings)


def test_other_channel_mixes_are_a_problem(tmp_path, monkeypatch):
    # cv2 cannot write >4-channel files, so one image reads as 5-band multispectral.
    root = make_pairs(tmp_path, n=3)
    real = read_image

    def five_bands(path, *args, **kwargs):
        arr = real(path, *args, **kwargs)
        return np.repeat(arr[..., :1], 5, axis=-1) if Path(path).name == "s2.png" else arr

    monkeypatch.setattr(check, "read_image", five_bands)
    report = check_dataset(root)
    hits = problems_with(report, "different channel counts")
    assert hits and "5 channels (1 file," in hits[0] and "s2.png" in hits[0]
    assert "3 channels (2 files" in hits[0]


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    assert problems_with(check_dataset(tmp_path), "images: empty")
    assert problems_with(check_dataset(tmp_path / "nope"), "does not exist")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    assert problems_with(check_dataset(tmp_path / "other"), "no dataset found")


def test_rgb_mask_without_classes_json(tmp_path):
    root = make_pairs(tmp_path, n=2, mask_fn=palette_mask)
    report = check_dataset(root)
    hits = problems_with(report, "2 RGB masks")
    assert len(hits) == 1 and "no classes.json" in hits[0]
    # ... with a classes.json to start from, listing the colours found
    listed = json.loads(hits[0][hits[0].index("\n"):])
    found = {tuple(entry["color"]) for entry in listed}
    expected = {tuple(int(v) for v in c) for c in np.unique(
        palette_mask().reshape(-1, 3), axis=0)}
    assert found == expected
    with pytest.raises(DatasetError, match="RGB mask"):
        infer_label_spec(find_samples(root))


def test_unknown_palette_colour(tmp_path):
    root = make_pairs(tmp_path, n=2, mask_fn=palette_mask)
    (root / "classes.json").write_text(json.dumps(PALETTE_CLASSES))
    odd = palette_mask()
    odd[0, 0] = (1, 2, 3)
    write(root / "masks" / "s1.png", odd)
    report = check_dataset(root)
    hits = problems_with(report, "colours (1, 2, 3) are not in classes.json")
    assert len(hits) == 1 and "s1.png" in hits[0]


def test_invalid_classes_json(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text('[{"name": "a", "color": [1, 2]}]')
    with pytest.raises(DatasetError, match="classes.json.*colour"):
        load_classes_json(path)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="invalid JSON"):
        load_classes_json(path)


def test_check_dataset_lists_all_problems(tmp_path):
    root = make_pairs(tmp_path, n=4, mask_fn=index_mask)
    write(root / "images" / "nomask.png", image())
    write(root / "masks" / "noimage.png", index_mask())
    write(root / "masks" / "s1.png", index_mask()[:, :5])
    (root / "images" / "s2.png").write_bytes(b"junk")
    bad = index_mask()
    bad[1, 1] = 42
    write(root / "masks" / "s3.png", bad)
    report = check_dataset(root, num_classes=3)
    assert not report.ok
    expected = ["nomask.png: image without mask", "noimage.png: mask without image",
                "s1.png: mask size 6x5", "s2.png: unreadable or corrupt",
                "s3.png: label values 42"]
    for text in expected:
        assert problems_with(report, text), (text, report.problems)
    text = format_report(report)
    assert f"{len(report.problems)} problems found" in text and "noimage.png" in text
    with pytest.raises(DatasetError) as err:
        load_dataset(root, num_classes=3)
    assert len(err.value.problems) == len(report.problems)
    assert all(e in str(err.value) for e in expected)


def test_format_report_summary(tmp_path):
    make_pairs(tmp_path / "train", n=2, mask_fn=index_mask)
    make_pairs(tmp_path / "val", n=1, mask_fn=index_mask)
    report = check_dataset(tmp_path)
    assert report.ok, report.problems
    text = format_report(report)
    lines = text.splitlines()
    assert "Labels: index, 3 classes, ignore value 255" in text
    header = next(line for line in lines if line.strip().startswith("split"))
    train = next(line for line in lines if line.strip().startswith("train"))
    assert header.index("size") == train.index("6x8")   # aligned columns
    # each mask: 2 of 8 columns per class, 2 of 8 void -> 25 % each
    ignore = next(line for line in lines if line.strip().startswith("ignore"))
    assert ignore.split()[1:] == ["25.00", "25.00", "25.00"]
    assert report.summary["splits"]["train"]["labelled"] == 2


def test_binary_with_void_is_index(tmp_path):
    def mask():
        m = binary_mask(1)
        m[:, -1] = 255  # void border next to 0/1 labels
        return m
    root = make_pairs(tmp_path, n=2, mask_fn=mask)
    samples, spec = load_dataset(root)
    assert spec.mode == "index" and spec.num_labels == 2
    assert load_mask(samples["all"][0].mask_path, spec)[0, -1] == 255


def write_jpeg(path: Path, arr: np.ndarray, quality: int = 50) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return path


def test_jpeg_index_mask_is_a_problem(tmp_path):
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 11:21] = 1
    mask[:, 21:] = 255   # classes 0/1 + void, near 0/255 but class 1 is a real area
    for i in range(2):
        write(tmp_path / "images" / f"{i}.png", image(h=32, w=32))
        write_jpeg(tmp_path / "masks" / f"{i}.jpg", mask, quality=90)
    report = check_dataset(tmp_path)
    assert problems_with(report, "0.jpg: JPEG mask with")


def test_jpeg_binary_mask_is_thresholded(tmp_path):
    # Kvasir-SEG style: 0/255 masks saved as JPEG come back with ringing noise.
    mask = np.zeros((32, 32), np.uint8)
    mask[5:21, 7:23] = 255
    for i in range(2):
        write(tmp_path / "images" / f"{i}.jpg", image(h=32, w=32))
        write_jpeg(tmp_path / "masks" / f"{i}.jpg", mask, quality=90)
    assert len(np.unique(read_mask_raw(tmp_path / "masks" / "0.jpg"))) > 2
    samples, spec = load_dataset(tmp_path)
    assert spec.mode == "binary"
    labels = load_mask(samples["all"][0].mask_path, spec)
    assert abs(int(labels.sum()) - 16 * 16) < 16
    assert any("thresholded at 128" in w for w in check_dataset(tmp_path).warnings)


def test_infer_label_spec_finds_classes_json_from_samples(tmp_path):
    root = tmp_path / "ds"
    make_pairs(root / "train", n=2, mask_fn=palette_mask)
    (root / "classes.json").write_text(json.dumps(PALETTE_CLASSES))
    (tmp_path / "classes.json").write_text('["unrelated"]')   # must not be picked up
    spec = infer_label_spec(find_samples(root))
    assert spec.mode == "palette" and spec.class_names == ["building", "grass", "sky"]
    spec_root = infer_label_spec(find_samples(root / "train"), root=root / "train")
    assert spec_root == spec


def test_pascal_voc_layout_with_split_lists(tmp_path):
    palette = [(0, 0, 0), (128, 0, 0), (0, 128, 0)] + [(0, 0, 0)] * 252 + [(224, 224, 192)]
    names = [f"2007_{i:06d}" for i in range(5)]
    for i, name in enumerate(names):
        idx = np.zeros((H, W), np.uint8)
        idx[1:4, 1:5] = 1 + i % 2
        idx[4, :] = 255                                # void outline, as VOC draws it
        png_indexed(tmp_path / "SegmentationClass" / f"{name}.png", idx, palette)
        write(tmp_path / "JPEGImages" / f"{name}.jpg", image(20 * i))
    write(tmp_path / "JPEGImages" / "2008_000001.jpg", image(7))   # listed nowhere, no mask
    lists = tmp_path / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(names[:3]) + "\n")
    (lists / "val.txt").write_text("\n".join(names[3:]) + "\n")
    report = check_dataset(tmp_path)
    assert report.ok, report.problems
    assert [s.name for s in report.samples["train"]] == names[:3]
    assert [s.name for s in report.samples["val"]] == names[3:]
    assert report.spec.mode == "index" and report.spec.num_labels == 3

    (lists / "val.txt").write_text("2007_000003\n2007_999999\n")
    assert problems_with(check_dataset(tmp_path), "1 names in the val list have no image")


def test_side_by_side_pairs_in_patient_folders_split_by_patient(tmp_path):
    # LGG-MRI style: one folder per patient, each slice next to its "_mask" file.
    for p in range(5):
        for k in range(1, 4):
            write(tmp_path / f"patient{p}" / f"patient{p}_{k}.tif", image(30 * k))
            write(tmp_path / f"patient{p}" / f"patient{p}_{k}_mask.tif", binary_mask())
    (tmp_path / "data.csv").write_text("id\n")
    report = check_dataset(tmp_path)
    assert report.ok, report.problems
    samples = report.samples["all"]
    assert len(samples) == 15 and all(s.mask_path.name.endswith("_mask.tif") for s in samples)
    train, val = split_samples(samples, 0.2, seed=3)
    patients = lambda group: {s.name.split("/")[0] for s in group}  # noqa: E731
    assert len(val) == 3 and len(patients(val)) == 1
    assert not patients(train) & patients(val)

    (tmp_path / "patient0" / "patient0_1_mask.tif").unlink()
    assert problems_with(check_dataset(tmp_path), "patient0_1.tif: image without mask")


def test_one_folder_per_sample_with_one_mask_per_object(tmp_path):
    # Data Science Bowl 2018: <id>/images/<id>.png (RGBA) and <id>/masks/<object>.png.
    for sid in ("a", "b", "c"):
        rgba = np.full((H, W, 4), 255, np.uint8)
        write(tmp_path / sid / "images" / f"{sid}.png", rgba)
        for k, cols in enumerate([(0, 2), (3, 5), (5, 7)]):
            m = np.zeros((H, W), np.uint8)
            m[1:4, cols[0]:cols[1]] = 255
            write(tmp_path / sid / "masks" / f"obj{k}.png", m)
    report = check_dataset(tmp_path)
    assert report.ok, report.problems
    sample = report.samples["all"][0]
    assert sample.name == "a" and sample.mask_path.is_dir() and sample.instance_path == sample.mask_path
    image, label = load_sample(sample, report.spec)
    assert image.shape == (H, W, 3) and report.spec.mode == "binary"
    assert label[1:4, [0, 1, 3, 4, 5, 6]].all() and label.sum() == 3 * 6
    ids = read_instances(sample.instance_path)
    assert set(np.unique(ids)) == {0, 1, 2, 3} and (ids[1:4, 5:7] == 3).all()  # overlap: later wins

    write(tmp_path / "b" / "masks" / "obj9.png", np.zeros((H + 1, W), np.uint8))
    assert problems_with(check_dataset(tmp_path), "obj9.png: object mask is")


def test_camvid_label_folders_beside_split_folders_with_class_dict_csv(tmp_path):
    colors = [(128, 128, 128), (128, 64, 128), (0, 0, 0)]
    (tmp_path / "class_dict.csv").write_text("name,r,g,b\nSky,128,128,128\nRoad,128,64,128\nVoid,0,0,0\n")
    for split in ("train", "val"):
        for i in range(2):
            idx = np.arange(H * W).reshape(H, W) % 3
            write(tmp_path / split / f"f{i}.png", image(40 * i))
            write(tmp_path / f"{split}_labels" / f"f{i}_L.png", np.array(colors, np.uint8)[idx])
    for i in range(2):
        write(tmp_path / "test" / f"t{i}.png", image(5))      # test images without labels
    report = check_dataset(tmp_path)
    assert report.ok, report.problems
    assert report.spec.mode == "palette" and report.spec.class_names == ["Sky", "Road"]
    assert len(report.samples["train"]) == 2 and len(report.samples["val"]) == 2
    assert [s.mask_path for s in report.samples["test"]] == [None, None]
    label = load_sample(report.samples["train"][0], report.spec)[1]
    idx = np.arange(H * W).reshape(H, W) % 3
    np.testing.assert_array_equal(label, np.where(idx == 2, 255, idx))


def test_mask_folders_named_after_the_image_folder_and_nested_trimaps(tmp_path):
    for i in range(2):  # Carvana: train/ + train_masks/
        write(tmp_path / "car" / "train" / f"c{i}.jpg", image(9))
        write(tmp_path / "car" / "train_masks" / f"c{i}_mask.png", binary_mask())
    report = check_dataset(tmp_path / "car")
    assert report.ok, report.problems and len(report.samples["train"]) == 2
    for i in range(2):  # Oxford-IIIT Pet: images/ + annotations/trimaps/
        write(tmp_path / "pet" / "images" / f"Abyssinian_{i}.jpg", image(9))
        write(tmp_path / "pet" / "annotations" / "trimaps" / f"Abyssinian_{i}.png",
              np.full((H, W), 1 + i, np.uint8))
    report = check_dataset(tmp_path / "pet", ignore_index=3)
    assert report.ok, report.problems
    assert [s.mask_path.parent.name for s in report.samples["all"]] == ["trimaps", "trimaps"]


@pytest.mark.parametrize("levels, ignore_is_class", [((0, 128, 255), True), ((0, 85, 170, 255), True),
                                                     ((0, 100, 200, 255), False)])
def test_grey_coded_classes(tmp_path, levels, ignore_is_class):
    bands = np.repeat(np.array(levels, np.uint8), -(-W // len(levels)))[:W]
    make_pairs(tmp_path, n=2, mask_fn=lambda: np.tile(bands, (H, 1)))
    report = check_dataset(tmp_path)
    assert report.ok, report.problems
    classes = levels if ignore_is_class else levels[:-1]
    assert report.spec.num_labels == len(classes)
    assert any("grey levels" in w for w in report.warnings)
    label = load_sample(report.samples["all"][0], report.spec)[1]
    expected = {v: k for k, v in enumerate(classes)}
    np.testing.assert_array_equal(label[0], [expected.get(int(v), 255) for v in bands])


def test_class_indices_with_void_are_not_grey_coded(tmp_path):
    idx = (np.arange(H * W).reshape(H, W) % 21).astype(np.uint8)
    idx[0] = 255
    make_pairs(tmp_path, n=2, mask_fn=lambda: idx)
    report = check_dataset(tmp_path)
    assert report.spec.mode == "index" and report.spec.num_labels == 21


def test_multi_page_tiffs_paired_by_name_give_one_sample_per_page(tmp_path):
    # EPFL hippocampus EM style: training.tif + training_groundtruth.tif, testing.tif + ...
    pages = [np.full((H, W), 10 * k, np.uint8) for k in range(4)]
    masks = [binary_mask() for _ in range(4)]
    for name in ("training", "testing"):
        assert cv2.imwritemulti(str(tmp_path / f"{name}.tif"), pages)
        assert cv2.imwritemulti(str(tmp_path / f"{name}_groundtruth.tif"), masks)
    report = check_dataset(tmp_path)
    assert report.ok, report.problems
    assert [s.name for s in report.samples["train"]] == [f"training[{k}]" for k in range(4)]
    assert len(report.samples["test"]) == 4
    image, label = load_sample(report.samples["train"][2], report.spec)
    assert image.max() == 20 and label.sum() == binary_mask().astype(bool).sum()

    # A mask with fewer pages: the first page only, with a warning.
    assert cv2.imwritemulti(str(tmp_path / "testing_groundtruth.tif"), masks[:1])
    report = check_dataset(tmp_path)
    assert len(report.samples["test"]) == 1
    assert any("has 4 pages but its mask" in w for w in report.warnings)


def test_sixteen_bit_instance_id_masks_are_read_as_instances(tmp_path):
    # Cell tracking challenge / BBBC style: each object its own id, 16-bit.
    rng = np.random.default_rng(2)
    for i in range(3):
        ids = np.zeros((40, 40), np.uint16)
        for k in range(1, 11 + i):
            y, x = rng.integers(0, 36, 2)
            ids[y:y + 4, x:x + 4] = k + 100 * i        # ids differ between images
        write(tmp_path / "images" / f"t{i}.tif", image(9, h=40, w=40))
        write(tmp_path / "masks" / f"t{i}.tif", ids)
    report = check_dataset(tmp_path)
    assert report.ok, report.problems
    assert report.spec.mode == "instance" and report.spec.num_labels == 2
    sample = report.samples["all"][1]
    assert sample.instance_path == sample.mask_path
    label = load_sample(sample, report.spec)[1]
    np.testing.assert_array_equal(label, read_instances(sample.instance_path) != 0)
    assert any("instance-id maps" in w for w in report.warnings)
    # 16-bit class masks with a few values stay class indices.
    for i in range(3):
        write(tmp_path / "masks" / f"t{i}.tif", np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) % 4)
    assert check_dataset(tmp_path).spec.mode == "index"


def test_folders_found_by_the_words_in_their_names(tmp_path):
    # ISIC 2018: ..._Training_Input/ISIC_0000000.jpg + ..._GroundTruth/ISIC_0000000_segmentation.png
    isic = tmp_path / "isic"
    for i in range(2):
        write(isic / "ISIC2018_Task1-2_Training_Input" / f"ISIC_{i:07d}.jpg", image(9))
        write(isic / "ISIC2018_Task1_Training_GroundTruth" / f"ISIC_{i:07d}_segmentation.png", binary_mask())
    report = check_dataset(isic)
    assert report.ok, report.problems
    assert [s.mask_path.name for s in report.samples["all"]] == [
        "ISIC_0000000_segmentation.png", "ISIC_0000001_segmentation.png"]
    # DRIVE: images/21_training.tif, 1st_manual/21_manual1.gif (vessels), mask/ (field of view).
    drive = tmp_path / "drive" / "training"
    for i in (21, 22):
        write(drive / "images" / f"{i}_training.tif", image(9))
        write(drive / "1st_manual" / f"{i}_manual1.png", binary_mask())
        write(drive / "mask" / f"{i}_training_mask.png", np.full((H, W), 255, np.uint8))
    report = check_dataset(tmp_path / "drive")
    assert report.ok, report.problems
    assert [s.mask_path.name for s in report.samples["train"]] == ["21_manual1.png", "22_manual1.png"]
    assert any("using 1st_manual/ as the masks" in w for w in report.warnings)


def test_cell_tracking_challenge_sequences_with_sparse_ground_truth(tmp_path):
    rng = np.random.default_rng(4)
    for seq in ("01", "02"):
        for t in range(4):
            ids = np.zeros((24, 24), np.uint16)
            for k in range(1, 10):
                y, x = rng.integers(0, 20, 2)
                ids[y:y + 3, x:x + 3] = k
            write(tmp_path / seq / f"t{t:03d}.tif", np.full((24, 24), 100, np.uint16))
            write(tmp_path / f"{seq}_GT" / "TRA" / f"man_track{t:03d}.tif", ids)
            if t in (1, 3):                                   # gold truth for some frames only
                write(tmp_path / f"{seq}_GT" / "SEG" / f"man_seg{t:03d}.tif", ids)
    report = check_dataset(tmp_path)
    assert report.ok, report.problems
    assert [s.name for s in report.samples["all"]] == ["01/t001", "01/t003", "02/t001", "02/t003"]
    assert all(s.mask_path.parent.name == "SEG" for s in report.samples["all"])
    assert report.spec.mode == "instance"
    assert any("4 frames have no mask" in w for w in report.warnings)
    train, val = split_samples(report.samples["all"], 0.5)
    assert {s.name[:2] for s in train}.isdisjoint({s.name[:2] for s in val})   # by sequence


def test_review_cases_voc_annotations_isic_splits_and_unlabelled_discovery(tmp_path):
    # Pascal VOC ships Annotations/ (XML) beside SegmentationClass/: not a second mask folder.
    palette = [(0, 0, 0), (128, 0, 0)] + [(0, 0, 0)] * 253 + [(224, 224, 192)]
    voc = tmp_path / "voc"
    for i in range(3):
        write(voc / "JPEGImages" / f"v{i}.jpg", image(9))
        png_indexed(voc / "SegmentationClass" / f"v{i}.png", np.eye(H, W, dtype=np.uint8), palette)
        (voc / "Annotations").mkdir(parents=True, exist_ok=True)
        (voc / "Annotations" / f"v{i}.xml").write_text("<annotation/>")
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "trainval.txt").write_text("v0\nv1\nv2\n")
    (lists / "val.txt").write_text("v2\n")
    report = check_dataset(voc)
    assert report.ok, report.problems
    assert [s.name for s in report.samples["train"]] == ["v0", "v1"]      # trainval minus val
    # ISIC with training and validation pairs side by side.
    isic = tmp_path / "isic"
    for split in ("Training", "Validation"):
        write(isic / f"ISIC2018_Task1-2_{split}_Input" / "ISIC_1.jpg", image(9))
        write(isic / f"ISIC2018_Task1_{split}_GroundTruth" / "ISIC_1_segmentation.png", binary_mask())
    report = check_dataset(isic)
    assert report.ok, report.problems and set(report.samples) == {"train", "val"}
    # Images without masks: found for prediction, left out (as problems) for training.
    flat = tmp_path / "flat"
    for n in "abc":
        write(flat / "images" / f"{n}.png", image(9))
    write(flat / "masks" / "a.png", binary_mask())
    assert [s.name for s in find_samples(flat, strict=False, keep_unlabelled=True)["all"]] == ["a", "b", "c"]
    assert [s.name for s in find_samples(flat, strict=False)["all"]] == ["a"]


def test_jpeg_photos_are_read_upright_as_their_exif_orientation_says(tmp_path):
    photo = np.zeros((H, W, 3), np.uint8)
    photo[:, :2] = 255                                    # a bright band on the left
    ok, encoded = cv2.imencode(".jpg", photo)
    tiff = (b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack(">I", 0))  # rotate 90 cw
    app1 = b"Exif\x00\x00" + tiff
    data = encoded.tobytes()
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "p.jpg").write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2)
                                               + app1 + data[2:])
    upright = read_image(tmp_path / "images" / "p.jpg")
    assert upright.shape == (W, H, 3) and upright[:2].mean() > 200     # the band is now on top
    write(tmp_path / "masks" / "p.png", np.zeros((W, H), np.uint8))   # drawn on the upright photo
    assert check_dataset(tmp_path).ok
