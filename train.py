"""Train a U-Net: ``python train.py --help``. With no options, a small U-Net on the built-in synthetic cells.

A thin wrapper around ``unet_tf.training.train`` (the same as ``unet-tf train``).
"""
from unet_tf.cli import train_command

if __name__ == "__main__":
    train_command(prog_name="train.py")
