"""Data larger than memory: streamed from a dataset folder or from TFRecord shards.

:func:`open_data` is what training calls. It estimates the memory the decoded
dataset would take (pixels, labels, weight maps and instance ids, from the
file headers or from the shards' ``dataset.json``) and compares it with the
share of ``--memory-budget`` the data may take (:data:`DATA_MEMORY_SHARE`):

- below it, the data is loaded as today (:func:`unet_tf.data.pipeline.load_data`,
  or every record of a shard folder decoded once): a :class:`DataBundle`;
- above it, a :class:`StreamBundle` whose splits are :class:`StreamedItems`.
  ``train_dataset`` on them lists the images, reads and decodes them in
  parallel map calls, computes each image's weight map on the fly and cuts
  several random tiles from it (the in-memory sampler's own code, augmentation
  included) into a bounded shuffle buffer. ``val_dataset`` reads each
  validation image when its tiles are cut; iterating a streamed split gives
  one decoded image at a time (the final report scores whole images that way).

``--data-path stream`` or ``memory`` overrides the choice; the log says which
path was taken and why.

Tiles. Each *draw* reads one image and cuts ``K`` tiles from it (``K`` =
about twice the tiles of a typical image's grid, :data:`TILES_PER_DRAW`);
larger images are drawn more often, one draw per ``K / 2`` grid tiles, so each
pass over the images shows every image about twice, as the in-memory sampler
weighs images by their area. Tile ``j`` of the ``d``-th draw is the in-memory
sampler's tile ``k = d * K + j`` of that image (randomness from ``(seed, k)``,
same crop, augmentation and weight-map code): with one training image and the
tile shuffle off, the streamed tiles are the in-memory ones, tile for tile.
With several images the order differs (images are visited in a seeded random
order instead of one image drawn per tile) and the batch statistics agree.

Across workers each worker reads only its own images: every ``n``-th image of
a folder, or every ``n``-th shard file (every ``n``-th record when there are
fewer shards than workers).
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from ..errors import DatasetError
from ..plan.formatting import format_bytes
from .augment import AugmentConfig
from .labels import LabelSpec
from .pipeline import (DataBundle, Item, WeightMapConfig, _make_item, _options, _read,
                       _TileSampler, _val_tile, load_data, scale_norm_from, tile_geometry)
from . import scan as scan_module
from .scan import FolderScan, Header, footprint, scan_folder, spread, survey_folder
from .shards import (decode_record, explain_data_loss, is_shard_folder, is_unfinished_pack,
                     iter_records, read_meta, shard_files, shard_problems)
from ..tiling import grid

__all__ = ["DATA_PATHS", "DATA_MEMORY_SHARE", "TILES_PER_DRAW", "StreamBundle", "StreamedItems",
           "LazyItem", "open_data", "data_budget", "data_errors", "tiles_per_draw"]

DATA_PATHS = ("auto", "stream", "memory")
#: Share of ``--memory-budget`` the decoded dataset may take before it is
#: streamed: the rest is for the model, the optimizer and TensorFlow itself.
DATA_MEMORY_SHARE = 0.5
#: The data lives in the machine's memory even when the budget is the GPU's
#: (``--memory-budget auto`` on a GPU): never more than this share of the RAM.
HOST_MEMORY_SHARE = 0.5
#: Tiles cut from each decoded image: (fewest, most). Reading, decoding and the
#: weight map of a 512x512 image cost about as much as 4 augmented 128 px
#: tiles, so 32 tiles per read keep streaming within ~10% of the in-memory rate.
TILES_PER_DRAW = (8, 32)
#: A draw cuts about this many times the tiles of the image's grid.
DRAW_COVERAGE = 2
#: The shuffle buffer of tiles holds at most this many bytes (and at most a
#: quarter of the data's memory), at most MAX_SHUFFLE_TILES tiles and at most
#: one pass over the images, and at least 2 batches or one draw. It is filled
#: before the first batch: 512 tiles are 16 reads of 32 tiles.
TILE_SHUFFLE_BYTES = 256 * 1024**2
MAX_SHUFFLE_TILES = 512
#: What tf.data's autotuned buffers may hold: a quarter of the data's share of
#: the budget, within these bounds (TensorFlow's default is half the RAM, and
#: autotuning grows prefetch buffers while the model is slower than the pipeline).
AUTOTUNE_RAM = (256 * 1024**2, 1024**3)
#: Compressed records shuffled before they are decoded (shards).
RECORD_SHUFFLE = 32
#: Shard files read at once (interleaved); a fixed number keeps the order of
#: records, and so the tiles, the same on every machine.
SHARD_CYCLE = 4
#: Training images read to find the largest value of >8-bit images (the bit
#: depth of the scale normalisation) in a streamed folder, spread evenly.
NORMALISATION_IMAGES = 50
_MARK = "\x1e"  # wraps a DatasetError's text through tf.numpy_function


# --------------------------------------------------------------------------- budget
def data_budget(memory_budget: str) -> tuple[int, str]:
    """Bytes the decoded dataset may take, and the sentence that says why."""
    from ..autoplan import memory_budget_bytes
    total = memory_budget_bytes(memory_budget)
    budget = int(total * DATA_MEMORY_SHARE)
    why = f"{DATA_MEMORY_SHARE:.0%} of --memory-budget {memory_budget} ({format_bytes(total)})"
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = None
    if ram and ram * HOST_MEMORY_SHARE < budget:
        budget = int(ram * HOST_MEMORY_SHARE)
        why += f", at most {HOST_MEMORY_SHARE:.0%} of the RAM"
    return budget, why


def tiles_per_draw(sizes, tile_out: int) -> int:
    """``K``: tiles cut per decoded image, from the median image's grid."""
    if not sizes:
        return TILES_PER_DRAW[0]
    counts = [_grid_tiles(h, w, tile_out) for h, w in sizes]
    return int(np.clip(DRAW_COVERAGE * np.median(counts), *TILES_PER_DRAW))


def _grid_tiles(h: int, w: int, tile_out: int) -> int:
    return math.ceil(h / tile_out) * math.ceil(w / tile_out)


def _visits(h, w, tile_out: int, per_draw: int) -> int:
    return max(1, math.ceil(DRAW_COVERAGE * _grid_tiles(h, w, tile_out) / per_draw))


# --------------------------------------------------------------------------- lazy items
class _Slot:
    """The one decoded item of a split kept between attribute accesses."""

    def __init__(self):
        self.owner = None
        self.item = None

    def fetch(self, owner: "LazyItem") -> Item:
        if self.owner is not owner:
            self.owner, self.item = None, None  # drop the previous image first
            self.item = owner.load()
            self.owner = owner
        return self.item


class LazyItem:
    """An :class:`~unet_tf.data.pipeline.Item` decoded when one of its arrays is used.

    ``name`` is known without decoding. The items of a split share one slot:
    the last one used stays decoded, so a loop over a streamed split holds one
    image at a time, even when the loop keeps the items.
    """

    def __init__(self, name: str, load, slot: _Slot):
        self.name = name
        self.load = load
        self._slot = slot

    def __getattr__(self, attr):
        if attr.startswith("__") or attr in ("load", "_slot", "name"):
            raise AttributeError(attr)
        return getattr(self._slot.fetch(self), attr)

    def __repr__(self):
        return f"LazyItem({self.name!r})"


class StreamedItems:
    """The images of one split of a :class:`StreamBundle`, read when used.

    ``len``, ``names`` and ``sizes`` come from the headers (or the shards'
    index) without decoding; iterating, indexing and slicing give
    :class:`LazyItem` objects. ``unet_tf.data.train_dataset`` and
    ``val_dataset`` accept it in place of a list of items.
    """

    def __init__(self, bundle: "StreamBundle", split: str):
        self.bundle = bundle
        self.split = split
        self._slot = _Slot()
        self._cursor = None

    @property
    def source(self):
        return self.bundle.source

    def __len__(self) -> int:
        return self.source.count(self.split)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self):
        for name, load in self.source.loaders(self.split, self.bundle):
            yield LazyItem(name, load, self._slot)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"{self.split} has {n} images, asked for {index}")
        name, load = self.source.loader_at(self.split, index, self.bundle, self)
        return LazyItem(name, load, self._slot)

    @property
    def names(self) -> list[str]:
        return self.source.names(self.split)

    def sizes(self) -> list[tuple[int, int]]:
        return self.source.sizes(self.split)

    def steps_per_epoch(self, tile_size: int, batch_size: int, depth: int = 4,
                        padding: str = "same") -> int:
        _, out = tile_geometry(tile_size, depth, padding)
        tiles = sum(_grid_tiles(h, w, out) for h, w in self.sizes())
        return max(1, math.ceil(tiles / batch_size))

    def tf_train_dataset(self, **kw) -> tf.data.Dataset:
        return _train_dataset(self, **kw)

    def tf_val_dataset(self, **kw) -> tf.data.Dataset:
        return _val_dataset(self, **kw)


# --------------------------------------------------------------------------- sources
class _FolderSource:
    """Samples of a dataset folder, each read with ``load_sample`` when needed."""
    kind = "folder"

    def __init__(self, scan: FolderScan, splits: dict[str, list]):
        self.root = scan.root
        self.scan = scan
        self.splits = splits
        self.spec = scan.spec
        self.channels = scan.channels

    def describe(self) -> str:
        return f"the folder {self.root}"

    def count(self, split):
        return len(self.splits.get(split, []))

    def names(self, split):
        return [s.name for s in self.splits.get(split, [])]

    def header(self, sample) -> Header:
        return self.scan.headers[sample]

    def sizes(self, split):
        return [(self.header(s).height, self.header(s).width) for s in self.splits.get(split, [])]

    def read(self, split: str, index: int):
        """``(name, image, label, instances)`` of one sample, as stored."""
        sample = self.splits[split][index]
        image, label, instances = _read(sample, self.spec)
        if self.channels == 3 and image.shape[-1] == 1:  # greyscale among RGB images
            image = np.repeat(image, 3, axis=-1)
        return sample.name, image, label, instances

    def loaders(self, split, bundle):
        for i, sample in enumerate(self.splits.get(split, [])):
            yield sample.name, _loader(bundle, self.read, split, i)

    def loader_at(self, split, index, bundle, owner):
        return self.splits[split][index].name, _loader(bundle, self.read, split, index)

    # tf.data: keys and how a key is decoded
    def decode_key(self, split):
        def decode(index):
            return self.read(split, int(index))
        return decode

    def train_keys(self, split, tile_out, per_draw, seed, num_shards, shard_index, log):
        sizes = self.sizes(split)
        mine = [i for i in range(len(sizes)) if i % num_shards == shard_index]
        if not mine:
            raise DatasetError(f"{self.root}: {len(sizes)} {split} images for {num_shards} workers; "
                               "each worker needs at least one")
        if num_shards > 1:
            log(f"Worker {shard_index} of {num_shards} reads {len(mine)} of the {len(sizes)} "
                f"{split} images (every {num_shards}th from the {shard_index}th)")
        visits = [_visits(*sizes[i], tile_out, per_draw) for i in mine]
        draws = np.repeat(np.asarray(mine, np.int64), visits)
        ds = tf.data.Dataset.from_tensor_slices(draws)
        ds = ds.shuffle(len(draws), seed=seed, reshuffle_each_iteration=True).repeat()
        return ds.map(lambda i: (i,)), [tf.int64]

    def val_keys(self, split, keep, stride):
        return tf.data.Dataset.from_tensor_slices(np.asarray(keep, np.int64)).map(lambda i: (i,))


class _ShardSource:
    """The records of a shard folder (see ``unet_tf.data.shards``)."""
    kind = "shards"

    def __init__(self, root: str, meta: dict):
        self.root = root
        self.meta = meta
        self.spec = LabelSpec.from_dict(meta["labels"])
        self.channels = int(meta["channels"])

    def describe(self) -> str:
        return f"the shards in {self.root}"

    def files(self, split):
        return shard_files(self.root, self.meta, split)

    def count(self, split):
        return int(self.meta["splits"].get(split, {}).get("images", 0))

    def names(self, split):
        return [decode_record(raw, f"{f} record {i}").name
                for f, i, raw in iter_records(self.files(split))]

    def sizes(self, split):
        """Image sizes (in no particular order: from the shards' size histogram)."""
        sizes = []
        for h, w, n in self.meta["splits"].get(split, {}).get("sizes", []):
            sizes += [(h, w)] * n
        return sizes

    @staticmethod
    def read_raw(file, index, raw):
        record = decode_record(raw, f"{file} record {index}")
        return record.name, record.image, record.label, record.instances

    def loaders(self, split, bundle):
        for file, index, raw in iter_records(self.files(split)):
            name = _record_name(raw, file, index)
            yield name, _loader(bundle, lambda f=file, i=index, r=raw: self.read_raw(f, i, r))

    def loader_at(self, split, index, bundle, owner: StreamedItems):
        cursor = owner._cursor
        if cursor is None or cursor[0] > index:  # records are read in order: restart
            cursor = [0, iter_records(self.files(split))]
        while True:
            file, i, raw = next(cursor[1])
            cursor[0] += 1
            if cursor[0] - 1 == index:
                break
        owner._cursor = cursor
        return _record_name(raw, file, i), _loader(bundle, lambda: self.read_raw(file, i, raw))

    def decode_key(self, split):
        def decode(file, index, raw):
            return self.read_raw(file.decode(), int(index), raw)
        return decode

    def _records(self, files, cycle: int):
        def records(file):
            return tf.data.TFRecordDataset(file).enumerate().map(lambda i, r: (file, i, r))
        if cycle == 1:
            return files.interleave(records, cycle_length=1, block_length=1)
        return files.interleave(records, cycle_length=cycle, block_length=1,
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def train_keys(self, split, tile_out, per_draw, seed, num_shards, shard_index, log):
        files = self.files(split)
        by_record = num_shards > len(files)
        if num_shards > 1 and not by_record:
            files = files[shard_index::num_shards]
            log(f"Worker {shard_index} of {num_shards} reads {len(files)} of the "
                f"{len(self.files(split))} {split} shards: "
                + ", ".join(os.path.basename(f) for f in files))
        elif by_record:
            log(f"Worker {shard_index} of {num_shards}: {len(files)} {split} shard(s) for "
                f"{num_shards} workers, so every worker reads all of them and keeps every "
                f"{num_shards}th record (pack with a smaller --shard-size to split by file)")
        ds = tf.data.Dataset.from_tensor_slices(files)
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
        ds = self._records(ds, min(len(files), SHARD_CYCLE))
        if by_record:
            ds = ds.enumerate().filter(lambda k, x: k % num_shards == shard_index).map(lambda k, x: x)
        ds = ds.shuffle(RECORD_SHUFFLE, seed=seed + 1, reshuffle_each_iteration=True)
        features = {"height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
                    "width": tf.io.FixedLenFeature([], tf.int64, default_value=0)}

        def repeat(file, index, raw):
            hw = tf.io.parse_single_example(raw, features)
            tiles = (tf.math.ceil(hw["height"] / tile_out) * tf.math.ceil(hw["width"] / tile_out))
            visits = tf.maximum(tf.cast(tf.math.ceil(DRAW_COVERAGE * tiles / per_draw), tf.int64), 1)
            return tf.data.Dataset.from_tensors((file, index, raw)).repeat(visits)
        return ds.flat_map(repeat), [tf.string, tf.int64, tf.string]

    def val_keys(self, split, keep, stride):
        ds = self._records(tf.data.Dataset.from_tensor_slices(self.files(split)), 1)
        if stride > 1:
            ds = ds.enumerate().filter(lambda k, x: k % stride == 0).map(lambda k, x: x)
        return ds


def _record_name(raw, file, index) -> str:
    try:
        return tf.train.Example.FromString(raw).features.feature["name"].bytes_list.value[0].decode()
    except Exception:  # noqa: BLE001 - the decode that follows names the problem
        return f"{os.path.basename(file)}[{index}]"


def _loader(bundle: "StreamBundle", read, *args):
    def load() -> Item:
        return bundle.make_item(*read(*args))
    return load


# --------------------------------------------------------------------------- the bundle
@dataclass
class StreamBundle(DataBundle):
    """A dataset that is streamed: a :class:`DataBundle` whose splits are
    :class:`StreamedItems`, and whose weight maps and normalisation are applied
    to each image as it is read (``reweight`` and ``renormalise`` only record them)."""
    source: object = None
    weight_config: WeightMapConfig = field(default_factory=WeightMapConfig)

    def __post_init__(self):
        self.train = StreamedItems(self, "train")
        self.val = StreamedItems(self, "val")
        self.test = StreamedItems(self, "test")

    def make_item(self, name, image, label, instances) -> Item:
        """An image as read, with its weight map and normalisation."""
        return _make_item(name, image, label, instances, self.spec, self.normalisation,
                          self.weight_config)

    def steps_per_epoch(self, tile_size, batch_size, depth=4, padding="same") -> int:
        return self.train.steps_per_epoch(tile_size, batch_size, depth, padding)

    def reweight(self, cfg: WeightMapConfig) -> None:
        self.weight_config = cfg

    def renormalise(self, norm: dict) -> None:
        self.normalisation = dict(norm)
        if norm.get("scheme", "scale") == "scale":
            self.input_scale = float(norm["scale"])

    def describe(self) -> dict:
        return {**super().describe(), "data_path": "stream", "source": self.source.describe()}


# --------------------------------------------------------------------------- tf.data
class _DrawTiles:
    """numpy: draw ``d`` (a key read and decoded) -> ``K`` training tiles."""

    def __init__(self, bundle, decode, tile_in, tile_out, augment, weight_cfg, spec, seed,
                 rare_classes, rare_share, per_draw, num_shards, shard_index):
        self.bundle, self.decode = bundle, decode
        self.args = (tile_in, tile_out, augment, weight_cfg, spec, seed, rare_classes, rare_share)
        self.per_draw, self.num_shards, self.shard_index = per_draw, num_shards, shard_index

    def __call__(self, draw, *key):
        try:
            item = self.bundle.make_item(*self.decode(*key))
        except DatasetError as err:
            raise ValueError(_MARK + str(err) + _MARK) from None
        sampler = _TileSampler([item], *self.args)
        first = int(draw) * self.per_draw
        tiles = [sampler((first + j) * self.num_shards + self.shard_index)
                 for j in range(self.per_draw)]
        return tuple(np.stack(parts) for parts in zip(*tiles))


def _tile_buffer(tile_in, tile_out, channels, batch_size, per_draw, budget, images) -> int:
    tile_bytes = tile_in * tile_in * channels * 4 + tile_out * tile_out * 8
    cap = min(TILE_SHUFFLE_BYTES, budget // 4 if budget else TILE_SHUFFLE_BYTES)
    most = min(cap // tile_bytes, MAX_SHUFFLE_TILES, per_draw * images)
    return int(max(most, 2 * batch_size, per_draw))


def _train_dataset(items: StreamedItems, *, tile_size, batch_size, depth=4, padding="same",
                   augment: AugmentConfig | None = None, spec=None, weight_map=None, seed=0,
                   deterministic=True, num_shards=1, shard_index=0, rare_classes=(),
                   rare_share=0.0, shuffle_buffer: int | None = None) -> tf.data.Dataset:
    bundle, source, split = items.bundle, items.source, items.split
    if not items:
        raise ValueError("train_dataset needs at least one image")
    tile_in, tile_out = tile_geometry(tile_size, depth, padding)
    spec = spec or bundle.spec
    per_draw = tiles_per_draw(items.sizes(), tile_out)
    channels = bundle.in_channels
    # Each worker says which images or shards it reads (on its own stderr).
    log = (lambda message: print(message, file=sys.stderr, flush=True)) if num_shards > 1 else None
    keys, key_types = source.train_keys(split, tile_out, per_draw, int(seed), num_shards,
                                        shard_index, log)
    tiler = _DrawTiles(bundle, source.decode_key(split), tile_in, tile_out, augment,
                       weight_map or bundle.weight_config, spec, seed, tuple(rare_classes),
                       rare_share, per_draw, num_shards, shard_index)
    cv2.setNumThreads(1)  # tf.data runs the draws in parallel already

    def load(draw, key):
        image, label, weight = tf.numpy_function(tiler, [draw, *key],
                                                 [tf.float32, tf.int32, tf.float32], stateful=False)
        image.set_shape((per_draw, tile_in, tile_in, channels))
        label.set_shape((per_draw, tile_out, tile_out))
        weight.set_shape((per_draw, tile_out, tile_out))
        return image, label, weight

    ds = keys.enumerate().map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.unbatch()
    if shuffle_buffer is None:
        shuffle_buffer = _tile_buffer(tile_in, tile_out, channels, batch_size, per_draw,
                                      bundle.extras.get("data_budget"),
                                      max(1, len(items) // num_shards))
    if shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=int(seed) + 2, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_stream_options(deterministic, bundle))


def _val_dataset(items: StreamedItems, *, tile_size, batch_size, depth=4, padding="same",
                 ignore_index=255, max_tiles=None) -> tf.data.Dataset:
    bundle, source, split = items.bundle, items.source, items.split
    if not items:
        raise ValueError("val_dataset needs at least one image")
    tile_in, tile_out = tile_geometry(tile_size, depth, padding)
    sizes = items.sizes() if source.kind == "folder" else None
    n = len(items)
    total = sum(_grid_tiles(h, w, tile_out) for h, w in (sizes or source.sizes(split)))
    stride = 1 if max_tiles is None or total <= max_tiles else math.ceil(total / max(1, max_tiles))
    keep = list(range(0, n, stride))
    decode = source.decode_key(split)
    channels = bundle.in_channels

    def cut(*key):
        try:
            item = bundle.make_item(*decode(*key))
        except DatasetError as err:
            raise ValueError(_MARK + str(err) + _MARK) from None
        h, w = item.label.shape
        tiles = [_val_tile(item, top, left, tile_in, tile_out, ignore_index)
                 for top in grid(h, tile_out) for left in grid(w, tile_out)]
        return tuple(np.stack(parts) for parts in zip(*tiles))

    def load(*key):
        image, label, weight = tf.numpy_function(cut, list(key), [tf.float32, tf.int32, tf.float32],
                                                 stateful=False)
        image.set_shape((None, tile_in, tile_in, channels))
        label.set_shape((None, tile_out, tile_out))
        weight.set_shape((None, tile_out, tile_out))
        return image, label, weight

    ds = source.val_keys(split, keep, stride).map(load, num_parallel_calls=tf.data.AUTOTUNE,
                                          deterministic=True)
    ds = ds.unbatch().batch(batch_size)
    known = _kept_tiles(source, split, sizes, keep, tile_out)
    if known is not None:  # Keras then knows where an epoch of validation ends
        ds = ds.apply(tf.data.experimental.assert_cardinality(math.ceil(known / batch_size)))
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_stream_options(True, bundle))


def _kept_tiles(source, split, sizes, keep, tile_out) -> int | None:
    """Validation tiles of the kept images, when the headers say it for sure."""
    if source.kind == "folder":
        if any(s.page is not None for s in source.splits[split]):
            return None  # a stack's pages are assumed to have its first page's size
        return sum(_grid_tiles(*sizes[i], tile_out) for i in keep)
    histogram = source.meta["splits"][split]["sizes"]
    if len(histogram) == 1:
        h, w, _ = histogram[0]
        return len(keep) * _grid_tiles(h, w, tile_out)
    if len(keep) == source.count(split):
        return sum(n * _grid_tiles(h, w, tile_out) for h, w, n in histogram)
    return None


def _stream_options(deterministic: bool, bundle) -> tf.data.Options:
    options = _options(deterministic)
    budget = bundle.extras.get("data_budget")
    if budget:  # what tf.data's autotuned prefetch buffers may hold
        options.autotune.ram_budget = int(min(max(budget // 4, AUTOTUNE_RAM[0]), AUTOTUNE_RAM[1]))
    return options


@contextlib.contextmanager
def data_errors(bundle):
    """Turns a streamed pipeline's read errors into a :class:`DatasetError`
    naming the file (or the shard and the record)."""
    try:
        yield
    except tf.errors.DataLossError:
        source = getattr(bundle, "source", None)
        if isinstance(source, _ShardSource):
            raise DatasetError(explain_data_loss(source.root, source.meta)) from None
        raise
    except tf.errors.OpError as err:
        found = re.search(f"{_MARK}(.*?){_MARK}", str(err), re.S)
        if found:
            raise DatasetError(found.group(1)) from None
        raise


# --------------------------------------------------------------------------- choosing
def open_data(root, *, val_fraction: float = 0.2, seed: int = 0, num_classes: int | None = None,
              ignore_index: int = 255, weight_map: WeightMapConfig | None = None,
              memory_budget: str = "auto", data_path: str = "auto", log=print) -> DataBundle:
    """A dataset folder or shard folder, in memory or streamed (see the module's docstring).

    Args:
        root: a dataset folder, or a shard folder written by ``unet-tf pack``
            (recognised by its ``dataset.json``).
        val_fraction, seed, num_classes, ignore_index, weight_map: as for
            :func:`unet_tf.data.pipeline.load_data` (a shard folder keeps the
            splits and labels it was packed with).
        memory_budget: ``--memory-budget``: "auto" or a size such as "8G".
        data_path: "auto" (by the budget), "stream" or "memory".
        log: where the line that says which path was taken goes.

    Returns:
        A :class:`DataBundle` in memory, or a :class:`StreamBundle`.

    Raises:
        ValueError: one image does not fit in the data's share of ``--memory-budget``.
        unet_tf.errors.DatasetError: the data has problems (each naming its file).
    """
    if data_path not in DATA_PATHS:
        raise ValueError(f"--data-path {data_path!r}: expected one of {', '.join(DATA_PATHS)}")
    cfg = weight_map or WeightMapConfig()
    budget, why = data_budget(memory_budget)
    root = str(root)
    packed = is_shard_folder(root)
    if packed:
        meta = read_meta(root)
        problems = shard_problems(root, meta)
        if problems:
            raise DatasetError(problems)
        need, largest, most, count = _shard_footprint(meta)
        where = "from the shards' dataset.json"
    else:
        if is_unfinished_pack(root):
            raise DatasetError(f"{root}: an unfinished pack (no dataset.json yet); run unet-tf pack "
                               "again with the same arguments to finish it")
        survey = survey_folder(Path(root))
        need, sample, most = survey.footprint()
        largest = None if sample is None else (
            f"{sample.image_path}, {survey.headers[sample].height}x{survey.headers[sample].width}"
            f"x{survey.headers[sample].channels} {survey.headers[sample].dtype}")
        count = len(survey.labelled())
        where = "from the file headers"
    if most > budget:
        raise ValueError(f"--memory-budget {memory_budget}: one image ({largest}) takes about "
                         f"{format_bytes(most)} once decoded (pixels, labels, weight map, instance "
                         f"ids), more than the data may use ({format_bytes(budget)}: {why}); give a "
                         f"budget of at least {format_bytes(math.ceil(most / DATA_MEMORY_SHARE))}")
    choice = data_path if data_path != "auto" else ("memory" if need <= budget else "stream")
    facts = (f"{count} labelled images take about {format_bytes(need)} once decoded (pixels, "
             f"labels, weight maps and instance ids, {where}); the data may use "
             f"{format_bytes(budget)} ({why})")
    if data_path == "auto":
        reason = "they fit: kept in memory" if choice == "memory" else "they do not fit: streamed"
    else:
        reason = f"--data-path {data_path}: " + ("kept in memory" if choice == "memory" else "streamed")
        if choice == "memory" and need > budget:
            reason += " although they do not fit"
    if packed:
        log(f"Data: {facts}; {reason}" + (" from the shards (interleaved reads)"
                                          if choice == "stream" else "") + ".")
        return (_load_shards(root, meta, cfg) if choice == "memory"
                else _stream_shards(root, meta, cfg, budget, log))
    log(f"Data: {facts}; {reason}" + (" from the folder (each image read, decoded and given its "
                                      "weight map when its tiles are cut)"
                                      if choice == "stream" else "") + ".")
    if choice == "memory":
        return load_data(root, val_fraction=val_fraction, seed=seed, num_classes=num_classes,
                         ignore_index=ignore_index, weight_map=cfg)
    return _stream_folder(survey, val_fraction, seed, num_classes, ignore_index, cfg, budget, log)


def _shard_footprint(meta: dict):
    norm = meta["normalisation"]
    need, most, count, largest = 0, 0, 0, None
    for split, info in meta["splits"].items():
        for h, w, n in info["sizes"]:
            size = footprint(Header(h, w, int(meta["channels"]), norm.get("dtype", "uint8")))
            need += size * n
            count += n
            if size > most:
                most, largest = size, f"{split} {h}x{w}x{meta['channels']} {norm.get('dtype')}"
    return need, largest, most, count


def _shard_norm(meta: dict) -> dict:
    norm = meta["normalisation"]
    return {k: norm[k] for k in ("scheme", "scale", "dtype", "bits")}


def _load_shards(root: str, meta: dict, cfg: WeightMapConfig) -> DataBundle:
    """Every record of a shard folder decoded into memory."""
    spec = LabelSpec.from_dict(meta["labels"])
    norm = _shard_norm(meta)
    items = {split: [] for split in ("train", "val", "test")}
    for split in items:
        for file, index, raw in iter_records(shard_files(root, meta, split)):
            record = decode_record(raw, f"{file} record {index}")
            items[split].append(_make_item(record.name, record.image, record.label,
                                           record.instances, spec, norm, cfg))
    num_classes = 1 if spec.num_labels <= 2 else spec.num_labels
    bundle = DataBundle(items["train"], items["val"], items["test"], spec, num_classes,
                        int(meta["channels"]), float(norm["scale"]), spec.ignore_index, root,
                        normalisation=norm)
    bundle.extras["val_split"] = "shards"
    return bundle


def _stream_shards(root: str, meta: dict, cfg: WeightMapConfig, budget: int, log) -> StreamBundle:
    source = _ShardSource(root, meta)
    spec = source.spec
    norm = _shard_norm(meta)
    bundle = StreamBundle([], [], [], spec, 1 if spec.num_labels <= 2 else spec.num_labels,
                          source.channels, float(norm["scale"]), spec.ignore_index, root,
                          normalisation=norm, source=source, weight_config=cfg)
    bundle.extras.update(val_split="shards", data_budget=budget, log=log)
    return bundle


def _stream_folder(survey, val_fraction, seed, num_classes, ignore_index, cfg, budget,
                   log) -> StreamBundle:
    from .split import train_and_val
    scan = scan_folder(survey.root, num_classes=num_classes, ignore_index=ignore_index,
                       max_masks=scan_module.MAX_SCANNED_MASKS, survey=survey)
    for warning in scan.warnings:
        log(f"Warning: {warning}")
    train, val = train_and_val(scan.samples, val_fraction, seed)
    if not train:
        raise DatasetError(f"{survey.root}: no labelled training images found")
    test = [s for s in scan.samples.get("test", []) if s.mask_path is not None]
    source = _FolderSource(scan, {"train": train, "val": val, "test": test})
    log(f"Streaming {len(train)} training and {len(val)} validation images: headers of every "
        f"file read, labels inferred from {scan.masks_checked} masks spread over the dataset; "
        "each file is checked when it is read")
    norm = _folder_norm(source, train)
    spec = scan.spec
    bundle = StreamBundle([], [], [], spec, 1 if spec.num_labels <= 2 else spec.num_labels,
                          source.channels, float(norm["scale"]), ignore_index, str(survey.root),
                          normalisation=norm, source=source, weight_config=cfg)
    bundle.extras.update(val_split="folder" if scan.samples.get("val") else "held_out",
                         data_budget=budget, log=log)
    return bundle


def _folder_norm(source: _FolderSource, train) -> dict:
    """The scale normalisation: dtypes from the headers, the largest value from
    up to NORMALISATION_IMAGES images when they are not 8-bit."""
    dtypes = sorted({source.header(s).dtype for s in train})
    if dtypes == ["uint8"]:
        return scale_norm_from(dtypes, 255.0)
    peak = 0.0
    for i in spread(len(train), NORMALISATION_IMAGES):
        _, image, _, _ = source.read("train", i)
        peak = max(peak, float(image.max()) if image.size else 0.0)
    return scale_norm_from(dtypes, peak)
