"""Step cost (FLOP model) and the widest model that the time budget allows."""
from __future__ import annotations

from collections.abc import Callable

from .fingerprint import Fingerprint
from .memory import level_filters, num_outputs
from .schedule import default_overhead


#: Model widths tried, smallest first.
FILTER_CANDIDATES = (16, 32)
#: A wider model is chosen only when the budget still allows this many steps
#: with it: below ~2000 steps a U-Net is step-limited, not capacity-limited.
MIN_STEPS_FOR_WIDER = 2000
#: Effective training throughput assumed when no step time is measured (a
#: modest GPU at realistic utilisation); callers should measure instead.
ASSUMED_FLOPS_PER_SECOND = 1e12
#: Per-step cost that does not scale with FLOPs (launch, input pipeline).
STEP_OVERHEAD_S = 0.01
#: Training FLOPs are about 3x the forward pass (forward + 2x backward).
TRAIN_FLOPS_FACTOR = 3.0


def flops_per_step(depth: int, base_filters: int, tile: int, batch: int, *, in_channels: int = 1,
                   num_outputs: int = 2, arch: str = "unet") -> float:
    """Training FLOPs of one step: TRAIN_FLOPS_FACTOR x the forward pass.

    The forward pass counts ``2 k**2 c_in c_out`` per output pixel of every
    convolution, on ``4**-level`` of the tile's pixels.
    """
    f = level_filters(depth, base_filters)
    per_px, c = 0.0, in_channels
    for level in range(depth + 1):
        per_px += 2 * 9 * (c * f[level] + f[level] * f[level]) / 4**level
        c = f[level]
    for level in reversed(range(depth)):
        nodes = depth - level if arch == "unetpp" else 1
        up = 2 * 4 * c * f[level] / 4**level
        conv = 2 * 9 * (2 * f[level] * f[level] + f[level] * f[level]) / 4**level
        per_px += nodes * (up + conv)
        c = f[level]
    per_px += 2 * c * num_outputs
    return TRAIN_FLOPS_FACTOR * per_px * tile * tile * batch


def flop_cost_model(fp: Fingerprint, *, flops_per_second: float = ASSUMED_FLOPS_PER_SECOND,
                    step_overhead_s: float = STEP_OVERHEAD_S, arch: str = "unet") -> Callable:
    """An ``estimate_seconds_per_step(depth, base_filters, tile, batch)`` from FLOPs.

    Args:
        fp: the fingerprint (channels, outputs).
        flops_per_second: effective training throughput of the machine.
        step_overhead_s: fixed seconds per step.
        arch: "unet" or "unetpp".
    """
    def estimate(depth: int, base_filters: int, tile: int, batch: int) -> float:
        flops = flops_per_step(depth, base_filters, tile, batch, in_channels=fp.channels,
                               num_outputs=num_outputs(fp), arch=arch)
        return step_overhead_s + flops / flops_per_second
    return estimate


def choose_model_size(estimate_seconds_per_step: Callable, time_budget_s: float, *, depth: int,
                      layout: Callable | tuple, candidates=FILTER_CANDIDATES,
                      min_steps_for_wider: int = MIN_STEPS_FOR_WIDER,
                      overhead_s: float | None = None) -> dict:
    """The widest model whose budget still allows ``min_steps_for_wider`` steps.

    Args:
        estimate_seconds_per_step: ``(depth, base_filters, tile, batch) -> seconds``
            (measured by the caller, or :func:`flop_cost_model`).
        time_budget_s: the whole run's time budget.
        depth: the U-Net's depth.
        layout: ``(tile, batch)``, or ``base_filters -> (tile, batch)`` (the
            memory budget gives wider models smaller tiles or batches); a
            ValueError from it skips that width.
        candidates: widths, smallest first; the smallest is the fallback.
        min_steps_for_wider: steps a wider model must still get.
        overhead_s: as in :func:`plan_schedule`.

    Returns:
        ``{"base_filters", "tile_size", "batch_size", "seconds_per_step", "reason"}``.
    """
    train_s = time_budget_s - (default_overhead(time_budget_s) if overhead_s is None else overhead_s)
    options = []
    for filters in candidates:
        try:
            tile, batch = layout(filters) if callable(layout) else layout
        except ValueError as err:
            options.append((filters, None, None, None, str(err)))
            continue
        seconds = float(estimate_seconds_per_step(depth, filters, tile, batch))
        options.append((filters, tile, batch, seconds, None))
    usable = [o for o in options if o[1] is not None]
    if not usable:
        raise ValueError(options[0][4])
    chosen = usable[0]
    for o in usable[1:]:
        if train_s / o[3] >= min_steps_for_wider:
            chosen = o
    reason = _model_size_reason(chosen, options, train_s, min_steps_for_wider)
    return dict(base_filters=chosen[0], tile_size=chosen[1], batch_size=chosen[2],
                seconds_per_step=chosen[3], reason=reason)


def _model_size_reason(chosen, options, train_s, min_steps) -> str:
    parts = []
    for filters, tile, batch, sps, err in options:
        if err:
            parts.append(f"{filters} filters do not fit the memory budget")
        else:
            parts.append(f"{filters} filters: {max(int(train_s / sps), 0)} steps of {sps:.3g}s")
    wider = [o for o in options if o[0] > chosen[0]]
    if not wider:
        head = f"{chosen[0]} filters: the widest candidate, still given >= {min_steps} steps" \
            if len(options) > 1 else f"{chosen[0]} filters"
    else:
        head = f"{chosen[0]} filters: a wider model would get < {min_steps} steps or not fit"
    return f"{head} ({'; '.join(parts)})"
