"""``unet-tf evaluate`` as a library function: a model scored on a labelled dataset folder.

``evaluate_folder`` gives per-class dice and IoU (with their means over all
classes and over the foreground classes), pixel accuracy, and for binary and
instance data the object metrics of the instance output (the instance maps
``predict --instances`` writes): precision, recall, F1, AP = TP / (TP + FP +
FN) and panoptic quality at IoU 0.5, the mean AP over IoU 0.5:0.95, and what
became of the true objects (matched, split, merged, missed, false positives).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.check import load_dataset
from .data.labels import LabelSpec, format_hw, instance_problem, load_sample, read_instances
from .data.split import split_samples
from .data.weights import instances_from_mask
from .errors import DatasetError
from .files import atomic_write_json
from .inference import predict_tiled, prepare_image, to_labels
from .metrics import PixelCounts
from .objects import ObjectMetrics, object_diagnosis, to_instances
from .predict import check_instance_options
from .run import find_run, load_run
from .runtimes import load_runtime, resolve_model
from .tables import format_table

__all__ = ["evaluate_folder", "format_evaluation"]

#: The IoU at which objects are reported (the mean AP covers 0.5:0.95).
IOU_THRESHOLD = 0.5


# --------------------------------------------------------------------------- evaluate
def _held_out(model, data, splits: dict) -> list:
    """The images a run held out for validation, when ``model`` is that run's
    model and ``data`` its dataset without a val split: the names its record
    lists (older runs: the same split rule, fraction and seed again)."""
    if "val" in splits or not isinstance(model, (str, Path)) or find_run(model) is None:
        return []
    record = load_run(model)
    if not record.data_root or Path(record.data_root).resolve() != Path(data).resolve():
        return []
    pool = splits.get("train") or splits.get("all") or []
    if record.val_samples:
        names = set(record.val_samples)
        return [s for s in pool if s.name in names]
    if len(pool) < 2 or not record.val_fraction:
        return []
    return split_samples(pool, record.val_fraction, record.seed)[1]


def _pick_split(splits: dict, split: str | None, held_out: list = ()) -> tuple[str, list]:
    if split == "all":
        return "all", [s for group in splits.values() for s in group if s.mask_path is not None]
    labelled_test = any(s.mask_path is not None for s in splits.get("test", []))
    if held_out and (split == "val" or (split is None and not labelled_test)):
        return "held-out val", list(held_out)
    order = [split] if split else ["test", "val", "all", "train"]
    for name in order:
        samples = [s for s in splits.get(name, []) if s.mask_path is not None]
        if samples:
            return name, samples
    raise DatasetError(f"no labelled images in split {split or 'test/val/all'}; "
                          f"available: {sorted(splits)}")


def _where(sample) -> str:
    return f"{sample.mask_path}" if sample.page is None else f"{sample.mask_path} page {sample.page}"


@dataclass
class _Case:
    """One labelled image to score: its pixels as stored, its class indices
    (void = the spec's ignore value), its instance ids (None without them) and
    where it came from (for messages)."""
    name: str
    where: str
    image: np.ndarray
    truth: np.ndarray
    instances: np.ndarray | None
    instances_where: str = ""


def _folder_cases(samples, spec):
    """The cases of a dataset folder's samples, read one at a time."""
    for sample in samples:
        raw, truth = load_sample(sample, spec)
        instances = None
        if sample.instance_path is not None:
            instances = read_instances(sample.instance_path, sample.page)
            problem = instance_problem(sample, instances, truth, spec.ignore_index, spec.num_labels)
            if problem:
                raise DatasetError(problem)
        yield _Case(sample.name, _where(sample), raw, truth, instances,
                    str(sample.instance_path or _where(sample)))


def _shard_split(meta: dict, split: str | None) -> tuple[str, list[str]]:
    """The splits of a shard folder that ``split`` names (default: test, val, train)."""
    counts = {name: int(info.get("images", 0)) for name, info in meta["splits"].items()}
    if split == "all":
        return "all", [name for name, n in counts.items() if n]
    for name in [split] if split else ["test", "val", "train"]:
        if counts.get(name):
            return name, [name]
    raise DatasetError(f"no images in split {split or 'test/val/train'} of the shards; available: "
                       f"{sorted(name for name, n in counts.items() if n)}")


def _shard_cases(root: str, meta: dict, splits: list[str]):
    """The cases of a shard folder's splits, decoded one record at a time."""
    from .data.shards import decode_record, iter_records, shard_files
    files = [f for name in splits for f in shard_files(root, meta, name)]
    for file, index, raw in iter_records(files):
        record = decode_record(raw, f"{file} record {index}")
        yield _Case(record.name, f"{file} record {index} ({record.name})", record.image,
                    record.label, record.instances)


def _open_cases(model, data, split, num_classes):
    """``(split name, image count, label spec, cases)`` of a dataset folder or shard folder."""
    from .data.shards import is_shard_folder
    if is_shard_folder(data):
        from .data.shards import read_meta
        meta = read_meta(data)
        name, splits = _shard_split(meta, split)
        count = sum(int(meta["splits"][s]["images"]) for s in splits)
        return name, count, LabelSpec.from_dict(meta["labels"]), _shard_cases(str(data), meta, splits)
    splits, spec = load_dataset(data, num_classes=num_classes)
    name, samples = _pick_split(splits, split, _held_out(model, data, splits))
    return name, len(samples), spec, _folder_cases(samples, spec)


def _true_instances(case: _Case, spec, valid: np.ndarray, binary: bool):
    """The true objects of a case: its instance map where the dataset has one,
    else the connected components of a binary mask; None for multi-class masks
    without instance maps."""
    if case.instances is not None:
        return np.where(valid, case.instances, 0)
    if binary:
        return instances_from_mask(case.truth, 4, ignore_index=spec.ignore_index)
    return None


def _at_threshold(results: list[dict], mean_ap) -> dict:
    """The object numbers at :data:`IOU_THRESHOLD`, under their usual names."""
    r = next(r for r in results if abs(r["thresh"] - IOU_THRESHOLD) < 1e-9)
    return {"n_true": r["n_true"], "n_pred": r["n_pred"], "tp": r["tp"], "fp": r["fp"],
            "fn": r["fn"], "precision": r["precision"], "recall": r["recall"], "f1": r["f1"],
            "ap": r["accuracy"], "pq": r["panoptic_quality"],
            "mean_matched_iou": r["mean_matched_score"], "mean_ap": mean_ap}


def evaluate_folder(model, data, *, split=None, out=None, tile_size=None, threshold=0.5,
                    tta=False, min_size=15, seed_distance=5.0, instance_method="watershed") -> dict:
    """Score a model on a labelled dataset folder; writes and returns the JSON report.

    Args:
        model: A ``.keras`` file, run folder, SavedModel folder or ``.tflite`` file
            (or a loaded model / runtime).
        data: The dataset folder (any layout ``check-data`` knows), or a shard
            folder written by ``unet-tf pack`` (read one record at a time).
        split: Which images (see ``unet-tf evaluate --help``); default: test,
            val, the run's held-out images, all.
        out: JSON report path (default: ``evaluation.json`` beside the model).
        tile_size, tta: Tiled inference (see ``predict_tiled``).
        threshold: Foreground probability of binary models.
        min_size, seed_distance, instance_method: The instance maps scored,
            made as ``predict --instances`` makes them (``objects.to_instances``).

    Returns:
        The report: the pixel scores of ``PixelCounts.scores()`` (per class,
        ``dice``/``mean_iou`` over all classes, ``dice_foreground``/
        ``iou_foreground`` over classes 1..K-1), ``objects`` (matched / split
        / merged / missed / false positives summed over images, None without
        objects), ``object_metrics`` (counts summed over images, then
        precision, recall, f1, ap, pq at IoU 0.5, ``mean_ap`` over 0.5:0.95,
        ``by_threshold`` and the ``instances`` parameters), and ``per_image``
        (pixel accuracy, ``objects`` and ``object_metrics`` per image).

    Raises:
        DatasetError: Problems in the data (each naming its file), such as an
            instance map that does not match its mask, or a prediction whose
            size is not the mask's.
        ValueError: Bad instance parameters.
    """
    check_instance_options(min_size, seed_distance, instance_method)
    model = resolve_model(model)
    runtime = load_runtime(model)
    split_name, count, spec, cases = _open_cases(
        model, data, split, runtime.num_classes if runtime.num_classes > 1 else None)
    binary = runtime.num_classes == 1
    counts = PixelCounts(runtime.num_classes)
    object_metrics = ObjectMetrics()
    diagnosis = None
    per_image = []
    for case in cases:
        truth = case.truth
        probs = predict_tiled(runtime, prepare_image(case.image, runtime.in_channels,
                                                     runtime.input_scale),
                              tile_size=tile_size, tta=tta)
        pred = to_labels(probs, threshold).astype(np.int64)
        if pred.shape != truth.shape:
            raise DatasetError(f"{case.where}: the prediction is {format_hw(pred.shape)} but "
                               f"the mask {format_hw(truth.shape)} (HxW); the model's output "
                               "must cover the whole image.")
        valid = truth != spec.ignore_index
        try:
            img_tp = counts.add(truth, pred, valid)
        except ValueError as err:
            raise DatasetError(f"{case.where}: {err}") from None
        entry = {"name": case.name, "pixel_accuracy": float(img_tp.sum() / max(valid.sum(), 1))}
        true_inst = _true_instances(case, spec, valid, binary)
        if true_inst is not None:
            found = to_instances(probs, threshold=threshold, min_size=min_size,
                                 seed_distance=seed_distance, method=instance_method)
            found = np.where(valid, found, 0)
            try:
                results = object_metrics.update(true_inst, found, case.name)
                diag = object_diagnosis(true_inst, found, IOU_THRESHOLD)
            except ValueError as err:
                raise DatasetError(f"{case.instances_where or case.where}: {err}") from None
            entry["objects"] = diag
            entry["object_metrics"] = _at_threshold(results, object_metrics.per_image[-1]["mean_ap"])
            diagnosis = diag if diagnosis is None else {k: diagnosis[k] + diag[k] for k in diag}
        per_image.append(entry)
    objects_report = None
    if len(object_metrics):
        totals = object_metrics.result()
        objects_report = {
            "iou_threshold": IOU_THRESHOLD, "images": totals["images"],
            **_at_threshold(totals["by_threshold"], totals["mean_ap"]),
            "by_threshold": totals["by_threshold"],
            "instances": {"method": instance_method, "min_size": int(min_size),
                          "seed_distance": float(seed_distance), "threshold": float(threshold)},
        }
    result = {
        "model": str(model), "data": str(data), "split": split_name, "images": count,
        "class_names": spec.class_names, **counts.scores(),
        "objects": diagnosis, "object_metrics": objects_report, "per_image": per_image,
    }
    if split_name == "train":
        result["note"] = ("no held-out images in the data: these are scores on training images, "
                          "which overstate what the model does on new ones")
    report_path = Path(out) if out else (Path(model).parent if isinstance(model, (str, Path))
                                         else Path(".")) / "evaluation.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report_path, result)
    result["report_path"] = str(report_path)
    return result


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _pixel_table(result: dict) -> str:
    dice, iou = result["dice_per_class"], result["iou_per_class"]
    names = list(result.get("class_names") or [])
    names += [str(i) for i in range(len(names), len(dice))]
    rows = [("class", "dice", "IoU")]
    rows += [(name, _fmt(d), _fmt(i)) for name, d, i in zip(names, dice, iou)]
    present = [d for d in dice if d is not None]
    rows.append(("mean, all classes", _fmt(float(np.mean(present)) if present else None),
                 _fmt(result["mean_iou"])))
    if "dice_foreground" in result:
        rows.append(("mean, foreground", _fmt(result["dice_foreground"]),
                     _fmt(result["iou_foreground"])))
    return format_table(rows, right={1, 2})


def _object_lines(result: dict) -> list[str]:
    m = result.get("object_metrics")
    lines = []
    if m:
        inst = m["instances"]
        how = (f"{inst['method']}, min size {inst['min_size']}, "
               f"seed distance {inst['seed_distance']:g}")
        lines.append(f"objects (IoU {m['iou_threshold']:g}), {m['images']} images ({how}):")
        rows = [("true", "predicted", "TP", "FP", "FN", "precision", "recall", "F1", "AP", "PQ"),
                (m["n_true"], m["n_pred"], m["tp"], m["fp"], m["fn"], _fmt(m["precision"]),
                 _fmt(m["recall"]), _fmt(m["f1"]), _fmt(m["ap"]), _fmt(m["pq"]))]
        lines.append(format_table(rows, right=range(10), indent="  "))
        lines.append(f"  mean AP over IoU 0.5:0.95: {_fmt(m['mean_ap'])}")
    o = result.get("objects")
    if o:
        if not m:
            lines.append(f"objects (IoU {IOU_THRESHOLD:g}):")
        lines.append(f"  true objects {o['true_objects']}: " + ", ".join(
            f"{k} {o[k]}" for k in ("matched", "split", "merged", "missed"))
            + f"; false positives {o['false_positives']}")
    return lines


def format_evaluation(result: dict) -> str:
    """The evaluation as text: a table of per-class dice and IoU with the means
    over all classes and over the foreground, pixel accuracy, then the object
    metrics and what became of the true objects."""
    lines = [f"{result['images']} images ({result['split']})", _pixel_table(result),
             f"pixel accuracy {_fmt(result['pixel_accuracy'])}"]
    note = [f"Note: {result['note']}"] if result.get("note") else []
    return "\n".join(lines + _object_lines(result) + note)
