"""The plan applied to a training run: fingerprint the loaded data, time real steps, fill the options.

``plan_run(config, bundle, explicit)`` is what ``train`` does before it builds
the model when ``config.plan`` is on: every option the user gave (``explicit``)
wins, every other planned option comes from ``unet_tf.plan.make_plan``, and
the log names the ones that were overridden. ``unet-tf plan DATA`` runs the
same and prints it.
"""
from __future__ import annotations

import os
import time
from dataclasses import fields

import numpy as np

from .config import TrainConfig
from .plan import (REPORT_SHARE, Plan, PlanEntry, fingerprint_arrays, make_plan, normalisation_params, normalisation_spec,
                   parse_bytes, parse_duration, validation_seconds)

__all__ = ["fingerprint_bundle", "step_timer", "plan_run", "plan_dataset", "chosen_normalisation",
           "memory_budget_bytes",
           "time_budget_seconds", "validation_tile_cap", "report_image_cap"]

#: Levels of a keras.applications encoder under the decoder.
ENCODER_DEPTH = 5
#: Share of the machine's memory (or the GPU's) that training may plan for.
MEMORY_SHARE_CPU = 0.25
MEMORY_SHARE_GPU = 0.7
#: Steps per measured model size: warm-up steps (tracing), then timed steps
#: until at least MIN_TIMED_SECONDS have passed (fast models get more steps,
#: so one slow step on a busy machine does not skew the plan).
WARMUP_STEPS, TIMED_STEPS, MAX_TIMED_STEPS, MIN_TIMED_SECONDS = 2, 3, 30, 2.0
#: Share of the budget that predicting validation tiles may take (of the plan's
#: VALIDATION_SHARE for validations, the rest goes to their checkpoints).
VALIDATION_TILE_SHARE = 0.08
#: Budgets from which the chosen model size is timed exactly when its step time
#: was scaled from another tile (a street look-alike trained 13% slower per step
#: at 208 px than its 128 px time scaled by area); the extra timing takes 5-10 s.
EXACT_TIMING_BUDGET_S = 240.0
#: Whole validation images the run's sample figure predicts after the report.
FIGURE_IMAGES = 4
#: Training images the fingerprint reads at most (spread evenly): enough for
#: stable statistics, and bounded time on large datasets.
FINGERPRINT_IMAGES = 300


def fingerprint_bundle(bundle, seed: int = 0):
    """The fingerprint of a loaded dataset's training images (at most
    ``FINGERPRINT_IMAGES`` of them, spread evenly)."""
    items = bundle.train
    if len(items) > FINGERPRINT_IMAGES:
        keep = np.linspace(0, len(items) - 1, FINGERPRINT_IMAGES).round().astype(int)
        items = [items[i] for i in np.unique(keep)]
    samples = ((item.pixels, item.label, item.instances) for item in items)
    return fingerprint_arrays(samples, num_classes=bundle.spec.num_labels,
                              ignore_index=bundle.ignore_index, class_names=bundle.spec.class_names,
                              binary=bundle.num_classes == 1, seed=seed)


def memory_budget_bytes(value: str) -> int:
    """``--memory-budget``: a size, or ``auto`` (a share of the GPU's or the machine's memory)."""
    if value != "auto":
        return parse_bytes(value)
    gpu = _gpu_memory_bytes()
    if gpu:
        return int(gpu * MEMORY_SHARE_GPU)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total * MEMORY_SHARE_CPU)


def _gpu_memory_bytes() -> int | None:
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    try:
        details = tf.config.experimental.get_memory_info("GPU:0")
        return int(details.get("total") or 0) or None
    except (ValueError, RuntimeError):
        return 16 * 1024**3  # a conservative guess when TensorFlow does not say


#: No run fits in less: loading, timing the model and a few steps.
MIN_TIME_BUDGET_S = 20.0


def time_budget_seconds(value: str) -> float:
    """``--time-budget``: a duration such as ``15m`` (at least ``MIN_TIME_BUDGET_S``)."""
    seconds = parse_duration(value)
    if seconds < MIN_TIME_BUDGET_S:
        raise ValueError(f"--time-budget {value} is too short: a run needs at least "
                         f"{MIN_TIME_BUDGET_S:.0f}s to load the data, time the model and train")
    return seconds


def step_timer(config: TrainConfig, bundle, log=print):
    """A callable ``(depth, base_filters, tile, batch) -> seconds`` that times real
    training steps of that model, fed by the real input pipeline (augmentation
    competes with the model for the CPU), each size once, then cached."""
    from .data import pipeline
    from .training import build_model, compile_model
    cache: dict = {}

    def measure(depth, base_filters, tile, batch):
        key = (int(depth), int(base_filters), int(tile), int(batch))
        if key in cache:
            return cache[key]
        import keras
        trial = config.replace(depth=key[0], base_filters=key[1], tile_size=key[2], plan=False)
        model = build_model(trial, bundle.num_classes, bundle.in_channels)
        compile_model(model, trial, bundle.ignore_index)
        batches = iter(pipeline.train_dataset(
            bundle.train, tile_size=key[2], batch_size=key[3], depth=key[0],
            padding=config.padding, augment=config.augment_config(), spec=bundle.spec,
            weight_map=pipeline.WeightMapConfig(enabled=False), seed=config.seed))
        for _ in range(WARMUP_STEPS):
            model.train_on_batch(*next(batches))  # x, y, sample_weight
        start, steps = time.perf_counter(), 0
        while steps < TIMED_STEPS or (time.perf_counter() - start < MIN_TIMED_SECONDS
                                      and steps < MAX_TIMED_STEPS):
            model.train_on_batch(*next(batches))  # x, y, sample_weight
            steps += 1
        cache[key] = (time.perf_counter() - start) / steps
        log(f"  measured {cache[key]:.3f} s/step: depth {key[0]}, {key[1]} filters, "
            f"tile {key[2]}, batch {key[3]}")
        del model
        keras.backend.clear_session(free_memory=True)
        return cache[key]

    measure.measured = cache  # the plan prefers these to scaled estimates
    return measure


#: Plan entries that are TrainConfig options of the same name.
_OPTIONS = {f.name for f in fields(TrainConfig)}
#: The options the plan chooses (and so the ones a user's value overrides).
PLANNED = {"hflip", "vflip", "flip", "rot90", "normalisation", "depth", "base_filters", "tile_size",
           "batch_size", "loss", "weight_map", "rare_class_share", "epochs", "steps_per_epoch",
           "learning_rate", "lr_schedule", "warmup_steps"}


def plan_run(config: TrainConfig, bundle, explicit: set[str], *, elapsed_s: float = 0.0,
             log=print, measure: bool = True) -> tuple[TrainConfig, Plan]:
    """Plans the run and returns the configuration that follows the plan.

    Args:
        config: The configuration as given (defaults where the user gave nothing).
        bundle: The loaded data (training images fingerprinted).
        explicit: Names of the options the user gave; they win over the plan.
        elapsed_s: Seconds of the time budget already spent (loading the data).
        log: Where progress lines go.
        measure: Time real steps (False: estimate from FLOPs, for ``unet-tf plan --quick``).

    Returns:
        ``(config, plan)``; the bundle is renormalised when the plan says so.

    Raises:
        ValueError: a dataset too small to plan, images smaller than any tile,
            a time budget too short, a memory budget below one tile (each
            naming the value and what to do).
    """
    if len(bundle.train) < 2:
        raise ValueError(f"--data {config.data}: {len(bundle.train)} training image is too few to "
                         "plan from; add labelled images, or pass --no-plan to train on it with "
                         "the fixed defaults")
    fp = fingerprint_bundle(bundle, seed=config.seed)
    overrides = {name: getattr(config, name) for name in explicit & PLANNED}
    if overrides.get("normalisation") == "auto":
        del overrides["normalisation"]
    encoder_depth = config.encoder != "none" and "depth" not in overrides
    if encoder_depth:  # a pretrained encoder has five levels: all of them, tiles of 32
        overrides["depth"] = ENCODER_DEPTH
    if "steps_per_epoch" in overrides and overrides["steps_per_epoch"] is None:
        del overrides["steps_per_epoch"]
    total = time_budget_seconds(config.time_budget)
    started = time.monotonic() - elapsed_s
    if total - elapsed_s <= 0:
        raise ValueError(f"--time-budget {config.time_budget}: already spent loading the data "
                         f"({elapsed_s:.0f} s); give a longer budget")
    log("Planning: timing a few training steps of the candidate models")
    timer = step_timer(config, bundle, log) if measure else None

    def plan_for_remaining():
        return make_plan(fp, time_budget_s=total - (time.monotonic() - started),
                         memory_budget_bytes=memory_budget_bytes(config.memory_budget),
                         seconds_per_step=timer, padding=config.padding, overrides=overrides,
                         arch=config.arch, batch_norm=config.batch_norm)

    plan_for_remaining()  # times the candidate sizes (cached) ...
    plan = plan_for_remaining()  # ... then plans the steps for the time that is left
    chosen = tuple(int(plan[name]) for name in ("depth", "base_filters", "tile_size", "batch_size"))
    if timer is not None and total >= EXACT_TIMING_BUDGET_S and chosen not in timer.measured:
        timer(*chosen)  # the chosen size was scaled from another: time it as it will run
        plan = plan_for_remaining()
    if encoder_depth:
        plan.entries["depth"] = PlanEntry(ENCODER_DEPTH, f"--encoder {config.encoder}: its five "
                                          "levels (skips at strides 2-16, bottleneck at 32)")
    planned = {name: entry.value for name, entry in plan.entries.items()
               if name in _OPTIONS and not entry.overridden}
    config = config.replace(**_as_options(planned))
    norm = normalisation_spec(plan)
    if norm != bundle.normalisation:
        bundle.renormalise(norm)
    overridden = sorted(name for name, entry in plan.entries.items() if entry.overridden)
    if overridden:
        log("Options you set override the plan: " + ", ".join(
            f"--{name.replace('_', '-')}" for name in overridden))
    return config, plan


def chosen_normalisation(config: TrainConfig, bundle) -> dict | None:
    """The normalisation of ``--normalisation SCHEME`` without a plan (None for auto),
    its parameters fitted on the training images."""
    if config.normalisation == "auto":
        return None
    fp = fingerprint_bundle(bundle, seed=config.seed)
    bits = 0 if fp.bit_depth is None else max(8, min(16, fp.effective_bits or 8))
    return {"scheme": config.normalisation, **normalisation_params(fp, config.normalisation),
            "dtype": fp.dtype, "bits": bits}


def plan_dataset(config: TrainConfig, *, measure: bool = True, log=print) -> Plan:
    """The plan for ``config.data`` alone (what ``unet-tf plan DATA`` prints)."""
    from .data import pipeline
    from .data.streaming import open_data
    started = time.monotonic()
    # A folder or shard folder, streamed when it does not fit (the fingerprint reads a subset).
    bundle = open_data(config.data, val_fraction=config.val_fraction, seed=config.seed,
                       num_classes=config.num_classes, ignore_index=config.ignore_index,
                       weight_map=pipeline.WeightMapConfig(enabled=False),
                       memory_budget=config.memory_budget, data_path=config.data_path, log=log)
    return plan_run(config, bundle, set(), elapsed_s=time.monotonic() - started, log=log,
                    measure=measure)[1]


def _as_options(planned: dict) -> dict:
    """Plan values as TrainConfig values (lists of class weights stay out of the options)."""
    return {name: value for name, value in planned.items()
            if not isinstance(value, (list, dict))}


def report_image_cap(config: TrainConfig, plan: Plan | None, items,
                     seconds: float | None = None) -> int | None:
    """How many whole validation images the final report may predict within
    ``seconds`` (default: ``REPORT_SHARE`` of the budget); None: all of them."""
    if plan is None or not plan.details.get("seconds_per_step") or not items:
        return None
    pixels_per_step = config.tile_size**2 * max(config.batch_size, 1)
    seconds_per_pixel = plan.details["seconds_per_step"] / pixels_per_step / 3
    # A streamed split knows its sizes without decoding an image.
    sizes = items.sizes() if hasattr(items, "sizes") else [it.label.shape for it in items]
    mean_pixels = float(np.mean([h * w for h, w in sizes]))
    per_image = mean_pixels * seconds_per_pixel * 1.5  # tile overlap and borders
    if seconds is None:
        seconds = REPORT_SHARE * time_budget_seconds(config.time_budget)
    # The figures predict FIGURE_IMAGES more whole images after the report.
    allowed = max(seconds, 0.0) / max(per_image, 1e-6) - FIGURE_IMAGES
    return max(1, int(allowed)) if allowed < len(items) else None


def validation_tile_cap(config: TrainConfig, plan: Plan | None) -> int | None:
    """How many validation tiles one validation may take so that validation
    stays within ``VALIDATION_TILE_SHARE`` of the time budget (None: no cap)."""
    if plan is None or not plan.details.get("seconds_per_step"):
        return None
    seconds_per_tile = plan.details["seconds_per_step"] / max(config.batch_size, 1) / 3
    per_validation = validation_seconds(time_budget_seconds(config.time_budget), config.epochs,
                                        VALIDATION_TILE_SHARE)
    return max(config.batch_size, int(per_validation / max(seconds_per_tile, 1e-6)))
