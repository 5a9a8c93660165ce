"""Pooling layers that downsample the filterbank outputs (Section 3.2)."""

import keras
from keras import ops

from leaf_audio import utils
from leaf_audio import impulse_responses


class _PoolingBase(keras.layers.Layer):
  """Shared constructor and config of the pooling layers.

  Args:
    kernel_size: number of taps of the pooling window.
    strides: pooling stride (the hop between output frames).
    padding: 'same' or 'valid'.
    use_bias: accepted for compatibility with the original; unused.
    kernel_initializer: initializer of the pooling weights.
    kernel_regularizer: optional regularizer of the pooling weights.
    trainable: whether the pooling weights are learned.
    name: layer name.
  """

  def __init__(self, kernel_size, strides=1, padding='same', use_bias=True,
               kernel_initializer='glorot_uniform', kernel_regularizer=None,
               trainable=False, name='learnable_pooling', **kwargs):
    super().__init__(name=name, trainable=trainable, **kwargs)
    if kernel_size < 1 or strides < 1:
      raise ValueError(f'kernel_size and strides must be positive, got '
                       f'{kernel_size} and {strides}.')
    if padding.lower() not in ('same', 'valid'):
      raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}.")
    self.kernel_size = kernel_size
    self.strides = strides
    self.padding = padding.lower()
    self.use_bias = use_bias
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

  def _depthwise_pool(self, inputs, windows, padding):
    """`ops.depthwise_conv` at the stride, with 'valid' frames counted right.

    TensorFlow 2.21's 'valid' depthwise convolution of a signal shorter than
    the window returns as many frames as samples (of garbage) instead of
    none: the output is cut to (time - W) // stride + 1 frames (at least 0).
    """
    outputs = ops.depthwise_conv(inputs, windows, strides=self.strides,
                                 padding=padding)
    if padding == 'valid':
      frames = ops.maximum(
          (ops.shape(inputs)[1] - self.kernel_size) // self.strides + 1, 0)
      outputs = outputs[:, :frames]
    return outputs

  def get_config(self):
    config = super().get_config()
    config.update({
        'kernel_size': self.kernel_size,
        'strides': self.strides,
        'padding': self.padding,
        'use_bias': self.use_bias,
        'kernel_initializer': keras.initializers.serialize(
            self.kernel_initializer),
        'kernel_regularizer': keras.regularizers.serialize(
            self.kernel_regularizer),
    })
    return config


@utils.register
class GaussianLowpass(_PoolingBase):
  """Depthwise Gaussian lowpass pooling with a learnable width per channel.

  Each channel c is filtered by `exp(-0.5 ((t - (W-1)/2) / (sigma_c (W-1)/2))^2)`
  (Eq. 5; peak 1, sigma clipped to [2 / W, 0.5]) and decimated by `strides`.
  Initialized at sigma = 0.4 it approximates the Hann window of a
  spectrogram. The kernel has shape [1, 1, channels, 1], as in the original.

  Args: see `_PoolingBase`.

  Call arguments:
    inputs: [batch, time, channels].

  Returns:
    [batch, frames, channels]; frames = ceil(time / strides) with 'same'
    padding.

  Example:
    >>> pool = GaussianLowpass(401, strides=160,
    ...     kernel_initializer=keras.initializers.Constant(0.4))
    >>> pool(np.ones((1, 16000, 40), 'float32')).shape
    TensorShape([1, 100, 40])
  """

  def build(self, input_shape):
    # Not autocast under mixed precision: the windows are made in float32.
    self.kernel = self.add_weight(
        name='kernel', shape=(1, 1, input_shape[-1], 1),
        initializer=self.kernel_initializer,
        regularizer=self.kernel_regularizer, autocast=False)

  def windows(self, kernel=None):
    """The pooling windows, [kernel_size, channels, 1], of the layer's kernel
    (or of `kernel`, values for it)."""
    return impulse_responses.gaussian_lowpass(
        self.kernel if kernel is None else kernel, self.kernel_size)[0]

  def channel_windows(self, kernel=None):
    """The same windows laid out [channels, kernel_size] (no transpose)."""
    kernel = self.kernel if kernel is None else kernel
    return ops.reshape(impulse_responses.gaussian_lowpass(
        ops.reshape(kernel, (-1, 1, 1, 1)), self.kernel_size),
                       (-1, self.kernel_size))

  def call(self, inputs):
    windows = ops.cast(self.windows(), inputs.dtype)
    return self._depthwise_pool(inputs, windows, self.padding)


@utils.register
class LearnablePooling1D(_PoolingBase):
  """Pooling with one learnable window shared by all channels.

  As in the original release, the pooling always uses 'valid' padding (98
  frames for 1 s at 16 kHz with a 401-tap window and stride 160), whatever
  `padding` says. The kernel has shape [1, kernel_size, 1, 1].

  Args: see `_PoolingBase`.

  Call arguments:
    inputs: [batch, time, channels].

  Returns:
    [batch, (time - kernel_size) // strides + 1, channels].
  """

  def build(self, input_shape):
    self.kernel = self.add_weight(
        name='kernel', shape=(1, self.kernel_size, 1, 1),
        initializer=self.kernel_initializer,
        regularizer=self.kernel_regularizer)

  def call(self, inputs):
    channels = ops.shape(inputs)[-1]
    window = ops.tile(self.kernel[0], (1, channels, 1))
    return self._depthwise_pool(inputs, window, 'valid')


@utils.register
class ChannelWiseLearnablePooling1D(_PoolingBase):
  """Pooling with one freely learnable window per channel (depthwise).

  The kernel has shape [kernel_size, 1, channels], one window per channel.

  Args: see `_PoolingBase`.

  Call arguments:
    inputs: [batch, time, channels].

  Returns:
    [batch, frames, channels].
  """

  def build(self, input_shape):
    self.kernel = self.add_weight(
        name='kernel', shape=(self.kernel_size, 1, input_shape[-1]),
        initializer=self.kernel_initializer,
        regularizer=self.kernel_regularizer)

  def call(self, inputs):
    window = ops.transpose(self.kernel, (0, 2, 1))  # [taps, channels, 1]
    return self._depthwise_pool(inputs, window, self.padding)


@utils.register
class MaxPooling1D(keras.layers.MaxPooling1D):
  """Max pooling with the constructor of the learnable poolings.

  `use_bias`, `kernel_initializer`, `kernel_regularizer` and `trainable` are
  accepted so that it can replace them, and ignored.

  Args:
    kernel_size: pooling window, in samples.
    strides: pooling stride.
    padding: 'same' or 'valid'.
  """

  def __init__(self, kernel_size, strides=1, padding='same', use_bias=True,
               kernel_initializer='glorot_uniform', kernel_regularizer=None,
               trainable=False, name='frontend_max_pooling', **kwargs):
    del use_bias, kernel_initializer, kernel_regularizer, trainable
    kwargs.pop('pool_size', None)
    super().__init__(pool_size=kernel_size, strides=strides,
                     padding=padding.lower(), name=name, **kwargs)

  def get_config(self):
    config = super().get_config()
    config['kernel_size'] = config.pop('pool_size')
    return config
