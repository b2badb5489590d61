"""From a dataset folder to ``tf.data`` pipelines that ``model.fit`` takes as they are.

Every element is ``(image, label, weight_map)``:

- ``image``: float32 ``(tile, tile, C)``, scaled by the dataset's
  ``input_scale`` (1/255 for 8-bit data), the model's input tile;
- ``label``: int32 ``(out, out)``, class indices (0/1 for binary data) with
  ``ignore_index`` for void pixels and for pixels outside the image;
- ``weight_map``: float32 ``(out, out)``, the U-Net weight map (or 1), 0 where
  the label is ignored. ``model.fit`` passes it to the loss as ``sample_weight``.

``out == tile`` for same padding. For valid padding the input tile carries the
context the network consumes (572 -> 388 in the paper) and borders are mirror
extrapolated, so the label tile can reach the image edge (overlap-tile).

Images are decoded, normalised and given their weight maps once, then kept in
memory: the datasets this is for hold a few dozen to a few hundred images.
Larger ones are streamed (``unet_tf.data.streaming.open_data`` chooses by the
memory budget); ``train_dataset`` and ``val_dataset`` take their streamed
splits as well.

Example::

    bundle = load_data("path/to/data", val_fraction=0.2)
    train = train_dataset(bundle.train, tile_size=256, batch_size=4, depth=4, padding="same")
    val = val_dataset(bundle.val, tile_size=256, batch_size=4, depth=4, padding="same")
    model.fit(train, validation_data=val, steps_per_epoch=bundle.steps_per_epoch(256, 4), epochs=50)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import tensorflow as tf

from .. import sizes
from ..errors import DatasetError
from ..tiling import grid, window
from .augment import AugmentConfig, augment_sample
from .check import load_dataset
from .labels import LabelSpec, load_sample, read_instances
from .normalise import affine, bit_depth, scale_normalisation
from .samples import Sample
from .split import train_and_val, validation_indices
from .weights import instances_from_mask, unet_weight_map

__all__ = ["WeightMapConfig", "Item", "DataBundle", "load_data", "load_arrays", "input_scale_for",
           "reopen_gaps",
           "train_dataset", "val_dataset", "val_tiles", "steps_per_epoch", "tile_geometry"]


@dataclass
class WeightMapConfig:
    """How the per-pixel weights are made (see ``unet_tf.data.weights.unet_weight_map``).

    ``enabled=False`` gives weight 1 on every labelled pixel, or with a list of
    ``class_weights`` the weight of each pixel's class (no border term). ``recompute``
    recomputes the map after each deformation from the deformed instance map
    (exact but slower); by default the cached map is deformed with the sample
    using linear interpolation, as the paper's code does.
    """
    enabled: bool = True
    w0: float = 10.0
    sigma: float = 5.0
    class_weights: str | None = "balanced"
    recompute: bool = False


@dataclass
class Item:
    """One decoded image in memory.

    The pixels stay in their stored dtype (uint8 RGB takes a quarter of the
    memory of float32) and labels in the narrowest integer type that holds
    them; tiles are converted when they are cut. ``image`` gives the whole
    image normalised.
    """
    name: str
    pixels: np.ndarray                # (H, W, C) as stored: uint8, uint16 or float32
    scale: float | np.ndarray         # clip(pixels) * scale + offset = the model's input
    label: np.ndarray                 # (H, W) class indices, uint8 or int32
    instances: np.ndarray | None      # int32 (H, W) or None
    weight: np.ndarray                # float32 (H, W)
    offset: float | np.ndarray = 0.0  # per channel (see unet_tf.data.normalise.affine)
    clip: tuple | None = None         # (low, high) per channel, in pixel units

    def to_input(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels of this image (a tile or all of it) as the model's float32 input."""
        x = pixels.astype(np.float32)
        if self.clip is not None:
            x = np.clip(x, self.clip[0], self.clip[1])
        return (x * np.float32(self.scale) + np.float32(self.offset)).astype(np.float32)

    @property
    def image(self) -> np.ndarray:
        """float32 (H, W, C), normalised (computed on each access)."""
        return self.to_input(self.pixels)


@dataclass
class DataBundle:
    """A loaded dataset: its splits in memory and what the model needs to know."""
    train: list[Item]
    val: list[Item]
    test: list[Item]
    spec: LabelSpec
    num_classes: int                  # model output channels: 1 for binary data
    in_channels: int
    input_scale: float
    ignore_index: int
    root: str | None = None
    extras: dict = field(default_factory=dict)
    normalisation: dict = field(default_factory=dict)  # see unet_tf.data.normalise

    def steps_per_epoch(self, tile_size: int, batch_size: int, depth: int = 4,
                        padding: str = "same") -> int:
        return steps_per_epoch(self.train, tile_size, batch_size, depth, padding)

    def reweight(self, cfg: WeightMapConfig) -> None:
        """Recomputes every image's weight map (a plan chose the loss after loading)."""
        for item in (*self.train, *self.val, *self.test):
            item.weight = _weight_map(item.label.astype(np.int32), item.instances, self.spec,
                                      cfg).astype(np.float32)

    def renormalise(self, norm: dict) -> None:
        """Switches every image to another normalisation (``unet_tf.data.normalise``)."""
        scalar = norm.get("scheme", "scale") == "scale"
        for item in (*self.train, *self.val, *self.test):
            gain, offset, clip = affine(item.pixels, norm)
            item.scale = float(gain[0]) if scalar else gain
            item.offset = 0.0 if scalar else offset
            item.clip = clip
        self.normalisation = dict(norm)
        if scalar:
            self.input_scale = float(norm["scale"])

    def describe(self) -> dict:
        return dict(root=self.root, train=len(self.train), val=len(self.val), test=len(self.test),
                    num_classes=self.num_classes, in_channels=self.in_channels,
                    input_scale=self.input_scale, ignore_index=self.ignore_index,
                    labels=self.spec.to_dict())


# --------------------------------------------------------------------------- loading
def input_scale_for(images: Sequence[np.ndarray]) -> float:
    """The factor that maps the dataset's raw values to about [0, 1].

    8-bit data: 1/255. 16-bit data: 1/(2**bits - 1) for the smallest bit depth
    (8 to 16) that holds the largest value, so 12-bit microscopy is not dimmed
    16-fold. Float data: 1/max, or 1 when the values already lie in [0, 1].
    """
    peak = max(float(im.max()) for im in images) if images else 1.0
    return _scale_for({im.dtype for im in images}, peak)


def _scale_for(dtypes, peak: float) -> float:
    """:func:`input_scale_for` from the images' dtypes and their largest value."""
    dtypes = {np.dtype(d) for d in dtypes}
    if dtypes <= {np.dtype(np.uint8)}:
        return 1.0 / 255.0
    if all(np.issubdtype(d, np.integer) for d in dtypes):
        bits = max(8, min(16, math.ceil(math.log2(peak + 1))))
        return 1.0 / (2**bits - 1)
    return 1.0 if peak <= 1.0 else 1.0 / peak


def _weight_map(label, instances, spec: LabelSpec, cfg: WeightMapConfig) -> np.ndarray:
    ignore = spec.ignore_index
    if not cfg.enabled:
        if isinstance(cfg.class_weights, (list, tuple)):  # per-class weights, no border term
            lut = np.asarray(cfg.class_weights, np.float32)
            valid = (label != ignore) & (label >= 0) & (label < len(lut))
            return np.where(valid, lut[np.clip(label, 0, len(lut) - 1)], 0).astype(np.float32)
        return (label != ignore).astype(np.float32)
    if instances is None:  # multi-class data without instances: class balance only
        instances = np.zeros_like(label)
    return unet_weight_map(label, w0=cfg.w0, sigma=cfg.sigma, class_weights=cfg.class_weights,
                           ignore_index=ignore, instances=instances)


def _read(sample: Sample, spec: LabelSpec):
    image, label = load_sample(sample, spec)
    if label is None:
        raise DatasetError(f"{sample.image_path}: no mask; training and validation need one")
    instances = None
    if sample.instance_path is not None:
        instances = read_instances(sample.instance_path, sample.page)
    return image, label, instances


def _make_item(name, image, label, instances, spec: LabelSpec, norm: dict,
               cfg: WeightMapConfig) -> Item:
    label = label.astype(np.int32)
    if instances is None and spec.num_labels == 2:
        # Connected components once, before any deformation: nearest-neighbour
        # deformation can close 1-px gaps and would merge cells afterwards.
        instances = instances_from_mask(np.where(label == spec.ignore_index, 0, label))
    if instances is not None:
        instances = instances.astype(np.int32)
    weight = _weight_map(label, instances, spec, cfg)
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        image = image.astype(np.float32)
    # uint8 only when the void value fits too: tiles pad labels with it.
    small = 0 <= spec.ignore_index <= 255 and (label.size == 0 or (label.min() >= 0 and label.max() <= 255))
    gain, offset, clip = affine(image, norm)
    scalar = norm.get("scheme", "scale") == "scale"
    return Item(name, image, float(gain[0]) if scalar else gain,
                label.astype(np.uint8) if small else label, instances, weight.astype(np.float32),
                0.0 if scalar else offset, clip)


def load_data(root: str | Path, *, val_fraction: float = 0.2, seed: int = 0,
              num_classes: int | None = None, ignore_index: int = 255,
              weight_map: WeightMapConfig | None = None,
              input_scale: float | None = None,
              normalisation: dict | None = None) -> DataBundle:
    """Discover, validate, decode and normalise a dataset folder.

    Args:
        root: a dataset folder (see ``unet_tf.data.layouts`` for the layouts).
        val_fraction: share of the images held out for validation when the
            folder has no ``val/`` split (seeded, by name; see
            :func:`unet_tf.data.split.train_and_val`).
        seed: seed of that split.
        num_classes: number of classes in the masks; inferred when None.
            Binary masks give a one-channel (sigmoid) model.
        ignore_index: label value of void pixels.
        weight_map: how to make the per-pixel weights.
        input_scale: override the normalisation factor (default: from the
            training images' bit depth, see :func:`input_scale_for`).
        normalisation: a normalisation of ``unet_tf.data.normalise`` (a
            plan's choice); default: scale by ``input_scale``.

    Raises:
        unet_tf.errors.DatasetError: listing every problem found, each naming its file.
    """
    cfg = weight_map or WeightMapConfig()
    splits, spec = load_dataset(root, num_classes=num_classes, ignore_index=ignore_index)
    train, val = train_and_val(splits, val_fraction, seed)
    if not train:
        raise DatasetError(f"{root}: no labelled training images found")
    test = [s for s in splits.get("test", []) if s.mask_path is not None]
    raw = {name: [(s.name, *_read(s, spec)) for s in group]
           for name, group in (("train", train), ("val", val), ("test", test))}
    raw = _grey_to_rgb(raw)
    norm = normalisation or _scale_norm([r[1] for r in raw["train"]], input_scale)
    items = {name: [_make_item(*r, spec, norm, cfg) for r in group] for name, group in raw.items()}
    bundle = _bundle(items, spec, norm, ignore_index, str(root))
    # The run record lists held-out names, so evaluate finds the same images.
    bundle.extras["val_split"] = "folder" if splits.get("val") else "held_out"
    return bundle


def _grey_to_rgb(raw: dict) -> dict:
    """Greyscale images among RGB ones become RGB (check_dataset warns about it)."""
    channels = {r[1].shape[-1] for group in raw.values() for r in group}
    if channels != {1, 3}:
        return raw
    return {name: [(r[0], np.repeat(r[1], 3, axis=-1) if r[1].shape[-1] == 1 else r[1], *r[2:])
                   for r in group] for name, group in raw.items()}


def load_arrays(images, labels, instances=None, *, val_fraction=0.2, seed=0, ignore_index=255,
                num_classes=None, weight_map: WeightMapConfig | None = None,
                input_scale: float | None = None) -> DataBundle:
    """Build a :class:`DataBundle` from arrays already in memory.

    Args:
        images: ``(N, H, W, C)`` array or a list of ``(H, W, C)`` arrays.
        labels: class indices, ``(N, H, W)`` or a list; binary data is 0/1.
        instances: optional instance-id maps for the weight maps.
        val_fraction, seed: the share of the arrays held out for validation,
            by the rule of :func:`unet_tf.data.split.validation_indices`.
    """
    cfg = weight_map or WeightMapConfig()
    images = [np.asarray(im) if np.ndim(im) == 3 else np.asarray(im)[..., None] for im in images]
    labels = [np.asarray(lb).astype(np.int32) for lb in labels]
    values = np.unique(np.concatenate([np.unique(lb) for lb in labels]))
    values = values[values != ignore_index]
    n_labels = num_classes or int(max(values.max(initial=0) + 1, 2))
    spec = LabelSpec(mode="binary" if n_labels == 2 else "index", num_labels=n_labels,
                     ignore_index=ignore_index)
    norm = _scale_norm(images, input_scale)
    val_idx = validation_indices([str(i) for i in range(len(images))], val_fraction, seed)
    items = [_make_item(f"array_{i}", images[i], labels[i],
                        None if instances is None else np.asarray(instances[i]), spec, norm, cfg)
             for i in range(len(images))]
    return _bundle({"train": [it for i, it in enumerate(items) if i not in val_idx],
                    "val": [it for i, it in enumerate(items) if i in val_idx], "test": []},
                   spec, norm, ignore_index, None)


def _scale_norm(images: Sequence[np.ndarray], input_scale: float | None) -> dict:
    """The bit-depth scaling (the default normalisation) of a set of images."""
    peak = max((float(im.max()) for im in images if im.size), default=255.0)
    return scale_norm_from([im.dtype for im in images], peak, input_scale)


def scale_norm_from(dtypes, peak: float, input_scale: float | None = None) -> dict:
    """The bit-depth scaling of images of these dtypes whose largest value is
    ``peak`` (what a shard folder or a streamed dataset knows without holding
    its images)."""
    dtypes = [np.dtype(d) for d in dtypes]
    scale = input_scale if input_scale is not None else _scale_for(dtypes, peak)
    dtype = np.result_type(*dtypes) if dtypes else np.dtype(np.uint8)
    bits = bit_depth(dtype, peak)
    if bits and abs(scale - 1.0 / (2**bits - 1)) > 1e-12:  # an explicit input_scale
        bits = bit_depth(dtype, 1.0 / scale)
    return scale_normalisation(scale, dtype, bits)


def _bundle(items, spec, norm, ignore_index, root) -> DataBundle:
    channels = {it.pixels.shape[-1] for split in items.values() for it in split}
    if len(channels) > 1:
        raise DatasetError(f"{root}: images have different channel counts {sorted(channels)}; "
                           "convert them to one channel count")
    num_classes = 1 if spec.num_labels <= 2 else spec.num_labels
    scale = float(norm.get("scale", 1.0))
    return DataBundle(items["train"], items["val"], items["test"], spec, num_classes,
                      channels.pop(), scale, ignore_index, root, normalisation=dict(norm))


# --------------------------------------------------------------------------- tiles
def tile_geometry(tile_size: int, depth: int, padding: str) -> tuple[int, int]:
    """``(input_tile, output_tile)`` for a model; raises ``ValueError`` naming valid sizes."""
    return tile_size, sizes.output_size(tile_size, depth, padding)


def steps_per_epoch(items: Sequence[Item], tile_size: int, batch_size: int, depth: int = 4,
                    padding: str = "same") -> int:
    """Batches that cover every training image about once."""
    if hasattr(items, "steps_per_epoch"):  # streamed: sizes from the headers or the shards
        return items.steps_per_epoch(tile_size, batch_size, depth, padding)
    _, out = tile_geometry(tile_size, depth, padding)
    tiles = sum(math.ceil(it.label.shape[0] / out) * math.ceil(it.label.shape[1] / out) for it in items)
    return max(1, math.ceil(tiles / batch_size))


def _crop_tile(item: Item, top: int, left: int, tile_in: int, tile_out: int, context: int,
               ignore_index: int, mirror_labels: bool):
    """Input window around an output tile at (top, left), with ``context`` extra pixels per side.

    The image is always mirrored beyond its border. Labels are mirrored too
    for training (a mirrored image with mirrored labels is a valid sample,
    and rotations pull those pixels in), and set to ``ignore_index`` for
    validation, so that scores count real pixels only.
    """
    margin = (tile_in - tile_out) // 2 + context
    size = tile_out + 2 * margin
    t, l_ = top - margin, left - margin
    image = item.to_input(window(item.pixels, t, l_, size, size, "mirror"))
    if mirror_labels:
        label = window(item.label, t, l_, size, size, "mirror")
        weight = window(item.weight, t, l_, size, size, "mirror")
        inst = None if item.instances is None else window(item.instances, t, l_, size, size, "mirror")
    else:
        label = window(item.label, t, l_, size, size, "constant", ignore_index)
        weight = window(item.weight, t, l_, size, size, "constant", 0.0)
        inst = None
    return image, label, weight, inst


def _center(array: np.ndarray, size: int) -> np.ndarray:
    off0 = (array.shape[0] - size) // 2
    off1 = (array.shape[1] - size) // 2
    return array[off0:off0 + size, off1:off1 + size]


def reopen_gaps(label: np.ndarray, instances: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Binary labels with a background gap wherever two instances touch.

    Deformation, rotation and zoom resample labels with nearest neighbours,
    which closes many of the 1-px gaps between touching cells: the network
    would learn that touching cells merge. Where two different instances are
    4-neighbours, the pixel of the larger id becomes background again.
    """
    inst = instances
    drop = np.zeros(inst.shape, bool)
    for a, b, da, db in ((inst[:, :-1], inst[:, 1:], drop[:, :-1], drop[:, 1:]),
                         (inst[:-1], inst[1:], drop[:-1], drop[1:])):
        touching = (a > 0) & (b > 0) & (a != b)
        da |= touching & (a > b)
        db |= touching & (b > a)
    out = label.copy()
    out[drop & (label != ignore_index)] = 0
    return out


class _TileSampler:
    """Draws the k-th random training tile; all randomness comes from (seed, k).

    ``seed`` is an int or a sequence of ints (the words of NumPy's seed
    sequence, before ``k``).
    """

    def __init__(self, items, tile_in, tile_out, augment, weight_cfg, spec, seed,
                 rare_classes=(), rare_share=0.0):
        self.items = items
        self.tile_in, self.tile_out = tile_in, tile_out
        self.augment = augment
        self.weight_cfg = weight_cfg
        self.spec = spec
        self.seed = tuple(int(s) for s in np.atleast_1d(seed))
        areas = np.array([it.label.size for it in items], np.float64)
        self.probs = areas / areas.sum()  # larger images give proportionally more tiles
        geometric = augment is not None and (augment.elastic or augment.rotate_degrees > 0
                                             or augment.scale != (1.0, 1.0) or augment.shift > 0)
        # Extra context so rotations, zoom and the elastic field sample real
        # (or mirrored) pixels rather than the window's border.
        self.context = int(math.ceil(0.2 * tile_in)) if geometric else 0
        self.rare_points = _rare_points(items, rare_classes, self.seed[0]) if rare_share > 0 else []
        counts = np.array([len(p) for p in self.rare_points], np.float64)
        self.rare_share = float(rare_share) if counts.sum() else 0.0
        self.rare_probs = counts / counts.sum() if counts.sum() else None

    def _position(self, rng):
        """A random item and tile corner; a ``rare_share`` of the tiles are
        centred on a pixel of a rare class, as nnU-Net oversamples foreground."""
        if self.rare_share and rng.random() < self.rare_share:
            i = int(rng.choice(len(self.items), p=self.rare_probs))
            y, x = self.rare_points[i][int(rng.integers(len(self.rare_points[i])))]
            h, w = self.items[i].label.shape
            top = int(np.clip(y - self.tile_out // 2, 0, max(h - self.tile_out, 0)))
            left = int(np.clip(x - self.tile_out // 2, 0, max(w - self.tile_out, 0)))
            return self.items[i], top, left
        item = self.items[rng.choice(len(self.items), p=self.probs)]
        h, w = item.label.shape
        top = int(rng.integers(0, max(h - self.tile_out, 0) + 1))
        left = int(rng.integers(0, max(w - self.tile_out, 0) + 1))
        return item, top, left

    def __call__(self, k):
        rng = np.random.default_rng([*self.seed, int(k)])
        item, top, left = self._position(rng)
        image, label, weight, inst = _crop_tile(item, top, left, self.tile_in, self.tile_out,
                                                self.context, self.spec.ignore_index, True)
        if self.augment is not None:
            # Binary data keeps its instances through the deformation, to reopen
            # the 1-px gaps that nearest-neighbour resampling closes.
            need_inst = inst is not None and (self.weight_cfg.recompute or self.spec.num_labels == 2)
            image, label, weight, inst = augment_sample(
                image, label, weight, inst if need_inst else None, config=self.augment,
                seed=int(rng.integers(2**31)), out_shape=(self.tile_in, self.tile_in))
            if need_inst and self.spec.num_labels == 2:
                label = reopen_gaps(label, inst, self.spec.ignore_index)
            if need_inst and self.weight_cfg.recompute:
                weight = _weight_map(label, inst, self.spec, self.weight_cfg)
        else:
            image, label, weight = (_center(a, self.tile_in) for a in (image, label, weight))
        label = _center(label, self.tile_out)
        weight = _center(weight, self.tile_out) * (label != self.spec.ignore_index)
        return (np.ascontiguousarray(image, np.float32), np.ascontiguousarray(label, np.int32),
                np.ascontiguousarray(weight, np.float32))


#: Rare-class pixels remembered per image for centring tiles on them.
RARE_POINTS_PER_IMAGE = 4096


def _rare_points(items, rare_classes, seed) -> list[np.ndarray]:
    """Per item, up to ``RARE_POINTS_PER_IMAGE`` (row, col) pixels of the rare classes."""
    rng = np.random.default_rng([int(seed), 7])
    points = []
    for item in items:
        yx = np.argwhere(np.isin(item.label, list(rare_classes))) if len(rare_classes) else \
            np.zeros((0, 2), np.int64)
        if len(yx) > RARE_POINTS_PER_IMAGE:
            yx = yx[rng.choice(len(yx), RARE_POINTS_PER_IMAGE, replace=False)]
        points.append(yx)
    return points


def _tile_loader(make_tile, tile_in: int, tile_out: int, channels: int):
    """A tf.data map function: tile index -> (image, label, weight) from the
    numpy function ``make_tile``, with the static shapes Keras needs."""
    def load(k):
        image, label, weight = tf.numpy_function(make_tile, [k], [tf.float32, tf.int32, tf.float32],
                                                 stateful=False)
        image.set_shape((tile_in, tile_in, channels))
        label.set_shape((tile_out, tile_out))
        weight.set_shape((tile_out, tile_out))
        return image, label, weight
    return load


def train_dataset(items: Sequence[Item], *, tile_size: int, batch_size: int, depth: int = 4,
                  padding: str = "same", augment: AugmentConfig | None = None,
                  spec: LabelSpec | None = None, weight_map: WeightMapConfig | None = None,
                  seed: int = 0, deterministic: bool = True, num_shards: int = 1,
                  shard_index: int = 0, rare_classes: Sequence[int] = (),
                  rare_share: float = 0.0) -> tf.data.Dataset:
    """An endless dataset of random, augmented training tiles, batched.

    Tile ``k`` depends only on ``(seed, k)``, so a seed gives the same stream
    whatever the parallelism; with ``deterministic=False`` only the order of
    elements inside the parallel map may change. ``num_shards``/``shard_index``
    give each worker of a multi-worker run its own disjoint share of tiles.

    Use ``augment=AugmentConfig()`` for the paper's augmentations (elastic
    deformation on a 3x3 grid, flips, rotations, gray values) or None for none.
    ``rare_share`` of the tiles are centred on a pixel of one of ``rare_classes``.

    ``items`` may be a streamed split (``bundle.train`` of a bundle that
    :func:`unet_tf.data.streaming.open_data` streams): each image is then read
    when its tiles are cut (see ``unet_tf.data.streaming``).
    """
    if hasattr(items, "tf_train_dataset"):
        return items.tf_train_dataset(
            tile_size=tile_size, batch_size=batch_size, depth=depth, padding=padding,
            augment=augment, spec=spec, weight_map=weight_map, seed=seed,
            deterministic=deterministic, num_shards=num_shards, shard_index=shard_index,
            rare_classes=rare_classes, rare_share=rare_share)
    if not items:
        raise ValueError("train_dataset needs at least one image")
    tile_in, tile_out = tile_geometry(tile_size, depth, padding)
    spec = spec or LabelSpec(mode="index", num_labels=2)
    sampler = _TileSampler(list(items), tile_in, tile_out, augment, weight_map or WeightMapConfig(),
                           spec, seed, rare_classes, rare_share)
    channels = items[0].pixels.shape[-1]
    # cv2 parallelises each remap itself; tf.data already runs samples in parallel.
    cv2.setNumThreads(1)

    load = _tile_loader(sampler, tile_in, tile_out, channels)
    ds = tf.data.Dataset.counter().shard(num_shards, shard_index)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_options(deterministic))


def _val_positions(items: Sequence[Item], tile_out: int) -> list[tuple[int, int, int]]:
    """(item index, top, left) of every validation tile: a fixed grid per image."""
    return [(i, top, left) for i, item in enumerate(items)
            for top in grid(item.label.shape[0], tile_out) for left in grid(item.label.shape[1], tile_out)]


def _val_tile(item: Item, top: int, left: int, tile_in: int, tile_out: int, ignore_index: int):
    image, label, weight, _ = _crop_tile(item, top, left, tile_in, tile_out, 0, ignore_index, False)
    return (np.ascontiguousarray(image, np.float32),
            np.ascontiguousarray(_center(label, tile_out), np.int32),
            np.ascontiguousarray(_center(weight, tile_out), np.float32))


def val_tiles(items: Sequence[Item], tile_size: int, depth: int = 4, padding: str = "same",
              ignore_index: int = 255):
    """Every validation image cut into a fixed grid of tiles (numpy arrays)."""
    tile_in, tile_out = tile_geometry(tile_size, depth, padding)
    tiles = [_val_tile(items[i], top, left, tile_in, tile_out, ignore_index)
             for i, top, left in _val_positions(items, tile_out)]
    return tuple(np.stack(parts) for parts in zip(*tiles))


def val_dataset(items: Sequence[Item], *, tile_size: int, batch_size: int, depth: int = 4,
                padding: str = "same", ignore_index: int = 255,
                max_tiles: int | None = None) -> tf.data.Dataset:
    """A finite, deterministic dataset of validation tiles with their weight maps.

    Tiles are cut as they are consumed, so memory does not grow with the
    validation set (only the images themselves are held). ``max_tiles`` keeps
    that many tiles spread evenly over the grid (a cap on validation time).
    A streamed split reads each image when its tiles are cut, and keeps whole
    images spread evenly under ``max_tiles``.
    """
    if hasattr(items, "tf_val_dataset"):
        return items.tf_val_dataset(tile_size=tile_size, batch_size=batch_size, depth=depth,
                                    padding=padding, ignore_index=ignore_index, max_tiles=max_tiles)
    if not items:
        raise ValueError("val_dataset needs at least one image")
    tile_in, tile_out = tile_geometry(tile_size, depth, padding)
    items = list(items)
    positions = _val_positions(items, tile_out)
    if max_tiles is not None and len(positions) > max_tiles:
        keep = np.linspace(0, len(positions) - 1, max(1, int(max_tiles))).round().astype(int)
        positions = [positions[i] for i in np.unique(keep)]
    channels = items[0].pixels.shape[-1]

    def cut(k):
        i, top, left = positions[int(k)]
        return _val_tile(items[i], top, left, tile_in, tile_out, ignore_index)

    load = _tile_loader(cut, tile_in, tile_out, channels)
    ds = tf.data.Dataset.range(len(positions)).map(load, num_parallel_calls=tf.data.AUTOTUNE,
                                                   deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(_options(True))


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    # Shards are made explicitly (train_dataset's num_shards), not by tf.distribute.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options
