"""The U-Net model (Ronneberger et al., 2015) as a subclassed ``keras.Model``."""
from __future__ import annotations

import keras
from keras import layers

from . import sizes
from .blocks import ConvBlock, DecoderBlock, EncoderBlock

__all__ = ["UNet"]


@keras.saving.register_keras_serializable(package="unet_tf")
class UNet(keras.Model):
    """U-Net for semantic segmentation.

    The paper's network is ``UNet(num_classes=2, depth=4, base_filters=64,
    padding="valid")``: 572x572 inputs give 388x388 outputs. The defaults use
    same padding, where the output has the input's size.

    Args:
        num_classes: 1 for a binary task (one sigmoid channel), N >= 2 for N
            mutually exclusive classes (softmax).
        depth: number of pooling steps (4 in the paper).
        base_filters: channels of the first level; they double at each level
            (64 -> 1024 in the paper).
        padding: ``"same"`` or ``"valid"`` (unpadded convolutions, as in the paper;
            predict large images with overlap-tile, see ``unet_tf.inference``).
        batch_norm: batch normalization after every convolution.
        dropout: dropout rate at the end of the contracting path (0.5 in the paper).
        upsampling: ``"transpose"`` (2x2 up-convolution) or ``"bilinear"``.
        activation: activation of the convolutions.
        logits: return logits instead of probabilities (then build your loss
            with ``from_logits=True``).
        in_channels: if given, the model is built right away for inputs of
            shape ``(None, None, None, in_channels)``; otherwise on first call.

    Input shape: ``(batch, H, W, in_channels)``, float. ``H`` and ``W`` must be
    valid sizes (see :meth:`valid_input_size`).
    Output shape: ``(batch, H', W', num_classes)``, float32 even under mixed
    precision, with ``H' = output_size(H)``.
    """

    def __init__(self, num_classes=1, depth=4, base_filters=64, padding="same",
                 batch_norm=False, dropout=0.5, upsampling="transpose", activation="relu",
                 logits=False, in_channels=None, **kwargs):
        kwargs.setdefault("name", "unet")
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        self.num_classes = int(num_classes)
        self.depth = int(depth)
        self.base_filters = int(base_filters)
        self.padding = padding
        self.batch_norm = bool(batch_norm)
        self.dropout = float(dropout)
        self.upsampling = upsampling
        self.activation = activation
        self.logits = bool(logits)
        self.in_channels = None if in_channels is None else int(in_channels)

        common = dict(padding=padding, batch_norm=batch_norm, activation=activation,
                      dtype=self.dtype_policy)
        filters = [self.base_filters * 2**level for level in range(self.depth + 1)]
        self.encoders = [EncoderBlock(filters[level], name=f"encoder_{level}", **common)
                         for level in range(self.depth)]
        self.bottleneck = ConvBlock(filters[self.depth], dropout=self.dropout,
                                    name="bottleneck", **common)
        self.decoders = [DecoderBlock(filters[level], upsampling=upsampling,
                                      name=f"decoder_{level}", **common)
                         for level in reversed(range(self.depth))]
        self.head = layers.Conv2D(self.num_classes, 1, name="head", dtype=self.dtype_policy)
        # The head's activation runs in float32 so mixed precision stays stable.
        self.head_activation = layers.Activation(self.output_activation, dtype="float32",
                                                 name="probabilities")
        if self.in_channels is not None:
            self.build((None, None, None, self.in_channels))

    @property
    def output_activation(self) -> str:
        if self.logits:
            return "linear"
        return "sigmoid" if self.num_classes == 1 else "softmax"

    # -- size rules -------------------------------------------------------
    def output_size(self, size: int) -> int:
        """Output size along one axis for an input of ``size`` pixels."""
        return sizes.output_size(size, self.depth, self.padding)

    def valid_input_size(self, near: int) -> int:
        """The smallest valid input size >= ``near``."""
        return sizes.nearest_valid_input_sizes(near, self.depth, self.padding)[1]

    def check_input_shape(self, height, width) -> None:
        """Raise a ``ValueError`` naming valid sizes if ``height``/``width`` cannot work."""
        for size in (height, width):
            if size is not None:
                sizes.check_input_size(int(size), self.depth, self.padding)

    # -- keras ------------------------------------------------------------
    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.check_input_shape(input_shape[1], input_shape[2])
        shape = input_shape
        skip_shapes = []
        for encoder in self.encoders:
            encoder.build(shape)
            skip_shape, shape = encoder.compute_output_shape(shape)
            skip_shapes.append(skip_shape)
        self.bottleneck.build(shape)
        shape = self.bottleneck.compute_output_shape(shape)
        for decoder, skip_shape in zip(self.decoders, reversed(skip_shapes)):
            decoder.build(shape, skip_shape)
            shape = decoder.compute_output_shape(shape, skip_shape)
        self.head.build(shape)
        if self.in_channels is None:
            self.in_channels = input_shape[-1]
        self.built = True

    def call(self, inputs, training=None):
        self.check_input_shape(inputs.shape[1], inputs.shape[2])
        x = inputs
        skips = []
        for encoder in self.encoders:
            skip, x = encoder(x, training=training)
            skips.append(skip)
        x = self.bottleneck(x, training=training)
        for decoder, skip in zip(self.decoders, reversed(skips)):
            x = decoder(x, skip, training=training)
        return self.head_activation(self.head(x))

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        out = lambda s: None if s is None else self.output_size(s)  # noqa: E731
        return (n, out(h), out(w), self.num_classes)

    def get_config(self):
        # Plain constructor arguments only: a Model's base config carries
        # functional-API fields that a subclassed model must not receive.
        return dict(name=self.name, dtype=keras.dtype_policies.serialize(self.dtype_policy),
                    num_classes=self.num_classes, depth=self.depth,
                    base_filters=self.base_filters, padding=self.padding,
                    batch_norm=self.batch_norm, dropout=self.dropout,
                    upsampling=self.upsampling, activation=self.activation,
                    logits=self.logits, in_channels=self.in_channels)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def _multi_worker(self) -> bool:
        import tensorflow as tf
        return isinstance(getattr(self, "_distribute_strategy", None),
                          tf.distribute.MultiWorkerMirroredStrategy)

    def _as_vectors(self, logs):
        """Keras 3 reduces each log across workers with ``axis=0``, which fails for
        scalars under ``MultiWorkerMirroredStrategy``; give it length-1 vectors."""
        if not self._multi_worker():
            return logs
        from keras import ops
        return {key: ops.reshape(value, (1,)) for key, value in logs.items()}

    def train_step(self, data):
        return self._as_vectors(super().train_step(data))

    def test_step(self, data):
        return self._as_vectors(super().test_step(data))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras 3 builds its training state from a batch it first reduces with
        ``strategy.reduce``, which fails under ``MultiWorkerMirroredStrategy``
        (keras-team/keras#20585). Build from this worker's local batch instead."""
        import tensorflow as tf

        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            batch = next(batches)
            break
        local = tf.nest.map_structure(
            lambda v: v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v, batch)
        with strategy.scope():
            self._symbolic_build(data_batch=local)
