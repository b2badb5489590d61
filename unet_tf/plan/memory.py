"""Network sizes that fit: memory estimates, valid tiles, depth, tile and batch choice."""
from __future__ import annotations

from .fingerprint import Fingerprint
from .formatting import format_bytes


#: The shallowest and deepest U-Net this plan builds.
MIN_DEPTH, MAX_DEPTH = 2, 4
#: The bottleneck keeps at least 4x4 pixels: depth d needs tiles >= 4 * 2**d
#: (64 px for depth 4), else its 3x3 convolutions see mostly padding.
MIN_BOTTLENECK_SIDE = 4
#: Backward pass: the gradient of each kept activation plus convolution
#: workspace roughly double the forward activations. An assumption, not
#: calibrated in this module (it has no framework): compare with a measured
#: peak (e.g. tf.config.experimental.get_memory_info) before trusting it.
GRADIENT_FACTOR = 2.0
#: Weights, their gradients and Adam's two moments: 4 copies of the parameters.
PARAM_STATE_COPIES = 4
#: Share of the memory budget that tensors may use: the rest is left for the
#: framework, the input pipeline's prefetch and allocator fragmentation.
MEMORY_USABLE_SHARE = 0.8
DEFAULT_MAX_TILE = 512
#: The batch the plan aims at: batch norm's statistics are noisy below it
#: (batches of 2-3 whole images lost 0.2-0.4 dice on two look-alikes).
TARGET_BATCH = 8


def level_filters(depth: int, base_filters: int) -> list[int]:
    return [base_filters * 2**level for level in range(depth + 1)]


def activation_bytes_per_pixel(depth: int, base_filters: int, padding: str = "same",
                               batch_norm: bool = True, arch: str = "unet", dtype_bytes: int = 4,
                               *, in_channels: int = 1, num_outputs: int = 2) -> float:
    """Estimated training memory per input pixel, in bytes.

    Formula (f_l = base_filters * 2**l channels at level l, on 4**-l of the
    pixels; t = 3 tensors per convolution with batch norm (conv, BN, ReLU
    outputs), 2 without):

    * encoder level l < depth: ``2 t f_l / 4**l`` (two convolutions) plus the
      pooled output ``f_l / 4**(l + 1)``;
    * bottleneck: ``2 t f_depth / 4**depth`` plus its dropout output;
    * decoder level l (U-Net): up-convolution ``f_l``, concatenation ``2 f_l``
      and two convolutions ``2 t f_l``, all on ``1 / 4**l``; U-Net++ has
      ``depth - l`` nodes at level l, node j concatenating ``j + 1`` maps;
    * the input, logits, probabilities, weight map and label:
      ``in_channels + 2 num_outputs + 2``;

    the sum in floats, times ``dtype_bytes``, times ``GRADIENT_FACTOR`` for the
    activation gradients and convolution workspace of the backward pass. With
    valid padding the estimate per input pixel is an upper bound (every
    convolution trims the map).

    Args:
        depth: pooling steps.
        base_filters: channels of the first level.
        padding: "same" or "valid".
        batch_norm: batch norm after each convolution.
        arch: "unet" or "unetpp".
        dtype_bytes: 4 for float32, 2 for mixed precision activations.
        in_channels, num_outputs: input channels and output channels.

    Returns:
        Bytes per input pixel per sample.
    """
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    if arch not in ("unet", "unetpp"):
        raise ValueError(f"arch must be 'unet' or 'unetpp', got {arch!r}")
    t = 3 if batch_norm else 2
    f = level_filters(depth, base_filters)
    floats = in_channels + 2 * num_outputs + 2.0
    for level in range(depth):
        floats += (2 * t * f[level] + f[level] / 4) / 4**level
    floats += (2 * t + 1) * f[depth] / 4**depth
    for level in range(depth):
        nodes = range(1, depth - level + 1) if arch == "unetpp" else [1]
        for j in nodes:
            floats += (f[level] + (j + 1) * f[level] + 2 * t * f[level]) / 4**level
    return floats * dtype_bytes * GRADIENT_FACTOR


def _conv(k: int, cin: int, cout: int, batch_norm: bool) -> int:
    """Parameters of a k x k convolution (bias, or BN's 4 per channel instead)."""
    return k * k * cin * cout + (4 * cout if batch_norm else cout)


def parameter_count(depth: int, base_filters: int, in_channels: int, num_classes: int, *,
                    batch_norm: bool = False, upsampling: str = "transpose") -> int:
    """Parameters of the U-Net (closed form, as ``keras.Model.count_params``).

    Two 3x3 convolutions per level (``9 c_in c_out + c_out`` each), filters
    doubling down to the bottleneck; per decoder level a 2x2 transposed
    convolution ``4 c_in f_l + f_l`` (or a 1x1 convolution after bilinear
    upsampling) then two 3x3 convolutions on the ``2 f_l`` concatenation; a
    1x1 head ``f_0 num_classes + num_classes``. Batch norm replaces each
    convolution bias by gamma, beta and the two moving statistics.
    The paper's network (depth 4, 64 filters, 1 channel, 2 classes, no batch
    norm) has 31,030,658.

    Args:
        depth, base_filters: the U-Net's shape.
        in_channels: image channels.
        num_classes: output channels (1 for a sigmoid model).
        batch_norm: batch norm after each 3x3 convolution.
        upsampling: "transpose" or "bilinear".

    Returns:
        The number of parameters (trainable and batch-norm statistics).
    """
    f = level_filters(depth, base_filters)
    total, c = 0, in_channels
    for level in range(depth + 1):
        total += _conv(3, c, f[level], batch_norm) + _conv(3, f[level], f[level], batch_norm)
        c = f[level]
    up_kernel = 2 if upsampling == "transpose" else 1
    for level in reversed(range(depth)):
        total += _conv(up_kernel, c, f[level], False)
        total += _conv(3, 2 * f[level], f[level], batch_norm) + _conv(3, f[level], f[level], batch_norm)
        c = f[level]
    return total + _conv(1, c, num_classes, False)


def training_memory_bytes(tile: int, batch: int, depth: int, base_filters: int, *,
                          in_channels: int = 1, num_outputs: int = 2, padding: str = "same",
                          batch_norm: bool = True, arch: str = "unet") -> float:
    """Estimated peak training memory: activations of the batch plus parameter state.

    Returns:
        ``batch * tile**2 * activation_bytes_per_pixel(...) + parameters * 4 B *
        PARAM_STATE_COPIES`` (U-Net++ parameters are approximated by the U-Net's).
    """
    per_px = activation_bytes_per_pixel(depth, base_filters, padding, batch_norm, arch,
                                        in_channels=in_channels, num_outputs=num_outputs)
    params = parameter_count(depth, base_filters, in_channels, num_outputs, batch_norm=batch_norm)
    return batch * tile * tile * per_px + params * 4 * PARAM_STATE_COPIES


def valid_output(n: int, depth: int) -> int | None:
    """Output size of a valid-padding U-Net for input n, or None when n does not work.

    Down: two 3x3 convolutions (n - 4), then 2x2 pooling needs an even,
    positive size; bottleneck n - 4; up: 2n, then two convolutions (-4).
    """
    for _ in range(depth):
        n -= 4
        if n <= 0 or n % 2:
            return None
        n //= 2
    n -= 4
    if n <= 0:
        return None
    for _ in range(depth):
        n = 2 * n - 4
        if n <= 0:
            return None
    return n


def is_valid_tile(n: int, depth: int, padding: str = "same") -> bool:
    """Whether ``n`` is a valid input size: a multiple of 2**depth (same), or the valid rule."""
    if n <= 0:
        return False
    return n % 2**depth == 0 if padding == "same" else valid_output(n, depth) is not None


def min_tile_size(depth: int, padding: str = "same") -> int:
    """The smallest useful tile: a bottleneck of MIN_BOTTLENECK_SIDE px (same), or the smallest valid input."""
    if padding == "same":
        return MIN_BOTTLENECK_SIDE * 2**depth
    n = 1
    while valid_output(n, depth) is None:
        n += 1
    return n


def whole_image_tile(side: int, depth: int, padding: str = "same") -> int:
    """The smallest valid tile whose output covers ``side`` pixels."""
    if padding == "same":
        step = 2**depth
        return max(min_tile_size(depth, padding), -(-side // step) * step)
    n = min_tile_size(depth, padding)
    while not (valid_output(n, depth) or 0) >= side:
        n += 1
    return n


def _valid_tiles_desc(top: int, bottom: int, depth: int, padding: str) -> list[int]:
    return [n for n in range(top, bottom - 1, -1) if is_valid_tile(n, depth, padding)]


def choose_depth(fp: Fingerprint, padding: str = "same", max_depth: int = MAX_DEPTH,
                 max_tile: int = DEFAULT_MAX_TILE) -> dict:
    """The deepest U-Net (``MIN_DEPTH..max_depth``) whose bottleneck keeps >= 4 px of the image.

    Depth d needs ``side >= MIN_BOTTLENECK_SIDE * 2**d`` (64 px for depth 4),
    with ``side`` the larger median image side (capped by ``max_tile``).

    Returns:
        ``{"depth": int, "reason": str}``.

    Raises:
        ValueError: images smaller than the shallowest network's minimum.
    """
    side = min(fp.median_side, max_tile)
    smallest = MIN_BOTTLENECK_SIDE * 2**MIN_DEPTH
    if side < smallest:
        raise ValueError(
            f"Images of {fp.height['median']:g}x{fp.width['median']:g} px (median) are smaller than "
            f"the smallest tile this plan supports ({smallest} px: a depth-{MIN_DEPTH} U-Net "
            f"keeping a {MIN_BOTTLENECK_SIDE}x{MIN_BOTTLENECK_SIDE} bottleneck); upsample them or set "
            "--depth and --tile-size yourself")
    depth = max(d for d in range(MIN_DEPTH, max_depth + 1) if side >= MIN_BOTTLENECK_SIDE * 2**d)
    if depth == max_depth:
        reason = f"{side} px images allow the full depth {max_depth}"
    else:
        reason = (f"{side} px images: depth {depth + 1} would need >= "
                  f"{MIN_BOTTLENECK_SIDE * 2**(depth + 1)} px for a {MIN_BOTTLENECK_SIDE} px bottleneck")
    return dict(depth=depth, reason=reason)


def choose_tile_and_batch(fp: Fingerprint, depth: int, base_filters: int, memory_budget_bytes: float,
                          padding: str = "same", max_tile: int = DEFAULT_MAX_TILE,
                          min_batch: int = 2, max_batch: int = TARGET_BATCH, *, batch_norm: bool = True,
                          arch: str = "unet", tile: int | None = None,
                          batch: int | None = None) -> dict:
    """The largest tile up to the whole image, then the batch, that fit the memory budget.

    The tile is the smallest valid size covering the larger median image side
    (181x217 -> 224 for depth 4, same padding; smaller images are padded or
    mirrored to it), capped by the largest valid size <= ``max_tile``. The
    batch is the largest in ``[min_batch, max_batch]`` whose
    :func:`training_memory_bytes` fits ``MEMORY_USABLE_SHARE`` of the budget;
    if ``min_batch`` does not fit, the tile shrinks (down to
    :func:`min_tile_size`), then batch 1 is tried.

    Args:
        fp: the fingerprint (image sizes, channels, classes).
        depth, base_filters: the U-Net's shape.
        memory_budget_bytes: memory the training may use.
        padding: "same" or "valid".
        max_tile, min_batch, max_batch: limits.
        batch_norm, arch: the model (for the memory estimate).
        tile, batch: fixed by the user (skips that search).

    Returns:
        ``{"tile_size", "batch_size", "memory_bytes", "tile_reason", "batch_reason"}``.

    Raises:
        ValueError: naming --memory-budget and the memory needed when even the
            smallest tile with batch 1 does not fit.
    """
    mem = lambda t, b: training_memory_bytes(
        t, b, depth, base_filters, in_channels=fp.channels, num_outputs=num_outputs(fp),
        padding=padding, batch_norm=batch_norm, arch=arch)
    usable = memory_budget_bytes * MEMORY_USABLE_SHARE
    whole = whole_image_tile(fp.median_side, depth, padding)
    cap = _valid_tiles_desc(max(max_tile, min_tile_size(depth, padding)), 1, depth, padding)[0]
    top = min(whole, cap)
    tiles = [tile] if tile else _valid_tiles_desc(top, min_tile_size(depth, padding), depth, padding)
    result = lambda t, b: _tile_batch_result(
        fp, t, b, mem(t, b), whole, top, tile, batch, memory_budget_bytes, depth, padding,
        max_tile, min_batch, max_batch)
    if tile and batch:  # the user's choice: report the estimate, do not refuse it
        return result(tile, batch)
    def batches(t):
        return [batch] if batch else list(range(max_batch, min_batch - 1, -1))

    for fallback in (False, True):  # shrink the tile before giving up batch >= min_batch
        if fallback and (batch or min_batch <= 1):
            break
        for t in tiles:
            fits = [b for b in ([1] if fallback else batches(t)) if mem(t, b) <= usable]
            if fits:
                return result(t, max(fits))
    smallest = min(tiles)
    needed = mem(smallest, batch or 1) / MEMORY_USABLE_SHARE
    raise ValueError(
        f"--memory-budget {format_bytes(memory_budget_bytes)} is too small: a {smallest}x{smallest} tile "
        f"with batch {batch or 1} of a depth-{depth}, {base_filters}-filter U-Net needs about "
        f"{format_bytes(needed)} (estimate, {MEMORY_USABLE_SHARE:.0%} of the budget usable); "
        "raise --memory-budget or lower --base-filters / --depth")


def num_outputs(fp: Fingerprint) -> int:
    return 1 if fp.binary else fp.num_classes


def _tile_batch_result(fp, t, b, memory, whole, top, tile, batch, budget, depth, padding,
                       max_tile, min_batch, max_batch) -> dict:
    side = f"{fp.height['median']:g}x{fp.width['median']:g}"
    rule = f"multiple of 2**{depth}={2**depth}" if padding == "same" else "valid-padding size"
    if tile:
        tile_reason = "set by the user"
    elif t == whole:
        tile_reason = (f"the whole image (median {side} px) in one tile: the smallest {rule} "
                       f">= {fp.median_side}")
    elif t == top:
        tile_reason = (f"images (median {side} px) are larger than --max-tile {max_tile}: "
                       f"the largest {rule} <= {max_tile}")
    else:
        tile_reason = f"shrunk from {top} to {t} to fit the memory budget"
    fits = f"estimated {format_bytes(memory)} fits {MEMORY_USABLE_SHARE:.0%} of the {format_bytes(budget)} budget"
    if batch:
        batch_reason = "set by the user"
    elif b < min_batch:
        batch_reason = f"only batch 1 fits even the {t} px tile ({fits})"
    else:
        batch_reason = (f"the largest batch in [{min_batch}, {max_batch}] (batch norm wants "
                        f"{TARGET_BATCH}) whose {fits}")
    if memory > budget * MEMORY_USABLE_SHARE:
        batch_reason += f" (estimated {format_bytes(memory)} exceeds the budget)"
    return dict(tile_size=t, batch_size=b, memory_bytes=memory, tile_reason=tile_reason,
                batch_reason=batch_reason)
