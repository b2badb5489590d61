"""Atomic writes: the final name holds the whole file or the previous one, never a part."""
import os
import stat

import pytest

from unet_tf.files import atomic_write, atomic_write_json


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    atomic_write_json(target, {"dice": 0.9})
    assert target.read_text() == '{\n  "dice": 0.9\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    # Readable by others like any other file (tempfile.mkstemp would make it 0600).
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "mask.png"
    target.write_bytes(b"old")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new content")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png"]
