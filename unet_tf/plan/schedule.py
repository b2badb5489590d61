"""Steps, epochs and the learning-rate schedule that fit the time budget."""
from __future__ import annotations

import math
from collections.abc import Mapping

from .formatting import format_seconds


#: Fixed start-up time (model build, graph tracing, first caches).
STARTUP_S = 15.0
#: Share of the budget kept for validation passes and checkpoints.
VALIDATION_SHARE = 0.10
#: Share of the budget kept for the final report on whole validation images
#: (the run ends within its budget, report and figures included) ...
REPORT_SHARE = 0.06
#: ... and the seconds on top of it for loading the best model, writing the
#: report and drawing the figures.
FINISH_S = 10.0
#: Fewer steps than this cannot train anything: an error naming --time-budget.
MIN_STEPS = 20
#: Fewer steps than this train, but the plan warns that the model will be weak.
FEW_STEPS_WARNING = 500
#: Validations (= "epochs") per run: enough to pick a good checkpoint and to
#: see the curve, few enough that validation stays a small share of the time.
TARGET_VALIDATIONS, MIN_VALIDATIONS, MAX_VALIDATIONS = 20, 5, 40
#: What one validation with its checkpoint costs on a 2-core CPU (measured: about
#: 3 s for a small validation split); short budgets validate less often so that
#: this stays within VALIDATION_SHARE of the budget.
EPOCH_OVERHEAD_S = 3.0
#: Linear warm-up over 5% of the steps (at most 1000): Adam's early steps
#: with batch norm are unstable at the full rate.
WARMUP_SHARE, MAX_WARMUP_STEPS = 0.05, 1000
#: Cosine decay ends at 1% of the peak rate (the trainer's CosineDecay alpha).
FINAL_LR_FRACTION = 0.01
#: Adam's usual rate; warm-up and cosine decay make it safe for U-Nets.
DEFAULT_LEARNING_RATE = 1e-3


def report_reserve(time_budget_s: float) -> float:
    """Seconds kept after training for the report and the figures."""
    return REPORT_SHARE * time_budget_s + FINISH_S


def validation_seconds(time_budget_s: float, epochs: int, share: float = VALIDATION_SHARE) -> float:
    """Seconds one validation may take: ``share`` of the budget over the run's validations."""
    return share * time_budget_s / max(int(epochs), 1)


def default_overhead(time_budget_s: float) -> float:
    """What the budget keeps apart from training steps."""
    return STARTUP_S + VALIDATION_SHARE * time_budget_s + report_reserve(time_budget_s)


def split_epochs(steps: int, train_s: float | None, val_every_s: float | None,
                  epochs: int | None = None) -> tuple[int, int]:
    """(epochs, steps per epoch): an epoch is one validation/checkpoint interval."""
    if epochs is None:
        if val_every_s and train_s:
            epochs = round(train_s / val_every_s)
        else:
            epochs = TARGET_VALIDATIONS
            if train_s:  # affordable validations: their cost within the validation share
                epochs = min(epochs, int(VALIDATION_SHARE * train_s / EPOCH_OVERHEAD_S))
        epochs = min(max(epochs, MIN_VALIDATIONS), MAX_VALIDATIONS)
    epochs = max(1, min(epochs, steps))
    return epochs, steps // epochs


def warmup_cosine_schedule(steps: int, learning_rate: float) -> dict:
    warmup = min(max(1, round(WARMUP_SHARE * steps)), MAX_WARMUP_STEPS, max(steps - 1, 0))
    return dict(name="warmup_cosine", peak_lr=learning_rate, warmup_steps=warmup,
                total_steps=steps, final_lr=learning_rate * FINAL_LR_FRACTION)


def learning_rate_at(step: int, schedule: Mapping) -> float:
    """The rate of a ``warmup_cosine`` schedule (from :func:`plan_schedule`) at ``step``.

    Linear from ``peak/warmup`` to ``peak`` over the warm-up steps, then cosine
    decay to ``final_lr`` at ``total_steps``.
    """
    peak, final = schedule["peak_lr"], schedule["final_lr"]
    warmup, total = schedule["warmup_steps"], schedule["total_steps"]
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * progress))


def plan_schedule(seconds_per_step: float, time_budget_s: float, *, overhead_s: float | None = None,
                  min_steps: int = MIN_STEPS, val_every_s: float | None = None,
                  learning_rate: float = DEFAULT_LEARNING_RATE) -> dict:
    """Steps, epochs and the learning-rate schedule that fit the time budget.

    ``steps = floor((time_budget_s - overhead_s) / seconds_per_step)``,
    independent of the number of images. The default overhead is
    ``STARTUP_S + VALIDATION_SHARE * time_budget_s`` plus :func:`report_reserve`. An "epoch" is a
    validation/checkpoint interval: ``round(train time / val_every_s)`` of them,
    or ``TARGET_VALIDATIONS``, clamped to [MIN_VALIDATIONS, MAX_VALIDATIONS].
    ``steps`` is rounded down to whole epochs. The schedule is a linear
    warm-up then cosine decay to ``FINAL_LR_FRACTION`` of the rate.

    Args:
        seconds_per_step: measured (or estimated) seconds of one training step.
        time_budget_s: the whole run's budget.
        overhead_s: seconds not spent in training steps.
        min_steps: fewer steps raise a ValueError.
        val_every_s: desired seconds between validations.
        learning_rate: the peak rate.

    Returns:
        ``{"steps", "steps_per_epoch", "epochs", "warmup_steps", "lr_schedule", "train_seconds", "reason"}``.

    Raises:
        ValueError: naming --time-budget when fewer than ``min_steps`` fit.
    """
    if not seconds_per_step > 0:
        raise ValueError(f"seconds_per_step must be > 0, got {seconds_per_step}")
    overhead = default_overhead(time_budget_s) if overhead_s is None else overhead_s
    train_s = time_budget_s - overhead
    steps = int(train_s // seconds_per_step) if train_s > 0 else 0
    if steps < min_steps:
        needed = overhead + min_steps * seconds_per_step
        if overhead_s is None:  # the default overhead grows with the budget
            needed = (STARTUP_S + FINISH_S + min_steps * seconds_per_step) / (
                1 - VALIDATION_SHARE - REPORT_SHARE)
        raise ValueError(
            f"--time-budget {format_seconds(time_budget_s)} is too short: after {format_seconds(overhead)} of "
            f"start-up, validation and the report it leaves {max(steps, 0)} steps of {seconds_per_step:.3g}s "
            f"(at least {min_steps} needed); give at least {format_seconds(math.ceil(needed))}")
    epochs, per_epoch = split_epochs(steps, train_s, val_every_s)
    steps = epochs * per_epoch
    schedule = warmup_cosine_schedule(steps, learning_rate)
    reason = (f"{format_seconds(train_s)} of training ({format_seconds(time_budget_s)} budget - "
              f"{format_seconds(overhead)} start-up/validation/report) / {seconds_per_step:.3g}s per step")
    return dict(steps=steps, steps_per_epoch=per_epoch, epochs=epochs,
                warmup_steps=schedule["warmup_steps"], lr_schedule=schedule,
                train_seconds=train_s, reason=reason)
