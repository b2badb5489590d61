"""Export a trained model for TF Serving and LiteRT: ``python export.py RUN_OR_MODEL --help``.

A thin wrapper around ``unet_tf.export.export_model`` (the same as ``unet-tf export``).
"""
from unet_tf.cli import export_command

if __name__ == "__main__":
    export_command(prog_name="export.py")
