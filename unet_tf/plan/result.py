"""The plan's result: :class:`PlanEntry` (value and reason of one option) and :class:`Plan`."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .fingerprint import Fingerprint
from .formatting import json_safe


@dataclass
class PlanEntry:
    """One planned option: its value, why, and whether the user set it."""

    value: Any
    reason: str
    overridden: bool = False


@dataclass
class Plan:
    """The planned options (``TrainConfig`` names), the fingerprint, warnings and details.

    ``entries[name].value`` is the option's value; :meth:`values` gives them
    all as a dict. ``details`` holds data behind the choices (the learning-rate
    schedule, the memory estimate, the invariance reasons).
    """

    entries: dict
    fingerprint: Fingerprint
    warnings: list = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.entries[name].value

    def values(self) -> dict:
        """``{option: value}`` of every entry."""
        return {name: e.value for name, e in self.entries.items()}

    def to_dict(self) -> dict:
        return json_safe(dict(
            entries={n: dataclasses.asdict(e) for n, e in self.entries.items()},
            fingerprint=self.fingerprint.to_dict(), warnings=list(self.warnings),
            details=self.details))

    @classmethod
    def from_dict(cls, values: Mapping) -> Plan:
        return cls(entries={n: PlanEntry(**e) for n, e in values["entries"].items()},
                   fingerprint=Fingerprint.from_dict(values["fingerprint"]),
                   warnings=list(values.get("warnings", [])), details=dict(values.get("details", {})))
