"""Which flips and rotations keep the labels plausible, from the fingerprint's layout statistics."""
from __future__ import annotations

import math

import numpy as np

from .fingerprint import BACKGROUND_CLASS, Fingerprint


#: A class is one-sided when, on average, (mass on one side - mass on the
#: other) / mass >= 0.5, i.e. at least 75% of its pixels in one half ...
DIPOLE_MIN = 0.5
#: ... and a two-sided sign test over the images containing it (how many lean
#: to each side) rejects symmetry at this level. The sign test is exact for
#: any symmetric layout, whatever the number of objects per image (a t-test is
#: not: with one object per image, 9 of 10 images on one side pass t > 4 about
#: 4% of the time by chance). At 0.002 a class of random position is called
#: one-sided in at most 0.2% of datasets (per class and axis), and it takes 10 images all leaning
#: the same way (2 * 0.5**10 < 0.002): fewer cannot show a layout.
SIGN_TEST_ALPHA = 0.002
#: Images needed before any layout can be detected (from SIGN_TEST_ALPHA).
MIN_IMAGES_PER_CLASS = next(n for n in range(1, 64) if 2 * 0.5**n <= SIGN_TEST_ALPHA)
#: Flips are switched off when one-sided classes hold at least this share of
#: the foreground (non-background, non-void) pixels: a tiny noisy class cannot
#: switch them off, a structure worth segmenting can.
ASYMMETRIC_SHARE_MIN = 0.10
#: Label boundaries are anisotropic (rot90 off) when (horizontal - vertical
#: boundary pixels) / all boundary pixels averages at least 0.3 in size, i.e.
#: one direction has about twice the other's boundaries (layered tissue, text).
EDGE_ANISOTROPY_MIN = 0.30
#: Two one-sided classes form a mirror pair when the mirrored prior of one is
#: at most this fraction as far from the other's prior as from its own.
PAIR_RELATIVE_DISTANCE = 0.5


def _sign_test_p(positive: int, negative: int) -> float:
    """Two-sided sign test: chance of a split at least this lopsided under symmetry."""
    m = positive + negative
    if m == 0:
        return 1.0
    k = max(positive, negative)
    tail = sum(math.comb(m, i) for i in range(k, m + 1)) / 2.0**m
    return min(1.0, 2.0 * tail)


def _foreground_weights(fp: Fingerprint) -> np.ndarray:
    """Each class's share of the foreground pixels (background and void excluded)."""
    px = np.array(fp.class_pixels, float)
    px[BACKGROUND_CLASS] = 0.0
    total = px.sum()
    return px / total if total else px


def _one_sided(moments: dict, k: int, effect_min: float = DIPOLE_MIN) -> tuple[bool, float]:
    """(is value k lopsided, its mean): mean >= effect_min and the sign test passes SIGN_TEST_ALPHA."""
    mean = moments["mean"][k]
    if abs(mean) < effect_min:
        return False, mean
    return _sign_test_p(moments["positive"][k], moments["negative"][k]) <= SIGN_TEST_ALPHA, mean


def _prior_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance between two priors normalised to sum 1 (0: same, 1: disjoint)."""
    sp, sq = p.sum(), q.sum()
    if sp <= 0 or sq <= 0:
        return 1.0
    return float(0.5 * np.abs(p / sp - q / sq).sum())


def _mirror_partner(fp: Fingerprint, a: int, flip_axis: int) -> tuple[int, float, float] | None:
    """Class b != a whose prior is close to class a's mirrored prior and far from a's own."""
    priors = np.asarray(fp.priors, float)
    mirrored = np.flip(priors[a], axis=flip_axis)
    self_d = _prior_distance(mirrored, priors[a])
    best = None
    for b in range(fp.num_classes):
        if b in (a, BACKGROUND_CLASS) or not fp.class_pixels[b]:
            continue
        d = _prior_distance(mirrored, priors[b])
        if d <= PAIR_RELATIVE_DISTANCE * self_d and (best is None or d < best[1]):
            best = (b, d, self_d)
    return best


def _flip_decision(fp: Fingerprint, moments: dict, flip_axis: int, sides: tuple[str, str]) -> tuple[bool, str]:
    """(flip allowed, reason) for one axis from the per-class dipoles."""
    weights = _foreground_weights(fp)
    found, share, paired = [], 0.0, set()
    for k in range(fp.num_classes):
        if k == BACKGROUND_CLASS or weights[k] == 0:
            continue
        one_sided, mean = _one_sided(moments, k)
        if one_sided:
            share += weights[k]
            where = sides[0] if mean > 0 else sides[1]
            text = (f"{fp.class_name(k)} lies in the {where} ({(1 + abs(mean)) / 2:.0%} of its pixels "
                    f"on average, {moments['n'][k]} images)")
            pair = None if k in paired else _mirror_partner(fp, k, flip_axis)
            if pair:  # rule (a): a left/right (or top/bottom) pair of classes
                paired.add(pair[0])
                text += (f", the mirror image of {fp.class_name(pair[0])} (prior distance "
                         f"{pair[1]:.2f}, vs {pair[2]:.2f} to itself)")
            found.append(text)
    if share >= ASYMMETRIC_SHARE_MIN:
        return False, "; ".join(found) + f": {share:.0%} of the foreground is one-sided"
    if found:
        return True, (f"only {share:.0%} of the foreground is one-sided (< {ASYMMETRIC_SHARE_MIN:.0%}): "
                      + "; ".join(found))
    return True, f"no class lies mostly in the {sides[0]} or {sides[1]}: the labels are symmetric"


def _rotation_decision(fp: Fingerprint, hflip: bool, vflip: bool) -> tuple[bool, str]:
    """(rot90 allowed, reason): off when a flip is off, or label boundaries are anisotropic."""
    if not (hflip and vflip):
        off = " and ".join(name for name, ok in (("left/right", hflip), ("top/bottom", vflip)) if not ok)
        return False, f"the {off} layout would be turned sideways"
    e = fp.edge_anisotropy
    anisotropic, mean = _one_sided(e, 0, EDGE_ANISOTROPY_MIN)
    n = e["n"][0]
    if anisotropic:
        direction = "horizontally" if mean > 0 else "vertically"
        return False, f"label boundaries run mostly {direction} (anisotropy {mean:+.2f} over {n} images)"
    return True, f"priors symmetric and label boundaries isotropic (anisotropy {mean:+.2f})"


def detect_invariances(fp: Fingerprint) -> dict:
    """Which flips and rotations keep the labels plausible, from their layout.

    Rules (constants above):

    * a class is one-sided along an axis when at least ``(1 + DIPOLE_MIN) / 2``
      of its pixels lie in one half on average over the images containing it,
      and a sign test over those images rejects symmetry at ``SIGN_TEST_ALPHA``
      (so it needs ``MIN_IMAGES_PER_CLASS`` = 10 images; random positions pass
      in at most 0.2% of datasets: stable across subsets and seeds);
    * (a) left/right: hflip is off when one-sided classes hold at least
      ``ASYMMETRIC_SHARE_MIN`` of the foreground pixels (weights by frequency,
      so a tiny noisy class cannot decide). A class whose mirrored prior
      matches another class's prior (a left/right pair) is named as such;
    * (b) top/bottom: the same with the top/bottom dipole turns vflip off
      (sky on top, road at the bottom); hflip stays on if the priors are
      symmetric left/right;
    * rot90 is off when either flip is off (a quarter turn moves the left side
      to the top), or when label boundaries are anisotropic (horizontal layers);
    * (c) otherwise (near-uniform priors: cells, nuclei, texture) all stay on.

    Args:
        fp: the dataset's fingerprint.

    Returns:
        ``{"hflip": bool, "vflip": bool, "rot90": bool, "hflip_reason": str,
        "vflip_reason": str, "rot90_reason": str}``.
    """
    if fp.n_images < MIN_IMAGES_PER_CLASS:
        reason = (f"only {fp.n_images} image(s): too few to detect a layout "
                  f"(>= {MIN_IMAGES_PER_CLASS} needed), kept on")
        return dict(hflip=True, vflip=True, rot90=True, hflip_reason=reason,
                    vflip_reason=reason, rot90_reason=reason)
    hflip, h_reason = _flip_decision(fp, fp.lr_dipole, 1, ("left half", "right half"))
    vflip, v_reason = _flip_decision(fp, fp.tb_dipole, 0, ("top half", "bottom half"))
    rot90, r_reason = _rotation_decision(fp, hflip, vflip)
    return dict(hflip=hflip, vflip=vflip, rot90=rot90, hflip_reason=h_reason,
                vflip_reason=v_reason, rot90_reason=r_reason)
