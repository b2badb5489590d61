"""The run folder's record: written once by training, read by predict, evaluate and export.

A run folder holds ``run.json`` beside the models::

    run.json      the record below (format 2)
    config.json   the resolved training configuration (reusable with --config)
    best.keras, last.keras, best.json, history.csv, report.json, ...

``run.json`` says everything a later command needs about the data the model
was trained on: the label encoding (``LabelSpec``), the input normalisation,
the data folder, the names of the samples held out for validation, the model
geometry and files. Run folders of format 1 (``dataset.json`` only) still load.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .data.labels import LabelSpec
from .errors import UnetTfError
from .files import atomic_write_json

__all__ = ["RunRecord", "RunFolderError", "RUN_FILE", "find_run", "load_run", "model_sidecar",
           "legacy_normalisation"]

RUN_FILE = "run.json"
PLAN_FILE = "plan.json"
_LEGACY_FILE = "dataset.json"
FORMAT = 2


class RunFolderError(UnetTfError, ValueError):
    """A run folder (or a model's record) is missing or unreadable."""


@dataclass
class RunRecord:
    """What a run was trained on.

    Attributes:
        folder: The run folder.
        labels: How the training masks decode to classes (and back).
        num_classes: Model output channels (1: binary sigmoid).
        in_channels: Model input channels.
        input_scale: Raw pixel value times this = the model's input, for the
            ``scale`` normalisation.
        normalisation: The input normalisation as data, ``{"scheme": "scale",
            "scale": ...}`` or another scheme of ``unet_tf.data.normalise``.
        data_root: The training data folder (absolute), or None for arrays.
        val_fraction, seed: How the validation images were chosen.
        val_samples: Names of the samples held out for validation when the
            data had no val split; empty when it had one.
        config: The resolved training configuration.
        depth, padding, tile_size: The model geometry.
        models: ``{"best": "best.keras", "last": "last.keras"}``, relative.
        counts: Images per split.
    """

    folder: Path
    labels: LabelSpec
    num_classes: int
    in_channels: int
    input_scale: float
    normalisation: dict = field(default_factory=dict)
    data_root: str | None = None
    val_fraction: float = 0.0
    seed: int = 0
    val_samples: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    depth: int | None = None
    padding: str | None = None
    tile_size: int | None = None
    models: dict = field(default_factory=lambda: {"best": "best.keras", "last": "last.keras"})
    counts: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.normalisation:  # older runs: bit-depth scaling, types as the scale implies
            self.normalisation = legacy_normalisation(self.input_scale)

    @property
    def ignore_index(self) -> int:
        return self.labels.ignore_index

    @property
    def palette(self):
        return self.labels.palette

    def model_path(self, which: str = "best") -> Path:
        return self.folder / self.models[which]

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "labels": self.labels.to_dict(), "num_classes": self.num_classes,
            "in_channels": self.in_channels, "input_scale": self.input_scale,
            "normalisation": self.normalisation, "data_root": self.data_root,
            "val_fraction": self.val_fraction, "seed": self.seed,
            "val_samples": list(self.val_samples), "depth": self.depth, "padding": self.padding,
            "tile_size": self.tile_size, "models": dict(self.models), "counts": dict(self.counts),
            "config": self.config,
        }

    def write(self) -> Path:
        """Writes ``run.json`` atomically into the run folder; returns its path."""
        path = self.folder / RUN_FILE
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def from_dict(cls, folder: Path, data: dict) -> "RunRecord":
        labels = data.get("labels")
        if not isinstance(labels, dict):
            raise RunFolderError(f"{folder}: the run record has no label description")
        config = data.get("config") or {}
        return cls(
            folder=Path(folder), labels=LabelSpec.from_dict(labels),
            num_classes=int(data["num_classes"]), in_channels=int(data["in_channels"]),
            input_scale=float(data.get("input_scale", 1.0 / 255.0)),
            normalisation=dict(data.get("normalisation") or {}),
            data_root=data.get("data_root", data.get("root")),
            val_fraction=float(data.get("val_fraction", config.get("val_fraction", 0.0)) or 0.0),
            seed=int(data.get("seed", config.get("seed", 0)) or 0),
            val_samples=list(data.get("val_samples") or []), config=config,
            depth=data.get("depth"), padding=data.get("padding"), tile_size=data.get("tile_size"),
            models=dict(data.get("models") or {"best": "best.keras", "last": "last.keras"}),
            counts=dict(data.get("counts") or {}))


def legacy_normalisation(input_scale: float) -> dict:
    """The normalisation of a run or export that recorded only its scale factor."""
    from .data.normalise import scale_normalisation
    if abs(input_scale - 1.0 / 255.0) < 1e-12:
        return scale_normalisation(input_scale, "uint8", 8)
    if input_scale < 1.0 / 255.0:
        return scale_normalisation(input_scale, "uint16")
    return scale_normalisation(input_scale, "float32", 0)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path}: cannot read the run record ({err}); the run folder is "
                             "damaged: train again or restore the file") from None
    if not isinstance(value, dict):
        raise RunFolderError(f"{path}: not a run record (expected a JSON object)")
    return value


def _legacy(folder: Path) -> dict:
    """A format-1 run folder: ``dataset.json`` plus ``config.json``."""
    data = _read_json(folder / _LEGACY_FILE)
    config_path = folder / "config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    return data | {"config": config, "data_root": config.get("data") or data.get("root")}


def find_run(path: str | Path) -> Path | None:
    """The run folder of ``path`` (a run folder or a model file in one), or None."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (folder / RUN_FILE).is_file() or (folder / _LEGACY_FILE).is_file():
        return folder
    return None


def load_run(path: str | Path) -> RunRecord:
    """Reads the record of a run folder, or of the run folder holding a model file.

    Args:
        path: A run folder, or a ``.keras`` file inside one.

    Returns:
        The record.

    Raises:
        RunFolderError: no record there, or it cannot be read.
    """
    folder = find_run(path)
    if folder is None:
        raise RunFolderError(f"{path}: not a run folder (no {RUN_FILE}); pass the folder that "
                             "train.py --out wrote")
    if (folder / RUN_FILE).is_file():
        return RunRecord.from_dict(folder, _read_json(folder / RUN_FILE))
    return RunRecord.from_dict(folder, _legacy(folder))


def model_sidecar(path: str | Path) -> dict:
    """The preprocessing facts next to a model file, as exported metadata reads them.

    Returns ``{}`` for a model outside a run folder.
    """
    folder = find_run(path)
    if folder is None:
        return {}
    record = load_run(folder)
    info = {"input_scale": record.input_scale, "normalisation": record.normalisation,
            "labels": record.labels.to_dict(), "root": record.data_root}
    plan = folder / PLAN_FILE
    if plan.is_file():
        info["plan"] = _read_json(plan)
    return info
