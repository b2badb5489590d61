"""The U-Net building blocks: ``ConvBlock``, ``EncoderBlock`` and ``DecoderBlock``.

Each block is a subclassed Keras layer with an explicit ``build()``, a complete
``get_config()`` and ``compute_output_shape()``, registered for ``.keras``
serialization under the package name ``unet_tf``.
"""
from __future__ import annotations

import keras
from keras import layers, ops

__all__ = ["ConvBlock", "EncoderBlock", "DecoderBlock", "AttentionGate", "Upsample2x",
           "center_crop"]

_PADDINGS = ("same", "valid")
#: The ConvBlock arguments that EncoderBlock and DecoderBlock pass through.
_BLOCK_KEYS = ("filters", "padding", "batch_norm", "activation", "dropout", "kernel_initializer",
               "residual")
_UPSAMPLINGS = ("transpose", "bilinear")


def _conv_out(size, padding: str, trim: int):
    if size is None or padding == "same":
        return size
    return size - trim


def _initializer_config(initializer):
    """A string or config dict, so that each layer deserializes its own instance.

    Keras 3 initializers without a seed return the same values on every call,
    so sharing one instance between layers would give identical kernels.
    """
    if isinstance(initializer, (str, dict)):
        return initializer
    return keras.initializers.serialize(initializer)


def center_crop(x, height, width):
    """Crop ``x`` (N, H, W, C) to ``height`` x ``width`` around its centre.

    Works with dynamic sizes; the offset is floored when the difference is odd.
    """
    shape = ops.shape(x)
    top = (shape[1] - height) // 2
    left = (shape[2] - width) // 2
    return x[:, top:top + height, left:left + width, :]


@keras.saving.register_keras_serializable(package="unet_tf")
class Upsample2x(layers.Layer):
    """2x upsampling, ``"nearest"`` or ``"bilinear"`` (half-pixel centres), for any input size.

    ``keras.layers.UpSampling2D`` checks a bilinear target size in Python,
    which fails when height and width are unknown while tracing (SavedModel
    signatures take any size); this layer gives the same values without that check.

    Input shape: ``(batch, h, w, c)``. Output shape: ``(batch, 2h, 2w, c)``.
    """

    def __init__(self, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
        self.interpolation = interpolation

    def call(self, x):
        if self.interpolation == "nearest":
            return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)
        import tensorflow as tf  # the project's backend; what UpSampling2D calls there
        size = tf.shape(x)[1:3] * 2
        return ops.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        double = lambda s: None if s is None else 2 * s  # noqa: E731
        return (n, double(h), double(w), c)

    def get_config(self):
        config = super().get_config()
        config["interpolation"] = self.interpolation
        return config


@keras.saving.register_keras_serializable(package="unet_tf")
class ConvBlock(layers.Layer):
    """Two 3x3 convolutions, each followed by optional batch norm and the activation.

    With ``residual=True`` the block is a residual unit (He et al., 2016):
    conv-BN-act-conv-BN, plus a shortcut, then the activation. The shortcut is
    the identity when the input already has ``filters`` channels, else a 1x1
    convolution (with BN when ``batch_norm``); with valid padding it is
    centre-cropped by 2 px per side to the convolutions' output.

    Args:
        filters: number of output channels of both convolutions.
        padding: ``"same"`` keeps the size; ``"valid"`` (the paper) trims 2 px in total.
        batch_norm: add ``BatchNormalization`` after each convolution (the
            convolutions then have no bias, which BN would cancel).
        activation: activation after each convolution, ``"relu"`` as in the paper.
        dropout: dropout rate after the second activation (0 disables).
        kernel_initializer: He-normal by default, as the paper recommends for ReLU.
        residual: add a shortcut around the two convolutions (see above).

    Input shape: ``(batch, H, W, C)``.
    Output shape: ``(batch, H', W', filters)`` with ``H' = H`` for same padding
    and ``H' = H - 4`` for valid padding.
    """

    def __init__(self, filters, padding="same", batch_norm=False, activation="relu",
                 dropout=0.0, kernel_initializer="he_normal", residual=False, **kwargs):
        super().__init__(**kwargs)
        if padding not in _PADDINGS:
            raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
        self.filters = int(filters)
        self.padding = padding
        self.batch_norm = bool(batch_norm)
        self.activation = activation
        self.dropout = float(dropout)
        self.residual = bool(residual)
        self.kernel_initializer = _initializer_config(kernel_initializer)
        # Sublayers share the block's dtype policy, so mixed precision survives a reload.
        conv_kwargs = dict(kernel_size=3, padding=padding, use_bias=not self.batch_norm,
                           kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy)
        self.conv1 = layers.Conv2D(self.filters, name="conv1", **conv_kwargs)
        self.conv2 = layers.Conv2D(self.filters, name="conv2", **conv_kwargs)
        # momentum 0.9: the moving statistics settle within the few hundred steps
        # that small datasets train for (Keras's 0.99 lags far behind).
        bn = dict(momentum=0.9, dtype=self.dtype_policy)
        self.norm1 = layers.BatchNormalization(name="bn1", **bn) if self.batch_norm else None
        self.norm2 = layers.BatchNormalization(name="bn2", **bn) if self.batch_norm else None
        self.act1 = layers.Activation(activation, name="act1", dtype=self.dtype_policy)
        self.act2 = layers.Activation(activation, name="act2", dtype=self.dtype_policy)
        self.drop = (layers.Dropout(self.dropout, name="dropout", dtype=self.dtype_policy)
                     if self.dropout > 0 else None)
        # The projection depends on the input's channels, so build() creates it.
        self.shortcut = None
        self.shortcut_norm = None

    def build(self, input_shape):
        self.conv1.build(input_shape)
        mid_shape = self.conv1.compute_output_shape(input_shape)
        if self.norm1 is not None:
            self.norm1.build(mid_shape)
        self.conv2.build(mid_shape)
        if self.norm2 is not None:
            self.norm2.build(self.conv2.compute_output_shape(mid_shape))
        if self.residual and input_shape[-1] != self.filters:
            self._build_projection(input_shape)
        self.built = True

    def _build_projection(self, input_shape):
        self.shortcut = layers.Conv2D(self.filters, 1, use_bias=not self.batch_norm,
                                      kernel_initializer=self.kernel_initializer,
                                      name="shortcut", dtype=self.dtype_policy)
        self.shortcut.build(input_shape)
        if self.batch_norm:
            self.shortcut_norm = layers.BatchNormalization(momentum=0.9, name="shortcut_bn",
                                                           dtype=self.dtype_policy)
            self.shortcut_norm.build(self.shortcut.compute_output_shape(input_shape))

    def _shortcut(self, x, training):
        if self.padding == "valid":  # the two unpadded 3x3 convolutions trim 2 px per side
            x = x[:, 2:-2, 2:-2, :]  # (cropping first: a 1x1 projection commutes with it)
        if self.shortcut is not None:
            x = self.shortcut(x)
            if self.shortcut_norm is not None:
                x = self.shortcut_norm(x, training=training)
        return x

    def call(self, x, training=None):
        inputs = x
        x = self.conv1(x)
        if self.norm1 is not None:
            x = self.norm1(x, training=training)
        x = self.act1(x)
        x = self.conv2(x)
        if self.norm2 is not None:
            x = self.norm2(x, training=training)
        if self.residual:
            x = x + self._shortcut(inputs, training)
        x = self.act2(x)
        if self.drop is not None:
            x = self.drop(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, _conv_out(h, self.padding, 4), _conv_out(w, self.padding, 4), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, padding=self.padding, batch_norm=self.batch_norm,
                      activation=self.activation, dropout=self.dropout,
                      kernel_initializer=self.kernel_initializer, residual=self.residual)
        return config


@keras.saving.register_keras_serializable(package="unet_tf")
class EncoderBlock(layers.Layer):
    """One level of the contracting path: a ``ConvBlock`` then 2x2 max pooling.

    Takes the same arguments as :class:`ConvBlock` (``residual`` included).

    Returns: ``(skip, pooled)``: the ``ConvBlock`` output, kept for the
    decoder's skip connection, and its 2x2 max-pooled version.
    """

    def __init__(self, filters, padding="same", batch_norm=False, activation="relu",
                 dropout=0.0, kernel_initializer="he_normal", residual=False, **kwargs):
        super().__init__(**kwargs)
        self.conv_block = ConvBlock(filters, padding=padding, batch_norm=batch_norm,
                                    activation=activation, dropout=dropout,
                                    kernel_initializer=kernel_initializer, residual=residual,
                                    name="conv_block", dtype=self.dtype_policy)
        self.pool = layers.MaxPooling2D(pool_size=2, strides=2, name="pool", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv_block.build(input_shape)
        self.built = True

    def call(self, x, training=None):
        skip = self.conv_block(x, training=training)
        return skip, self.pool(skip)

    def compute_output_shape(self, input_shape):
        skip = self.conv_block.compute_output_shape(input_shape)
        n, h, w, c = skip
        half = lambda s: None if s is None else s // 2  # noqa: E731
        return skip, (n, half(h), half(w), c)

    def get_config(self):
        config = super().get_config()
        block = self.conv_block.get_config()
        for key in _BLOCK_KEYS:
            config[key] = block[key]
        return config


@keras.saving.register_keras_serializable(package="unet_tf")
class AttentionGate(layers.Layer):
    """Additive attention gate on a skip connection (Oktay et al., 2018, "Attention U-Net").

    The skip ``x`` (fine) is weighted per pixel by a coefficient in (0, 1)
    computed from ``x`` and the gating signal ``g`` (the coarser decoder input,
    at half the skip's resolution)::

        alpha = sigmoid(psi(relu(W_x(x) + W_g(g))))     at the resolution of g
        out   = x * upsample_2x(alpha)                   at the resolution of x

    ``W_g`` and ``psi`` are 1x1 convolutions; ``W_x`` is a 2x2 stride-2
    convolution, the paper's 1x1 projection of the skip taken on 2x2 blocks
    so that it lands on the gating grid (as in the authors' code).

    Args:
        inter_channels: channels of ``W_x(x) + W_g(g)``.
        kernel_initializer: initializer of the three convolutions.
        interpolation: how ``alpha`` is resampled: ``"bilinear"`` (the paper)
            or ``"nearest"``. Valid-padding networks use nearest: bilinear
            clamps at the tile border, which would make overlap-tile
            prediction differ from a full-image pass.

    Call: ``gate(x, g)`` with ``x`` of shape ``(batch, 2h, 2w, c_x)`` and ``g``
    of shape ``(batch, h, w, c_g)``.
    Output shape: the shape of ``x``.
    """

    def __init__(self, inter_channels, kernel_initializer="he_normal", interpolation="bilinear",
                 **kwargs):
        super().__init__(**kwargs)
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
        self.inter_channels = int(inter_channels)
        self.interpolation = interpolation
        self.kernel_initializer = _initializer_config(kernel_initializer)
        conv = dict(kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy)
        # W_x has no bias: W_g's bias already shifts the sum.
        self.theta_x = layers.Conv2D(self.inter_channels, 2, strides=2, use_bias=False,
                                     name="theta_x", **conv)
        self.phi_g = layers.Conv2D(self.inter_channels, 1, name="phi_g", **conv)
        self.relu = layers.Activation("relu", name="relu", dtype=self.dtype_policy)
        self.psi = layers.Conv2D(1, 1, name="psi", **conv)
        self.sigmoid = layers.Activation("sigmoid", name="sigmoid", dtype=self.dtype_policy)
        self.resample = Upsample2x(interpolation, name="resample", dtype=self.dtype_policy)

    def build(self, x_shape, g_shape):
        self.theta_x.build(x_shape)
        self.phi_g.build(g_shape)
        self.psi.build(tuple(g_shape[:3]) + (self.inter_channels,))
        self.built = True

    def call(self, x, g):
        alpha = self.sigmoid(self.psi(self.relu(self.theta_x(x) + self.phi_g(g))))
        return x * self.resample(alpha)

    def compute_output_shape(self, x_shape, g_shape):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(inter_channels=self.inter_channels,
                      kernel_initializer=self.kernel_initializer, interpolation=self.interpolation)
        return config


@keras.saving.register_keras_serializable(package="unet_tf")
class DecoderBlock(layers.Layer):
    """One level of the expanding path: upsample by 2, join the skip, then a ``ConvBlock``.

    Args:
        filters: output channels; the upsampling also maps to ``filters``
            channels (the paper halves the channels in its up-convolution).
        upsampling: ``"transpose"`` (a 2x2 stride-2 ``Conv2DTranspose``, the
            paper's up-convolution) or ``"bilinear"`` (bilinear upsampling and
            a 1x1 convolution, which has no checkerboard artefacts).
        padding, batch_norm, activation, dropout, kernel_initializer, residual:
            as in :class:`ConvBlock`. With valid padding the skip is
            centre-cropped to the upsampled size before the concatenation.
        attention: gate the (cropped) skip with an :class:`AttentionGate`
            (``filters // 2`` intermediate channels) driven by ``x``, the
            coarser decoder input (its coefficients are
            resampled bilinearly with same padding, by nearest neighbour
            with valid padding, which keeps overlap-tile exact).

    Call: ``block(x, skip)`` with ``x`` of shape ``(batch, h, w, c)`` and
    ``skip`` of shape ``(batch, H, W, c_skip)`` where ``H >= 2h``.
    Output shape: ``(batch, 2h, 2w, filters)`` for same padding,
    ``(batch, 2h - 4, 2w - 4, filters)`` for valid padding.
    """

    def __init__(self, filters, padding="same", upsampling="transpose", batch_norm=False,
                 activation="relu", dropout=0.0, kernel_initializer="he_normal", residual=False,
                 attention=False, **kwargs):
        super().__init__(**kwargs)
        if upsampling not in _UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {_UPSAMPLINGS}, got {upsampling!r}")
        kernel_initializer = _initializer_config(kernel_initializer)
        self.filters = int(filters)
        self.padding = padding
        self.upsampling = upsampling
        if upsampling == "transpose":
            self.upsample = None
            self.up_conv = layers.Conv2DTranspose(self.filters, 2, strides=2,
                                                  kernel_initializer=kernel_initializer,
                                                  name="up_conv", dtype=self.dtype_policy)
        else:
            self.upsample = Upsample2x("bilinear", name="upsample", dtype=self.dtype_policy)
            self.up_conv = layers.Conv2D(self.filters, 1, kernel_initializer=kernel_initializer,
                                         name="up_conv", dtype=self.dtype_policy)
        self.attention = bool(attention)
        self.gate = (AttentionGate(max(1, self.filters // 2), kernel_initializer=kernel_initializer,
                                   interpolation="nearest" if padding == "valid" else "bilinear",
                                   name="attention_gate", dtype=self.dtype_policy)
                     if self.attention else None)
        self.concat = layers.Concatenate(axis=-1, name="concat", dtype=self.dtype_policy)
        self.conv_block = ConvBlock(filters, padding=padding, batch_norm=batch_norm,
                                    activation=activation, dropout=dropout,
                                    kernel_initializer=kernel_initializer, residual=residual,
                                    name="conv_block", dtype=self.dtype_policy)

    def _up_shape(self, x_shape):
        n, h, w, _ = x_shape
        double = lambda s: None if s is None else 2 * s  # noqa: E731
        return (n, double(h), double(w), self.filters)

    def build(self, x_shape, skip_shape):
        if self.upsample is not None:
            self.up_conv.build(self.upsample.compute_output_shape(x_shape))
        else:
            self.up_conv.build(x_shape)
        up_shape = self._up_shape(x_shape)
        if self.gate is not None:  # the gate sees the skip cropped to the upsampled size
            self.gate.build(up_shape[:3] + (skip_shape[-1],), x_shape)
        self.conv_block.build(up_shape[:3] + (self.filters + skip_shape[-1],))
        self.built = True

    def call(self, x, skip, training=None):
        gating = x
        if self.upsample is not None:
            x = self.upsample(x)
        up = self.up_conv(x)
        if self.padding == "valid":
            shape = ops.shape(up)
            skip = center_crop(skip, shape[1], shape[2])
        if self.gate is not None:
            skip = self.gate(skip, gating)
        return self.conv_block(self.concat([up, skip]), training=training)

    def compute_output_shape(self, x_shape, skip_shape):
        up_shape = self._up_shape(x_shape)
        return self.conv_block.compute_output_shape(up_shape[:3] + (self.filters + skip_shape[-1],))

    def get_config(self):
        config = super().get_config()
        block = self.conv_block.get_config()
        for key in _BLOCK_KEYS:
            config[key] = block[key]
        config.update(upsampling=self.upsampling, attention=self.attention)
        return config
