"""The README's library example runs as written."""
import re
from pathlib import Path

import numpy as np

README = Path(__file__).parents[1] / "README.md"


def _block_after(heading: str) -> str:
    text = README.read_text()
    section = text.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_library_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(_block_after("## Library API"), "README.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "cells_unet.keras").is_file()
    history = namespace["model"].history.history
    assert len(history["loss"]) == 3 and "val_dice" in history
    mask, bundle = namespace["mask"], namespace["bundle"]
    assert mask.shape == bundle.val[0].label.shape
    assert set(np.unique(mask)) <= {0, 1}


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick and "make test" in quick
