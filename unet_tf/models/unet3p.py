"""U-Net 3+ (Huang et al., 2020): full-scale skip connections and full-scale deep supervision.

The encoder is the U-Net's (``X_En^0 .. X_En^{depth-1}`` and the bottleneck
``X_De^depth``). Each decoder node ``X_De^l`` (``l = depth-1 .. 0``, finest
last) sees every scale at once::

    X_De^l = fuse([ conv(maxpool_{2^(l-i)}(X_En^i))  for i < l      (finer encoder maps)
                    conv(X_En^l)                                      (same level)
                    conv(up_{2^(j-l)}(X_De^j))       for j > l ])     (deeper decoder nodes
                                                                       and the bottleneck)

where every ``conv`` is a 3x3 convolution to ``skip_filters`` channels with
batch norm and ReLU, ``up`` is bilinear upsampling, and ``fuse`` a 3x3
convolution (``(depth + 1) * skip_filters`` channels) with batch norm and ReLU.

Full-scale deep supervision: a 3x3 convolution head on every decoder node and
on the bottleneck, bilinearly upsampled to the input size; each head is trained
with the loss. As in ``UNetPlusPlus``, the call returns one tensor outside
training (the final head, or the heads' average) and the list of heads in
training, which ``compute_loss`` weighs and ``compute_metrics`` combines.

The classification-guided module (``cgm=True``) predicts from the bottleneck
whether the image contains the object at all; it is trained with its own
binary cross-entropy, and at inference its decision gates the segmentation,
so an image without the object gives an empty mask.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from .blocks import ConvBlock, EncoderBlock, _initializer_config
from .unet import DeepSupervision, UNetBase, check_head_weights

__all__ = ["UNet3Plus", "ConvBNAct", "FullScaleNode", "BilinearResize"]

_MODES = ("final", "average")
#: Dropout of the classification-guided module, as in the paper's code.
CGM_DROPOUT = 0.5
#: What a gated-off logit becomes (sigmoid/softmax of it is 0 in float16 and float32).
_OFF_LOGIT = 1e4


@keras.saving.register_keras_serializable(package="unet_tf")
class BilinearResize(layers.Layer):
    """Bilinear upsampling by an integer ``factor`` (half-pixel centres), any input size.

    TFLite converts it to the builtin ``RESIZE_BILINEAR``.

    Input shape: ``(batch, h, w, c)``. Output shape: ``(batch, factor*h, factor*w, c)``.
    """

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")

    def call(self, x):
        if self.factor == 1:
            return x
        import tensorflow as tf  # the project's backend
        h, w = x.shape[1], x.shape[2]
        if h is not None and w is not None:  # static sizes stay static (losses read them)
            size = (h * self.factor, w * self.factor)
        else:
            size = tf.shape(x)[1:3] * self.factor
        return ops.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        scale = lambda s: None if s is None else self.factor * s  # noqa: E731
        return (n, scale(h), scale(w), c)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="unet_tf")
class ConvBNAct(layers.Layer):
    """One convolution (same padding), optional batch norm, then the activation.

    Input shape: ``(batch, H, W, C)``. Output shape: ``(batch, H, W, filters)``.
    """

    def __init__(self, filters, kernel_size=3, batch_norm=True, activation="relu",
                 kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.batch_norm = bool(batch_norm)
        self.activation = activation
        self.kernel_initializer = _initializer_config(kernel_initializer)
        self.conv = layers.Conv2D(self.filters, self.kernel_size, padding="same",
                                  use_bias=not self.batch_norm,
                                  kernel_initializer=self.kernel_initializer, name="conv",
                                  dtype=self.dtype_policy)
        self.norm = (layers.BatchNormalization(momentum=0.9, name="bn", dtype=self.dtype_policy)
                     if self.batch_norm else None)
        self.act = layers.Activation(activation, name="act", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build(input_shape)
        if self.norm is not None:
            self.norm.build(self.conv.compute_output_shape(input_shape))
        self.built = True

    def call(self, x, training=None):
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x, training=training)
        return self.act(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "batch_norm": self.batch_norm, "activation": self.activation,
                "kernel_initializer": self.kernel_initializer}


@keras.saving.register_keras_serializable(package="unet_tf")
class FullScaleNode(layers.Layer):
    """One U-Net 3+ decoder node: full-scale skips, each through its own conv, fused by one conv.

    Args:
        skip_filters: channels of each input's 3x3 convolution (64 in the paper).
        num_inputs: maps the node joins, ``depth + 1``; the fused output has
            ``num_inputs * skip_filters`` channels (5 x 64 = 320 in the paper).
        batch_norm, activation, kernel_initializer: of every convolution.

    Call: ``node(encoder_maps, deeper_maps)``: ``encoder_maps`` the encoder's
    maps from the finest down to this node's level (``l + 1`` maps: map ``i``
    is max-pooled by ``2**(l - i)``), ``deeper_maps`` the deeper decoder nodes
    from the next level down to the bottleneck (map ``k`` is upsampled
    bilinearly by ``2**(k + 1)``); ``len(encoder_maps) + len(deeper_maps) == num_inputs``.
    Output shape: ``(batch, h, w, num_inputs * skip_filters)`` at this node's
    level (the size of ``encoder_maps[-1]``).
    """

    def __init__(self, skip_filters, num_inputs, batch_norm=True, activation="relu",
                 kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        self.skip_filters = int(skip_filters)
        self.num_inputs = int(num_inputs)
        self.batch_norm = bool(batch_norm)
        self.activation = activation
        self.kernel_initializer = _initializer_config(kernel_initializer)
        conv = dict(batch_norm=self.batch_norm, activation=activation,
                    kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy)
        self.convs = [ConvBNAct(self.skip_filters, name=f"skip_{k}", **conv)
                      for k in range(self.num_inputs)]
        self.fuse = ConvBNAct(self.skip_filters * self.num_inputs, name="fuse", **conv)
        self.concat = layers.Concatenate(axis=-1, name="concat", dtype=self.dtype_policy)
        self.ups = [BilinearResize(2 ** (k + 1), name=f"up_{2 ** (k + 1)}", dtype=self.dtype_policy)
                    for k in range(self.num_inputs - 1)]

    def _check(self, encoder_count, deeper_count):
        if encoder_count < 1 or encoder_count + deeper_count != self.num_inputs:
            raise ValueError(f"FullScaleNode joins {self.num_inputs} maps: at least one encoder map, "
                             f"got {encoder_count} encoder and {deeper_count} deeper maps")

    def build(self, encoder_maps_shape, deeper_maps_shape):
        self._check(len(encoder_maps_shape), len(deeper_maps_shape))
        n, h, w, _ = encoder_maps_shape[-1]
        for conv, shape in zip(self.convs, list(encoder_maps_shape) + list(deeper_maps_shape)):
            conv.build((n, h, w, shape[-1]))
        self.fuse.build((n, h, w, self.skip_filters * self.num_inputs))
        self.built = True

    def call(self, encoder_maps, deeper_maps, training=None):
        self._check(len(encoder_maps), len(deeper_maps))
        level = len(encoder_maps) - 1
        resampled = []
        for i, feature in enumerate(encoder_maps):
            factor = 2 ** (level - i)
            if factor > 1:  # MAX_POOL_2D: a TFLite builtin
                feature = ops.max_pool(feature, pool_size=factor, strides=factor, padding="valid")
            resampled.append(feature)
        resampled += [self.ups[k](feature) for k, feature in enumerate(deeper_maps)]
        joined = self.concat([conv(x, training=training) for conv, x in zip(self.convs, resampled)])
        return self.fuse(joined, training=training)

    def compute_output_shape(self, encoder_maps_shape, deeper_maps_shape):
        return tuple(encoder_maps_shape[-1][:3]) + (self.skip_filters * self.num_inputs,)

    def get_config(self):
        return {**super().get_config(), "skip_filters": self.skip_filters,
                "num_inputs": self.num_inputs, "batch_norm": self.batch_norm,
                "activation": self.activation, "kernel_initializer": self.kernel_initializer}


def _check_inference_mode(mode, deep_supervision: bool) -> str:
    if mode not in _MODES:
        raise ValueError(f"inference_mode must be 'final' or 'average', got {mode!r}")
    if mode == "average" and not deep_supervision:
        raise ValueError("inference_mode='average' needs deep_supervision=True: without it only "
                         "the final head is trained")
    return mode


def image_labels(y, ignore_index=255):
    """Per image, 1.0 when its mask has any foreground pixel (class > 0, not ignored), else 0.0.

    ``y``: sparse labels ``(batch, H, W)`` / ``(batch, H, W, 1)`` or one-hot ``(batch, H, W, C)``
    (an all-zero row is an ignored pixel). Returns ``(batch,)`` float32.
    """
    if len(y.shape) == 4 and y.shape[-1] > 1:  # one-hot: any weight on a foreground class
        foreground = ops.sum(ops.cast(y[..., 1:], "float32"), axis=-1) > 0.5
    else:
        labels = ops.cast(y[..., 0] if len(y.shape) == 4 else y, "int32")
        foreground = labels > 0
        if ignore_index is not None:
            foreground = ops.logical_and(foreground, ops.not_equal(labels, int(ignore_index)))
    return ops.cast(ops.any(foreground, axis=(1, 2)), "float32")


@keras.saving.register_keras_serializable(package="unet_tf")
class UNet3Plus(DeepSupervision, UNetBase):
    """U-Net 3+ for semantic segmentation (Huang et al., 2020).

    Args:
        num_classes, depth, base_filters, dropout, activation, logits,
        in_channels, residual: as in :class:`unet_tf.models.UNet` (the encoder
            is the U-Net's: ``base_filters * 2**level`` channels per level, the
            dropout at the end of the contracting path, residual units if asked).
        padding: ``"same"`` only; ``"valid"`` raises a ``ValueError`` (the
            full-scale skips resample maps by powers of two, which the sizes of
            unpadded convolutions do not allow).
        batch_norm: batch norm after every convolution (on by default, as in the paper).
        upsampling: accepted for a uniform interface and ignored: U-Net 3+
            upsamples bilinearly everywhere.
        attention: not supported (``True`` raises a ``ValueError``).
        skip_filters: channels of each full-scale skip's 3x3 convolution
            (the paper's 64 with 64 base filters); default ``base_filters``, so
            that the decoder scales with the encoder and tiny models stay tiny.
            Every decoder node has ``(depth + 1) * skip_filters`` channels.
        deep_supervision: a 3x3 head on every decoder node and on the
            bottleneck, each upsampled to the input size and trained;
            otherwise one head on the last node.
        head_weights: one loss weight per head (``depth + 1`` values, the
            bottleneck's first and the final head's last; normalised to sum to
            1); default equal weights.
        inference_mode: ``"final"`` (the head on the last node) or
            ``"average"`` (the mean of all heads' outputs; needs deep supervision).
        cgm: the classification-guided module: dropout, a 1x1 convolution to 2
            channels ("absent", "present"), global max pooling and a sigmoid
            on the bottleneck. It is trained with a binary cross-entropy
            against "the mask has a foreground pixel" (added to the loss, one
            term per batch); at inference the image's decision (present >
            absent) multiplies the segmentation: for one sigmoid channel the
            probabilities, for softmax outputs the foreground classes (the
            background takes what they lose, so an absent object gives
            background everywhere). With ``logits=True`` gated-off foreground
            logits become -1e4.

    Input shape: ``(batch, H, W, in_channels)``, ``H`` and ``W`` multiples of ``2**depth``.
    Output shape: ``(batch, H, W, num_classes)``, float32. :meth:`heads` gives
    every head's output, :meth:`presence` the CGM's.
    """

    def __init__(self, num_classes=1, depth=4, base_filters=64, padding="same",
                 batch_norm=True, dropout=0.5, upsampling="bilinear", activation="relu",
                 logits=False, in_channels=None, residual=False, attention=False,
                 skip_filters=None, deep_supervision=True, head_weights=None,
                 inference_mode="final", cgm=False, **kwargs):
        kwargs.setdefault("name", "unet3plus")
        if padding == "valid":
            raise ValueError("U-Net 3+ needs padding='same': its full-scale skips max-pool and "
                             "upsample maps by powers of two, which the shrinking sizes of "
                             "unpadded convolutions do not allow")
        if attention:
            raise ValueError("U-Net 3+ has no attention gates (attention=True is for unet and "
                             "unetpp)")
        super().__init__(num_classes=num_classes, depth=depth, base_filters=base_filters,
                         padding=padding, batch_norm=batch_norm, dropout=dropout,
                         upsampling=upsampling, activation=activation, logits=logits,
                         in_channels=in_channels, residual=residual, attention=False, **kwargs)
        self.skip_filters = int(skip_filters) if skip_filters is not None else self.base_filters
        if self.skip_filters < 1:
            raise ValueError(f"skip_filters must be >= 1, got {skip_filters}")
        self.deep_supervision = bool(deep_supervision)
        self.inference_mode = _check_inference_mode(inference_mode, self.deep_supervision)
        weights = check_head_weights(head_weights, self.depth + 1, self.deep_supervision,
                                     "(bottleneck first, the final head last)")
        self.head_weights = None if weights is None else tuple(weights)
        self.cgm = bool(cgm)

        common = self._block_args()
        self.encoders = [EncoderBlock(self._filters(i), name=f"encoder_{i}", **common)
                         for i in range(self.depth)]
        self.bottleneck = ConvBlock(self._filters(self.depth), dropout=self.dropout,
                                    name="bottleneck", **common)
        node = dict(batch_norm=self.batch_norm, activation=self.activation, dtype=self.dtype_policy)
        # nodes[l] is X_De^l: nodes[0] is the last (finest) node.
        self.nodes = [FullScaleNode(self.skip_filters, self.depth + 1, name=f"decoder_{level}",
                                    **node) for level in range(self.depth)]
        levels = range(self.depth + 1) if self.deep_supervision else [0]
        # head_convs[l] sits on X_De^l (l = depth: the bottleneck); 3x3 as in the paper.
        self.head_convs = [layers.Conv2D(self.num_classes, 3, padding="same", name=f"head_{level}",
                                         dtype=self.dtype_policy) for level in levels]
        self.head_ups = [BilinearResize(2 ** level, name=f"head_up_{level}", dtype=self.dtype_policy)
                         for level in levels]
        # The heads' activation runs in float32 so mixed precision stays stable.
        self.head_activation = layers.Activation(self.output_activation, dtype="float32",
                                                 name="probabilities")
        if self.cgm:
            self.cgm_dropout = layers.Dropout(CGM_DROPOUT, name="cgm_dropout", dtype=self.dtype_policy)
            self.cgm_conv = layers.Conv2D(2, 1, name="cgm_conv", dtype=self.dtype_policy)
            self.cgm_activation = layers.Activation("sigmoid", dtype="float32", name="cgm_sigmoid")
        self._build_if_channels_known()

    # -- structure --------------------------------------------------------
    def _supervised_heads(self) -> int:
        return self.depth + 1

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.check_input_shape(input_shape[1], input_shape[2])
        shape, encoder_shapes = input_shape, []
        for encoder in self.encoders:
            encoder.build(shape)
            skip, shape = encoder.compute_output_shape(shape)
            encoder_shapes.append(skip)
        self.bottleneck.build(shape)
        decoded = {self.depth: self.bottleneck.compute_output_shape(shape)}
        for level in reversed(range(self.depth)):
            below = encoder_shapes[:level + 1]
            deeper = [decoded[j] for j in range(level + 1, self.depth + 1)]
            self.nodes[level].build(below, deeper)
            decoded[level] = self.nodes[level].compute_output_shape(below, deeper)
        for conv, level in zip(self.head_convs, self._head_levels()):
            conv.build(decoded[level])
        if self.cgm:
            self.cgm_conv.build(decoded[self.depth])
        if self.in_channels is None:
            self.in_channels = input_shape[-1]
        self.built = True

    def _head_levels(self) -> list[int]:
        return list(range(self.depth + 1)) if self.deep_supervision else [0]

    def _features(self, inputs, training):
        """``{level: X_De^level}`` for ``level = 0 .. depth`` (``depth``: the bottleneck)."""
        x, encoded = inputs, []
        for encoder in self.encoders:
            skip, x = encoder(x, training=training)
            encoded.append(skip)
        decoded = {self.depth: self.bottleneck(x, training=training)}
        for level in reversed(range(self.depth)):
            deeper = [decoded[j] for j in range(level + 1, self.depth + 1)]
            decoded[level] = self.nodes[level](encoded[:level + 1], deeper, training=training)
        return decoded

    def _head(self, index: int, feature):
        return self.head_activation(self.head_ups[index](self.head_convs[index](feature)))

    def _all_heads(self, decoded) -> list:
        """The heads' outputs, the bottleneck's first and the final head last."""
        order = list(reversed(range(len(self.head_convs))))  # index = level
        return [self._head(index, decoded[self._head_levels()[index]]) for index in order]

    def _presence(self, bottleneck, training):
        x = self.cgm_conv(self.cgm_dropout(bottleneck, training=training))
        return self.cgm_activation(ops.max(x, axis=(1, 2)))  # global max pooling: REDUCE_MAX

    # -- keras ------------------------------------------------------------
    def call(self, inputs, training=None):
        self.check_input_shape(inputs.shape[1], inputs.shape[2])
        decoded = self._features(inputs, training)
        if training and (self.deep_supervision or self.cgm):
            # Keras's train_step hands this list to compute_loss and compute_metrics.
            outputs = self._all_heads(decoded) if self.deep_supervision else [self._head(0, decoded[0])]
            return outputs + ([self._presence(decoded[self.depth], True)] if self.cgm else [])
        if self.inference_mode == "average":
            output = self._combine(self._all_heads(decoded))
        else:
            output = self._head(0, decoded[0])
        if self.cgm:
            output = self.gate(output, self._presence(decoded[self.depth], training))
        return output

    def heads(self, inputs, training=None) -> list:
        """Every head's output, ungated (``depth + 1`` tensors with deep supervision, the
        bottleneck's first and the final head's last; else a list of the final head's)."""
        if not self.built:
            self.build(tuple(inputs.shape))
        self.check_input_shape(inputs.shape[1], inputs.shape[2])
        decoded = self._features(inputs, training)
        if not self.deep_supervision:
            return [self._head(0, decoded[0])]
        return self._all_heads(decoded)

    def presence(self, inputs, training=None):
        """The CGM's sigmoid outputs ``(batch, 2)``: "absent", "present" (needs ``cgm=True``)."""
        if not self.cgm:
            raise ValueError("presence() needs cgm=True")
        if not self.built:
            self.build(tuple(inputs.shape))
        x = inputs
        for encoder in self.encoders:
            _, x = encoder(x, training=training)
        return self._presence(self.bottleneck(x, training=training), training)

    def gate(self, output, presence):
        """The segmentation ``output`` with the CGM's decision applied per image."""
        present = ops.cast(presence[:, 1] > presence[:, 0], output.dtype)[:, None, None, None]
        if self.logits:
            off = (present - 1.0) * _OFF_LOGIT
            if self.num_classes == 1:
                return output * present + off
            return ops.concatenate([output[..., :1], output[..., 1:] * present + off], axis=-1)
        if self.num_classes == 1:
            return output * present
        background = 1.0 - present * (1.0 - output[..., :1])
        return ops.concatenate([background, output[..., 1:] * present], axis=-1)

    def _combine(self, heads: list):
        if self.inference_mode == "average":
            return self._average(heads)
        return heads[-1]

    def get_config(self):
        config = super().get_config()
        config.pop("attention")
        config.update(skip_filters=self.skip_filters, deep_supervision=self.deep_supervision,
                      head_weights=None if self.head_weights is None else list(self.head_weights),
                      inference_mode=self.inference_mode, cgm=self.cgm)
        return config

    # -- training ---------------------------------------------------------
    def _split_training_outputs(self, outputs):
        """``(heads, presence)`` from what a training call returned."""
        if self.cgm:
            return list(outputs[:-1]), outputs[-1]
        return list(outputs), None

    def _extra_loss(self, y, presence):
        return self.cgm_loss(y, presence)

    def _inference_output(self, heads, presence):
        output = self._combine(heads)
        return output if presence is None else self.gate(output, presence)

    def cgm_loss(self, y, presence):
        """Binary cross-entropy of the CGM's ``(absent, present)`` outputs, mean over the batch."""
        from ..losses import _scale_for_replicas
        ignore_index = getattr(getattr(self, "loss", None), "ignore_index", 255)
        target = image_labels(ops.convert_to_tensor(y), ignore_index)
        target = ops.stack([1.0 - target, target], axis=-1)
        p = ops.clip(ops.cast(presence, "float32"), 1e-7, 1.0 - 1e-7)
        bce = -(target * ops.log(p) + (1.0 - target) * ops.log(1.0 - p))
        return _scale_for_replicas(ops.mean(bce))
