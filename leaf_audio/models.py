"""Encoders and the audio classifier that LEAF and its baselines feed.

The paper (Section 4) trains every frontend with the same backbone: a
frontend turning waveforms into a `[batch, time, freq]` representation, a
convolutional encoder, global max pooling over time and frequency, and one
linear head per task. This module holds that classifier (`AudioClassifier`)
and the encoders of the original release (`ConvNet`, `PANN`) plus the
EfficientNetB0 encoder the paper reports its tables with
(`EfficientNetEncoder`). PANN's `WaveGram`, a learnable frontend from Kong
et al. (2019) used as a baseline in Table 4, is built from this module's
PANN blocks and lives with the other frontends (`leaf_audio.frontend`);
`models.WaveGram` is the same class.

Every class is a Keras 3 layer or model, `gin.configurable` under its own
name and registered for `.keras` serialization in the `leaf_audio` package.
"""

import functools
import numbers
from collections.abc import Mapping, Sequence

import keras
from keras import ops

from leaf_audio import utils

_CONVNET_BLOCK_ARGS = ('activation', 'normalization_layer', 'dropout')


def _is_positive_int(value):
  return (isinstance(value, numbers.Integral) and not isinstance(value, bool)
          and value > 0)


def _check_rate(name, value):
  if not (isinstance(value, numbers.Real) and 0.0 <= value < 1.0):
    raise ValueError(f'{name} must be a float in [0, 1); got {value!r}.')


def _check_rank(layer, input_shape, ranks, expected):
  if len(input_shape) not in ranks:
    raise ValueError(
        f'{layer.__class__.__name__} expects inputs of shape {expected}; got '
        f'shape {tuple(input_shape)}.')


def _normalization_factory(config):
  """Turns a serialized normalization layer back into a layer factory."""
  if config is None:
    return None
  return functools.partial(keras.saving.deserialize_keras_object, config)


def _serialize_layer_template(layer):
  """Serializes a layer's settings, leaving out its name and build state.

  The result can be deserialized several times into fresh, unbuilt layers.
  """
  config = keras.saving.serialize_keras_object(layer)
  config['config'].pop('name', None)
  config.pop('build_config', None)
  return config


def _pooled_length(length, pool):
  """Output length of 'same' pooling (None stays None)."""
  return None if length is None else -(-length // pool)


@utils.register
class ConvBlock(keras.layers.Layer):
  """A convolution along time, one along frequency, then max pooling.

  Each convolution ('same' padding, with bias) is followed by the activation,
  the normalization layer and dropout, in that order (the order of the
  original release); the block ends with a 2x2 max pooling ('valid').
  The weights come in the original's order: time kernel (3, 1, C_in, F), its
  bias, the first normalization's weights, frequency kernel (1, 3, F, F), its
  bias, the second normalization's weights.

  Args:
    num_filters: number of output channels F of both convolutions.
    activation: name of a Keras activation, or a callable.
    normalization_layer: a zero-argument callable returning a fresh Keras
      layer (a class such as `keras.layers.BatchNormalization`, the default),
      or None for no normalization.
    dropout: dropout rate in [0, 1) applied after each normalization.
    max_pooling: whether the block ends with the 2x2 max pooling.
    **kwargs: base layer arguments (name, dtype, trainable).

  Call arguments:
    inputs: float tensor `[batch, time, freq, channels]`.
    training: whether normalization and dropout run in training mode.

  Input shape: `[batch, time, freq, C_in]`.
  Output shape: `[batch, time // 2, freq // 2, F]` with max pooling,
    `[batch, time, freq, F]` without.

  Example:
    >>> block = ConvBlock(16)
    >>> block(keras.ops.zeros((2, 10, 8, 1))).shape
    TensorShape([2, 5, 4, 16])
  """

  def __init__(self,
               num_filters,
               activation='relu',
               normalization_layer=keras.layers.BatchNormalization,
               dropout=0.0,
               max_pooling=True,
               **kwargs):
    super().__init__(**kwargs)
    if not _is_positive_int(num_filters):
      raise ValueError(
          f'num_filters must be a positive int; got {num_filters!r}.')
    if normalization_layer is not None and not callable(normalization_layer):
      raise ValueError(
          'normalization_layer must be None or a callable returning a Keras '
          f'layer; got {normalization_layer!r}.')
    _check_rate('dropout', dropout)
    self.num_filters = num_filters
    self.activation = keras.activations.get(activation)
    self.dropout = dropout
    self.max_pooling = bool(max_pooling)
    self._time_conv = keras.layers.Conv2D(
        num_filters, (3, 1), padding='same', name='time_conv')
    self._time_norm = (None if normalization_layer is None else
                       normalization_layer())
    self._freq_conv = keras.layers.Conv2D(
        num_filters, (1, 3), padding='same', name='freq_conv')
    self._freq_norm = (None if normalization_layer is None else
                       normalization_layer())
    self._dropout = keras.layers.Dropout(dropout) if dropout > 0 else None

  def build(self, input_shape):
    _check_rank(self, input_shape, (4,), '[batch, time, freq, channels]')
    hidden_shape = tuple(input_shape[:-1]) + (self.num_filters,)
    self._time_conv.build(input_shape)
    self._freq_conv.build(hidden_shape)
    for norm in (self._time_norm, self._freq_norm):
      if norm is not None:
        norm.build(hidden_shape)

  def _conv_stage(self, conv, norm, inputs, training):
    outputs = self.activation(conv(inputs))
    if norm is not None:
      outputs = norm(outputs, training=training)
    if self._dropout is not None:
      outputs = self._dropout(outputs, training=training)
    return outputs

  def call(self, inputs, training=None):
    outputs = self._conv_stage(self._time_conv, self._time_norm, inputs,
                               training)
    outputs = self._conv_stage(self._freq_conv, self._freq_norm, outputs,
                               training)
    if self.max_pooling:
      outputs = ops.max_pool(outputs, pool_size=2, strides=2, padding='valid')
    return outputs

  def compute_output_shape(self, input_shape):
    batch, time, freq, _ = input_shape
    if self.max_pooling:
      time = None if time is None else time // 2
      freq = None if freq is None else freq // 2
    return (batch, time, freq, self.num_filters)

  def get_config(self):
    return {
        **super().get_config(),
        'num_filters': self.num_filters,
        'activation': keras.activations.serialize(self.activation),
        'normalization_layer': (None if self._time_norm is None else
                                _serialize_layer_template(self._time_norm)),
        'dropout': self.dropout,
        'max_pooling': self.max_pooling,
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config['normalization_layer'] = _normalization_factory(
        config['normalization_layer'])
    return cls(**config)


@utils.register
class ConvNet(keras.layers.Layer):
  """A stack of `ConvBlock`s, the encoder of the original release's example.

  Block i max-pools when i is 0 or odd (as in the original), so 6 blocks
  divide time and frequency by 16.

  Args:
    filters: number of filters of each block (non-empty).
    **kwargs: `activation`, `normalization_layer` and `dropout` are passed to
      every `ConvBlock` (only when given, so gin bindings of `ConvBlock.*`
      apply otherwise, as with the original's `ConvBlock.dropout = 0.1`);
      the rest are base layer arguments (name, dtype, trainable).

  Call arguments:
    inputs: float tensor `[batch, time, freq, channels]`.
    training: whether normalization and dropout run in training mode.

  Input shape: `[batch, time, freq, channels]`.
  Output shape: `[batch, time', freq', filters[-1]]`, time and frequency
    floor-divided by 2 at each pooling block.

  Example:
    >>> encoder = ConvNet(filters=[8, 16], dropout=0.1)
    >>> encoder(keras.ops.zeros((2, 16, 12, 1))).shape
    TensorShape([2, 4, 3, 16])
  """

  def __init__(self, filters=(64, 128, 256, 256, 512, 512), **kwargs):
    block_kwargs = {
        key: kwargs.pop(key) for key in _CONVNET_BLOCK_ARGS if key in kwargs
    }
    super().__init__(**kwargs)
    if (not isinstance(filters, Sequence) or not filters or
        not all(_is_positive_int(f) for f in filters)):
      raise ValueError(
          f'filters must be a non-empty sequence of positive ints; got '
          f'{filters!r}.')
    self.filters = list(filters)
    self._blocks = [
        ConvBlock(num_filters, max_pooling=(i == 0 or i % 2 == 1),
                  name=f'conv_block_{i}', **block_kwargs)
        for i, num_filters in enumerate(self.filters)
    ]

  def build(self, input_shape):
    _check_rank(self, input_shape, (4,), '[batch, time, freq, channels]')
    shape = tuple(input_shape)
    for block in self._blocks:
      block.build(shape)
      shape = block.compute_output_shape(shape)

  def call(self, inputs, training=None):
    outputs = inputs
    for block in self._blocks:
      outputs = block(outputs, training=training)
    return outputs

  def compute_output_shape(self, input_shape):
    shape = tuple(input_shape)
    for block in self._blocks:
      shape = block.compute_output_shape(shape)
    return shape

  def get_config(self):
    # The blocks' effective settings (gin bindings included) are saved, so
    # that a loaded model does not depend on the gin state at load time.
    block_config = self._blocks[0].get_config()
    return {
        **super().get_config(),
        'filters': self.filters,
        **{key: block_config[key] for key in _CONVNET_BLOCK_ARGS},
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config['normalization_layer'] = _normalization_factory(
        config['normalization_layer'])
    return cls(**config)


@utils.register
class PANNWavBlock(keras.layers.Layer):
  """A 1-D block of PANN's Wavegram: two convolutions, then max pooling.

  Conv1D(3 taps, dilation 1) -> BatchNorm -> ReLU -> Conv1D(3 taps,
  dilation 2) -> BatchNorm -> ReLU -> max pooling of `pool_size` with stride
  `pool_size`. Convolutions have no bias. The pooling uses 'same' padding,
  so a sequence of length L gives ceil(L / pool_size) steps (the original
  used 'valid' pooling; both agree when L is a multiple of `pool_size`, and
  'same' keeps at least one frame for short clips).

  Args:
    filters: number of output channels F.
    pool_size: size and stride of the max pooling.
    **kwargs: base layer arguments (name, dtype, trainable).

  Call arguments:
    inputs: float tensor `[batch, time, channels]`.
    training: whether batch normalization runs in training mode.

  Input shape: `[batch, time, C_in]`.
  Output shape: `[batch, ceil(time / pool_size), F]`.

  Example:
    >>> PANNWavBlock(8, pool_size=4)(keras.ops.zeros((2, 10, 1))).shape
    TensorShape([2, 3, 8])
  """

  def __init__(self, filters, pool_size=4, **kwargs):
    super().__init__(**kwargs)
    if not _is_positive_int(filters):
      raise ValueError(f'filters must be a positive int; got {filters!r}.')
    if not _is_positive_int(pool_size):
      raise ValueError(
          f'pool_size must be a positive int; got {pool_size!r}.')
    self.filters = filters
    self.pool_size = pool_size
    self._convs = [
        keras.layers.Conv1D(filters, 3, dilation_rate=rate, padding='same',
                            use_bias=False, name=f'conv_dilation_{rate}')
        for rate in (1, 2)
    ]
    self._norms = [keras.layers.BatchNormalization() for _ in self._convs]

  def build(self, input_shape):
    _check_rank(self, input_shape, (3,), '[batch, time, channels]')
    shape = tuple(input_shape)
    for conv, norm in zip(self._convs, self._norms):
      conv.build(shape)
      shape = shape[:-1] + (self.filters,)
      norm.build(shape)

  def call(self, inputs, training=None):
    outputs = inputs
    for conv, norm in zip(self._convs, self._norms):
      outputs = ops.relu(norm(conv(outputs), training=training))
    return ops.max_pool(outputs, pool_size=self.pool_size,
                        strides=self.pool_size, padding='same')

  def compute_output_shape(self, input_shape):
    batch, time, _ = input_shape
    return (batch, _pooled_length(time, self.pool_size), self.filters)

  def get_config(self):
    return {
        **super().get_config(),
        'filters': self.filters,
        'pool_size': self.pool_size,
    }


@utils.register
class PANNConvBlock(keras.layers.Layer):
  """The 2-D block of PANN's CNNs (Kong et al., 2019).

  Two (Conv2D 3x3 without bias -> BatchNorm -> ReLU), then pooling of
  `pool_size` with stride `pool_size` and 'same' padding.

  Args:
    filters: number of output channels F.
    pool_size: (time, freq) size and stride of the pooling.
    pool_type: 'avg' (the original release), 'max', or 'avg+max' (the sum of
      both, as in Kong et al.'s code).
    **kwargs: base layer arguments (name, dtype, trainable).

  Call arguments:
      inputs: float tensor `[batch, time, freq, channels]`.
      training: whether batch normalization runs in training mode.

  Input shape: `[batch, time, freq, C_in]`.
  Output shape: `[batch, ceil(time / pool_size[0]), ceil(freq / pool_size[1]),
    F]`.

  Example:
    >>> PANNConvBlock(8)(keras.ops.zeros((2, 10, 7, 1))).shape
    TensorShape([2, 5, 4, 8])
  """

  _POOL_TYPES = ('avg', 'max', 'avg+max')

  def __init__(self, filters, pool_size=(2, 2), pool_type='avg', **kwargs):
    super().__init__(**kwargs)
    if not _is_positive_int(filters):
      raise ValueError(f'filters must be a positive int; got {filters!r}.')
    if (not isinstance(pool_size, Sequence) or len(pool_size) != 2 or
        not all(_is_positive_int(p) for p in pool_size)):
      raise ValueError(
          f'pool_size must be two positive ints (time, freq); got '
          f'{pool_size!r}.')
    if pool_type not in self._POOL_TYPES:
      raise ValueError(
          f'pool_type must be one of {self._POOL_TYPES}; got {pool_type!r}.')
    self.filters = filters
    self.pool_size = tuple(pool_size)
    self.pool_type = pool_type
    self._convs = [
        keras.layers.Conv2D(filters, (3, 3), padding='same', use_bias=False)
        for _ in range(2)
    ]
    self._norms = [keras.layers.BatchNormalization() for _ in self._convs]

  def build(self, input_shape):
    _check_rank(self, input_shape, (4,), '[batch, time, freq, channels]')
    shape = tuple(input_shape)
    for conv, norm in zip(self._convs, self._norms):
      conv.build(shape)
      shape = shape[:-1] + (self.filters,)
      norm.build(shape)

  def call(self, inputs, training=None):
    outputs = inputs
    for conv, norm in zip(self._convs, self._norms):
      outputs = ops.relu(norm(conv(outputs), training=training))
    pool_args = dict(pool_size=self.pool_size, strides=self.pool_size,
                     padding='same')
    if self.pool_type == 'avg':
      return ops.average_pool(outputs, **pool_args)
    if self.pool_type == 'max':
      return ops.max_pool(outputs, **pool_args)
    return (ops.average_pool(outputs, **pool_args) +
            ops.max_pool(outputs, **pool_args))

  def compute_output_shape(self, input_shape):
    batch, time, freq, _ = input_shape
    return (batch, _pooled_length(time, self.pool_size[0]),
            _pooled_length(freq, self.pool_size[1]), self.filters)

  def get_config(self):
    return {
        **super().get_config(),
        'filters': self.filters,
        'pool_size': self.pool_size,
        'pool_type': self.pool_type,
    }


@utils.register
class PANN(keras.layers.Layer):
  """CNN-x encoder of PANNs (Kong et al., 2019); depth 6 is CNN14's trunk.

  A BatchNormalization over the frequency axis (one mean and variance per
  frequency bin, as PANN's `bn0`), then `depth` `PANNConvBlock`s each followed
  by dropout. Block i has min(64 * 2**i, 2048) filters and pools (2, 2) for
  i < 5, (1, 1) after. CNN14's fully connected layers are not part of the
  encoder: `AudioClassifier` pools globally and applies its own head.

  Args:
    depth: number of convolutional blocks (6 for CNN14).
    dropout_rate: dropout rate in [0, 1) after each block.
    **kwargs: base layer arguments (name, dtype, trainable).

  Call arguments:
    inputs: float tensor `[batch, time, freq, 1]`; freq must be known when
      the layer is built.
    training: whether normalization and dropout run in training mode.

  Input shape: `[batch, time, freq, channels]`.
  Output shape: `[batch, time', freq', min(64 * 2**(depth - 1), 2048)]`,
    time and frequency divided (rounding up) by 2**min(depth, 5).

  Example:
    >>> encoder = PANN(depth=2)
    >>> encoder(keras.ops.zeros((2, 16, 8, 1))).shape
    TensorShape([2, 4, 2, 128])
  """

  def __init__(self, depth=6, dropout_rate=0.2, **kwargs):
    super().__init__(**kwargs)
    if not _is_positive_int(depth):
      raise ValueError(f'depth must be a positive int; got {depth!r}.')
    _check_rate('dropout_rate', dropout_rate)
    self.depth = depth
    self.dropout_rate = dropout_rate
    self._input_norm = keras.layers.BatchNormalization(axis=2)
    self._blocks = [
        PANNConvBlock(min(64 * 2**i, 2048),
                      pool_size=(2, 2) if i < 5 else (1, 1),
                      name=f'pann_conv_block_{i}') for i in range(depth)
    ]
    self._dropout = keras.layers.Dropout(dropout_rate)

  def build(self, input_shape):
    _check_rank(self, input_shape, (4,), '[batch, time, freq, channels]')
    if input_shape[2] is None:
      raise ValueError(
          'PANN normalizes each frequency bin, so the frequency axis (axis 2) '
          f'must be known when it is built; got shape {tuple(input_shape)}.')
    self._input_norm.build(input_shape)
    shape = tuple(input_shape)
    for block in self._blocks:
      block.build(shape)
      shape = block.compute_output_shape(shape)

  def call(self, inputs, training=None):
    outputs = self._input_norm(inputs, training=training)
    for block in self._blocks:
      outputs = self._dropout(block(outputs, training=training),
                              training=training)
    return outputs

  def compute_output_shape(self, input_shape):
    shape = tuple(input_shape)
    for block in self._blocks:
      shape = block.compute_output_shape(shape)
    return shape

  def get_config(self):
    return {
        **super().get_config(),
        'depth': self.depth,
        'dropout_rate': self.dropout_rate,
    }


@utils.register
class EfficientNetEncoder(keras.layers.Layer):
  """EfficientNetB0 without top, one input channel, no pretrained weights.

  Wraps `keras.applications.EfficientNetB0(include_top=False, weights=None,
  input_shape=(None, None, 1))`, the encoder of every table of the paper
  (about 4.0M weights: 4,048,988 here).

  Keras' EfficientNet starts with image preprocessing: `Rescaling(1 / 255)`
  and a `Normalization` that, without ImageNet weights, is never adapted and
  is the identity. This encoder drops both and starts at the stem
  convolution. Dividing log-mel or PCEN features (of order 1) by 255 would
  shrink the stem convolution's outputs to a variance of about 1e-6, far
  below its batch normalization's epsilon (1e-3), so that batch norm would
  scale activations to about 0.03 instead of 1 (measured in training mode on
  unit-variance inputs: 0.028 with the rescaling, 0.99 without). Without the rescaling the stem sees the features as they are;
  the weight count is the B0 count minus the Normalization's 3 statistics.

  Args:
    **kwargs: base layer arguments (name, dtype, trainable).

  Call arguments:
    inputs: float tensor `[batch, time, freq, 1]`.
    training: whether batch normalization and dropout run in training mode.

  Input shape: `[batch, time, freq, 1]`, time and freq at least 32.
  Output shape: `[batch, time', freq', 1280]`: five stride-2 stages, each
    mapping a length n to about n // 2 (100 x 40 gives 3 x 1).

  Example:
    >>> EfficientNetEncoder()(keras.ops.zeros((2, 100, 40, 1))).shape
    TensorShape([2, 3, 1, 1280])
  """

  # Keras' B0 fails on smaller inputs (five stride-2 stages).
  MIN_SIZE = 32

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    full = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(None, None, 1))
    # The subgraph from the stem's padding on leaves out the preprocessing.
    stem_input = full.get_layer('stem_conv_pad').input
    self._backbone = keras.Model(stem_input, full.output,
                                 name='efficientnetb0')

  def build(self, input_shape):
    _check_rank(self, input_shape, (4,), '[batch, time, freq, 1]')
    if input_shape[-1] != 1:
      raise ValueError(
          'EfficientNetEncoder expects one input channel [batch, time, freq, '
          f'1]; got shape {tuple(input_shape)}.')
    if any(size is not None and size < self.MIN_SIZE
           for size in input_shape[1:3]):
      raise ValueError(
          f'EfficientNetEncoder needs at least {self.MIN_SIZE} time frames '
          f'and {self.MIN_SIZE} frequency bins; got shape '
          f'{tuple(input_shape)}.')

  def call(self, inputs, training=None):
    return self._backbone(inputs, training=training)

  def compute_output_shape(self, input_shape):
    return self._backbone.compute_output_shape(input_shape)


def pooled_embedding(features, encoder=None, training=False):
  """The embedding an `AudioClassifier`'s heads read, from frontend features.

  features [batch, time, freq] -> [batch, time, freq, 1] -> encoder ->
  [batch, time', freq', d] -> maximum over every axis but the first and the
  last -> [batch, d]. Without an encoder, the features themselves are
  pooled: [batch, 1]. A non-trainable (frozen) encoder runs in inference
  mode whatever `training` says (`run_training`).

  Args:
    features: frontend output [batch, time, freq].
    encoder: a layer on [batch, time, freq, 1], or None.
    training: whether a trainable encoder runs in training mode.

  Returns:
    [batch, d].
  """
  outputs = ops.expand_dims(features, -1)
  if encoder is not None:
    outputs = encoder(outputs, training=run_training(encoder, training))
  return ops.max(outputs, axis=tuple(range(1, len(outputs.shape) - 1)))


def run_training(layer, training):
  """The training mode a part of a model runs in: `training`, except that a
  frozen (non-trainable) layer always runs in inference mode. Keras already
  does so for batch normalization; this extends it to dropout and
  SpecAugment, so that frozen layers give the fixed features a linear probe
  reads."""
  return training if layer.trainable else False


@utils.register
class AudioClassifier(keras.Model):
  """Frontend -> encoder -> global max pooling -> linear head(s).

  The frontend's `[batch, time, freq]` output gets a channel axis, the
  encoder maps it to `[batch, time', freq', channels]`, the maximum over all
  axes but batch and channels gives an embedding, and a Dense layer without
  activation gives logits. With a mapping `num_outputs`, there is one Dense
  head per task (the layer is named after the task), all sharing the frontend
  and encoder (the multi-task setting of Section 4.2), and the model returns
  a dict of logits keyed by task.

  Args:
    num_outputs: number of classes (positive int), or a non-empty mapping
      task name -> number of classes.
    frontend: a Keras layer mapping waveforms `[batch, T]` to
      `[batch, time, freq]`, e.g. `leaf_audio.frontend.Leaf()`. If None, the
      inputs are taken to be such `[batch, time, freq]` features already.
    encoder: a Keras layer mapping `[batch, time, freq, 1]` to a feature map,
      e.g. `EfficientNetEncoder()`. If None, features are pooled directly.
    **kwargs: base model arguments (name, dtype, trainable).

  Call arguments:
    inputs: waveforms `[batch, T]` (or what the frontend accepts), or
      features `[batch, time, freq]` when there is no frontend.
    training: whether the frontend and encoder run in training mode (a
      frozen one, `trainable = False`, runs in inference mode: no dropout or
      SpecAugment in a linear probe).

  Input shape: `[batch, T]`, or `[batch, time, freq]` without frontend.
  Output shape: `[batch, num_outputs]`, or a dict task -> `[batch, classes]`.

  Example:
    >>> model = AudioClassifier({'speaker': 10, 'language': 3},
    ...                         frontend=WaveGram(),
    ...                         encoder=ConvNet(filters=[8, 16]))
    >>> {k: v.shape for k, v in model(keras.ops.zeros((2, 8000))).items()}
    {'speaker': TensorShape([2, 10]), 'language': TensorShape([2, 3])}
  """

  def __init__(self, num_outputs, frontend=None, encoder=None, **kwargs):
    super().__init__(**kwargs)
    self._task_names = _check_num_outputs(num_outputs)
    self.num_outputs = (dict(num_outputs) if self._task_names is not None
                        else num_outputs)
    self._frontend = frontend
    self._encoder = encoder
    if self._task_names is None:
      self._heads = [keras.layers.Dense(num_outputs, name='head')]
    else:
      self._heads = [
          keras.layers.Dense(num_outputs[task], name=task)
          for task in self._task_names
      ]

  @property
  def frontend(self):
    return self._frontend

  @property
  def encoder(self):
    return self._encoder

  @property
  def heads(self):
    """The Dense heads, keyed by task ('head' for a single task)."""
    return {head.name: head for head in self._heads}

  def build(self, input_shape):
    if self._frontend is None:
      _check_rank(self, input_shape, (3,),
                  '[batch, time, freq] (there is no frontend)')
    features = keras.KerasTensor(input_shape)
    if self._frontend is not None:
      features = self._frontend(features)
    features = ops.expand_dims(features, -1)
    if self._encoder is not None:
      features = self._encoder(features)
    for head in self._heads:
      head.build((input_shape[0], features.shape[-1]))

  def call(self, inputs, training=False):
    outputs = inputs
    if self._frontend is not None:
      outputs = self._frontend(
          outputs, training=run_training(self._frontend, training))
    embedding = pooled_embedding(outputs, self._encoder, training)
    logits = [head(embedding) for head in self._heads]
    if self._task_names is None:
      return logits[0]
    return dict(zip(self._task_names, logits))

  def get_config(self):
    return {
        **super().get_config(),
        'num_outputs': self.num_outputs,
        'frontend': keras.saving.serialize_keras_object(self._frontend),
        'encoder': keras.saving.serialize_keras_object(self._encoder),
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    for key in ('frontend', 'encoder'):
      config[key] = keras.saving.deserialize_keras_object(config[key])
    return cls(**config)


def _check_num_outputs(num_outputs):
  """Validates `AudioClassifier.num_outputs`; returns the task names or None."""
  if isinstance(num_outputs, Mapping):
    if not num_outputs:
      raise ValueError(
          'num_outputs must map at least one task name to its number of '
          'classes; got an empty mapping.')
    for task, count in num_outputs.items():
      if not isinstance(task, str) or not task or '/' in task:
        raise ValueError(
            'num_outputs task names must be non-empty strings without "/" '
            f'(they name the heads); got {task!r}.')
      if not _is_positive_int(count):
        raise ValueError(
            f'num_outputs[{task!r}] must be a positive int (the number of '
            f'classes of that task); got {count!r}.')
    return list(num_outputs)
  if not _is_positive_int(num_outputs):
    raise ValueError(
        'num_outputs must be a positive int or a mapping task name -> '
        f'positive int; got {num_outputs!r}.')
  return None


def __getattr__(name):
  """`models.WaveGram`, defined in `leaf_audio.frontend` (which imports this
  module, hence the lookup on first use)."""
  if name == 'WaveGram':
    from leaf_audio import frontend  # pylint: disable=g-import-not-at-top
    return frontend.WaveGram
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
