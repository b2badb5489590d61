"""The plan as a terminal table, with a short summary of the fingerprint."""
from __future__ import annotations

import textwrap

from .fingerprint import Fingerprint
from .result import Plan


def _value_text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    return str(value)


def _fingerprint_lines(fp: Fingerprint) -> list[str]:
    h, w = fp.height, fp.width
    bits = f", {fp.effective_bits} bits used of {fp.bit_depth}" if fp.bit_depth else ""
    lines = [
        (f"images          {fp.n_images}, {fp.channels} channel(s), {fp.dtype}{bits}, "
         f"values {fp.value_min:.4g}..{fp.value_max:.4g}"),
        (f"sizes           height {h['min']}/{h['median']:g}/{h['max']}, width {w['min']}/"
         f"{w['median']:g}/{w['max']} (min/median/max), {fp.n_distinct_sizes} distinct"),
        f"intensity       per-image variation {fp.intensity_variation:.2f}",
        "classes         " + ", ".join(f"{fp.class_name(k)} {f:.2%}" for k, f in enumerate(fp.class_frequency))
        + (f"; void {fp.void_share:.1%}" if fp.void_share else ""),
        f"objects         {fp.objects_per_image['median']:g} per image (median, {fp.objects_source}, "
        f"{fp.object_images} images), {fp.touching_share:.1%} touching"
        + (f", diameter {fp.object_diameter:.3g} px" if fp.object_diameter else ""),
    ]
    return lines


def format_plan(plan: Plan, width: int = 100) -> str:
    """The plan as a terminal table ``option  value  reason`` plus the fingerprint summary.

    Options the user set are marked with ``*``.
    """
    rows = [(name + ("*" if e.overridden else ""), _value_text(e.value), e.reason)
            for name, e in plan.entries.items()]
    rows = [(n, v if len(v) <= 40 else v[:37] + "...", r) for n, v, r in rows]
    n_w = max(len("option"), *(len(r[0]) for r in rows))
    v_w = max(len("value"), *(len(r[1]) for r in rows))
    reason_w = max(30, width - n_w - v_w - 4)
    out = ["Dataset", *("  " + line for line in _fingerprint_lines(plan.fingerprint)), "",
           f"{'option':<{n_w}}  {'value':<{v_w}}  reason", "-" * min(width, n_w + v_w + 4 + reason_w)]
    for name, value, reason in rows:
        wrapped = textwrap.wrap(reason, reason_w) or [""]
        out.append(f"{name:<{n_w}}  {value:<{v_w}}  {wrapped[0]}")
        out.extend(" " * (n_w + v_w + 4) + line for line in wrapped[1:])
    if any(e.overridden for e in plan.entries.values()):
        out.append("* set by the user")
    if plan.warnings:
        out += ["", "Warnings", *("  - " + w for w in plan.warnings)]
    return "\n".join(out)
