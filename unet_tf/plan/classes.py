"""Rules from the class statistics: rare-class sampling, class weights and the loss."""
from __future__ import annotations

import numpy as np

from .fingerprint import Fingerprint


#: A class under 5% of the labelled pixels is rare.
RARE_CLASS_FREQUENCY = 0.05
#: Share of tiles centred on a pixel of a rare class (nnU-Net uses 1/3).
RARE_TILE_SHARE = 0.33
#: Share of objects touching another one above which the paper's weight map
#: (border term separating touching objects) is worth its cost.
TOUCHING_SHARE_WCE = 0.10
#: Median-frequency class weights are clipped to this range so that a class
#: with a handful of pixels cannot dominate the loss.
CLASS_WEIGHT_RANGE = (0.1, 10.0)


def choose_sampling(fp: Fingerprint) -> dict:
    """Share of tiles centred on a random pixel of a rare class.

    A present class under ``RARE_CLASS_FREQUENCY`` of the labelled pixels is
    rare; with any rare class ``RARE_TILE_SHARE`` of the tiles are centred on
    one of their pixels (with whole-image tiles this picks images containing
    them more often), else none.

    Returns:
        ``{"rare_class_share": float, "rare_classes": list[int], "reason": str}``.
    """
    freq = fp.class_frequency
    rare = [k for k in range(fp.num_classes) if 0 < freq[k] < RARE_CLASS_FREQUENCY]
    if not rare:
        return dict(rare_class_share=0.0, rare_classes=[],
                    reason=f"no class under {RARE_CLASS_FREQUENCY:.0%} of the labelled pixels")
    names = ", ".join(f"{fp.class_name(k)} {freq[k]:.2%}" for k in rare)
    return dict(rare_class_share=RARE_TILE_SHARE, rare_classes=rare,
                reason=f"rare classes (< {RARE_CLASS_FREQUENCY:.0%} of the pixels): {names}")


def class_weights_from_frequency(frequencies) -> list[float]:
    """Median-frequency balancing: ``median(f) / f_k`` clipped to CLASS_WEIGHT_RANGE (absent: 1)."""
    f = np.asarray(frequencies, float)
    present = f > 0
    if not present.any():
        return [1.0] * len(f)
    median = np.median(f[present])
    w = np.where(present, median / np.where(present, f, 1.0), 1.0)
    return [round(float(v), 4) for v in np.clip(w, *CLASS_WEIGHT_RANGE)]


def choose_loss(fp: Fingerprint) -> dict:
    """The loss, whether to use the weight map, and class weights.

    * ``wce`` with the weight map (the paper) when at least
      ``TOUCHING_SHARE_WCE`` of the objects touch another one: its border
      term separates them, and its class term ``w_c`` balances the class
      frequencies of each image (class weights ``"balanced"``);
    * ``dice_ce`` otherwise: the dice term weighs every class equally, which
      copes with imbalance (rare classes); the cross-entropy keeps gradients
      smooth (nnU-Net's default). No extra class weights: on top of the dice
      term and rare-class sampling, median-frequency weights made a
      lateralised 5-class look-alike over-predict its rare classes
      (background dice 0.15, ``benchmarks/plan_quality.py``).

    Returns:
        ``{"loss", "weight_map", "class_weights", "reason", "class_weights_reason"}``.
    """
    freqs = ", ".join(f"{v:.3g}" for v in fp.class_frequency)
    touching = fp.touching_share
    if touching >= TOUCHING_SHARE_WCE:
        return dict(loss="wce", weight_map=True, class_weights="balanced",
                    class_weights_reason=f"the weight map's w_c balances each image's classes "
                                         f"(frequencies {freqs})",
                    reason=(f"{touching:.1%} of the objects ({fp.objects_source}) touch another one "
                            f"(>= {TOUCHING_SHARE_WCE:.0%}): the paper's weight map separates them"))
    rare = [k for k, f in enumerate(fp.class_frequency) if 0 < f < RARE_CLASS_FREQUENCY]
    why = (f"classes are imbalanced ({', '.join(fp.class_name(k) for k in rare)} under "
           f"{RARE_CLASS_FREQUENCY:.0%})" if rare else "classes are balanced")
    return dict(loss="dice_ce", weight_map=False, class_weights=None,
                class_weights_reason=f"none: the dice term weighs every class equally (frequencies {freqs})",
                reason=(f"{why} and few objects touch ({_percent_below(touching, TOUCHING_SHARE_WCE)} < "
                        f"{TOUCHING_SHARE_WCE:.0%}): "
                        "dice + cross-entropy"))


def _percent_below(share: float, limit: float) -> str:
    """``share`` as a percentage with enough digits to read as below ``limit``."""
    for digits in (1, 2, 3):
        text = f"{share:.{digits}%}"
        if float(text[:-1]) < limit * 100:
            return text
    return f"{share:.4%}"
