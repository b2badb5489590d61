"""Files written whole or not at all.

Every artefact the toolkit writes (masks, reports, TFLite files) goes through
:func:`atomic_write`: the bytes go to a temporary file beside the target,
which is then renamed over it, so an interrupted or failed write (a crash of
the program, a full disk) never leaves a half-written file under the final
name. (Surviving a power cut as well would need an fsync per file, which is
not done: it would slow down writing thousands of masks.)
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_json"]


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns the path."""
    path = Path(path)
    # Not tempfile.mkstemp: its files are private (0600); this one gets the
    # usual permissions, so a serving container or a colleague can read it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, value, default=None) -> Path:
    """``value`` as indented JSON, written atomically."""
    return atomic_write(path, json.dumps(value, indent=2, default=default) + "\n")
