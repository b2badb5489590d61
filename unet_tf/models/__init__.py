"""The networks: building blocks, U-Net, U-Net++, U-Net 3+, encoder U-Nets and the registry."""
from .blocks import AttentionGate, ConvBlock, DecoderBlock, EncoderBlock, Upsample2x
from .encoder_unet import EncoderUNet, FreezeEncoder
from .encoders import ENCODERS
from .registry import ARCHITECTURES, build_model
from .unet import UNet, UNetBase
from .unet3p import UNet3Plus
from .unetpp import UNetPlusPlus

__all__ = ["ARCHITECTURES", "AttentionGate", "ConvBlock", "DecoderBlock", "ENCODERS", "EncoderBlock",
           "EncoderUNet", "FreezeEncoder", "UNet", "UNet3Plus", "UNetBase", "UNetPlusPlus",
           "Upsample2x", "build_model"]
