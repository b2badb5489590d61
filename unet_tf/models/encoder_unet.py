"""A U-Net decoder on a pretrained ``keras.applications`` encoder (Mobile U-Net, Eff-UNet, ...).

The encoder (``unet_tf.models.encoders``) gives skips at strides 2, 4, 8 and
16 and the bottleneck at stride 32; the decoder is the U-Net's
(``DecoderBlock``: upsample by 2, join the skip, two 3x3 convolutions) with
``base_filters * 2**level`` channels at each level (16 base filters: 256, 128,
64, 32, 16), and a last block back at full resolution without a skip.

Inputs are the U-Net's (``[0, 1]`` with the default normalisation, any number
of channels); the model makes them what the encoder expects, inside the graph:

- 1 channel: the grey image is repeated into R, G and B (a ``CONCATENATION``);
- 3 channels: used as RGB;
- any other count: a 1x1 convolution (``input_projection``, initialised to
  the channels' mean, trained) maps them to 3;

then the encoder's own preprocessing (``encoders.preprocess``). The exported
SavedModel and TFLite graphs therefore take the same inputs as any other U-Net
of this project.

``FreezeEncoder`` is the Keras callback behind ``--freeze-encoder-epochs``.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from .blocks import ConvBlock, DecoderBlock, Upsample2x
from .encoders import ENCODERS, build_encoder, preprocess, refresh_normalization
from .unet import UNetBase

__all__ = ["EncoderUNet", "FreezeEncoder"]


def _normalize_weights(weights):
    if weights is None:
        return None
    weights = str(weights)
    return None if weights.lower() == "none" else ("imagenet" if weights.lower() == "imagenet"
                                                   else weights)


@keras.saving.register_keras_serializable(package="unet_tf")
class EncoderUNet(UNetBase):
    """U-Net with a ``keras.applications`` encoder.

    Args:
        num_classes, base_filters, batch_norm, dropout, upsampling, activation,
        logits, in_channels, residual, attention: as in :class:`unet_tf.models.UNet`,
            for the decoder (``dropout`` acts on the encoder's deepest output;
            ``attention`` gates the encoder's skips).
        encoder: a key of ``unet_tf.models.encoders.ENCODERS``: ``mobilenetv2``,
            ``efficientnetb0`` .. ``efficientnetb7``, ``resnet50``.
        encoder_weights: ``None``, ``"imagenet"`` (downloaded by Keras on first
            use) or the path of a weights file of the application
            (``include_top=False``: the ``..._notop.h5`` files of
            ``keras.applications``, or ``save_weights`` output). Only the first
            construction loads them: a model loaded from a ``.keras`` file (or
            rebuilt with ``from_config``) takes its weights from the file.
        depth: encoder levels used, 1..5. 5 (the default) is the whole
            encoder: skips at strides 2..16, bottleneck at 32, inputs a multiple
            of 32. A smaller depth cuts the encoder at stride ``2**depth``.
        padding: ``"same"`` only (the encoders pad their convolutions).
        freeze_encoder: the encoder's weights are not trained and its batch
            norm runs in inference mode (``encoder.trainable = False``).
        encoder_alpha: MobileNetV2's width multiplier (e.g. 0.35 for a small model).

    Input shape: ``(batch, H, W, in_channels)``, ``H`` and ``W`` multiples of ``2**depth``.
    Output shape: ``(batch, H, W, num_classes)``, float32.
    """

    def __init__(self, num_classes=1, encoder="mobilenetv2", encoder_weights=None, depth=5,
                 base_filters=16, padding="same", batch_norm=True, dropout=0.0,
                 upsampling="transpose", activation="relu", logits=False, in_channels=None,
                 residual=False, attention=False, freeze_encoder=False, encoder_alpha=1.0,
                 **kwargs):
        # A model rebuilt from its configuration (load_model, float32 clones) gets
        # its weights from elsewhere: never download or read encoder weights then.
        load_weights = not kwargs.pop("_from_config", False)
        kwargs.setdefault("name", "encoder_unet")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder {encoder!r} is not one of {', '.join(ENCODERS)}")
        if padding != "same":
            raise ValueError(f"the encoder U-Net needs padding='same' ({encoder} pads its "
                             f"convolutions), got {padding!r}")
        if not 1 <= int(depth) <= 5:
            raise ValueError(f"the encoder U-Net's depth is the encoder levels it uses, 1..5 "
                             f"(5: bottleneck at stride 32), got {depth}")
        super().__init__(num_classes=num_classes, depth=depth, base_filters=base_filters,
                         padding=padding, batch_norm=batch_norm, dropout=dropout,
                         upsampling=upsampling, activation=activation, logits=logits,
                         in_channels=in_channels, residual=residual, attention=attention,
                         **kwargs)
        self.encoder_name = encoder
        self.encoder_weights = _normalize_weights(encoder_weights)
        self.encoder_alpha = float(encoder_alpha)
        self.freeze_encoder = bool(freeze_encoder)
        self.encoder = build_encoder(encoder, self.encoder_weights if load_weights else None,
                                     depth=self.depth, alpha=self.encoder_alpha,
                                     dtype_policy=self.dtype_policy.name)
        self.encoder.trainable = not self.freeze_encoder
        self.input_projection = None  # built for inputs with neither 1 nor 3 channels
        common = self._block_args()
        self.bottleneck_dropout = (layers.Dropout(self.dropout, name="bottleneck_dropout",
                                                  dtype=self.dtype_policy)
                                   if self.dropout > 0 else None)
        # decoders[k] brings level depth-k to level depth-k-1 and joins that level's skip.
        self.decoders = [DecoderBlock(self._filters(level), upsampling=upsampling,
                                      attention=self.attention, name=f"decoder_{level}", **common)
                         for level in reversed(range(1, self.depth))]
        filters0 = self._filters(0)
        if upsampling == "transpose":
            self.final_upsample = None
            self.final_up_conv = layers.Conv2DTranspose(filters0, 2, strides=2, name="final_up_conv",
                                                        dtype=self.dtype_policy)
        else:
            self.final_upsample = Upsample2x("bilinear", name="final_upsample", dtype=self.dtype_policy)
            self.final_up_conv = layers.Conv2D(filters0, 1, name="final_up_conv", dtype=self.dtype_policy)
        self.final_block = ConvBlock(filters0, name="decoder_0", **common)
        self.head = self._make_head("head")
        self.head_activation = layers.Activation(self.output_activation, dtype="float32",
                                                 name="probabilities")
        self._build_if_channels_known()

    @classmethod
    def from_config(cls, config):
        return cls(**config, _from_config=True)

    # -- keras ------------------------------------------------------------
    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.check_input_shape(input_shape[1], input_shape[2])
        channels = input_shape[-1]
        if channels not in (1, 3) and self.input_projection is None:
            self.input_projection = layers.Conv2D(
                3, 1, kernel_initializer=keras.initializers.Constant(1.0 / channels),
                name="input_projection", dtype=self.dtype_policy)
            self.input_projection.build(input_shape)
        n, h, w = input_shape[:3]
        tap_shapes = self.encoder.compute_output_shape((n, h, w, 3))
        if not isinstance(tap_shapes, list):  # depth 1: one output
            tap_shapes = [tap_shapes]
        shape = tuple(tap_shapes[-1])
        for decoder, skip in zip(self.decoders, reversed(tap_shapes[:-1])):
            decoder.build(shape, tuple(skip))
            shape = decoder.compute_output_shape(shape, tuple(skip))
        if self.final_upsample is not None:
            self.final_up_conv.build(self.final_upsample.compute_output_shape(shape))
        else:
            self.final_up_conv.build(shape)
        double = lambda s: None if s is None else 2 * s  # noqa: E731
        up_shape = (shape[0], double(shape[1]), double(shape[2]), self._filters(0))
        self.final_block.build(up_shape)
        self.head.build(up_shape[:3] + (self._filters(0),))
        if self.in_channels is None:
            self.in_channels = channels
        self.built = True

    def encoder_inputs(self, inputs):
        """The encoder's input: 3 channels, in the units its weights expect."""
        x = ops.cast(inputs, self.compute_dtype)
        channels = inputs.shape[-1]
        if channels == 1:
            x = ops.concatenate([x, x, x], axis=-1)
        elif channels != 3:
            x = self.input_projection(x)
        return preprocess(x, self.encoder_name)

    def call(self, inputs, training=None):
        self.check_input_shape(inputs.shape[1], inputs.shape[2])
        taps = self.encoder(self.encoder_inputs(inputs), training=training)
        if not isinstance(taps, (list, tuple)):
            taps = [taps]
        x = taps[-1]
        if self.bottleneck_dropout is not None:
            x = self.bottleneck_dropout(x, training=training)
        for decoder, skip in zip(self.decoders, reversed(taps[:-1])):
            x = decoder(x, skip, training=training)
        if self.final_upsample is not None:
            x = self.final_upsample(x)
        x = self.final_block(self.final_up_conv(x), training=training)
        return self.head_activation(self.head(x))

    def set_weights(self, weights):
        super().set_weights(weights)
        refresh_normalization(self.encoder)

    def get_config(self):
        config = super().get_config()
        config.update(encoder=self.encoder_name, encoder_weights=self.encoder_weights,
                      freeze_encoder=self.freeze_encoder, encoder_alpha=self.encoder_alpha)
        return config


class FreezeEncoder(keras.callbacks.Callback):
    """Train with the encoder frozen for the first ``epochs`` epochs, then fine-tune it too.

    ``--freeze-encoder-epochs N``: the decoder first learns on the (pretrained)
    encoder's features; from epoch ``N`` on the whole network trains. A frozen
    encoder has ``trainable = False``, so its batch norm runs in inference mode.

    Keras 3 traces the train step with the trainable variables of that moment,
    so each change of ``trainable`` retraces it (``make_train_function(force=True)``:
    what ``compile()`` would trigger, without resetting the optimizer and
    metrics in the middle of ``fit``). The optimizer must know the encoder's
    variables before they train, but Keras builds it on the first step with the
    variables trainable then: so ``on_train_begin`` builds it with every
    variable (for a model constructed with ``freeze_encoder=True`` whose
    optimizer was built already, before any step, a fresh one of the same
    configuration), and ``on_epoch_begin`` sets the encoder's ``trainable``.
    A resumed run (``initial_epoch >= N``) trains everything from the start.
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = int(epochs)

    def _encoder(self):
        encoder = getattr(self.model, "encoder", None)
        if encoder is None:
            raise ValueError("FreezeEncoder needs a model with an encoder (EncoderUNet)")
        return encoder

    def on_train_begin(self, logs=None):
        encoder = self._encoder()
        optimizer = self.model.optimizer
        if optimizer is None:
            return
        frozen = not encoder.trainable
        if optimizer.built and frozen:
            # Built while frozen: it has no state for the encoder's variables.
            if int(keras.ops.convert_to_numpy(optimizer.iterations)) > 0:
                raise ValueError("FreezeEncoder: the model was trained with a frozen encoder and "
                                 "its optimizer has no state for the encoder's variables; build "
                                 "it with freeze_encoder=False")
            optimizer = type(optimizer).from_config(optimizer.get_config())
            self.model.optimizer = optimizer
        if not optimizer.built:  # build it with every variable, the encoder's included
            encoder.trainable = True
            with self.model.distribute_strategy.scope():
                optimizer.build(self.model.trainable_variables)
            encoder.trainable = not frozen
        self.model.make_train_function(force=True)

    def on_epoch_begin(self, epoch, logs=None):
        encoder = self._encoder()
        trainable = epoch >= self.epochs
        if encoder.trainable != trainable:
            encoder.trainable = trainable
            self.model.make_train_function(force=True)
