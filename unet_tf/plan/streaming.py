"""Streaming statistics for the fingerprint: a uniform pixel sample and per-class sign moments."""
from __future__ import annotations

import numpy as np

#: Dipoles within this of 0 (a class centred on the axis) count as neither side.
SIGN_EPS = 1e-6


class Reservoir:
    """A uniform random sample of at most ``capacity`` rows from a stream.

    Priority sampling: every row gets a uniform random key and the rows with
    the largest keys are kept. Only rows whose key can beat the current
    threshold are drawn, so each add costs O(rows drawn), not O(rows).
    """

    def __init__(self, capacity: int, rng: np.random.Generator):
        self.capacity = capacity
        self.rng = rng
        self.keys = np.empty(0)
        self.values: np.ndarray | None = None
        self.threshold = 0.0

    def add(self, values: np.ndarray) -> None:
        """Offer the rows of ``values`` (n, C) to the sample."""
        n = len(values)
        if n == 0:
            return
        m = int(self.rng.binomial(n, 1.0 - self.threshold))  # keys above the threshold
        if m == 0:
            return
        low = self.threshold
        if m > self.capacity:  # only the top `capacity` keys of these m can survive
            low += (1.0 - low) * float(self.rng.beta(m - self.capacity, self.capacity + 1))
            m = self.capacity
        idx = self.rng.choice(n, size=m, replace=False)
        keys = self.rng.uniform(low, 1.0, size=m)
        new = values[idx].astype(np.float64)
        self.keys = np.concatenate([self.keys, keys])
        self.values = new if self.values is None else np.concatenate([self.values, new])
        if len(self.keys) > self.capacity:
            keep = np.argpartition(self.keys, -self.capacity)[-self.capacity:]
            self.keys, self.values = self.keys[keep], self.values[keep]
            self.threshold = float(self.keys.min())

    def percentiles(self, qs) -> dict | None:
        """``{str(q): [per channel]}`` or None when nothing was sampled."""
        if self.values is None or not len(self.values):
            return None
        p = np.percentile(self.values, qs, axis=0)
        return {percentile_key(q): [float(v) for v in row] for q, row in zip(qs, p)}


def percentile_key(q: float) -> str:
    return f"{q:g}"


class Moments:
    """Streaming count, sum, sum of squares and signs of per-class values."""

    def __init__(self, k: int):
        self.n = np.zeros(k)
        self.s = np.zeros(k)
        self.s2 = np.zeros(k)
        self.pos = np.zeros(k)
        self.neg = np.zeros(k)

    def add(self, values: np.ndarray, present: np.ndarray) -> None:
        v = np.where(present, values, 0.0)
        self.n += present
        self.s += v
        self.s2 += v * v
        self.pos += v > SIGN_EPS
        self.neg += v < -SIGN_EPS

    def summary(self) -> dict:
        n = np.maximum(self.n, 1)
        mean = self.s / n
        var = np.maximum(self.s2 - n * mean**2, 0.0) / np.maximum(self.n - 1, 1)
        as_int = lambda a: a.astype(int).tolist()
        return {"mean": mean.tolist(), "sd": np.sqrt(var).tolist(), "n": as_int(self.n),
                "positive": as_int(self.pos), "negative": as_int(self.neg)}
