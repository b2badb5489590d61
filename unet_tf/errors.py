"""Errors that mean "the user has something to fix" (as opposed to bugs)."""

from __future__ import annotations

from typing import Iterable

__all__ = ["UnetTfError", "DatasetError", "TrainingDiverged", "ExportError"]


class UnetTfError(Exception):
    """Base class of the errors a user can fix (bad data, bad options, ...)."""


class DatasetError(UnetTfError, ValueError):
    """A dataset problem the user must fix; ``.problems`` lists every one found.

    Args:
        problems: One message or a list of messages, each naming a file.
    """

    def __init__(self, problems: str | Iterable[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        lines = [f"{len(self.problems)} problems found:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class TrainingDiverged(UnetTfError, RuntimeError):
    """The loss became NaN or infinite; the message says where and what to try."""


class ExportError(UnetTfError, RuntimeError):
    """An exported artifact failed its checks (parity, ops) or could not be written."""
