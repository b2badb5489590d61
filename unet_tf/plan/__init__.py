"""A training plan from a dataset fingerprint: explained, rule-based defaults.

Like nnU-Net, ``train.py --data DATA`` should train well on any 2D dataset
without tuning. This package (numpy, scipy and optionally OpenCV, no
TensorFlow) does it in two steps:

1. :func:`fingerprint_arrays` streams over the training samples once and
   summarises them in a JSON-safe :class:`Fingerprint`: sizes, dtype and bit
   depth, intensity percentiles, how much each image's own intensity range
   varies, class frequencies, objects and how many of them touch, and each
   class's spatial prior (where in the image it lies).
2. :func:`make_plan` applies named rules to the fingerprint, a time budget and a
   memory budget, and returns a :class:`Plan`: one :class:`PlanEntry` (value
   and the reason for it) per training option. The user's options win and are
   marked ``overridden``. :func:`format_plan` prints it as a table.

Every threshold is a named constant, next to the code that uses it, with a
comment saying why. The separate choosers (:func:`detect_invariances`,
:func:`choose_normalisation`, :func:`choose_depth`,
:func:`choose_tile_and_batch`, :func:`choose_model_size`,
:func:`plan_schedule`, :func:`choose_sampling`, :func:`choose_loss`) can be
used on their own.

Modules, lowest first (each imports only modules above it in this list):

* ``formatting``: JSON-safe values, byte and duration strings;
* ``streaming``: the pixel reservoir and per-class sign moments;
* ``object_stats``: objects, touching objects and diameters of one label map;
* ``fingerprint``: :class:`Fingerprint` and :func:`fingerprint_arrays`;
* ``invariances``: flips and rotations (:func:`detect_invariances`);
* ``result``: :class:`PlanEntry` and :class:`Plan`;
* ``normalisation``: :func:`choose_normalisation`, :func:`apply_normalisation`,
  :func:`normalisation_spec` (the record that :mod:`unet_tf.data.normalise`
  applies in the pipeline);
* ``memory``: memory estimates, valid tiles, depth, tile and batch;
* ``schedule``: steps, epochs, learning-rate schedule;
* ``cost``: FLOP cost model and :func:`choose_model_size`;
* ``budgets``: :func:`parse_duration`, :func:`parse_bytes`;
* ``classes``: :func:`choose_sampling`, :func:`choose_loss`, class weights;
* ``make``: :func:`make_plan`;
* ``printing``: :func:`format_plan`.
"""
from .budgets import parse_bytes, parse_duration
from .classes import (
    CLASS_WEIGHT_RANGE,
    RARE_CLASS_FREQUENCY,
    RARE_TILE_SHARE,
    TOUCHING_SHARE_WCE,
    choose_loss,
    choose_sampling,
    class_weights_from_frequency,
)
from .cost import (
    ASSUMED_FLOPS_PER_SECOND,
    FILTER_CANDIDATES,
    MIN_STEPS_FOR_WIDER,
    STEP_OVERHEAD_S,
    TRAIN_FLOPS_FACTOR,
    choose_model_size,
    flop_cost_model,
    flops_per_step,
)
from .fingerprint import (
    BACKGROUND_CLASS,
    MAX_DIAMETERS_PER_IMAGE,
    MAX_LISTED_SIZES,
    MAX_OBJECT_IMAGES,
    MIN_CONTRAST_SHARE,
    MIN_PIXELS_FOR_MEDIAN,
    PER_IMAGE_SAMPLE,
    RESERVOIR_SIZE,
    Fingerprint,
    fingerprint_arrays,
)
from .invariances import (
    ASYMMETRIC_SHARE_MIN,
    DIPOLE_MIN,
    EDGE_ANISOTROPY_MIN,
    MIN_IMAGES_PER_CLASS,
    PAIR_RELATIVE_DISTANCE,
    SIGN_TEST_ALPHA,
    detect_invariances,
)
from .make import DEFAULT_BASE_FILTERS, make_plan
from .memory import (
    DEFAULT_MAX_TILE,
    GRADIENT_FACTOR,
    MAX_DEPTH,
    MEMORY_USABLE_SHARE,
    MIN_BOTTLENECK_SIDE,
    MIN_DEPTH,
    PARAM_STATE_COPIES,
    activation_bytes_per_pixel,
    choose_depth,
    choose_tile_and_batch,
    is_valid_tile,
    min_tile_size,
    parameter_count,
    training_memory_bytes,
    whole_image_tile,
)
from .normalisation import (
    CLIP_PERCENTILES,
    DIM_8BIT_BITS,
    INTENSITY_VARIATION_MAX,
    UNIT_RANGE_TOLERANCE,
    apply_normalisation,
    choose_normalisation,
    normalisation_params,
    normalisation_spec,
)
from .object_stats import TOUCH_DISTANCE_PX
from .printing import format_plan
from .result import Plan, PlanEntry
from .schedule import (
    DEFAULT_LEARNING_RATE,
    FEW_STEPS_WARNING,
    FINAL_LR_FRACTION,
    FINISH_S,
    MAX_VALIDATIONS,
    MAX_WARMUP_STEPS,
    MIN_STEPS,
    MIN_VALIDATIONS,
    REPORT_SHARE,
    STARTUP_S,
    TARGET_VALIDATIONS,
    VALIDATION_SHARE,
    WARMUP_SHARE,
    learning_rate_at,
    plan_schedule,
    report_reserve,
    validation_seconds,
)
from .streaming import SIGN_EPS

__all__ = [
    "Fingerprint",
    "Plan",
    "PlanEntry",
    "activation_bytes_per_pixel",
    "apply_normalisation",
    "choose_depth",
    "choose_loss",
    "choose_model_size",
    "choose_normalisation",
    "choose_sampling",
    "choose_tile_and_batch",
    "class_weights_from_frequency",
    "detect_invariances",
    "fingerprint_arrays",
    "flop_cost_model",
    "flops_per_step",
    "format_plan",
    "is_valid_tile",
    "learning_rate_at",
    "make_plan",
    "min_tile_size",
    "normalisation_params",
    "normalisation_spec",
    "parameter_count",
    "parse_bytes",
    "parse_duration",
    "plan_schedule",
    "report_reserve",
    "validation_seconds",
    "training_memory_bytes",
    "whole_image_tile",
    # named constants (thresholds and defaults, documented where they are defined)
    "ASSUMED_FLOPS_PER_SECOND",
    "ASYMMETRIC_SHARE_MIN",
    "BACKGROUND_CLASS",
    "CLASS_WEIGHT_RANGE",
    "CLIP_PERCENTILES",
    "DEFAULT_BASE_FILTERS",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_MAX_TILE",
    "DIM_8BIT_BITS",
    "DIPOLE_MIN",
    "EDGE_ANISOTROPY_MIN",
    "FEW_STEPS_WARNING",
    "FILTER_CANDIDATES",
    "FINAL_LR_FRACTION",
    "FINISH_S",
    "GRADIENT_FACTOR",
    "INTENSITY_VARIATION_MAX",
    "MAX_DEPTH",
    "MAX_DIAMETERS_PER_IMAGE",
    "MAX_LISTED_SIZES",
    "MAX_OBJECT_IMAGES",
    "MAX_VALIDATIONS",
    "MAX_WARMUP_STEPS",
    "MEMORY_USABLE_SHARE",
    "MIN_BOTTLENECK_SIDE",
    "MIN_CONTRAST_SHARE",
    "MIN_DEPTH",
    "MIN_IMAGES_PER_CLASS",
    "MIN_PIXELS_FOR_MEDIAN",
    "MIN_STEPS",
    "MIN_STEPS_FOR_WIDER",
    "MIN_VALIDATIONS",
    "PAIR_RELATIVE_DISTANCE",
    "PARAM_STATE_COPIES",
    "PER_IMAGE_SAMPLE",
    "RARE_CLASS_FREQUENCY",
    "RARE_TILE_SHARE",
    "REPORT_SHARE",
    "RESERVOIR_SIZE",
    "SIGN_EPS",
    "SIGN_TEST_ALPHA",
    "STARTUP_S",
    "STEP_OVERHEAD_S",
    "TARGET_VALIDATIONS",
    "TOUCHING_SHARE_WCE",
    "TOUCH_DISTANCE_PX",
    "TRAIN_FLOPS_FACTOR",
    "UNIT_RANGE_TOLERANCE",
    "VALIDATION_SHARE",
    "WARMUP_SHARE",
]
