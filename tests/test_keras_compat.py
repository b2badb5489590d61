"""Private Keras API lives in unet_tf/_keras_compat.py; these fail loudly when Keras changes it."""
import ast
from pathlib import Path

import keras

from unet_tf import _keras_compat

PACKAGE = Path(__file__).resolve().parents[1] / "unet_tf"
PRIVATE = ("_maybe_symbolic_build", "_symbolic_build", "_loss_tracker", "_flatten_layers",
           "keras.src", "unscale_loss_for_distribution", "_compute_loss")


def test_every_private_name_still_exists():
    assert _keras_compat.missing_private_names() == [], (
        f"Keras {keras.__version__} changed private API that unet_tf relies on; "
        "update unet_tf/_keras_compat.py")


def test_installed_keras_is_a_checked_version():
    assert _keras_compat.check_keras_version(), keras.__version__


def test_private_keras_names_appear_only_in_the_compat_module():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_keras_compat.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            name = (node.attr if isinstance(node, ast.Attribute) else
                    node.module if isinstance(node, ast.ImportFrom) else None)
            if name and any(name == p or name.startswith(p + ".") for p in PRIVATE):
                if name == "_maybe_symbolic_build" and _delegates_to_compat(path):
                    continue  # the override hook itself, which calls _keras_compat
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}")
    assert offenders == []


def _delegates_to_compat(path: Path) -> bool:
    return "_keras_compat.build_from_local_batch" in path.read_text()
