"""The networks: building blocks, U-Net, U-Net++ and the registry by name."""
from .blocks import AttentionGate, ConvBlock, DecoderBlock, EncoderBlock, Upsample2x
from .registry import ARCHITECTURES, build_model
from .unet import UNet, UNetBase
from .unetpp import UNetPlusPlus

__all__ = ["ARCHITECTURES", "AttentionGate", "ConvBlock", "DecoderBlock", "EncoderBlock",
           "UNet", "UNetBase", "UNetPlusPlus", "Upsample2x", "build_model"]
