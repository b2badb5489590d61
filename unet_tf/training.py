"""``train(config)``: the whole training run behind ``python train.py`` and ``unet-tf train``.

The run folder (``config.out``) receives::

    config.json      the resolved configuration (reusable with --config)
    run.json         the run record (unet_tf.run): labels, normalisation, data folder,
                     validation images, model geometry; what predict, evaluate and export read
    best.keras       the model with the best validation dice (written atomically)
    last.keras       the model after the last finished epoch (written atomically)
    history.csv      loss and metrics per epoch
    logs/            TensorBoard logs
    report.json      per-class dice and IoU on the validation images (full images, tiled)
    curves.png       loss and metrics per epoch
    samples.png      image, ground truth and prediction for a few validation images
    state.json       the last committed epoch, best epoch and history (what --resume reads)
    checkpoints/     the committed models (the last and the best epoch's)

For your own ``model.fit``, use the pieces directly: ``unet_tf.data``,
``unet_tf.losses``, ``unet_tf.metrics`` and ``unet_tf.models``.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from . import losses, metrics, plots, sizes
from .config import TrainConfig
from .checkpoints import (CHECKPOINT_DIR, STATE_FILE, RunCheckpoint, RunState, StepClock,
                          StopOnNaN, TimeBudget, publish, read_state)
from .data import pipeline as data_lib
from .data.streaming import data_errors, open_data
from .autoplan import (FIGURE_IMAGES, chosen_normalisation, memory_budget_bytes, plan_run, report_image_cap,
                       time_budget_seconds, validation_tile_cap)
from .errors import TrainingDiverged
from .files import atomic_write_json
from .inference import predict_tiled, to_labels
from .models import ARCHITECTURES, UNetBase
from .plan import (FINISH_S, Plan, format_plan, normalisation_spec, report_reserve,
                   validation_seconds)
from .run import RunRecord
from .runtimes import KerasRuntime

__all__ = ["train", "TrainResult", "TrainingDiverged", "make_strategy", "is_chief",
           "build_model", "compile_model", "evaluate_items", "resume_config"]


@dataclass
class TrainResult:
    """What a run produced; ``finished_before`` when a resumed run had nothing left to do."""
    out: Path
    history: dict
    report: dict
    best_model: Path
    last_model: Path
    finished_before: bool = False


#: Seconds the first validation of a run may add for tracing the test function.
TRACE_S = 5.0


# --------------------------------------------------------------------------- setup
def make_strategy(name: str) -> tf.distribute.Strategy:
    """``auto``: one device, or all local GPUs when there are several; ``mirrored``; ``multiworker``."""
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker needs the TF_CONFIG environment variable "
                             "(see README: Multi-worker training)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """True unless TF_CONFIG names this process a non-chief worker."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = tf_config.get("task", {})
    cluster = tf_config.get("cluster", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in cluster


def build_model(config: TrainConfig, num_classes: int, in_channels: int) -> UNetBase:
    """The configured architecture (``--arch``), built for ``in_channels`` input channels."""
    common = dict(num_classes=num_classes, depth=config.depth, base_filters=config.base_filters,
                  padding=config.padding, batch_norm=config.batch_norm, dropout=config.dropout,
                  upsampling=config.upsampling, residual=config.residual,
                  attention=config.attention, in_channels=in_channels)
    cls = ARCHITECTURES[config.arch]
    if "deep_supervision" in cls.__init__.__code__.co_varnames:
        common["deep_supervision"] = config.deep_supervision
    if config.arch == "unet3p":
        common.update(skip_filters=config.skip_filters, cgm=config.cgm)
    if config.encoder != "none":  # --arch unet on a keras.applications encoder
        cls = ARCHITECTURES["encoder_unet"]
        common.update(encoder=config.encoder, encoder_weights=config.encoder_weights)
    return cls(**common)


def _optimizer(config: TrainConfig, total_steps: int):
    lr = config.learning_rate
    if config.lr_schedule == "cosine":
        warmup = min(config.warmup_steps, max(total_steps - 1, 0))
        # With warm-up Keras's CosineDecay rises linearly from its initial rate to
        # warmup_target, then decays over decay_steps.
        lr = keras.optimizers.schedules.CosineDecay(
            lr / 100 if warmup else lr, decay_steps=max(total_steps - warmup, 1), alpha=0.01,
            warmup_target=lr if warmup else None, warmup_steps=warmup)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=config.momentum)
    return keras.optimizers.Adam(lr)


def compile_model(model: UNetBase, config: TrainConfig, ignore_index: int, total_steps: int = 1000):
    """Compile with the configured optimizer and loss, and dice / IoU / accuracy metrics."""
    k = model.num_classes
    model.compile(
        optimizer=_optimizer(config, total_steps),
        loss=losses.get(config.loss, ignore_index=ignore_index),
        metrics=[metrics.Dice(k, ignore_index=ignore_index), metrics.MeanIoU(k, ignore_index=ignore_index),
                 metrics.PixelAccuracy(k, ignore_index=ignore_index),
                 metrics.Dice(k, ignore_index=ignore_index, foreground_only=True, name="dice_fg")],
        jit_compile=config.jit_compile,
    )
    return model


# --------------------------------------------------------------------------- files
def _write_json(path: Path, value) -> None:
    atomic_write_json(path, value, default=_json_default)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _callbacks(config: TrainConfig, out: Path, chief: bool, state: RunState | None):
    nan_guard = StopOnNaN()
    checkpoint = RunCheckpoint(out, "val_dice", state=state, write=chief)
    cbs = [nan_guard, checkpoint]
    if config.lr_schedule == "plateau":
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                     patience=max(3, config.epochs // 10),
                                                     min_lr=config.learning_rate / 100))
    if config.early_stopping > 0:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_dice", mode="max",
                                                 patience=config.early_stopping))
    if config.freeze_encoder_epochs > 0:
        from .models import FreezeEncoder
        cbs.append(FreezeEncoder(config.freeze_encoder_epochs))
    if chief:
        cbs.append(keras.callbacks.TensorBoard(str(out / "logs"), update_freq="epoch",
                                               write_graph=False, profile_batch=0))
    return cbs, nan_guard, checkpoint


#: What a start that failed before its first epoch leaves in a run folder; such
#: a folder is reused without --resume (a folder with anything else is not).
_START_FILES = {"config.json", "run.json", "plan.json", "data", "logs", "checkpoints"}


def _prepare_out(config: TrainConfig) -> tuple[Path, bool]:
    """The run folder, checked before anything is written; returns it and
    whether this call created it (so that a failed start can remove it)."""
    out = Path(config.out or time.strftime("runs/%Y%m%d-%H%M%S"))
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out}: is a file; choose a folder")
    entries = {p.name for p in out.iterdir()} if out.exists() else set()
    started = bool(entries - _START_FILES) or (out / STATE_FILE).exists()
    if started and not config.resume:
        raise FileExistsError(f"{out}: run folder exists and is not empty; pass --resume to continue "
                              "that run, or choose another --out")
    if entries and not started:  # a start that failed: nothing worth keeping but the data
        for name in entries - {"data"}:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    return out, created


#: Options a resumed run may change; the others are the run's own.
_RESUMABLE = {"epochs", "resume", "verbose", "early_stopping", "out"}


def resume_config(config: TrainConfig, out: Path, log=print) -> TrainConfig:
    """The configuration a resumed run actually uses: its own, with only the
    options of ``_RESUMABLE`` taken from ``config``; the others are reported."""
    path = out / "config.json"
    if not path.is_file():
        return config
    stored = TrainConfig.from_dict(json.loads(path.read_text()))
    changed = [f.name for f in dataclasses.fields(TrainConfig)
               if f.name not in _RESUMABLE | {"data"}
               and getattr(config, f.name) != getattr(stored, f.name)]
    if config.data and stored.data and Path(config.data).resolve() != Path(stored.data).resolve():
        changed.append("data")
    if changed:
        log("Resuming keeps the run's own settings; ignored: " + ", ".join(
            f"--{name.replace('_', '-')} {getattr(config, name)!r} (the run uses "
            f"{getattr(stored, name)!r})" for name in changed))
    return stored.replace(**{name: getattr(config, name) for name in _RESUMABLE})


def _dataset_folder(config: TrainConfig, out: Path) -> Path:
    if config.data and "://" in config.data:  # shards in a bucket (gs://, s3://): as given
        return config.data
    if config.data:  # absolute in config.json, so evaluate finds it from anywhere
        return Path(config.data).resolve()
    from .data.synthetic import write_dataset
    folder = out / "data"
    if not folder.exists():
        write_dataset(folder, n=config.synthetic_images, size=256, seed=config.seed)
    return folder


# --------------------------------------------------------------------------- evaluation
def evaluate_items(model, items, num_classes: int, ignore_index: int = 255, tile_size=None,
                   threshold: float = 0.5, batch_size: int = 4) -> dict:
    """Per-class dice and IoU, pixel accuracy, over whole images predicted with overlap-tile.

    Counts are summed over all images before the scores are taken.
    """
    runtime = KerasRuntime(model) if isinstance(model, keras.Model) else model
    counts = metrics.PixelCounts(num_classes)
    for item in items:
        probs = predict_tiled(runtime, item.image, tile_size=tile_size, batch_size=batch_size)
        counts.add(item.label, to_labels(probs, threshold), item.label != ignore_index)
    return {"images": len(items), **counts.scores()}


def _history_from_csv(path: Path) -> dict:
    if not path.exists():
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    history: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if key == "epoch":
                continue
            try:
                history.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                history.setdefault(key, []).append(float("nan"))
    return history


def _write_figures(out: Path, model, bundle, history: dict, tile_size) -> None:
    plots.draw_curves(history, out / "curves.png")
    items = bundle.val[:FIGURE_IMAGES] or bundle.train[:FIGURE_IMAGES]
    colors = plots.class_colors(bundle.spec.num_labels, bundle.spec.palette)
    runtime = KerasRuntime(model)
    images = [it.image for it in items]
    rows = [(image, it.label, to_labels(predict_tiled(runtime, image, tile_size=tile_size)))
            for image, it in zip(images, items)]
    plots.draw_samples(rows, colors, out / "samples.png", ignore_index=bundle.ignore_index)


# --------------------------------------------------------------------------- train
def _verbosity(verbose: int | None) -> int:
    """Keras progress bars redraw one line, which piles up in log files: one line
    per epoch there."""
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2


def _mixed_precision_policy(name: str) -> str:
    return {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}[name]


def train(config: TrainConfig, explicit: set[str] | None = None) -> TrainResult:
    """Train a U-Net as configured and fill its run folder; returns the history and report.

    With ``config.plan`` (the default) the options the user did not give are
    planned from the data (``unet_tf.plan``) and the plan is saved as
    ``plan.json`` in the run folder.

    Args:
        config: The configuration.
        explicit: Names of the options the user gave, which win over the plan;
            default: those that differ from ``TrainConfig``'s defaults.

    Raises:
        unet_tf.errors.DatasetError: the data has problems (each named with its file).
        ValueError: an option is invalid (the message names it).
        FileExistsError: the run folder exists and ``resume`` is off.
        TrainingDiverged: the loss became NaN or infinite.
    """
    if explicit is None:
        default = TrainConfig()
        explicit = {f.name for f in dataclasses.fields(TrainConfig)
                    if getattr(config, f.name) != getattr(default, f.name)}
    if not config.plan or "tile_size" in explicit:
        _check_tile(config)
    if config.plan:
        time_budget_seconds(config.time_budget)  # bad values fail before anything is written
        memory_budget_bytes(config.memory_budget)
    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(_mixed_precision_policy(config.mixed_precision))
    try:
        return _train(config, set(explicit))
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _check_tile(config: TrainConfig) -> None:
    try:
        sizes.check_input_size(config.tile_size, config.depth, config.padding)
    except ValueError as err:
        raise ValueError(f"--tile-size {config.tile_size}: {err}".replace(
            " (unet_tf.inference.predict_tiled does this for you)", "")) from None


def _train(config: TrainConfig, explicit: set[str]) -> TrainResult:
    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy)
    if is_chief():
        out, created = _prepare_out(config)
        try:
            return _train_in(config, strategy, True, out, explicit, started)
        except BaseException:
            if created and read_state(out) is None:  # nothing finished: leave nothing behind
                shutil.rmtree(out, ignore_errors=True)
            raise
    # Other workers write their checkpoints to a scratch folder, removed however they end;
    # they resume from the chief's run folder, which all workers share.
    out = Path(tempfile.mkdtemp(prefix="unet-tf-worker-"))
    try:
        return _train_in(config, strategy, False, out, explicit, started)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _finished_result(out: Path) -> TrainResult:
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    return TrainResult(out, _history_from_csv(out / "history.csv"), report, out / "best.keras",
                       out / "last.keras", finished_before=True)


def _train_in(config: TrainConfig, strategy, chief: bool, out: Path, explicit: set[str],
              started: float) -> TrainResult:
    run_folder = Path(config.out) if (config.out and not chief) else out
    state = read_state(run_folder) if config.resume else None
    if config.resume:
        config = resume_config(config, run_folder, log=_log if chief else (lambda *_: None))
    if state and chief:
        publish(out, state)  # finishes what a kill between commit and publish left undone
    if state and state.epoch >= config.epochs and (run_folder / "report.json").is_file():
        _log(f"{run_folder}: this run already finished {state.epoch} epochs; nothing to do "
             f"(pass --epochs N with N > {state.epoch} to train it further)")
        return _finished_result(run_folder)
    data_root = _dataset_folder(config, out)
    planning = config.plan and not (config.resume and (run_folder / "plan.json").is_file())
    # In memory, or streamed when the decoded data exceeds its share of --memory-budget.
    bundle = open_data(
        data_root, val_fraction=config.val_fraction, seed=config.seed,
        num_classes=config.num_classes, ignore_index=config.ignore_index,
        weight_map=data_lib.WeightMapConfig(enabled=False) if planning else _weight_map_config(config),
        memory_budget=config.memory_budget, data_path=config.data_path,
        log=_log if chief else (lambda *_: None))
    if not bundle.val:
        _log(f"Warning: only {len(bundle.train)} labelled image(s) and no validation split: the "
             "validation scores are measured on the training images")
    plan = None
    if planning:
        config, plan = plan_run(config, bundle, explicit, elapsed_s=time.monotonic() - started,
                                log=_log if chief else (lambda *_: None))
        _check_tile(config)
        bundle.reweight(_weight_map_config(config, plan))
        if chief:
            _log(format_plan(plan))
            _write_json(out / "plan.json", plan.to_dict())
    elif config.plan and (run_folder / "plan.json").is_file():
        plan = Plan.from_dict(json.loads((run_folder / "plan.json").read_text()))
        bundle.renormalise(normalisation_spec(plan))
        bundle.reweight(_weight_map_config(config, plan))
    elif (norm := chosen_normalisation(config, bundle)) is not None:
        bundle.renormalise(norm)
    if chief:
        _write_json(out / "config.json", config.replace(out=str(out), data=str(data_root)).to_dict())
        _run_record(out, config, bundle, data_root).write()
    # The budget binds planned runs, and fixed ones that were given a budget.
    bounded = config.plan or "time_budget" in explicit
    deadline = started + time_budget_seconds(config.time_budget) if bounded else None

    steps = config.steps_per_epoch or bundle.steps_per_epoch(config.tile_size, config.batch_size,
                                                             config.depth, config.padding)
    train_ds = _distributed_train_dataset(strategy, bundle, config, plan)
    val_items = bundle.val or bundle.train
    val_ds = data_lib.val_dataset(val_items, tile_size=config.tile_size, batch_size=config.batch_size,
                                  depth=config.depth, padding=config.padding,
                                  ignore_index=bundle.ignore_index,
                                  max_tiles=validation_tile_cap(config, plan))
    with strategy.scope():
        if state:  # the committed model, with its optimizer state
            model = keras.models.load_model(run_folder / CHECKPOINT_DIR / state.checkpoint)
        else:
            model = build_model(config, bundle.num_classes, bundle.in_channels)
            compile_model(model, config, bundle.ignore_index, total_steps=steps * config.epochs)
    if state and state.epoch >= config.epochs:  # killed while writing the final report
        return _finish(out, bundle, config) if chief else TrainResult(out, {}, {}, Path(), Path())
    callbacks, nan_guard, checkpoint = _callbacks(config, out, chief, state)
    if deadline is not None:  # training stops in time for the last validation and the report
        callbacks.append(_time_guard(config, plan, deadline, chief))
    clock = StepClock()
    callbacks.append(clock)
    fit_started = time.monotonic()
    with data_errors(bundle):  # a corrupt file or shard met while streaming, by name
        model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, steps_per_epoch=steps,
                  initial_epoch=state.epoch if state else 0, callbacks=callbacks,
                  verbose=_verbosity(config.verbose), shuffle=False)
    if nan_guard.where is not None or checkpoint.diverged_at is not None:
        raise TrainingDiverged(_diverged_message(config, nan_guard, checkpoint, out))
    if not chief:
        return TrainResult(out, {}, {}, Path(), Path())
    timing = {"train_seconds": round(clock.seconds, 1),
              "fit_seconds": round(time.monotonic() - fit_started, 1),
              "total_seconds_before_report": round(time.monotonic() - started, 1)}
    if plan is not None:
        timing["planned_train_seconds"] = plan.details.get("train_seconds")
    left = None if deadline is None else deadline - time.monotonic() - FINISH_S
    cap = report_image_cap(config, plan, bundle.val or bundle.train, left)
    return _finish(out, bundle, config, timing, cap)


def _time_guard(config: TrainConfig, plan: Plan | None, deadline: float, chief: bool) -> TimeBudget:
    """The callback that ends training in time for the last validation and the report,
    with the reserve the plan kept (fixed runs: the same rule on the whole budget)."""
    budget = time_budget_seconds(config.time_budget)
    details = plan.details if plan is not None else {}
    reserve = details.get("report_reserve_s") or report_reserve(budget)
    # The first validation also traces the test function.
    first_validation = details.get("validation_s") or validation_seconds(budget, config.epochs)
    return TimeBudget(deadline, reserve_s=reserve, first_epoch_end_s=first_validation + TRACE_S,
                      log=_log if chief else (lambda *_: None))


def _diverged_message(config: TrainConfig, nan_guard, checkpoint, out: Path) -> str:
    epoch, batch, value = nan_guard.where or (checkpoint.diverged_at, "?", "not finite")
    done = checkpoint.state.epoch
    saved = (f"The last good model is {out / 'last.keras'} (epoch {done}; best: "
             f"{out / 'best.keras'}, epoch {checkpoint.state.best['epoch']})" if done and
             checkpoint.state.best else
             f"The last good model is {out / 'last.keras'} (epoch {done})" if done else
             "No epoch finished with finite weights, so no model was saved")
    return (f"Training stopped: the loss became {value} at epoch {epoch}, batch {batch}. "
            f"Try a lower --learning-rate (now {config.learning_rate}), check the labels "
            f"(unet-tf check-data), or turn off --mixed-precision. {saved}.")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_record(out: Path, config: TrainConfig, bundle, data_root: Path) -> RunRecord:
    """What later commands need to know about this run's data and model."""
    held_out = [item.name for item in bundle.val] if bundle.extras.get("val_split") == "held_out" else []
    return RunRecord(folder=out, labels=bundle.spec, num_classes=bundle.num_classes,
                     in_channels=bundle.in_channels, input_scale=bundle.input_scale,
                     normalisation=bundle.normalisation, data_root=str(data_root), val_fraction=config.val_fraction, seed=config.seed,
                     val_samples=held_out, config=config.replace(out=str(out), data=str(data_root)).to_dict(),
                     depth=config.depth, padding=config.padding, tile_size=config.tile_size,
                     counts={"train": len(bundle.train), "val": len(bundle.val),
                             "test": len(bundle.test)})


def _weight_map_config(config: TrainConfig, plan=None) -> data_lib.WeightMapConfig:
    # The dice loss uses weights only as a mask: no need to compute the maps.
    enabled = config.weight_map and config.loss != "dice"
    class_weights = "balanced"
    planned = plan.entries.get("class_weights") if plan is not None else None
    if planned is not None and isinstance(planned.value, list):
        class_weights = list(planned.value)  # per class: w_c, or the cross-entropy's weights
    return data_lib.WeightMapConfig(enabled=enabled, w0=config.w0, sigma=config.sigma,
                                    class_weights=class_weights,
                                    recompute=config.recompute_weights)


def _distributed_train_dataset(strategy, bundle, config: TrainConfig, plan=None):
    """One pipeline per worker, each with its own tiles and its share of the global batch."""
    def make(input_context=None):
        shards, index, batch = 1, 0, config.batch_size
        if input_context is not None:
            shards, index = input_context.num_input_pipelines, input_context.input_pipeline_id
            batch = input_context.get_per_replica_batch_size(config.batch_size)
        return data_lib.train_dataset(
            bundle.train, tile_size=config.tile_size, batch_size=batch, depth=config.depth,
            padding=config.padding, augment=config.augment_config(), spec=bundle.spec,
            weight_map=_weight_map_config(config, plan),
            seed=config.seed, num_shards=shards, shard_index=index,
            rare_classes=plan.details.get("rare_classes", []) if plan else (),
            rare_share=config.rare_class_share)

    if strategy.num_replicas_in_sync == 1 and not isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return make()
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"--batch-size {config.batch_size} must be a multiple of the "
                         f"{strategy.num_replicas_in_sync} replicas")
    return strategy.distribute_datasets_from_function(make)


def _finish(out: Path, bundle, config: TrainConfig, timing: dict | None = None,
            max_images: int | None = None) -> TrainResult:
    best_path = out / "best.keras"
    best = keras.models.load_model(best_path, compile=False)
    items = bundle.val or bundle.train
    all_images = len(items)
    if max_images is not None and max_images < len(items):  # the budget's share for the report
        keep = np.unique(np.linspace(0, len(items) - 1, max_images).round().astype(int))
        items = [items[i] for i in keep]
    report = evaluate_items(best, items, bundle.num_classes, bundle.ignore_index,
                            tile_size=_eval_tile(config))
    report["class_names"] = bundle.spec.class_names
    report["split"] = "val" if bundle.val else "train"
    if not bundle.val:
        report["note"] = ("no validation images: these are training scores, measured on the "
                          "images the model was trained on")
    best_info = out / "best.json"
    if best_info.exists():
        report["best_epoch"] = json.loads(best_info.read_text()).get("epoch")
    if timing:
        report["timing"] = timing
    if len(items) < all_images:
        report["note_images"] = (f"scored on {len(items)} of the {all_images} validation images "
                                 "(spread evenly) to keep within the time budget; "
                                 "unet-tf evaluate scores them all")
    _write_json(out / "report.json", report)
    history = _history_from_csv(out / "history.csv")
    _write_figures(out, best, bundle, history, _eval_tile(config))
    return TrainResult(out, history, report, best_path, out / "last.keras")


def _eval_tile(config: TrainConfig) -> int:
    """Evaluation tiles: larger than training tiles (less border), still a valid size."""
    target = max(config.tile_size, 256)
    return sizes.nearest_valid_input_sizes(target, config.depth, config.padding)[1]
