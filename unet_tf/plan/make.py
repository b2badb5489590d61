"""The training plan: :func:`make_plan` applies the choosers in dependency order.

The user's options win and are marked ``overridden``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from .classes import choose_loss, choose_sampling
from .cost import ASSUMED_FLOPS_PER_SECOND, choose_model_size, flop_cost_model
from .fingerprint import Fingerprint
from .formatting import json_safe
from .invariances import MIN_IMAGES_PER_CLASS, detect_invariances
from .memory import (
    DEFAULT_MAX_TILE,
    choose_depth,
    choose_tile_and_batch,
    is_valid_tile,
    whole_image_tile,
)
from .normalisation import choose_normalisation, normalisation_params
from .result import Plan, PlanEntry
from .schedule import (
    DEFAULT_LEARNING_RATE,
    FEW_STEPS_WARNING,
    FINAL_LR_FRACTION,
    MAX_WARMUP_STEPS,
    WARMUP_SHARE,
    default_overhead,
    plan_schedule,
    report_reserve,
    split_epochs,
    validation_seconds,
    warmup_cosine_schedule,
)

#: The width the caller's measured ``seconds_per_step`` refers to (other widths are scaled by FLOPs).
DEFAULT_BASE_FILTERS = 16
#: The tile grows towards the whole image only while the budget still gives the
#: model this many steps (at the planned batch); a bigger tile costs per step.
MIN_STEPS_FOR_TILE = 1000
#: The tile the step time is first measured at (or the whole image, if smaller).
REFERENCE_TILE = 128


def _cost_function(fp: Fingerprint, seconds_per_step, depth: int, tile_batch_16,
                   arch: str) -> tuple[Callable, str]:
    """(estimate(depth, filters, tile, batch), how it was obtained) from the caller's input."""
    flops = flop_cost_model(fp, arch=arch)
    if seconds_per_step is None:
        return flops, f"estimated from FLOPs at an assumed {ASSUMED_FLOPS_PER_SECOND:.0e} FLOP/s, not measured"
    if callable(seconds_per_step):
        return seconds_per_step, "measured"
    ref = flops(depth, DEFAULT_BASE_FILTERS, *tile_batch_16)
    scale = float(seconds_per_step) / ref
    return (lambda d, f, t, b: flops(d, f, t, b) * scale,
            f"{float(seconds_per_step):.3g}s measured for {DEFAULT_BASE_FILTERS} filters, scaled by FLOPs")


class _PlanBuilder:
    """Fills a plan's entries in dependency order, with the user's overrides winning."""

    def __init__(self, fp, overrides):
        self.fp = fp
        self.overrides = dict(overrides or {})
        self.entries: dict[str, PlanEntry] = {}
        self.warnings: list[str] = []
        self.details: dict = {}

    def user(self, name):
        return self.overrides.get(name)

    def set(self, name, value, reason):
        """Record a planned value, unless the user set it."""
        if name in self.overrides:
            self.entries[name] = PlanEntry(json_safe(self.overrides[name]), "set by the user", True)
        else:
            self.entries[name] = PlanEntry(json_safe(value), reason)
        return self.entries[name].value


def make_plan(fp: Fingerprint, *, time_budget_s: float, memory_budget_bytes: float,
              seconds_per_step: float | Callable | None = None, padding: str = "same",
              overrides: Mapping | None = None, arch: str = "unet", batch_norm: bool = True,
              max_tile: int = DEFAULT_MAX_TILE) -> Plan:
    """The training plan for a fingerprinted dataset.

    Args:
        fp: the dataset's fingerprint.
        time_budget_s: the whole run's time budget (:func:`parse_duration`).
        memory_budget_bytes: memory training may use (:func:`parse_bytes`).
        seconds_per_step: None (FLOP estimate, see ASSUMED_FLOPS_PER_SECOND), a
            float measured for the 16-filter model at its planned tile and
            batch (scaled by FLOPs for other widths), or a callable
            ``(depth, base_filters, tile, batch) -> seconds`` that measures.
        padding: "same" or "valid".
        overrides: ``{option: value}`` the user gave; they win and are marked.
        arch, batch_norm: the model (memory and cost estimates).
        max_tile: the largest tile.

    Returns:
        The :class:`Plan`.

    Raises:
        ValueError: an empty dataset, images too small for any tile, a time
            budget too short (names --time-budget), a memory budget below one
            tile (names --memory-budget).
    """
    if fp.n_images < 1:
        raise ValueError("The dataset is empty: there is nothing to plan for")
    b = _PlanBuilder(fp, overrides)
    if fp.n_images == 1:
        b.warnings.append("Only 1 training image: the plan cannot check layouts, and the "
                          "model will overfit it; add images if you can")
    _plan_augmentation(b)
    _plan_normalisation(b)
    _plan_model(b, time_budget_s, memory_budget_bytes, seconds_per_step, padding, arch, batch_norm, max_tile)
    _plan_loss(b)
    _plan_schedule(b, time_budget_s)
    _warn_classes(b)
    for name in b.overrides:  # options the plan does not choose, still shown as the user's
        if name not in b.entries:
            b.entries[name] = PlanEntry(json_safe(b.overrides[name]), "set by the user", True)
    return Plan(entries=b.entries, fingerprint=fp, warnings=b.warnings, details=json_safe(b.details))


def _plan_augmentation(b: _PlanBuilder) -> None:
    inv = detect_invariances(b.fp)
    b.details["invariances"] = inv
    if 1 < b.fp.n_images < MIN_IMAGES_PER_CLASS:
        b.warnings.append(f"Only {b.fp.n_images} images: too few to check that flips and rotations "
                          f"are safe (>= {MIN_IMAGES_PER_CLASS} needed), so they stay on; pass "
                          "--no-flip / --no-rot90 if classes depend on left/right or up/down")
    flip = b.user("flip")
    for axis in ("hflip", "vflip"):
        if flip is not None and axis not in b.overrides:  # the user's one --flip sets both
            b.entries[axis] = PlanEntry(bool(flip), "set by the user (--flip)", True)
        else:
            b.set(axis, inv[axis], inv[axis + "_reason"])
    both = bool(b.entries["hflip"].value and b.entries["vflip"].value)
    b.set("flip", both, "both flips are safe" if both else
          "the one --flip option flips both axes, and one of them is not safe")
    b.set("rot90", inv["rot90"], inv["rot90_reason"])


def _plan_normalisation(b: _PlanBuilder) -> None:
    norm = choose_normalisation(b.fp)
    scheme = b.set("normalisation", norm["scheme"], norm["reason"])
    params = norm["params"] if scheme == norm["scheme"] else normalisation_params(b.fp, scheme)
    b.set("normalisation_params", params, f"parameters of {scheme}")


def _plan_model(b: _PlanBuilder, time_budget_s, memory_budget_bytes, seconds_per_step, padding,
                arch, batch_norm, max_tile) -> None:
    fp = b.fp
    if b.user("depth") is not None:
        depth = b.set("depth", None, "")
    else:
        chosen = choose_depth(fp, padding, max_tile=max_tile)
        depth = b.set("depth", chosen["depth"], chosen["reason"])
    depth = int(depth)
    tile_o = b.user("tile_size")
    batch_o = b.user("batch_size")
    caps = {"tile": max_tile}

    def layout(filters):
        r = choose_tile_and_batch(fp, depth, filters, memory_budget_bytes, padding, caps["tile"],
                                  batch_norm=batch_norm, arch=arch, tile=tile_o, batch=batch_o)
        layout.results[filters] = r
        return r["tile_size"], r["batch_size"]
    layout.results = {}

    caps["tile"] = min(max_tile, whole_image_tile(min(fp.median_side, REFERENCE_TILE), depth, padding))
    ref = layout(DEFAULT_BASE_FILTERS)
    estimate, how = _cost_function(fp, seconds_per_step, depth, ref, arch)
    caps["tile"] = _tile_for_steps(fp, estimate, ref, depth, padding, max_tile, time_budget_s, b)
    estimate = _scaled_from(estimate, depth, ref)
    if b.user("base_filters") is not None:
        filters = int(b.user("base_filters"))
        tile, batch = layout(filters)
        size = dict(reason="", seconds_per_step=float(estimate(depth, filters, tile, batch)))
    else:  # each width is measured (or estimated) once, here
        size = choose_model_size(estimate, time_budget_s, depth=depth, layout=layout)
        filters, tile, batch = size["base_filters"], size["tile_size"], size["batch_size"]
    b.set("base_filters", filters, size["reason"] + f"; step times {how}")
    r = layout.results[filters]
    capped = b.details.get("tile_for_steps", {})
    reason = r["tile_reason"]
    if not tile_o and capped and tile < min(capped["whole_image"], max_tile):
        reason = (f"the whole image needs a {capped['whole_image']} px tile; {tile} px keeps "
                  f">= {MIN_STEPS_FOR_TILE} steps in the budget (step time grows with the area)")
    b.set("tile_size", tile, reason)
    b.set("batch_size", batch, r["batch_reason"])
    if tile_o and not is_valid_tile(int(tile_o), depth, padding):
        b.warnings.append(f"--tile-size {tile_o} is not a valid input size for depth {depth} with "
                          f"{padding} padding; the next valid size is "
                          f"{whole_image_tile(int(tile_o), depth, padding)}")
    b.details["memory_bytes"] = r["memory_bytes"]
    b.details["seconds_per_step"] = size["seconds_per_step"]
    b.details["seconds_per_step_source"] = how


def _tile_for_steps(fp, estimate, ref, depth, padding, max_tile, time_budget_s, b) -> int:
    """The largest tile, up to the whole image, that still gives ``MIN_STEPS_FOR_TILE``
    steps: step time grows with the tile's area (measured at the reference tile)."""
    seconds = float(estimate(depth, DEFAULT_BASE_FILTERS, *ref))
    per_pixel = seconds / (ref[0] ** 2 * ref[1])
    train_s = time_budget_s - default_overhead(time_budget_s)
    area = train_s / (MIN_STEPS_FOR_TILE * per_pixel * ref[1])
    whole = whole_image_tile(fp.median_side, depth, padding)
    tile = ref[0]
    for candidate in range(ref[0], min(whole, max_tile) + 1):
        if is_valid_tile(candidate, depth, padding) and candidate * candidate <= area:
            tile = candidate
    b.details["tile_for_steps"] = {"reference": list(ref), "seconds": seconds, "largest": tile,
                                   "whole_image": whole}
    return max(tile, ref[0])


def _scaled_from(estimate, depth: int, ref):
    """Step times of the reference width scale with the input area; other widths
    are measured (or estimated) as they are. A size the timer has measured
    exactly (its ``measured`` dict) keeps its measured time."""
    seconds = float(estimate(depth, DEFAULT_BASE_FILTERS, *ref))
    measured = getattr(estimate, "measured", {})

    def scaled(d, filters, tile, batch):
        known = measured.get((int(d), int(filters), int(tile), int(batch)))
        if known is not None:
            return known
        if d == depth and filters == DEFAULT_BASE_FILTERS:
            return seconds * (tile * tile * batch) / (ref[0] ** 2 * ref[1])
        return estimate(d, filters, tile, batch)
    return scaled


def _plan_loss(b: _PlanBuilder) -> None:
    loss = choose_loss(b.fp)
    chosen = b.set("loss", loss["loss"], loss["reason"])
    use_map = loss["weight_map"] if chosen == loss["loss"] else chosen == "wce"
    b.set("weight_map", use_map, "the paper's weight map goes with wce" if use_map
          else "no touching objects to separate" if chosen == loss["loss"] else f"not used by {chosen}")
    b.set("class_weights", loss["class_weights"], loss["class_weights_reason"])
    sampling = choose_sampling(b.fp)
    b.set("rare_class_share", sampling["rare_class_share"], sampling["reason"])
    b.details["rare_classes"] = sampling["rare_classes"]


def _plan_schedule(b: _PlanBuilder, time_budget_s: float) -> None:
    lr = float(b.user("learning_rate") or DEFAULT_LEARNING_RATE)
    sps = b.details["seconds_per_step"]
    steps_o, epochs_o, spe_o = b.user("steps"), b.user("epochs"), b.user("steps_per_epoch")
    if steps_o is None and epochs_o is not None and spe_o is not None:
        steps_o = int(epochs_o) * int(spe_o)
    if steps_o is not None:
        steps = int(steps_o)
        epochs, per_epoch = split_epochs(steps, None, None,
                                          epochs_o or (max(1, steps // int(spe_o)) if spe_o else None))
        schedule = dict(steps=steps, epochs=epochs, steps_per_epoch=per_epoch,
                        reason="from the user's steps/epochs", lr_schedule=warmup_cosine_schedule(steps, lr))
    else:
        schedule = plan_schedule(sps, time_budget_s, learning_rate=lr)
        if epochs_o is not None or spe_o is not None:
            epochs, per_epoch = split_epochs(schedule["steps"], None, None,
                                              epochs_o or max(1, schedule["steps"] // int(spe_o)))
            schedule.update(epochs=epochs, steps_per_epoch=per_epoch)
    steps = b.set("steps", schedule["steps"], schedule["reason"])
    b.details["train_seconds"] = round(float(steps) * sps, 1)  # what the steps should take
    # What the run's time guard keeps after training, and expects a validation to take.
    b.details["report_reserve_s"] = round(report_reserve(time_budget_s), 1)
    b.details["validation_s"] = round(validation_seconds(time_budget_s, schedule["epochs"]), 1)
    b.set("epochs", schedule["epochs"], f"{schedule['epochs']} validations/checkpoints in the run")
    b.set("steps_per_epoch", schedule["steps_per_epoch"], "steps between validations")
    lr_data = warmup_cosine_schedule(int(steps), lr)
    b.details["lr_schedule"] = lr_data
    b.set("learning_rate", lr, "Adam's usual peak rate, with warm-up and cosine decay")
    b.set("lr_schedule", "cosine", f"linear warm-up over {lr_data['warmup_steps']} steps, then cosine "
          f"decay to {FINAL_LR_FRACTION:.0%} at step {lr_data['total_steps']}")
    b.set("warmup_steps", lr_data["warmup_steps"],
          f"{WARMUP_SHARE:.0%} of the steps (at most {MAX_WARMUP_STEPS})")
    if int(steps) < FEW_STEPS_WARNING:
        b.warnings.append(f"Only {steps} training steps fit: expect an undertrained model "
                          f"(>= {FEW_STEPS_WARNING} recommended); raise --time-budget")


def _warn_classes(b: _PlanBuilder) -> None:
    fp = b.fp
    absent = [fp.class_name(k) for k in range(fp.num_classes) if not fp.class_pixels[k]]
    if absent:
        b.warnings.append(f"{', '.join(absent)} never appear in the training labels")
    if fp.void_share > 0.5:
        b.warnings.append(f"{fp.void_share:.0%} of the pixels are void (ignore index {fp.ignore_index})")
