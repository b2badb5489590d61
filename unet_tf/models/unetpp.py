"""U-Net++ (Zhou et al., 2018): nested dense skip connections and deep supervision.

The nodes ``X^{i,j}`` form a triangle: ``X^{i,0}`` is the contracting path
(level ``i``, ``base_filters * 2**i`` channels), and every other node joins
all nodes to its left with the upsampled node below-left::

    X^{i,j} = ConvBlock([X^{i,0}, ..., X^{i,j-1}, Up(X^{i+1,j-1})])

The top row ``X^{0,1} ... X^{0,depth}`` ends in one 1x1 head each. With deep
supervision every head is trained (the training loss is the weighted sum of
the heads' losses), so at inference the model can use the final head, the
average of all heads, or a pruned network that computes only the nodes up to
``X^{0,L}``: the smaller sub-network the paper trades accuracy for speed with.

Outside training the model's call returns one tensor in every mode, so
overlap-tile inference and export treat it like a ``UNet``; in training with
deep supervision it returns the list of heads, which ``compute_loss`` weighs
and ``compute_metrics`` combines (Keras's own ``train_step`` does the rest).
"""
from __future__ import annotations

import keras
from keras import layers, ops

from .. import sizes
from .blocks import ConvBlock, DecoderBlock, EncoderBlock, center_crop
from .unet import DeepSupervision, UNetBase, check_head_weights

__all__ = ["UNetPlusPlus"]

_MODES = ("final", "average")


def _check_inference_mode(mode, depth: int, deep_supervision: bool):
    """``"final"``, ``"average"`` or a prune depth ``1..depth`` (an int)."""
    if isinstance(mode, str) and mode.isdigit():
        mode = int(mode)  # e.g. from a command line or a YAML file
    if isinstance(mode, bool) or not (mode in _MODES or isinstance(mode, int)):
        raise ValueError(f"inference_mode must be 'final', 'average' or a prune depth "
                         f"1..{depth}, got {mode!r}")
    if isinstance(mode, int) and not 1 <= mode <= depth:
        raise ValueError(f"inference_mode: prune depth must be in 1..{depth}, got {mode}")
    if not deep_supervision and mode not in ("final", depth):
        # Without deep supervision only the final head is trained.
        raise ValueError(f"inference_mode={mode!r} needs deep_supervision=True: without it only "
                         "the final head X^{0,depth} is trained")
    return mode


@keras.saving.register_keras_serializable(package="unet_tf")
class UNetPlusPlus(DeepSupervision, UNetBase):
    """U-Net++ for semantic segmentation, built from the U-Net's blocks.

    Args:
        num_classes, depth, base_filters, padding, batch_norm, dropout,
        upsampling, activation, logits, in_channels, residual, attention: as in
            :class:`unet_tf.model.UNet`. With valid padding every nested skip
            is centre-cropped to its node's size, and the heads to the final
            output's size, so the size rules are the U-Net's. ``attention``
            gates each node's (concatenated) skips with the node below-left.
        deep_supervision: a head on every top-row node ``X^{0,1..depth}``,
            all trained; otherwise one head on ``X^{0,depth}``.
        head_weights: one loss weight per head (``depth`` values, normalised
            to sum to 1); default equal weights.
        inference_mode: what ``call`` returns: ``"final"`` (the head on
            ``X^{0,depth}``), ``"average"`` (the mean of all heads' outputs),
            or an int ``L`` in ``1..depth``: the head on ``X^{0,L}``,
            computing only the nodes ``X^{i,j}`` with ``i + j <= L``.
            Anything but ``"final"`` needs deep supervision.

    Input shape: ``(batch, H, W, in_channels)`` with ``H``, ``W`` valid U-Net
    sizes for ``depth`` and ``padding`` (also when pruned).
    Output shape: ``(batch, H', W', num_classes)``, float32, ``H' = output_size(H)``,
    in every inference mode. :meth:`heads` gives every head's output.
    """

    def __init__(self, num_classes=1, depth=4, base_filters=64, padding="same",
                 batch_norm=False, dropout=0.5, upsampling="transpose", activation="relu",
                 logits=False, in_channels=None, residual=False, attention=False,
                 deep_supervision=True, head_weights=None, inference_mode="final", **kwargs):
        kwargs.setdefault("name", "unet_plus_plus")
        super().__init__(num_classes=num_classes, depth=depth, base_filters=base_filters,
                         padding=padding, batch_norm=batch_norm, dropout=dropout,
                         upsampling=upsampling, activation=activation, logits=logits,
                         in_channels=in_channels, residual=residual, attention=attention,
                         **kwargs)
        self.deep_supervision = bool(deep_supervision)
        self.inference_mode = _check_inference_mode(inference_mode, self.depth,
                                                    self.deep_supervision)
        weights = check_head_weights(head_weights, self.depth, self.deep_supervision,
                                     "X^{0,1..%d}" % self.depth)
        self.head_weights = None if weights is None else tuple(weights)
        self._margin = self._valid_margin()

        common = self._block_args()
        # Node names follow the paper: x_<level>_<column>.
        self.encoders = [EncoderBlock(self._filters(i), name=f"x_{i}_0", **common)
                         for i in range(self.depth)]
        self.bottleneck = ConvBlock(self._filters(self.depth), dropout=self.dropout,
                                    name=f"x_{self.depth}_0", **common)
        self.nodes = [DecoderBlock(self._filters(i), upsampling=upsampling, attention=self.attention,
                                   name=f"x_{i}_{j}", **common)
                      for j, i in self._node_order()]
        columns = range(1, self.depth + 1) if self.deep_supervision else [self.depth]
        self.head_convs = [self._make_head(f"head_{j}") for j in columns]
        # The heads' activation runs in float32 so mixed precision stays stable.
        self.head_activation = layers.Activation(self.output_activation, dtype="float32",
                                                 name="probabilities")
        self._build_if_channels_known()

    # -- structure --------------------------------------------------------
    def _node_order(self):
        """``(j, i)`` of the nested nodes, column by column: the order of ``self.nodes``."""
        return [(j, i) for j in range(1, self.depth + 1) for i in range(self.depth - j + 1)]

    def _node(self, i: int, j: int) -> DecoderBlock:
        # Column c holds depth - c + 1 nodes.
        index = sum(self.depth - c + 1 for c in range(1, j)) + i
        return self.nodes[index]

    def _valid_margin(self) -> int:
        """Input minus output size (valid padding: the same for every valid size)."""
        if self.padding == "same":
            return 0
        smallest = sizes.nearest_valid_input_sizes(1, self.depth, "valid")[1]
        return smallest - sizes.output_size(smallest, self.depth, "valid")

    def _supervised_heads(self) -> int:
        return self.depth

    # -- keras ------------------------------------------------------------
    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.check_input_shape(input_shape[1], input_shape[2])
        grid, shape = {}, input_shape
        for i, encoder in enumerate(self.encoders):
            encoder.build(shape)
            grid[i, 0], shape = encoder.compute_output_shape(shape)
        self.bottleneck.build(shape)
        grid[self.depth, 0] = self.bottleneck.compute_output_shape(shape)
        for j, i in self._node_order():
            below = grid[i + 1, j - 1]
            double = lambda s: None if s is None else 2 * s  # noqa: E731
            skip = (below[0], double(below[1]), double(below[2]),
                    sum(grid[i, k][-1] for k in range(j)))
            self._node(i, j).build(below, skip)
            grid[i, j] = self._node(i, j).compute_output_shape(below, skip)
        for head in self.head_convs:
            head.build(grid[0, 1])
        if self.in_channels is None:
            self.in_channels = input_shape[-1]
        self.built = True

    def call(self, inputs, training=None):
        self.check_input_shape(inputs.shape[1], inputs.shape[2])
        if training and self.deep_supervision:
            # Keras's train_step hands this list to compute_loss, which weighs
            # every head, and to compute_metrics, which combines them.
            return self.heads(inputs, training=True)
        if self.inference_mode == "average":
            return self._combine(self.heads(inputs, training=training))
        upto = self.depth if self.inference_mode == "final" else self.inference_mode
        top = self._top_row(inputs, training, upto)
        return self._head(upto, top[-1], inputs)

    def heads(self, inputs, training=None) -> list:
        """Every head's output, from one pass through the whole network.

        Returns:
            with deep supervision, ``depth`` tensors ``(batch, H', W', num_classes)``
            (the head on ``X^{0,j}`` at index ``j - 1``), each cropped to the
            model's output size; without, a list of the final head's output.
        """
        if not self.built:
            self.build(tuple(inputs.shape))
        self.check_input_shape(inputs.shape[1], inputs.shape[2])
        top = self._top_row(inputs, training, self.depth)
        if not self.deep_supervision:
            return [self._head(self.depth, top[-1], inputs)]
        return [self._head(j, feature, inputs) for j, feature in enumerate(top, start=1)]

    def _top_row(self, inputs, training, upto: int) -> list:
        """``X^{0,1..upto}``, computing only the nodes ``X^{i,j}`` with ``i + j <= upto``."""
        grid, x = {}, inputs
        for i in range(upto + 1):
            if i < self.depth:
                grid[i, 0], x = self.encoders[i](x, training=training)
            else:
                grid[i, 0] = self.bottleneck(x, training=training)
        for j in range(1, upto + 1):
            for i in range(upto - j + 1):
                below = grid[i + 1, j - 1]
                skip = self._dense_skip([grid[i, k] for k in range(j)], below)
                grid[i, j] = self._node(i, j)(below, skip, training=training)
        return [grid[0, j] for j in range(1, upto + 1)]

    def _dense_skip(self, features: list, below):
        """Join ``X^{i,0..j-1}``; with valid padding each is centre-cropped to the
        size of ``Up(X^{i+1,j-1})`` first (the earlier nodes are larger)."""
        if self.padding == "valid":
            shape = ops.shape(below)
            features = [center_crop(f, 2 * shape[1], 2 * shape[2]) for f in features]
        return features[0] if len(features) == 1 else ops.concatenate(features, axis=-1)

    def _head(self, column: int, feature, inputs):
        """The head on ``X^{0,column}``, cropped to the model's output size."""
        if self._margin:
            shape = ops.shape(inputs)
            feature = center_crop(feature, shape[1] - self._margin, shape[2] - self._margin)
        conv = self.head_convs[column - 1] if self.deep_supervision else self.head_convs[-1]
        return self.head_activation(conv(feature))

    def _combine(self, heads: list):
        """The inference output from the heads' outputs (see ``inference_mode``)."""
        if self.inference_mode == "average":
            return self._average(heads)
        if self.inference_mode == "final" or not self.deep_supervision:
            return heads[-1]
        return heads[self.inference_mode - 1]

    def get_config(self):
        config = super().get_config()
        config.update(deep_supervision=self.deep_supervision,
                      head_weights=None if self.head_weights is None else list(self.head_weights),
                      inference_mode=self.inference_mode)
        return config
