"""Export a trained ``.keras`` U-Net for TF Serving (SavedModel) and edge devices (TFLite/LiteRT).

``export_model`` writes, under ``out``::

    <name>/<version>/saved_model.pb, variables/      TF Serving's versioned layout
    <name>/<version>/assets.extra/tf_serving_warmup_requests
    <name>/<version>/assets.extra/unet_tf.json       geometry and preprocessing
    tflite/<name>_<h>x<w>_<variant>.tflite (+ .json) float32, float16, dynamic_int8, int8
    export_report.json                               sizes, parity, latency, ops

and proves each artifact against the Keras model: the SavedModel in a fresh
Python process that does not import ``unet_tf``, the TFLite files with the
LiteRT interpreter (``ai_edge_litert``). A parity breach, a Flex (select TF)
op or a variable op fails the export with :class:`ExportError`.

The graph and its signatures are in :mod:`unet_tf.deploy.saved_model`, the
TFLite conversion and checks in :mod:`unet_tf.deploy.tflite`.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import sizes
from ..errors import ExportError
from ..files import atomic_write_json
from ..tables import format_table
from ..run import find_run, legacy_normalisation, load_run, model_sidecar
from ..runtimes import load_keras_model
from .saved_model import (atomic_dir_replace, export_metadata, float32_clone, is_float32,
                          next_version, saved_model_cli, verify_saved_model, write_saved_model,
                          write_warmup)
from .tflite import TFLITE_VARIANTS, export_tflite, sample_tiles

__all__ = ["ExportOptions", "export_model", "format_report"]


@dataclass
class ExportOptions:
    """What to export and how strictly to check it.

    Attributes:
        name: model name in the TF Serving layout (``OUT/<name>/<version>``).
        version: version number; default one more than the highest present.
        force: replace an existing version.
        tflite_sizes: one fixed TFLite input shape per entry, ``(height, width)``.
        tflite_variants: subset of ``TFLITE_VARIANTS``.
        calibration_tiles: tiles for full-integer calibration (at least 64).
        latency_runs: timed runs per artifact for the median latency.
        tolerance_float32, tolerance_float16: max abs diff allowed against Keras.
        min_int8_dice: mask dice against Keras required of the int8 variants.
        threshold: probability threshold of binary masks.
    """
    name: str = "unet"
    version: int | None = None
    force: bool = False
    tflite_sizes: list = field(default_factory=lambda: [(256, 256)])
    tflite_variants: tuple = TFLITE_VARIANTS
    calibration_tiles: int = 64
    latency_runs: int = 10
    tolerance_float32: float = 1e-5
    # float16 weights keep 11 significant bits: about 5e-4 relative error per
    # weight, which a trained model's logits turn into a few 1e-3 in probability
    # (3.6e-3 and 4.1e-3 for two trainings of the demo model). The gate leaves
    # room for that and still fails broken conversions, which are off by 0.1 or more.
    tolerance_float16: float = 1e-2
    min_int8_dice: float = 0.98
    threshold: float = 0.5


def _load_info(model_path: Path, data: str | None) -> dict:
    info = dict(model_sidecar(model_path))
    if data:
        info["root"] = data
    return info


def _calibration_items(model_path: Path, info: dict):
    """The training data as the run saw it (its split, classes, void label and
    normalisation), or the ``--data`` folder (a shard folder too); None when
    neither is there. A dataset larger than memory is streamed: only the
    images the calibration tiles come from are decoded, one at a time."""
    root = info.get("root")
    if not root or not (Path(root).exists() or "://" in str(root)):
        return None
    from ..data.pipeline import WeightMapConfig
    from ..data.streaming import open_data
    settings = dict(val_fraction=0.2, seed=0, num_classes=None, ignore_index=255)
    if find_run(model_path) is not None:
        record = load_run(model_path)
        settings = dict(val_fraction=record.val_fraction, seed=record.seed,
                        num_classes=record.config.get("num_classes"),
                        ignore_index=record.ignore_index)
    # Calibration needs images only: skip the weight maps.
    bundle = open_data(root, weight_map=WeightMapConfig(enabled=False), log=lambda *_: None,
                       **settings)
    if info.get("normalisation"):
        bundle.renormalise(info["normalisation"])
    elif info.get("input_scale"):  # an older model that recorded only its scale factor
        bundle.renormalise(legacy_normalisation(float(info["input_scale"])))
    return bundle


def export_model(model_path, out, *, data: str | None = None,
                 options: ExportOptions | None = None, log=print) -> dict:
    """Exports ``model_path`` (a ``.keras`` file or a run folder) into ``out``; returns the report.

    Nothing that exists is replaced without ``options.force``: not the SavedModel
    version, not a TFLite file, not the report. A new version asked for with
    ``options.version`` writes its report as ``export_report_v<N>.json``.

    Raises:
        FileExistsError: a file or version to write exists and ``options.force`` is off.
        ExportError: an artifact failed its checks (nothing half-written is left).
    """
    options = options or ExportOptions()
    _check_options(options)
    # Absolute paths: the verification runs in a fresh process in another folder.
    model_path = Path(model_path).resolve()
    if model_path.is_dir():
        model_path = model_path / "best.keras"
    info = _load_info(model_path, data)
    model = load_keras_model(model_path)
    if not is_float32(model):
        log("Mixed-precision model: exporting a float32 clone with the same weights.")
        model = float32_clone(model)
    meta = export_metadata(model, info)
    for h, w in options.tflite_sizes:
        for s in (h, w):
            try:
                sizes.check_input_size(int(s), meta["depth"], meta["padding"])
            except ValueError as err:
                raise ValueError(f"--tflite-size {h}x{w}: {err}") from None
    out = Path(out).resolve()
    version = options.version or next_version(out / options.name)
    targets = _targets(out, options, version)
    _refuse_to_replace(targets, options.force)
    created = [p for p in (out, out / options.name, out / "tflite") if not p.exists()]
    try:
        return _export(model, model_path, info, meta, out, targets, options, log)
    except BaseException:
        for folder in reversed(created):  # what this call created and left empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _check_options(options: ExportOptions) -> None:
    bad_variants = set(options.tflite_variants) - set(TFLITE_VARIANTS)
    if bad_variants:
        raise ValueError(f"--tflite-variant: unknown {sorted(bad_variants)}; choose from "
                         f"{', '.join(TFLITE_VARIANTS)}")
    if options.version is not None and options.version < 1:
        raise ValueError(f"--version must be >= 1, got {options.version}")
    for h, w in options.tflite_sizes:
        if int(h) < 1 or int(w) < 1:
            raise ValueError(f"--tflite-size {h}x{w}: sizes must be positive")


def _targets(out: Path, options: ExportOptions, version: int) -> dict:
    """Every path this export writes."""
    tflite = [out / "tflite" / f"{options.name}_{int(h)}x{int(w)}_{variant}{suffix}"
              for h, w in options.tflite_sizes for variant in options.tflite_variants
              for suffix in (".tflite", ".json")]
    report = ("export_report.json" if options.version is None
              else f"export_report_v{version}.json")
    return {"saved_model": out / options.name / str(version), "tflite": tflite,
            "report": out / report}


def _refuse_to_replace(targets: dict, force: bool) -> None:
    existing = [p for p in [targets["saved_model"], *targets["tflite"], targets["report"]]
                if p.exists()]
    if existing and not force:
        shown = ", ".join(str(p) for p in existing[:4]) + (" ..." if len(existing) > 4 else "")
        raise FileExistsError(f"{shown}: already exported; pass --force to replace, "
                              "--version N (with --no-tflite) for a new SavedModel version, "
                              "or another --out")


def _export(model, model_path: Path, info: dict, meta: dict, out: Path, targets: dict,
            options: ExportOptions, log) -> dict:
    report = {"model": str(model_path), "metadata": meta, "artifacts": []}
    report["artifacts"].append(_export_saved_model(model, meta, targets["saved_model"], options, log))
    report["saved_model_cli"] = saved_model_cli(targets["saved_model"])
    if options.tflite_variants and options.tflite_sizes:
        report["artifacts"] += _export_tflite_files(model, model_path, info, meta, out / "tflite",
                                                    options, log)
    report_path = targets["report"]
    atomic_write_json(report_path, report, default=str)
    log(format_report(report))
    failures = [a["error"] for a in report["artifacts"] if not a["ok"]]
    if failures:
        raise ExportError(f"{len(failures)} artifact(s) failed their checks and were not written "
                          f"(details in {report_path}):\n" + "\n".join(f"- {f}" for f in failures))
    return report


def _export_saved_model(model, meta: dict, final: Path, options: ExportOptions, log) -> dict:
    """Writes the SavedModel to a temporary folder and renames it into place once verified."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-tmp-", dir=final.parent))
    try:
        log(f"Writing SavedModel {final}")
        write_saved_model(model, meta, tmp, options.threshold)
        (tmp / "assets.extra").mkdir(exist_ok=True)
        (tmp / "assets.extra" / "unet_tf.json").write_text(json.dumps(meta, indent=2))
        n_warmup = write_warmup(tmp / "assets.extra" / "tf_serving_warmup_requests", meta,
                                options.name, [(64, 64), (37, 53)])
        verification = verify_saved_model(tmp, model, meta)
        if not verification["ok"]:
            raise ExportError("SavedModel does not match the Keras model: " + json.dumps(verification))
        atomic_dir_replace(tmp, final, options.force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {"kind": "saved_model", "path": str(final), "size_bytes": _dir_size(final),
            "max_abs_diff": verification["max_abs_diff"], "warmup_records": n_warmup,
            "latency_ms": verification["latency_ms"], "signatures": verification["signatures"],
            "ok": True}


def _export_tflite_files(model, model_path: Path, info: dict, meta: dict, tflite_dir: Path,
                         options: ExportOptions, log) -> list[dict]:
    tflite_dir.mkdir(parents=True, exist_ok=True)
    bundle = _calibration_items(model_path, info) if "int8" in options.tflite_variants else None
    entries = []
    for shape in options.tflite_sizes:
        shape = (int(shape[0]), int(shape[1]))
        calibration = sample_tiles(bundle.train, shape, options.calibration_tiles) if bundle else None
        check_items = (bundle.val or bundle.train) if bundle else None
        check = (sample_tiles(check_items, shape, 4, seed=1) if check_items
                 else np.random.default_rng(2).random((2, *shape, meta["in_channels"]), dtype=np.float32))
        for variant in options.tflite_variants:
            log(f"Converting TFLite {variant} {shape[0]}x{shape[1]}")
            try:
                entry = export_tflite(model, meta, shape, variant, tflite_dir, options.name,
                                      calibration, check, options)
            except ExportError as err:  # the others still get their chance
                entry = {"variant": variant, "shape": list(shape), "ok": False, "error": str(err)}
            if variant == "int8" and calibration is not None:
                entry["calibration_tiles"] = len(calibration)
            entries.append({"kind": "tflite"} | entry)
    return entries


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def format_report(report: dict) -> str:
    """The export report as a table: artifact, size, parity against Keras, latency."""
    rows = [("artifact", "size", "vs keras", "latency (1 thread)")]
    for a in report["artifacts"]:
        label = "SavedModel" if a["kind"] == "saved_model" else f"tflite {a['variant']} {a['shape'][0]}x{a['shape'][1]}"
        if not a["ok"]:
            rows.append((label, "-", "FAILED (not written)", "-"))
            continue
        parity = (f"max|diff| {a['max_abs_diff']:.2e}" if "max_abs_diff" in a
                  else f"mask dice {a['mask_dice']:.4f}")
        rows.append((label, f"{a['size_bytes'] / 1e6:.2f} MB", parity, f"{a['latency_ms']:.1f} ms"))
    return format_table(rows)
