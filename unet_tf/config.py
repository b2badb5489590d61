"""The training configuration: one flat dataclass, also the command line's options.

Every field is a ``--option`` of ``unet-tf train`` / ``python train.py`` (with
``_`` written as ``-``), and a key of a ``--config`` YAML or JSON file. The
resolved configuration is saved as ``config.json`` in the run folder.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

__all__ = ["TrainConfig", "PRESETS", "load_config_file"]


def _opt(default, help, choices=None, **extra):  # noqa: A002 - mirrors click's name
    return field(default=default, metadata=dict(help=help, choices=choices, **extra))


@dataclass
class TrainConfig:
    # data
    data: str | None = _opt(None, "Dataset folder (see README: images/ + masks/, optional "
                                  "instances/, train/val/test splits, TIFF stacks). "
                                  "Default: the built-in synthetic cells.")
    out: str | None = _opt(None, "Run folder. Default: runs/<date>-<time>.")
    val_fraction: float = _opt(0.2, "Share of images held out for validation when the data has no val/ split.")
    num_classes: int | None = _opt(None, "Classes in the masks (default: inferred; binary masks give a sigmoid model).")
    ignore_index: int = _opt(255, "Label value of void pixels, left out of losses and metrics.")
    synthetic_images: int = _opt(40, "Images of the built-in synthetic dataset, when --data is not given.")
    # the plan (unet_tf.plan): options not given are chosen from the data
    plan: bool = _opt(True, "Plan the options you do not give from the data (unet-tf plan DATA shows "
                            "the plan and its reasons); --no-plan uses the fixed defaults below.")
    time_budget: str = _opt("15m", "Training time the plan fits the run into (e.g. 90s, 15m, 1h30m); "
                                   "evaluation and figures come on top.")
    memory_budget: str = _opt("auto", "Memory the plan sizes tiles and batches for (e.g. 8G), half of "
                                      "which the decoded data may take (see --data-path); auto: "
                                      "a quarter of the RAM, or 70% of the GPU's memory.")
    data_path: str = _opt("auto", "auto: keep the decoded data in memory when it fits in half of "
                                  "--memory-budget, else stream it (each image read when its "
                                  "tiles are cut); stream; memory.",
                          choices=("auto", "stream", "memory"))
    # model
    depth: int = _opt(4, "Pooling steps of the U-Net (4 in the paper).")
    base_filters: int = _opt(16, "Channels of the first level, doubled at each level (64 in the paper).")
    padding: str = _opt("same", "'same' keeps the size; 'valid' is the paper's unpadded U-Net.",
                        choices=("same", "valid"))
    upsampling: str = _opt("transpose", "Decoder upsampling: 2x2 up-convolution or bilinear.",
                           choices=("transpose", "bilinear"))
    batch_norm: bool = _opt(True, "Batch normalization after every convolution.")
    dropout: float = _opt(0.5, "Dropout at the end of the contracting path (0.5 in the paper).")
    arch: str = _opt("unet", "unet; unetpp: U-Net++ (nested dense skips, deep supervision); "
                             "unet3p: U-Net 3+ (full-scale skips and deep supervision).",
                     choices=("unet", "unetpp", "unet3p"))
    encoder: str = _opt("none", "A keras.applications encoder under the U-Net decoder (--arch unet): "
                                "mobilenetv2, efficientnetb0..b7 or resnet50; --depth 5 uses it "
                                "whole (skips at strides 2-16, bottleneck at 32).",
                        choices=("none", "mobilenetv2", *(f"efficientnetb{i}" for i in range(8)),
                                 "resnet50"))
    encoder_weights: str = _opt("none", "Encoder weights: none (random), imagenet (Keras downloads "
                                        "them) or the path of a weights file (.h5, .weights.h5).")
    freeze_encoder_epochs: int = _opt(0, "Train with the encoder frozen for this many epochs, then "
                                         "fine-tune everything (0: never frozen).")
    skip_filters: int | None = _opt(None, "unet3p: channels of each full-scale skip "
                                          "(default: --base-filters; 64 in the paper).")
    cgm: bool = _opt(False, "unet3p: classification-guided module: an image it judges free of "
                            "the object gets an empty mask.")
    residual: bool = _opt(False, "Residual blocks: conv-BN-act-conv-BN plus a shortcut, then act.")
    attention: bool = _opt(False, "Attention gates on the skip connections (Oktay et al. 2018).")
    deep_supervision: bool = _opt(True, "unetpp, unet3p: train a head on every nested (unet3p: "
                                        "decoder) output and sum their losses (inference uses "
                                        "the final head).")
    # loss and weight map
    loss: str = _opt("wce", "wce: cross-entropy weighted by the U-Net weight map; dice; dice_ce; "
                            "focal; tversky; iou; msssim; hybrid (focal + MS-SSIM + IoU, U-Net 3+).",
                     choices=("wce", "dice", "dice_ce", "focal", "tversky", "iou", "msssim",
                              "hybrid"))
    weight_map: bool = _opt(True, "Use the paper's weight map (class balance + border term).")
    w0: float = _opt(10.0, "Border weight w0 of the weight map.")
    sigma: float = _opt(5.0, "Border width sigma (pixels) of the weight map.")
    recompute_weights: bool = _opt(False, "Recompute the weight map after each deformation "
                                          "(default: deform the cached map).")
    normalisation: str = _opt("auto", "Input normalisation: scale by the bit depth, clip to the "
                                      "training set's percentiles, or a z-score per image "
                                      "(auto: the plan's choice, else scale).",
                              choices=("auto", "scale", "percentile", "zscore_per_image"))
    rare_class_share: float = _opt(0.0, "Share of training tiles centred on a pixel of a rare "
                                        "class (the plan sets it when a class is rare).")
    # training
    epochs: int = _opt(30, "Epochs (with the plan: validations and checkpoints in the run).")
    steps_per_epoch: int | None = _opt(None, "Batches per epoch (default: about one pass over the training images).")
    batch_size: int = _opt(8, "Global batch size (split across replicas).")
    tile_size: int = _opt(128, "Input tile size; for valid padding the label tile is smaller (572 -> 388).")
    optimizer: str = _opt("adam", "adam, or sgd with momentum (0.99 in the paper).", choices=("adam", "sgd"))
    learning_rate: float = _opt(1e-3, "Initial learning rate.")
    momentum: float = _opt(0.99, "SGD momentum.")
    lr_schedule: str = _opt("plateau", "constant, cosine decay (after --warmup-steps), or reduce on "
                                       "plateau.", choices=("constant", "cosine", "plateau"))
    warmup_steps: int = _opt(0, "Steps of linear learning-rate warm-up before the cosine decay.")
    early_stopping: int = _opt(0, "Stop after this many epochs without improvement (0: off).")
    mixed_precision: str = _opt("off", "off, float16 (GPUs), bfloat16 (CPUs with AVX-512 BF16, TPUs).",
                                choices=("off", "float16", "bfloat16"))
    jit_compile: bool = _opt(False, "XLA-compile the train step (slower for training on CPUs).")
    strategy: str = _opt("auto", "auto, mirrored (local GPUs) or multiworker (TF_CONFIG).",
                         choices=("auto", "mirrored", "multiworker"))
    seed: int = _opt(0, "Seed for the split, initialisation and augmentation.")
    resume: bool = _opt(False, "Resume an interrupted run from its last finished epoch (same --out).")
    verbose: int | None = _opt(None, "Keras progress: 0 silent, 1 progress bar, 2 one line per epoch "
                                     "(default: 1 on a terminal, 2 when the output goes to a file).")
    # augmentation (see unet_tf.data.augment.AugmentConfig)
    augment: bool = _opt(True, "Data augmentation (all of the below).")
    elastic: bool = _opt(True, "Elastic deformation (the paper's 3x3 grid).")
    elastic_sigma: float = _opt(10.0, "Standard deviation (pixels) of the coarse elastic displacements.")
    elastic_points: int = _opt(3, "Control points per axis of the elastic grid.")
    aug_backend: str = _opt("opencv", "opencv (fast, exact field) or elasticdeform (reference).",
                            choices=("opencv", "elasticdeform"))
    flip: bool = _opt(True, "Random flips (both axes).")
    hflip: bool | None = _opt(None, "Random left-right flips (default: as --flip).")
    vflip: bool | None = _opt(None, "Random up-down flips (default: as --flip).")
    rot90: bool = _opt(True, "Random 90-degree rotations.")
    rotate_degrees: float = _opt(15.0, "Largest small rotation (degrees, 0: off).")
    shift: float = _opt(0.05, "Largest shift (fraction of the tile, 0: off).")
    scale_min: float = _opt(0.9, "Smallest zoom.")
    scale_max: float = _opt(1.1, "Largest zoom.")
    brightness: float = _opt(0.1, "Largest brightness change (0: off).")
    contrast: float = _opt(0.2, "Largest contrast change (0: off).")
    gamma: float = _opt(0.2, "Largest gamma change (0: off).")

    def __post_init__(self):
        for f in fields(self):
            _check_type(f, getattr(self, f.name))
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"{_flag(f.name)}: {getattr(self, f.name)!r} is not one "
                                 f"of {', '.join(choices)}")
        for name, (low, high, closed) in RANGES.items():
            _check_range(name, getattr(self, name), low, high, closed)
        if self.scale_min > self.scale_max:
            raise ValueError(f"--scale-min {self.scale_min} is larger than --scale-max {self.scale_max}")
        self._check_architecture()

    def _check_architecture(self) -> None:
        """Option combinations the networks refuse, named before anything starts."""
        if self.encoder != "none":
            if self.arch != "unet":
                raise ValueError(f"--encoder {self.encoder} builds a U-Net on the encoder: use it "
                                 f"with --arch unet, not {self.arch}")
            if self.padding != "same" or self.depth > 5:
                raise ValueError(f"--encoder {self.encoder} needs --padding same and --depth 1..5 "
                                 "(its levels; 5: the whole encoder, tiles a multiple of 32)")
        elif self.freeze_encoder_epochs or self.encoder_weights.lower() != "none":
            raise ValueError("--freeze-encoder-epochs and --encoder-weights need --encoder")
        if self.arch == "unet3p" and (self.padding != "same" or self.attention):
            raise ValueError("--arch unet3p needs --padding same and no --attention")
        if (self.cgm or self.skip_filters is not None) and self.arch != "unet3p":
            raise ValueError("--cgm and --skip-filters are options of --arch unet3p")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown configuration keys {unknown}; valid keys are the options of "
                             "`unet-tf train --help` with '-' written as '_'")
        return cls(**values)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def augment_config(self):
        from .data.augment import AugmentConfig
        if not self.augment:
            return None
        return AugmentConfig(elastic=self.elastic, elastic_points=self.elastic_points,
                             elastic_sigma=self.elastic_sigma, backend=self.aug_backend,
                             flip=self.flip, hflip=self.hflip, vflip=self.vflip,
                             rot90=self.rot90, rotate_degrees=self.rotate_degrees,
                             shift=self.shift, scale=(self.scale_min, self.scale_max),
                             brightness=self.brightness, contrast=self.contrast, gamma=self.gamma)


INF = float("inf")
#: Allowed values of every numeric option: ``(low, high, closed)``; ``closed``
#: says whether ``high`` itself is allowed. None (where a field allows it)
#: always passes. Checked in one place, before anything is created.
RANGES = {
    "val_fraction": (0.0, 1.0, False),
    "num_classes": (1, 1024, True),
    "ignore_index": (-(2**31), 2**31 - 1, True),
    "synthetic_images": (2, 100_000, True),
    "depth": (1, 8, True),
    "base_filters": (1, 4096, True),
    "dropout": (0.0, 1.0, False),
    "freeze_encoder_epochs": (0, 1_000_000, True),
    "skip_filters": (1, 4096, True),
    "w0": (0.0, 1e6, True),
    "sigma": (1e-3, 1e6, True),
    "epochs": (1, 1_000_000, True),
    "steps_per_epoch": (1, 10_000_000, True),
    "batch_size": (1, 65_536, True),
    "tile_size": (1, 65_536, True),
    "learning_rate": (1e-12, 10.0, True),
    "momentum": (0.0, 1.0, False),
    "early_stopping": (0, 1_000_000, True),
    "warmup_steps": (0, 10_000_000, True),
    "rare_class_share": (0.0, 1.0, False),
    "seed": (0, 2**32 - 1, True),
    "verbose": (0, 2, True),
    "elastic_sigma": (0.0, 1e4, True),
    "elastic_points": (2, 64, True),
    "rotate_degrees": (0.0, 180.0, True),
    "shift": (0.0, 1.0, False),
    "scale_min": (0.01, 100.0, True),
    "scale_max": (0.01, 100.0, True),
    "brightness": (0.0, 1.0, True),
    "contrast": (0.0, 1.0, False),
    "gamma": (0.0, 1.0, False),
}

_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_type(f, value) -> None:
    """Values from a config file arrive untyped: ``epochs: abc`` must be named, not crash."""
    annotation = str(f.type)
    if value is None and "None" in annotation:
        return
    kind = annotation.replace("| None", "").strip()
    allowed = _TYPES.get(kind)
    if allowed is None:
        return
    ok = isinstance(value, allowed) and not (kind != "bool" and isinstance(value, bool))
    if not ok:
        wanted = {"int": "a whole number", "float": "a number", "str": "text",
                  "bool": "true or false"}[kind]
        raise ValueError(f"{_flag(f.name)}: expected {wanted}, got {value!r} "
                         f"({type(value).__name__})")


def _check_range(name: str, value, low, high, closed: bool) -> None:
    if value is None:
        return
    if value != value or value in (INF, -INF):  # NaN or infinite
        raise ValueError(f"{_flag(name)} must be a finite number, got {value}")
    if value < low or value > high or (not closed and value == high):
        upper = f"<= {high}" if closed else f"< {high}"
        raise ValueError(f"{_flag(name)} must be >= {low} and {upper}, got {value}")


#: Named starting points; command-line options still override them.
PRESETS = {
    # Ronneberger et al. (2015): unpadded convolutions, 572 -> 388 tiles, batch of one
    # large tile, SGD with momentum 0.99, weighted cross-entropy with w0=10, sigma=5.
    "paper": dict(depth=4, base_filters=64, padding="valid", batch_norm=False, dropout=0.5,
                  tile_size=572, batch_size=1, optimizer="sgd", learning_rate=0.01,
                  momentum=0.99, loss="wce", w0=10.0, sigma=5.0, lr_schedule="constant",
                  plan=False),
    # Small and quick: the demo configuration.
    "small": dict(depth=4, base_filters=16, padding="same", batch_norm=True, tile_size=128,
                  batch_size=8, plan=False),
}


def load_config_file(path: str | Path) -> dict:
    """Read a YAML or JSON configuration file into a dict (errors name the file)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"--config {path}: cannot read it ({err.strerror})") from err
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            import yaml
            values = yaml.safe_load(text)
    except Exception as err:  # noqa: BLE001 - report any parse error with the file name
        raise ValueError(f"--config {path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}") from err
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a mapping of option names to values")
    return {k.replace("-", "_"): v for k, v in values.items()}
