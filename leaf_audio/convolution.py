"""The frontends' filtering stage (Section 3.1): convolution layers, and the
squared modulus of complex responses (Eq. 3).

The layers run on every Keras backend; the FFT convolutions (`fft_conv1d`,
`overlap_add_conv1d`, `FFTConv1D`) are written with TensorFlow's signal ops
and need the TensorFlow backend.
"""

import math

import gin
import keras
from keras import ops

from leaf_audio import gabor
from leaf_audio import impulse_responses
from leaf_audio import initializers
from leaf_audio import utils


def _tensorflow(what):
  """The tensorflow module, or a clear error on another Keras backend."""
  if keras.backend.backend() != 'tensorflow':
    raise RuntimeError(
        f'{what} is written with TensorFlow signal ops and needs the '
        f'TensorFlow backend (KERAS_BACKEND=tensorflow); this process uses '
        f'{keras.backend.backend()!r}. Use a plain Conv1D (or GaborConv1D) '
        'there.')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def _next_power_of_2(length):
  """Smallest power of 2 >= length, for a scalar int tensor."""
  tf = _tensorflow('fft_conv1d')
  length = tf.cast(length, tf.float32)
  return tf.cast(2.**tf.math.ceil(tf.math.log(length) / math.log(2.)),
                 tf.int32)


@gin.configurable
def fft_conv1d(inputs, filters):
  """'SAME' 1-D cross-correlation (as `tf.nn.conv1d`) computed with FFTs.

  The FFT is long enough for linear, not circular, convolution.

  Args:
    inputs: [batch, time, 1] float tensor.
    filters: [taps, 1, channels] float tensor.

  Returns:
    A pair: the [batch, time, channels] output, and the scalar L1 norm of the
    filters' spectra (used as a frequency-domain regularizer by `FFTConv1D`).
  """
  tf = _tensorflow('fft_conv1d')
  seq_len = tf.shape(inputs)[1]
  taps = tf.shape(filters)[0]
  fft_len = _next_power_of_2(seq_len + taps - 1)
  spectrum_in = tf.signal.rfft(tf.transpose(inputs, (0, 2, 1)), [fft_len])
  spectrum_filters = tf.signal.rfft(tf.transpose(filters, (1, 2, 0)),
                                    [fft_len])
  filters_l1 = tf.reduce_sum(tf.abs(spectrum_filters))
  # Correlation = convolution with the time-reversed filter: conj spectrum.
  correlation = tf.signal.irfft(spectrum_in * tf.math.conj(spectrum_filters),
                                [fft_len])  # [batch, channels, fft_len]
  # correlation[n] = sum_k x[n + k] w[k] (indices mod fft_len); 'SAME' output
  # t reads n = t - (taps - 1) // 2.
  pad_left = (taps - 1) // 2
  correlation = tf.roll(correlation, shift=pad_left, axis=2)[:, :, :seq_len]
  return tf.transpose(correlation, (0, 2, 1)), filters_l1


@gin.configurable
def overlap_add_conv1d(inputs, filters, fft_length: int = 4096):
  """'SAME' 1-D cross-correlation by FFT, block by block (overlap-add).

  Args:
    inputs: [batch, time, 1] float tensor.
    filters: [taps, 1, channels] float tensor, taps < fft_length.
    fft_length: FFT size of each block.

  Returns:
    A [batch, time, channels] tensor equal to `tf.nn.conv1d(inputs, filters,
    1, 'SAME')`.
  """
  tf = _tensorflow('overlap_add_conv1d')
  taps = filters.shape[0]
  if taps is None or taps >= fft_length:
    raise ValueError(f'overlap_add_conv1d needs a static number of taps below '
                     f'fft_length={fft_length}, got {taps}.')
  seq_len = tf.shape(inputs)[1]
  block = fft_length - taps + 1
  pad_left = (taps - 1) // 2
  # Reverse the filters: correlation with w is convolution with w[::-1].
  kernel = tf.transpose(filters[::-1], (1, 2, 0))  # [1, channels, taps]
  spectrum_filters = tf.signal.rfft(kernel, [fft_length])[:, :, None, :]
  signal = tf.transpose(inputs, (0, 2, 1))  # [batch, 1, time]
  blocks = tf.signal.frame(signal, block, block, pad_end=True)
  spectrum_blocks = tf.signal.rfft(blocks, [fft_length])
  full = tf.signal.irfft(spectrum_blocks * spectrum_filters, [fft_length])
  full = tf.signal.overlap_and_add(full, block)  # [batch, channels, length]
  # full[n] = sum_k x[n - (taps - 1) + k] w[k]; 'SAME' output t reads
  # x[t - pad_left + k], i.e. n = t + taps - 1 - pad_left.
  start = taps - 1 - pad_left
  return tf.transpose(full[:, :, start:start + seq_len], (0, 2, 1))


@utils.register
class FFTConv1D(keras.layers.Conv1D):
  """`keras.layers.Conv1D` ('same' padding, stride 1) computed by FFT.

  Faster than a direct convolution for long kernels. An L1 kernel regularizer
  (e.g. `keras.regularizers.L1`) is applied to the filters' spectra instead of
  their taps.

  Example:
    >>> layer = FFTConv1D(filters=8, kernel_size=401, padding='same')
    >>> layer(np.zeros((2, 16000, 1), 'float32')).shape
    TensorShape([2, 16000, 8])
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    if self.padding != 'same' or self.strides != (1,) or (
        self.dilation_rate != (1,)):
      raise ValueError('FFTConv1D supports padding="same", strides=1 and '
                       'dilation_rate=1 only, got padding='
                       f'{self.padding!r}, strides={self.strides}, '
                       f'dilation_rate={self.dilation_rate}.')

  def build(self, input_shape):
    _tensorflow('FFTConv1D')
    if input_shape[-1] != 1:
      raise ValueError(f'FFTConv1D expects one input channel, got input '
                       f'shape {input_shape}.')
    super().build(input_shape)

  def call(self, inputs):
    outputs, spectrum_l1 = fft_conv1d(inputs, self.kernel)
    l1 = getattr(self.kernel_regularizer, 'l1', 0.)
    if l1:
      self.add_loss(l1 * spectrum_l1)
    if self.use_bias:
      outputs = outputs + self.bias
    if self.activation is not None:
      outputs = self.activation(outputs)
    return outputs


@utils.register
class SquaredModulus(keras.layers.Layer):
  """Squared modulus of complex responses stored as interleaved real channels.

  Channels (2n, 2n + 1) are the real and imaginary parts of the n-th complex
  response; the output channel n is `real^2 + imag^2` (Eq. 3).

  Call arguments:
    inputs: [batch, time, 2 * channels].

  Returns:
    [batch, time, channels].
  """

  def __init__(self, name='squared_modulus', **kwargs):
    super().__init__(name=name, **kwargs)

  def call(self, inputs):
    shape = ops.shape(inputs)
    pairs = ops.reshape(inputs, (shape[0], shape[1], shape[2] // 2, 2))
    return ops.sum(ops.square(pairs), axis=-1)

  def compute_output_shape(self, input_shape):
    channels = input_shape[2] // 2 if input_shape[2] is not None else None
    return (input_shape[0], input_shape[1], channels)


@keras.saving.register_keras_serializable(package='leaf_audio')
class GaborConstraint(keras.constraints.Constraint):
  """Keeps Gabor parameters in the ranges of Section 3.1.2.

  Center frequencies are clipped to [0, pi]; inverse bandwidths sigma to
  `gabor.sigma_range(kernel_size)` = [4 sqrt(2 ln 2) / pi, kernel_size
  sqrt(2 ln 2) / pi], so that the full width at half maximum of each
  frequency response stays within [1 / W, 1 / 4] of the sampling rate
  (`gabor.bandwidth_range`).

  Args:
    kernel_size: W, the number of taps of the filters.
  """

  def __init__(self, kernel_size: int):
    self._kernel_size = kernel_size

  def __call__(self, kernel):
    return gabor.constrain(kernel, self._kernel_size)

  def get_config(self):
    return {'kernel_size': self._kernel_size}


class _FilterbankConv1D(keras.layers.Layer):
  """What the filterbank convolutions share: arguments, bias, call, config.

  Subclasses create `self.kernel` in `build` (then call `_build_bias`) and
  define `impulse_responses()`, the [kernel_size, 1, channels] real filters.

  Args:
    filters: the `filters` argument of the subclass.
    kernel_size: number of taps of each filter.
    strides: convolution stride.
    padding: 'same' or 'valid'.
    use_bias: whether to add a bias per output channel.
    kernel_initializer: initializer of the kernel.
    kernel_regularizer: optional regularizer of the kernel.
    name: layer name.
    trainable: whether the kernel is learned.
  """

  def __init__(self, filters, kernel_size, strides, padding, use_bias,
               kernel_initializer, kernel_regularizer, name, trainable,
               **kwargs):
    super().__init__(name=name, trainable=trainable, **kwargs)
    if filters < 1 or kernel_size < 1 or strides < 1:
      raise ValueError('filters, kernel_size and strides must be positive, '
                       f'got {filters}, {kernel_size}, {strides}.')
    self.filters = filters
    self.kernel_size = kernel_size
    self.strides = strides
    self.padding = padding.lower()
    self.use_bias = use_bias
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

  def _output_channels(self):
    return self.filters

  def compute_output_shape(self, input_shape):
    length = input_shape[1]
    if length is not None:
      if self.padding == 'same':
        length = -(-length // self.strides)
      else:
        length = max((length - self.kernel_size) // self.strides + 1, 0)
    return (input_shape[0], length, self._output_channels())

  def _build_bias(self, channels):
    self.bias = None
    if self.use_bias:
      self.bias = self.add_weight(name='bias', shape=(channels,),
                                  initializer='zeros')

  def call(self, inputs):
    filters = ops.cast(self.impulse_responses(), inputs.dtype)
    outputs = ops.conv(inputs, filters, strides=self.strides,
                       padding=self.padding)
    if self.bias is not None:
      outputs = outputs + self.bias
    return outputs

  def get_config(self):
    config = super().get_config()
    config.update({
        'filters': self.filters,
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


def _check_even(filters):
  if filters % 2:
    raise ValueError(f'filters counts real and imaginary parts and must be a '
                     f'positive even number, got {filters}.')


@utils.register
class GaborConv1D(_FilterbankConv1D):
  """Convolution with complex Gabor filters, as 2N real filters (Eq. 3-4).

  Each of the `filters // 2` complex filters is parametrized by its center
  frequency and inverse bandwidth only: the kernel has shape
  [filters // 2, 2]. The output interleaves the real and imaginary parts of
  each complex filter's response, so that `SquaredModulus` gives |x * phi_n|^2.

  Args:
    filters: number of real output channels, twice the number of complex
      filters.
    kernel_size: number of taps W of each filter.
    strides: convolution stride.
    padding: 'same' or 'valid'.
    use_bias: whether to add a bias per output channel.
    input_shape: ignored; accepted for compatibility with the original.
    kernel_initializer: initializer of the [filters // 2, 2] kernel.
    kernel_regularizer: optional regularizer of the kernel.
    name: layer name.
    trainable: whether the kernel is learned.
    sort_filters: if True, the filters are sorted by center frequency before
      filtering.

  Call arguments:
    inputs: [batch, time, 1] waveforms.

  Returns:
    [batch, time_out, filters] responses, time_out = ceil(time / strides) for
    'same' padding.

  Example:
    >>> conv = GaborConv1D(filters=80, kernel_size=401)
    >>> conv(np.zeros((1, 16000, 1), 'float32')).shape
    TensorShape([1, 16000, 80])
  """

  def __init__(self, filters, kernel_size, strides=1, padding='same',
               use_bias=False, input_shape=None, kernel_initializer=None,
               kernel_regularizer=None, name=None, trainable=True,
               sort_filters=False, **kwargs):
    del input_shape  # Keras infers it.
    _check_even(filters)
    super().__init__(filters, kernel_size, strides, padding, use_bias,
                     kernel_initializer or initializers.GaborInit(),
                     kernel_regularizer, name, trainable, **kwargs)
    self.sort_filters = sort_filters

  def build(self, input_shape):
    # Not autocast under mixed precision: center frequencies and bandwidths
    # are kept and used in float32 (float16 would move the filters).
    self.kernel = self.add_weight(
        name='kernel', shape=(self.filters // 2, 2),
        initializer=self.kernel_initializer,
        regularizer=self.kernel_regularizer,
        constraint=GaborConstraint(self.kernel_size), autocast=False)
    self._build_bias(self.filters)

  def constrained_kernel(self, kernel=None):
    """The kernel (or `kernel`, values for it) clipped to its valid range,
    optionally sorted: [filters // 2, 2]."""
    kernel = self.kernel.constraint(self.kernel if kernel is None else kernel)
    if self.sort_filters:
      kernel = ops.take(kernel, ops.argsort(kernel[:, 0]), axis=0)
    return kernel

  def impulse_responses(self):
    """The real filters, [kernel_size, 1, filters], real/imag interleaved."""
    real, imag = gabor.real_imag(self.constrained_kernel(), self.kernel_size)
    interleaved = ops.reshape(ops.stack([real, imag], axis=1),
                              (self.filters, self.kernel_size))
    return ops.transpose(interleaved)[:, None, :]

  def get_config(self):
    config = super().get_config()
    config['sort_filters'] = self.sort_filters
    return config


@utils.register
class NormalizedConv1D(_FilterbankConv1D):
  """A 1-D convolution whose filters have unit L2 norm (Section 3.1.1).

  Args:
    filters: number of output channels.
    kernel_size: number of taps.
    strides: convolution stride.
    padding: 'same' or 'valid'.
    use_bias: whether to add a bias per output channel.
    input_shape: ignored; accepted for compatibility with the original.
    kernel_initializer: initializer of the [kernel_size, 1, filters] kernel.
    kernel_regularizer: optional regularizer of the kernel.
    name: layer name.
    trainable: whether the kernel is learned.

  Call arguments:
    inputs: [batch, time, 1] waveforms.

  Returns:
    [batch, time_out, filters].
  """

  def __init__(self, filters, kernel_size, strides=1, padding='same',
               use_bias=False, input_shape=None,
               kernel_initializer='glorot_uniform', kernel_regularizer=None,
               name=None, trainable=True, **kwargs):
    del input_shape
    super().__init__(filters, kernel_size, strides, padding, use_bias,
                     kernel_initializer, kernel_regularizer, name, trainable,
                     **kwargs)

  def build(self, input_shape):
    self.kernel = self.add_weight(
        name='kernel', shape=(self.kernel_size, 1, self.filters),
        initializer=self.kernel_initializer,
        regularizer=self.kernel_regularizer,
        constraint=keras.constraints.UnitNorm(axis=0))
    self._build_bias(self.filters)

  def impulse_responses(self):
    """The filters scaled to unit L2 norm, [kernel_size, 1, filters]."""
    return self.kernel.constraint(self.kernel)


@utils.register
class SincConv1D(_FilterbankConv1D):
  """Convolution with Hamming-windowed sinc band-pass filters (SincNet).

  Each of the `filters // 2` filters is parametrized by its lower cutoff and
  its band width, in Hz (kernel [filters // 2, 2]); the cutoffs used are
  `low = min_low_hz + |kernel[:, 0]|` and
  `high = clip(low + min_band_hz + |kernel[:, 1]|, min_low_hz, sr / 2)`.

  Args:
    filters: twice the number of band-pass filters (the frontends pass
      2 * n_filters, as for complex filters; the output has filters // 2
      channels).
    kernel_size: number of taps (even: filters centred between the middle two).
    strides: convolution stride.
    padding: 'same' or 'valid'.
    use_bias: whether to add a bias per output channel.
    input_shape: ignored; accepted for compatibility with the original.
    kernel_initializer: initializer of the kernel (default `SincInit`).
    kernel_regularizer: optional regularizer of the kernel.
    name: layer name.
    trainable: whether the kernel is learned.
    sample_rate: sampling rate in Hz.
    min_low_hz: smallest lower cutoff, in Hz.
    min_band_hz: smallest band width, in Hz.

  Call arguments:
    inputs: [batch, time, 1] waveforms.

  Returns:
    [batch, time_out, filters // 2].
  """

  def __init__(self, filters, kernel_size, strides=1, padding='same',
               use_bias=False, input_shape=None, kernel_initializer=None,
               kernel_regularizer=None, name=None, trainable=True,
               sample_rate=16000, min_low_hz=50., min_band_hz=50., **kwargs):
    del input_shape
    _check_even(filters)
    if kernel_size < 2:
      raise ValueError(f'SincConv1D needs at least 2 taps, got '
                       f'kernel_size={kernel_size}.')
    super().__init__(
        filters, kernel_size, strides, padding, use_bias,
        kernel_initializer or initializers.SincInit(sample_rate=sample_rate),
        kernel_regularizer, name, trainable, **kwargs)
    self.sample_rate = sample_rate
    self.min_low_hz = min_low_hz
    self.min_band_hz = min_band_hz
    self._window = utils.window(utils.WindowType.HAMMING,
                                kernel_size).astype('float32')

  def _output_channels(self):
    return self.filters // 2

  def build(self, input_shape):
    # Not autocast under mixed precision: the cutoffs (in Hz) stay float32.
    self.kernel = self.add_weight(
        name='kernel', shape=(self.filters // 2, 2),
        initializer=self.kernel_initializer,
        regularizer=self.kernel_regularizer, autocast=False)
    self._build_bias(self.filters // 2)

  def impulse_responses(self):
    """The windowed band-pass filters, [kernel_size, 1, filters // 2]."""
    low = self.min_low_hz + ops.abs(self.kernel[:, 0])
    high = ops.clip(low + self.min_band_hz + ops.abs(self.kernel[:, 1]),
                    self.min_low_hz, self.sample_rate / 2.)
    band_pass = impulse_responses.sinc_filters(
        low[None, :], high[None, :], self.kernel_size, self.sample_rate)
    window = ops.convert_to_tensor(self._window)[:, None]
    return (band_pass * window)[:, None, :]

  def get_config(self):
    config = super().get_config()
    config.update({
        'sample_rate': self.sample_rate,
        'min_low_hz': self.min_low_hz,
        'min_band_hz': self.min_band_hz,
    })
    return config
