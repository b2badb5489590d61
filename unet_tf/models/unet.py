"""The U-Net model (Ronneberger et al., 2015) as a subclassed ``keras.Model``.

``UNetBase`` holds what every model of the family shares: the constructor
arguments, the size rules, the output activation, the configuration and the
multi-worker fixes of ``train_step``/``test_step``. ``DeepSupervision`` is
what the models with several trained heads add (``UNetPlusPlus``,
``UNet3Plus``). ``UNet`` is the classic network.
"""
from __future__ import annotations

import keras
from keras import layers

from .. import _keras_compat, sizes
from .blocks import ConvBlock, DecoderBlock, EncoderBlock

__all__ = ["UNetBase", "UNet", "DeepSupervision", "check_head_weights"]


class UNetBase(keras.Model):
    """Shared base of ``UNet`` and ``UNetPlusPlus`` (not a model on its own).

    Subclasses create their layers after ``super().__init__()`` and then call
    :meth:`_build_if_channels_known`; they implement ``build``, ``call`` and
    extend ``get_config``.

    Args: see :class:`UNet`.
    """

    def __init__(self, num_classes=1, depth=4, base_filters=64, padding="same",
                 batch_norm=False, dropout=0.5, upsampling="transpose", activation="relu",
                 logits=False, in_channels=None, residual=False, attention=False, **kwargs):
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
        self.residual = bool(residual)
        self.attention = bool(attention)

    def _block_args(self) -> dict:
        """Arguments that every Encoder/Decoder/ConvBlock of the model receives."""
        return dict(padding=self.padding, batch_norm=self.batch_norm, activation=self.activation,
                    residual=self.residual, dtype=self.dtype_policy)

    def _filters(self, level: int) -> int:
        return self.base_filters * 2**level

    def _make_head(self, name: str) -> layers.Layer:
        return layers.Conv2D(self.num_classes, 1, name=name, dtype=self.dtype_policy)

    def _build_if_channels_known(self) -> None:
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
                    logits=self.logits, in_channels=self.in_channels,
                    residual=self.residual, attention=self.attention)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # -- distribution -----------------------------------------------------
    def _multi_worker(self) -> bool:
        import tensorflow as tf
        return isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def _as_vectors(self, logs):
        """Keras 3 reduces each log across workers with ``axis=0``, which fails for
        scalars under ``MultiWorkerMirroredStrategy``; give it length-1 vectors."""
        if not self._multi_worker():
            return logs
        from keras import ops
        return {key: ops.reshape(value, (1,)) for key, value in logs.items()}

    if keras.backend.backend() == "tensorflow":  # the fixes concern TensorFlow's trainer only
        def train_step(self, data):
            return self._as_vectors(super().train_step(data))

        def test_step(self, data):
            return self._as_vectors(super().test_step(data))

        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            # Private Keras hook; see _keras_compat.build_from_local_batch for why.
            if not _keras_compat.build_from_local_batch(self, iterator):
                super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def check_head_weights(weights, heads: int, deep_supervision: bool, which: str):
    """The loss weights of a deep-supervised model's heads, checked (None: equal).

    Args:
        weights: One weight per head, or None.
        heads: How many heads the model has.
        deep_supervision: Whether the heads are trained at all.
        which: The heads, as the error message names them.
    """
    if weights is None:
        return None
    if not deep_supervision:
        raise ValueError("head_weights need deep_supervision=True (there is only one head)")
    weights = [float(w) for w in weights]
    if len(weights) != heads:
        raise ValueError(f"head_weights needs one weight per head {which}: "
                         f"{heads} values, got {len(weights)}")
    if min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"head_weights must be >= 0 with a positive sum, got {weights}")
    return weights


class DeepSupervision:
    """What the deep-supervised models (U-Net++, U-Net 3+) share; mixed in before
    :class:`UNetBase`.

    In training their call returns a list: the heads' outputs, then any extra
    outputs (:meth:`_split_training_outputs` says which). ``compute_loss``
    weighs the heads with :attr:`normalized_head_weights` and adds
    :meth:`_extra_loss`; ``compute_metrics`` sees the inference output that
    :meth:`_inference_output` builds from them, so Keras's own ``train_step``
    does the rest. Subclasses set ``deep_supervision``, ``head_weights`` and
    ``inference_mode``, and implement ``_supervised_heads`` and ``_combine``.
    """

    def _supervised_heads(self) -> int:
        raise NotImplementedError

    @property
    def normalized_head_weights(self) -> list[float]:
        """The heads' loss weights, summing to 1, in the order of ``heads()``."""
        if not self.deep_supervision:
            return [1.0]
        weights = self.head_weights or [1.0] * self._supervised_heads()
        total = sum(weights)
        return [w / total for w in weights]

    @staticmethod
    def _average(heads: list):
        total = heads[0]
        for head in heads[1:]:
            total = total + head
        return total * (1.0 / len(heads))  # ADD and MUL: builtin TFLite ops

    def with_inference_mode(self, mode):
        """A copy of this model, with the same weights, that infers with ``mode``."""
        clone = type(self).from_config({**self.get_config(), "inference_mode": mode})
        if not clone.built:
            clone.build((None, None, None, self.in_channels))
        clone.set_weights(self.get_weights())
        return clone

    # -- training ---------------------------------------------------------
    def _split_training_outputs(self, outputs) -> tuple[list, object]:
        """``(heads, extra)`` from what a training call returned (extra: None)."""
        return list(outputs), None

    def _extra_loss(self, y, extra):
        raise NotImplementedError

    def _inference_output(self, heads: list, extra):
        return self._combine(heads)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled loss; for the training outputs, ``sum_k w_k * loss(y, head_k)``
        with the normalised head weights (model losses such as regularisers are
        added once, since the weights sum to 1), plus :meth:`_extra_loss`."""
        if not isinstance(y_pred, (list, tuple)):
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        heads, extra = self._split_training_outputs(y_pred)
        total = None
        for weight, head in zip(self.normalized_head_weights, heads):
            term = weight * super().compute_loss(x, y, head, sample_weight, training=training)
            total = term if total is None else total + term
        if extra is not None:
            total = total + self._extra_loss(y, extra)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Metrics see the inference output, built from the training outputs."""
        if isinstance(y_pred, (list, tuple)):
            y_pred = self._inference_output(*self._split_training_outputs(y_pred))
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)


@keras.saving.register_keras_serializable(package="unet_tf")
class UNet(UNetBase):
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
        residual: residual units instead of plain double convolutions
            (see :class:`unet_tf.blocks.ConvBlock`).
        attention: attention gates on the skip connections (Oktay et al.,
            2018; see :class:`unet_tf.blocks.AttentionGate`).

    Input shape: ``(batch, H, W, in_channels)``, float. ``H`` and ``W`` must be
    valid sizes (see :meth:`valid_input_size`).
    Output shape: ``(batch, H', W', num_classes)``, float32 even under mixed
    precision, with ``H' = output_size(H)``.
    """

    def __init__(self, num_classes=1, depth=4, base_filters=64, padding="same",
                 batch_norm=False, dropout=0.5, upsampling="transpose", activation="relu",
                 logits=False, in_channels=None, residual=False, attention=False, **kwargs):
        super().__init__(num_classes=num_classes, depth=depth, base_filters=base_filters,
                         padding=padding, batch_norm=batch_norm, dropout=dropout,
                         upsampling=upsampling, activation=activation, logits=logits,
                         in_channels=in_channels, residual=residual, attention=attention,
                         **kwargs)
        common = self._block_args()
        self.encoders = [EncoderBlock(self._filters(level), name=f"encoder_{level}", **common)
                         for level in range(self.depth)]
        self.bottleneck = ConvBlock(self._filters(self.depth), dropout=self.dropout,
                                    name="bottleneck", **common)
        self.decoders = [DecoderBlock(self._filters(level), upsampling=upsampling,
                                      attention=self.attention, name=f"decoder_{level}", **common)
                         for level in reversed(range(self.depth))]
        self.head = self._make_head("head")
        # The head's activation runs in float32 so mixed precision stays stable.
        self.head_activation = layers.Activation(self.output_activation, dtype="float32",
                                                 name="probabilities")
        self._build_if_channels_known()

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
