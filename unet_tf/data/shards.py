"""A dataset packed once into TFRecord shards: ``unet-tf pack DATA --out SHARDS``.

A shard folder holds::

    dataset.json                        format marker and version, label spec,
                                        normalisation facts, splits, shard list
    train-00000-of-00012.tfrecord       records of about --shard-size bytes each
    val-00000-of-00003.tfrecord

Each record (a ``tf.train.Example``) holds one sample, decoded and checked
once at pack time: ``name``, ``split``, ``height``, ``width``, ``channels``,
``image`` (PNG, 8 or 16 bits as stored; other types as zlib-compressed
``.npy``), ``label`` (the class indices as PNG, void = the spec's ignore
value) and ``instances`` (16-bit PNG ids, empty without instance maps), each
with its ``*_format``. Colours are stored in RGB order, so any PNG reader sees
the right colours.

``dataset.json`` is written last: a folder without it is an unfinished pack,
which ``pack`` resumes. Each shard is written under a temporary name and
renamed when complete; an interrupted pack removes its temporary files, and
the next one removes any a killed process left, skips the complete shards
and writes the rest (the assignment of samples to shards is fixed in
``.pack/plan.json`` at the start). Every path goes through ``tf.io.gfile``,
so ``--out gs://bucket/shards`` works where TensorFlow's file-system plugins
are installed.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import queue
import threading
import zlib
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf

from ..errors import DatasetError
from .check import check_dataset
from .labels import LabelSpec, load_sample, read_instances
from .samples import Sample
from .split import train_and_val

__all__ = ["FORMAT", "FORMAT_VERSION", "META_FILE", "DEFAULT_SHARD_SIZE", "Record", "PackResult",
           "pack", "is_shard_folder", "read_meta", "decode_record", "encode_record",
           "iter_records", "shard_files", "shard_problems", "format_summary"]

logger = logging.getLogger(__name__)

FORMAT = "unet-tf-shards"
#: Bumped whenever a record or dataset.json changes in a way older readers
#: cannot read; a reader refuses other versions by name.
FORMAT_VERSION = 1
META_FILE = "dataset.json"
#: Where an unfinished pack keeps its plan and the statistics of finished shards.
WORK_DIR = ".pack"
#: Shards of this size (before the last one of a split): large enough that
#: opening a file is a small share of reading it, small enough that a few are
#: read in parallel and that workers of a multi-worker run get several each.
DEFAULT_SHARD_SIZE = 150 * 1024**2
#: Samples encoded up front to estimate the size of a record from its files' sizes.
SIZE_PROBES = 8
SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- paths
def _join(*parts: str) -> str:
    return posixpath.join(*[str(p) for p in parts]) if "://" in str(parts[0]) else \
        os.path.join(*[str(p) for p in parts])


def is_shard_folder(path) -> bool:
    """True when ``path`` holds a ``dataset.json`` written by ``unet-tf pack``."""
    meta = _join(path, META_FILE)
    try:
        if not tf.io.gfile.exists(meta):
            return False
        with tf.io.gfile.GFile(meta, "r") as f:
            return json.loads(f.read()).get("format") == FORMAT
    except (ValueError, AttributeError, tf.errors.OpError):
        return False


def is_unfinished_pack(path) -> bool:
    """True when ``path`` holds the plan of a pack that did not finish."""
    try:
        return (tf.io.gfile.exists(_join(path, WORK_DIR, "plan.json"))
                and not tf.io.gfile.exists(_join(path, META_FILE)))
    except tf.errors.OpError:
        return False


def read_meta(path) -> dict:
    """``dataset.json`` of a shard folder, checked for its format version.

    Raises:
        DatasetError: not a shard folder, damaged, or written by another
            version of the format (the message says which and what to do).
    """
    meta_path = _join(path, META_FILE)
    try:
        with tf.io.gfile.GFile(meta_path, "r") as f:
            meta = json.loads(f.read())
    except tf.errors.NotFoundError:
        raise DatasetError(f"{path}: no {META_FILE}; not a shard folder written by unet-tf pack "
                           "(or its pack did not finish: run unet-tf pack again)") from None
    except ValueError as err:
        raise DatasetError(f"{meta_path}: not valid JSON ({err}); the shard folder is damaged, "
                           "pack the dataset again") from None
    if meta.get("format") != FORMAT:
        raise DatasetError(f"{meta_path}: not a {FORMAT} file (format {meta.get('format')!r})")
    version = meta.get("version")
    if version != FORMAT_VERSION:
        raise DatasetError(f"{path}: shards of format version {version}, written by "
                           f"{meta.get('written_by', 'another version of unet-tf')}; this unet-tf "
                           f"reads version {FORMAT_VERSION}. Pack the dataset again with this "
                           "version (unet-tf pack DATA --out NEW_FOLDER).")
    return meta


def shard_files(path, meta: dict, split: str) -> list[str]:
    """The shard files of a split, in order."""
    return [_join(path, s["file"]) for s in meta["shards"] if s["split"] == split]


# --------------------------------------------------------------------------- records
@dataclass
class Record:
    """One decoded record."""
    name: str
    split: str
    image: np.ndarray             # (H, W, C) as stored, RGB order
    label: np.ndarray             # (H, W) int32 class indices
    instances: np.ndarray | None  # (H, W) int32 or None


def _encode_array(arr: np.ndarray) -> tuple[bytes, str]:
    """PNG for 8/16-bit arrays of 1, 3 or 4 channels (RGB stored as RGB), else zlib'd .npy."""
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    if arr.dtype in (np.uint8, np.uint16) and channels in (1, 3, 4):
        bgr = arr if channels == 1 else arr[..., [2, 1, 0, 3][:channels]]
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
        if ok:
            return buf.tobytes(), "png"
    out = io.BytesIO()
    np.save(out, np.ascontiguousarray(arr), allow_pickle=False)
    return zlib.compress(out.getvalue(), 1), "npy"


def _decode_array(data: bytes, fmt: str, where: str, what: str) -> np.ndarray:
    try:
        if fmt == "png":
            arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise ValueError("not a PNG")
            if arr.ndim == 3:
                arr = np.ascontiguousarray(arr[..., [2, 1, 0, 3][:arr.shape[2]]])
            return arr
        if fmt == "npy":
            return np.load(io.BytesIO(zlib.decompress(data)), allow_pickle=False)
    except (ValueError, zlib.error, OSError, cv2.error) as err:
        raise DatasetError(f"{where}: its {what} cannot be decoded ({err}); the shard is "
                           "corrupt, pack the dataset again") from None
    raise DatasetError(f"{where}: unknown {what} format {fmt!r}; pack the dataset again")


def _label_array(label: np.ndarray) -> np.ndarray:
    lo, hi = (int(label.min()), int(label.max())) if label.size else (0, 0)
    if lo >= 0 and hi <= 255:
        return label.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return label.astype(np.uint16)
    return label.astype(np.int32)


def encode_record(name: str, split: str, image: np.ndarray, label: np.ndarray,
                  instances: np.ndarray | None) -> bytes:
    """One serialised ``tf.train.Example`` (see the module's docstring)."""
    image = image if image.ndim == 3 else image[..., None]
    img, img_fmt = _encode_array(image)
    lab, lab_fmt = _encode_array(_label_array(label))
    inst, inst_fmt = b"", ""
    if instances is not None:
        ids = instances.astype(np.uint16) if instances.size == 0 or (
            instances.min() >= 0 and instances.max() <= 65535) else instances.astype(np.int32)
        inst, inst_fmt = _encode_array(ids)

    def b(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def i(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    feature = {"name": b(name.encode()), "split": b(split.encode()),
               "height": i(image.shape[0]), "width": i(image.shape[1]), "channels": i(image.shape[2]),
               "image": b(img), "image_format": b(img_fmt.encode()),
               "label": b(lab), "label_format": b(lab_fmt.encode()),
               "instances": b(inst), "instances_format": b(inst_fmt.encode())}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def decode_record(raw: bytes, where: str) -> Record:
    """A record back as arrays.

    Raises:
        DatasetError: naming ``where`` (the shard and the record number) when
            the record is not one ``pack`` writes or its arrays do not decode.
    """
    try:
        example = tf.train.Example.FromString(raw)
        f = example.features.feature

        def text(key):
            return f[key].bytes_list.value[0].decode() if f[key].bytes_list.value else ""

        def data(key):
            return f[key].bytes_list.value[0] if f[key].bytes_list.value else b""

        name, split = text("name"), text("split")
        shape = tuple(int(f[k].int64_list.value[0]) for k in ("height", "width", "channels"))
        img_fmt, lab_fmt, inst_fmt = text("image_format"), text("label_format"), \
            text("instances_format")
        image_bytes, label_bytes, inst_bytes = data("image"), data("label"), data("instances")
    except Exception as err:  # noqa: BLE001 - a protobuf error or a missing field
        raise DatasetError(f"{where}: not a record of unet-tf pack ({type(err).__name__}: {err}); "
                           "the shard is corrupt, pack the dataset again") from None
    image = _decode_array(image_bytes, img_fmt, where, "image")
    if image.ndim == 2:
        image = image[..., None]
    label = _decode_array(label_bytes, lab_fmt, where, "label").astype(np.int32)
    instances = None
    if inst_fmt:
        instances = _decode_array(inst_bytes, inst_fmt, where, "instance map").astype(np.int32)
    if image.shape != shape or label.shape != shape[:2] or (
            instances is not None and instances.shape != shape[:2]):
        raise DatasetError(f"{where}: image {image.shape}, label {label.shape} do not have the "
                           f"recorded size {shape}; the shard is corrupt, pack the dataset again")
    return Record(name, split, image, label, instances)


def iter_records(files):
    """``(file, record number, serialised record)`` of every record of ``files``, in order.

    Raises:
        DatasetError: a truncated or corrupt shard, naming it and the record.
    """
    for file in files:
        index = 0
        try:
            for raw in tf.data.TFRecordDataset(file):
                yield file, index, raw.numpy()
                index += 1
        except tf.errors.DataLossError as err:
            raise DatasetError(_loss_message(file, index, err)) from None
        except tf.errors.NotFoundError:
            raise DatasetError(f"{file}: shard not found; the shard folder is incomplete, pack "
                               "the dataset again") from None


def _loss_message(file: str, index: int, err) -> str:
    what = "truncated" if "truncated" in str(err).lower() else "corrupt"
    return (f"{file}: record {index} is {what} ({str(err.message).split(' [Op:')[0].strip()}); "
            f"the shard is damaged: pack the dataset again (or restore the file)")


def scan_shard(file: str) -> tuple[int, str | None]:
    """Records read from ``file`` before the first error, and that error's message (None: no error)."""
    index = 0
    try:
        for _ in tf.data.TFRecordDataset(file):
            index += 1
    except tf.errors.DataLossError as err:
        return index, _loss_message(file, index, err)
    except tf.errors.NotFoundError:
        return 0, f"{file}: shard not found; the shard folder is incomplete, pack the dataset again"
    return index, None


def shard_problems(path, meta: dict, read: bool = False) -> list[str]:
    """Missing shards and shards whose size is not the recorded one (truncated);
    with ``read``, every record is read too (checksums, record counts)."""
    problems = []
    for shard in meta["shards"]:
        file = _join(path, shard["file"])
        try:
            size = tf.io.gfile.stat(file).length
        except tf.errors.NotFoundError:
            problems.append(f"{file}: shard not found; the shard folder is incomplete, pack the "
                            "dataset again")
            continue
        if size != shard["bytes"]:
            what = "truncated" if size < shard["bytes"] else "longer than written"
            _, error = scan_shard(file) if read or size < shard["bytes"] else (0, None)
            problems.append(error or f"{file}: {size} bytes, {META_FILE} records {shard['bytes']}: "
                            f"the shard is {what}; pack the dataset again (or restore the file)")
            continue
        if read:
            count, error = scan_shard(file)
            if error:
                problems.append(error)
            elif count != shard["records"]:
                problems.append(f"{file}: {count} records, {META_FILE} records {shard['records']}; "
                                "pack the dataset again")
    return problems


def explain_data_loss(path, meta: dict) -> str:
    """After a checksum error somewhere in a shard folder: which shard and record."""
    for shard in meta["shards"]:
        _, error = scan_shard(_join(path, shard["file"]))
        if error:
            return error
    return f"{path}: a shard failed its checksum while it was read; pack the dataset again"


# --------------------------------------------------------------------------- pack
@dataclass
class PackResult:
    """What :func:`pack` wrote: the folder, its ``dataset.json`` and the shards
    written now and kept from an interrupted pack."""
    out: str
    meta: dict
    written: int
    skipped: int
    already: bool = False


def _digest(assignment: dict) -> str:
    return hashlib.sha256(json.dumps(assignment, sort_keys=True).encode()).hexdigest()[:16]


def _file_bytes(sample: Sample) -> int:
    total = 0
    for path in (sample.image_path, sample.mask_path, sample.instance_path):
        if path is not None and path.is_file():
            total += path.stat().st_size
    return total


def _encode_sample(sample: Sample, split: str, spec: LabelSpec, rgb: bool):
    """The record of one sample and its statistics."""
    image, label = load_sample(sample, spec)
    if rgb and image.shape[-1] == 1:  # greyscale among RGB images (check-data warns)
        image = np.repeat(image, 3, axis=-1)
    instances = None
    if sample.instance_path is not None:
        instances = read_instances(sample.instance_path, sample.page)
    record = encode_record(sample.name, split, image, label, instances)
    counts = np.bincount(np.where(label == spec.ignore_index, spec.num_labels,
                                  np.clip(label, 0, spec.num_labels)).ravel(),
                         minlength=spec.num_labels + 1)
    stats = {"dtype": image.dtype.name, "peak": float(image.max()) if image.size else 0.0,
             "size": [int(image.shape[0]), int(image.shape[1])], "channels": int(image.shape[2]),
             "pixel_counts": counts.tolist(), "instances": instances is not None}
    return record, stats


def _plan(splits: dict[str, list[Sample]], shard_size: int, spec: LabelSpec, rgb: bool) -> dict:
    """Which samples go to which shard, by their files' sizes scaled by the
    ratio of record size to file size measured on a few samples."""
    probes = [(s, split) for split, group in splits.items() for s in group][:SIZE_PROBES]
    encoded = sum(len(_encode_sample(s, split, spec, rgb)[0]) for s, split in probes)
    on_disk = sum(_file_bytes(s) for s, _ in probes)
    ratio = encoded / on_disk if on_disk else 1.0
    shards = []
    for split, group in splits.items():
        chunks, current, size = [], [], 0.0
        for sample in group:
            estimate = max(_file_bytes(sample) * ratio, 1.0)
            if current and size + estimate > shard_size:
                chunks.append(current)
                current, size = [], 0.0
            current.append(sample.name)
            size += estimate
        if current:
            chunks.append(current)
        shards += [{"file": f"{split}-{i:05d}-of-{len(chunks):05d}.tfrecord", "split": split,
                    "samples": names} for i, names in enumerate(chunks)]
    return {"shards": shards}


def _read_json(path):
    with tf.io.gfile.GFile(path, "r") as f:
        return json.loads(f.read())


def _write_json(path, value) -> None:
    """Written under a temporary name and renamed: whole or not at all."""
    head, name = posixpath.split(str(path)) if "://" in str(path) else os.path.split(str(path))
    tmp = _join(head, f".{name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(value, indent=1) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


class _Stopped(Exception):
    """Another shard failed or the pack was interrupted."""


def _write_shard(out: str, shard: dict, samples: list[Sample], spec: LabelSpec, rgb: bool,
                 stop: threading.Event, progress: queue.Queue) -> dict:
    final = _join(out, shard["file"])
    tmp = _join(out, f".{shard['file']}.tmp-{os.getpid()}-{threading.get_ident()}")
    stats = {"file": shard["file"], "split": shard["split"], "records": 0, "dtypes": [],
             "peak": 0.0, "sizes": {}, "channels": [], "pixel_counts": None, "instances": 0}
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for sample in samples:
                if stop.is_set():
                    raise _Stopped()
                record, s = _encode_sample(sample, shard["split"], spec, rgb)
                writer.write(record)
                stats["records"] += 1
                stats["dtypes"] = sorted(set(stats["dtypes"]) | {s["dtype"]})
                stats["peak"] = max(stats["peak"], s["peak"])
                key = f"{s['size'][0]}x{s['size'][1]}"
                stats["sizes"][key] = stats["sizes"].get(key, 0) + 1
                stats["channels"] = sorted(set(stats["channels"]) | {s["channels"]})
                counts = np.asarray(s["pixel_counts"])
                stats["pixel_counts"] = (counts if stats["pixel_counts"] is None
                                         else stats["pixel_counts"] + counts)
                stats["instances"] += int(s["instances"])
                progress.put(1)
        stats["pixel_counts"] = [int(c) for c in stats["pixel_counts"]]
        stats["bytes"] = tf.io.gfile.stat(tmp).length
        tf.io.gfile.rename(tmp, final, overwrite=True)
        _write_json(_join(out, WORK_DIR, f"{shard['file']}.json"), stats)
        return stats
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
        raise


def _remove_stale(out: str) -> None:
    """Temporary files a killed pack left behind."""
    for name in tf.io.gfile.listdir(out):
        if name.startswith(".") and ".tmp-" in name:
            tf.io.gfile.remove(_join(out, name))
    work = _join(out, WORK_DIR)
    if tf.io.gfile.exists(work):
        for name in tf.io.gfile.listdir(work):
            if ".tmp-" in name:
                tf.io.gfile.remove(_join(work, name))


def pack(data, out, *, shard_size: int = DEFAULT_SHARD_SIZE, val_fraction: float = 0.2,
         seed: int = 0, num_classes: int | None = None, ignore_index: int = 255,
         workers: int | None = None, progress: bool = False, log=print) -> PackResult:
    """Checks the dataset folder ``data`` and writes it as TFRecord shards in ``out``.

    The whole dataset is checked first (``check_dataset``: every problem, each
    naming its file). The validation split is the folder's ``val/`` split or
    ``val_fraction`` of the training images held out with ``seed`` (the rule
    of :func:`unet_tf.data.split.train_and_val`), fixed in the shards: training
    from them uses these splits. Shards are written ``workers`` at a time
    (threads; default: the CPU count).

    An interrupted pack is resumed by running it again with the same
    arguments: complete shards are kept, the others written.

    Returns:
        The :class:`PackResult`.

    Raises:
        DatasetError: the dataset has problems, or ``out`` holds the unfinished
            pack of another dataset.
        FileExistsError: ``out`` is a non-empty folder that is not an unfinished pack.
    """
    out = str(out)
    report = check_dataset(data, num_classes=num_classes, ignore_index=ignore_index)
    for warning in report.warnings:
        log(f"Warning: {warning}")
    if not report.ok or report.spec is None:
        raise DatasetError(report.problems or [f"{data}: could not infer the label encoding."])
    spec = report.spec
    train, val = train_and_val(report.samples, val_fraction, seed)
    test = [s for s in report.samples.get("test", []) if s.mask_path is not None]
    splits = {name: group for name, group in (("train", train), ("val", val), ("test", test)) if group}
    if not train:
        raise DatasetError(f"{data}: no labelled training images found")
    rgb = {1, 3} <= {c for info in report.summary["splits"].values() for c in info["channels"]}
    by_name = {(split, s.name): s for split, group in splits.items() for s in group}
    options = {"source": str(report.root.resolve()) if "://" not in str(report.root) else str(report.root), "val_fraction": val_fraction, "seed": seed,
               "num_classes": num_classes, "ignore_index": ignore_index, "shard_size": shard_size,
               "samples": _digest({k: sorted(s.name for s in g) for k, g in splits.items()})}

    if tf.io.gfile.exists(_join(out, META_FILE)):
        meta = read_meta(out)
        if meta.get("options") == options:
            log(f"{out}: already packed ({sum(s['records'] for s in meta['shards'])} records); "
                "nothing to do")
            return PackResult(out, meta, 0, len(meta["shards"]), already=True)
        raise FileExistsError(f"--out {out}: holds shards packed from {meta.get('source')} with other "
                              "options; choose another folder")
    work = _join(out, WORK_DIR)
    plan_path = _join(work, "plan.json")
    if tf.io.gfile.exists(plan_path):
        plan = _read_json(plan_path)
        if plan.get("options") != options:
            raise DatasetError(f"--out {out}: holds an unfinished pack of {plan['options']['source']} "
                               "with other options or other files; remove the folder or choose "
                               "another --out")
        _remove_stale(out)
    else:
        if tf.io.gfile.exists(out) and tf.io.gfile.listdir(out):
            raise FileExistsError(f"--out {out}: folder exists and is not empty; choose a new folder")
        tf.io.gfile.makedirs(work)
        plan = {**_plan(splits, shard_size, spec, rgb), "options": options}
        _write_json(plan_path, plan)

    done = {}
    for shard in plan["shards"]:
        stats_path = _join(work, f"{shard['file']}.json")
        if tf.io.gfile.exists(stats_path) and tf.io.gfile.exists(_join(out, shard["file"])):
            done[shard["file"]] = _read_json(stats_path)
    todo = [s for s in plan["shards"] if s["file"] not in done]
    if done:
        log(f"Resuming: {len(done)} of {len(plan['shards'])} shards are complete, writing the "
            f"other {len(todo)}")
    total = sum(len(s["samples"]) for s in todo)
    _run_writers(out, todo, by_name, spec, rgb, workers, progress, total, done)

    meta = _meta(out, report, spec, plan, done, splits, options)
    _write_json(_join(out, META_FILE), meta)
    for name in tf.io.gfile.listdir(work):
        tf.io.gfile.remove(_join(work, name))
    tf.io.gfile.rmtree(work)
    return PackResult(out, meta, len(todo), len(plan["shards"]) - len(todo))


def _run_writers(out, todo, by_name, spec, rgb, workers, progress, total, done) -> None:
    import click
    stop = threading.Event()
    updates: queue.Queue = queue.Queue()
    workers = max(1, workers or os.cpu_count() or 1)
    bar = click.progressbar(length=total, label="Packing", file=None if progress else io.StringIO())
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        with bar:
            pending = {pool.submit(_write_shard, out, shard,
                                   [by_name[(shard["split"], n)] for n in shard["samples"]],
                                   spec, rgb, stop, updates) for shard in todo}
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                while not updates.empty():
                    bar.update(updates.get())
                for future in finished:
                    stats = future.result()  # raises the first failure
                    done[stats["file"]] = stats
    except BaseException:
        stop.set()  # the other writers stop at their next record and remove their files
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _meta(out, report, spec: LabelSpec, plan: dict, done: dict, splits: dict, options: dict) -> dict:
    from .pipeline import scale_norm_from
    shards = [dict(file=s["file"], split=s["split"], records=done[s["file"]]["records"],
                   bytes=done[s["file"]]["bytes"]) for s in plan["shards"]]
    split_info = {}
    for split in splits:
        stats = [done[s["file"]] for s in plan["shards"] if s["split"] == split]
        sizes: dict[str, int] = {}
        for st in stats:
            for key, n in st["sizes"].items():
                sizes[key] = sizes.get(key, 0) + n
        split_info[split] = {
            "images": sum(st["records"] for st in stats),
            "shards": len(stats),
            "bytes": sum(st["bytes"] for st in stats),
            "sizes": sorted([[int(k.split("x")[0]), int(k.split("x")[1]), n]
                             for k, n in sizes.items()]),
            "instances": sum(st["instances"] for st in stats),
            "pixel_counts": np.sum([st["pixel_counts"] for st in stats], axis=0).tolist(),
        }
    train = [done[s["file"]] for s in plan["shards"] if s["split"] == "train"]
    dtypes = sorted({d for st in train for d in st["dtypes"]})
    peak = max(st["peak"] for st in train)
    norm = scale_norm_from(dtypes, peak)
    channels = sorted({c for st in done.values() for c in st["channels"]})
    return {
        "format": FORMAT, "version": FORMAT_VERSION, "written_by": f"unet-tf {_version()}",
        "source": options["source"], "options": options,
        "labels": spec.to_dict(), "channels": channels[-1],
        "normalisation": {**norm, "peak": peak, "dtypes": dtypes},
        "val_split": "folder" if report.samples.get("val") else "held_out",
        "splits": split_info, "shards": shards,
    }


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("unet-tf")
    except Exception:  # noqa: BLE001 - not installed as a package
        return "unknown"


# --------------------------------------------------------------------------- summary
def format_summary(path, read: bool = True) -> tuple[str, bool]:
    """The ``check-data`` text of a shard folder and whether it is usable.

    Checks that every shard is there with its recorded size, and with
    ``read`` reads every record once (checksums, counts; nothing is decoded).
    """
    from .check import _label_lines, _table
    meta = read_meta(path)
    norm = meta["normalisation"]
    lines = [f"Shards: {path} (format {meta['format']} version {meta['version']}, "
             f"{meta.get('written_by', '')}, packed from {meta.get('source')})"]
    rows = [["split", "images", "shards", "size (HxW)", "MB"]]
    for split, info in meta["splits"].items():
        sizes = info["sizes"]
        shown = ", ".join(f"{h}x{w}" for h, w, _ in sizes[:3]) + (" .." if len(sizes) > 3 else "")
        rows.append([split, str(info["images"]), str(info["shards"]), shown,
                     f"{info['bytes'] / 1e6:.1f}"])
    lines += _table(rows, right={1, 2, 4})
    lines.append(f"Images: {meta['channels']} channel(s), {', '.join(norm.get('dtypes', []))}, "
                 f"{norm.get('bits')} bits (largest value {norm.get('peak'):g}); validation: "
                 f"{'the folder' + chr(39) + 's val split' if meta['val_split'] == 'folder' else 'held out at pack time (fraction ' + str(meta['options']['val_fraction']) + ', seed ' + str(meta['options']['seed']) + ')'}")
    label = {**meta["labels"], "pixel_counts": {k: v["pixel_counts"] for k, v in meta["splits"].items()}}
    lines += _label_lines(label)
    problems = shard_problems(path, meta, read=read)
    if problems:
        lines.append(f"{len(problems)} problem{'s' * (len(problems) != 1)} found:")
        lines += [f"  {i}. {p}" for i, p in enumerate(problems, 1)]
    else:
        lines.append("OK: every shard is complete" + (" and every record reads back." if read else "."))
    return "\n".join(lines), not problems
