"""The frontends: LEAF, its learnable baselines and mel-filterbanks.

Every frontend is a Keras layer mapping waveforms [batch, time] or
[batch, time, 1] (float, in [-1, 1]) to features [batch, frames, n_filters].

Example:
  >>> import leaf_audio.frontend as frontend
  >>> leaf = frontend.Leaf()
  >>> leaf(np.zeros((8, 16000), 'float32')).shape
  TensorShape([8, 100, 40])
"""

import importlib
import math

import gin
import keras
from keras import ops
import tensorflow as tf

from leaf_audio import convolution
from leaf_audio import fast_gabor
from leaf_audio import initializers
from leaf_audio import melfilters
from leaf_audio import pooling
from leaf_audio import postprocessing
from leaf_audio import utils


@keras.saving.register_keras_serializable(package='leaf_audio')
@gin.configurable
def log_compression(inputs, log_offset: float = 1e-5):
  """`log(inputs + log_offset)`, the compression of mel-filterbanks."""
  return ops.log(inputs + log_offset)


def check_waveform_shape(shape, layer_name: str):
  """Raises a ValueError unless `shape` is [batch, time] or [batch, time, 1].

  Args:
    shape: the input shape; unknown dimensions are None.
    layer_name: name of the calling layer, for the error messages.
  """
  shape = tuple(shape)
  if len(shape) not in (2, 3):
    raise ValueError(
        f'{layer_name} expects waveforms of shape [batch, time] or '
        f'[batch, time, 1], got a tensor of rank {len(shape)} with shape '
        f'{shape}.')
  if len(shape) == 3 and shape[2] is not None and shape[2] != 1:
    raise ValueError(
        f'{layer_name} expects mono waveforms [batch, time, 1], got '
        f'{shape[2]} channels (shape {shape}); mix them down or split the '
        'channels into the batch.')
  if shape[1] == 0:
    raise ValueError(f'{layer_name} expects at least one sample per clip, '
                     f'got shape {shape}.')


def check_waveform(inputs, layer_name: str):
  """Validates a batch of waveforms and returns it as float32 [batch, time].

  Args:
    inputs: [batch, time] or [batch, time, 1] float tensor.
    layer_name: name of the calling layer, for the error messages.

  Returns:
    A float32 [batch, time] tensor.

  Raises:
    ValueError: for a wrong rank, several channels, zero samples or an
      integer dtype, when they are known at call time.
    tf.errors.InvalidArgumentError: at run time, for NaN or Inf samples or an
      empty clip whose length was unknown when the graph was built.
  """
  shape = tuple(inputs.shape)
  check_waveform_shape(shape, layer_name)
  dtype = keras.backend.standardize_dtype(inputs.dtype)
  if not dtype.startswith(('float', 'bfloat')):
    raise ValueError(
        f'{layer_name} expects float waveforms in [-1, 1], got dtype {dtype}; '
        'scale integer PCM first, e.g. x.astype("float32") / 32768 for int16.')
  waveform = inputs[:, :, 0] if len(shape) == 3 else inputs
  waveform = tf.cast(waveform, tf.float32)
  if shape[1] is None:
    tf.debugging.assert_positive(
        tf.shape(waveform)[1],
        message=f'{layer_name} expects at least one sample per clip')
  # One vectorized pass (`check_numerics` reads the samples one by one: 7.7
  # against 1.0 ms at 32 x 160000 on 2 CPU cores).
  finite = tf.debugging.Assert(
      tf.reduce_all(tf.math.is_finite(waveform)),
      [f'{layer_name} received NaN or Inf samples; the waveforms must be '
       'finite floats in [-1, 1]'])
  with tf.control_dependencies([finite]):
    return tf.identity(waveform)


def _framed_shape(input_shape, stride, n_filters):
  """[batch, ceil(time / stride), n_filters]: 'SAME' framing of waveforms."""
  frames = None if input_shape[1] is None else -(-input_shape[1] // stride)
  return (input_shape[0], frames, n_filters)


def _serialize_class(cls):
  return {'module': cls.__module__, 'class_name': cls.__name__}


def _deserialize_class(config):
  if isinstance(config, type) or config is None:
    return config
  module = config['module']
  if not module.startswith(('leaf_audio', 'keras')):
    raise ValueError(f'Refusing to import a layer class from module '
                     f'{module!r}: only leaf_audio and keras classes load.')
  return getattr(importlib.import_module(module), config['class_name'])


def _serialize(obj):
  return None if obj is None else keras.saving.serialize_keras_object(obj)


def _deserialize(config):
  if config is None or isinstance(config, str):
    return config
  return keras.saving.deserialize_keras_object(config)


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


def default_max_freq(sample_rate):
  """The top of the mel range the Gabor filters start from, in Hz.

  7800 Hz (the paper's, 97.5% of the Nyquist frequency at 16 kHz), or 97.5%
  of the Nyquist frequency at lower sampling rates, so that `Leaf` and
  `TimeDomainFilterbanks` work at 8 kHz as at 16 kHz.
  """
  return min(7800., 0.4875 * sample_rate)


# The fast mode compiles inputs of at most this many samples (batch x time)
# with XLA (see `Leaf._compiles_small_input`); 0 turns it off.
XLA_MAX_SAMPLES = 2**16


def _default_pcen():
  """sPCEN as LEAF uses it: every parameter learned, per channel."""
  return postprocessing.PCENLayer(
      alpha=0.96, smooth_coef=0.04, delta=2.0, floor=1e-12, trainable=True,
      learn_smooth_coef=True, per_channel_smooth_coef=True)


@utils.register
class Leaf(keras.layers.Layer):
  """LEAF, the LEarnable Audio Frontend (Section 3 of the paper).

  Computes, in order: an optional learnable pre-emphasis (2-tap filter);
  complex Gabor filtering (n_filters filters of W = sample_rate * window_len
  / 1000 + 1 taps, at stride 1); the squared modulus; per-channel Gaussian
  lowpass pooling with stride sample_rate * window_stride / 1000; a floor at
  1e-5; compression (sPCEN by default); an optional per-channel mean-variance
  normalization; SpecAugment when `spec_augment` and `training`.
  At initialization it approximates mel-filterbanks with PCEN.

  Args:
    learn_pooling: whether the pooling widths are learned.
    learn_filters: whether the filters (and the pre-emphasis) are learned.
    conv1d_cls: class of the filtering layer (`GaborConv1D` by default), built
      with filters=2*n_filters, kernel_size, strides, padding, use_bias,
      kernel_initializer, kernel_regularizer, name and trainable.
    activation: layer applied to the filtering output (default: a new
      `SquaredModulus()`).
    pooling_cls: class of the pooling layer (`GaussianLowpass` by default).
    n_filters: number of output channels.
    sample_rate: sampling rate of the inputs, in Hz.
    window_len: filter and pooling window length, in ms.
    window_stride: hop between frames, in ms.
    compression_fn: a layer or function applied after pooling, None for the
      identity, or 'pcen' (default) for sPCEN with alpha 0.96, s 0.04,
      delta 2, root 2, floor 1e-12, all learned per channel.
    preemp: whether to apply the learnable pre-emphasis.
    preemp_init: initializer of the pre-emphasis (default `PreempInit()`).
    complex_conv_init: initializer of the filters (default
      `GaborInit(sample_rate, min_freq=60, max_freq=7800)`; below 16 kHz,
      max_freq is 97.5% of the Nyquist frequency instead, e.g. 3900 Hz at
      8 kHz).
    pooling_init: initializer of the pooling (default `Constant(0.4)`).
    regularizer_fn: optional regularizer of the learned filters and pooling.
    mean_var_norm: whether to normalize each channel over time.
    spec_augment: whether to apply SpecAugment in training.
    implementation: how the filtering, squared modulus and pooling are
      computed, with the same weights and output shape. 'conv' (default): the
      original's computation, exactly (up to float32 rounding); with the
      default Gabor filters, squared modulus and Gaussian pooling it is
      evaluated by FFT (`fast_gabor.pooled_energies_fft`). 'fast': each
      Gabor filter applied in the frequency domain only where its response
      is not negligible, at a reduced rate (`fast_gabor.BandedPlan`), within
      1% of 'conv'; other layer stacks (e.g. SincNet+'s sinc filters and
      LeakyReLU, which have no banded form) compute as with 'conv', as do
      windows of an even length and strides that share no factor with half
      the window (44.1 kHz at 25 ms / 10 ms), with a warning. In a traced
      function, the fast mode compiles small inputs of a static shape (up to
      `XLA_MAX_SAMPLES`, e.g. batch 4 x 1 s) with XLA, which costs about a
      second at the first call for each shape.
    name: layer name.

  Call arguments:
    inputs: [batch, time] or [batch, time, 1] float waveforms in [-1, 1].
    training: whether SpecAugment (if enabled) is applied.

  Returns:
    [batch, ceil(time / stride), n_filters] features.

  Weights, in order (as in the original release): the Gabor kernel
  [n_filters, 2], the pooling widths [1, 1, n_filters, 1], then PCEN's alpha,
  delta, root and smooth [n_filters] each.

  Example:
    >>> leaf = Leaf(n_filters=64)
    >>> leaf(np.zeros((2, 16000), 'float32')).shape
    TensorShape([2, 100, 64])
  """

  # Arguments that subclasses fix, left out of their configs.
  _fixed_args = ()

  def __init__(self, learn_pooling=True, learn_filters=True,
               conv1d_cls=convolution.GaborConv1D, activation=None,
               pooling_cls=pooling.GaussianLowpass, n_filters=40,
               sample_rate=16000, window_len=25., window_stride=10.,
               compression_fn='pcen', preemp=False, preemp_init=None,
               complex_conv_init=None, pooling_init=None,
               regularizer_fn=None, mean_var_norm=False, spec_augment=False,
               implementation='conv', name='leaf', **kwargs):
    super().__init__(name=name, **kwargs)
    fast_gabor.check_implementation(implementation)
    if n_filters < 1:
      raise ValueError(f'n_filters must be positive, got {n_filters}.')
    if sample_rate <= 0 or window_len <= 0 or window_stride <= 0:
      raise ValueError('sample_rate, window_len and window_stride must be '
                       f'positive, got {sample_rate}, {window_len}, '
                       f'{window_stride}.')
    window_size = int(sample_rate * window_len // 1000 + 1)
    stride = int(sample_rate * window_stride // 1000)
    if stride < 1:
      raise ValueError(f'window_stride={window_stride} ms is below one sample '
                       f'at {sample_rate} Hz.')
    self._config = {
        'learn_pooling': learn_pooling, 'learn_filters': learn_filters,
        'n_filters': n_filters, 'sample_rate': sample_rate,
        'window_len': window_len, 'window_stride': window_stride,
        'preemp': preemp, 'mean_var_norm': mean_var_norm,
        'spec_augment': spec_augment, 'implementation': implementation,
    }
    self.n_filters = n_filters
    self.window_size = window_size
    self.stride = stride
    self._conv1d_cls = conv1d_cls
    self._pooling_cls = pooling_cls
    self._regularizer = keras.regularizers.get(regularizer_fn)

    self._preemp_conv = None
    if preemp:
      self._preemp_init = keras.initializers.get(
          preemp_init or initializers.PreempInit())
      self._preemp_conv = keras.layers.Conv1D(
          filters=1, kernel_size=2, padding='same', use_bias=False,
          kernel_initializer=self._preemp_init,
          kernel_regularizer=self._regularizer if learn_filters else None,
          trainable=learn_filters, name='tfbanks_preemp')
    else:
      self._preemp_init = preemp_init

    self._complex_conv_init = keras.initializers.get(
        complex_conv_init or initializers.GaborInit(
            sample_rate=sample_rate, min_freq=60.,
            max_freq=default_max_freq(sample_rate)))
    conv_kwargs = {}
    if issubclass(conv1d_cls, convolution.SincConv1D):
      conv_kwargs['sample_rate'] = sample_rate
    self._complex_conv = conv1d_cls(
        filters=2 * n_filters, kernel_size=window_size, strides=1,
        padding='same', use_bias=False,
        kernel_initializer=self._complex_conv_init,
        kernel_regularizer=self._regularizer if learn_filters else None,
        name='tfbanks_complex_conv', trainable=learn_filters, **conv_kwargs)

    self._activation = activation if activation is not None else (
        SquaredModulus())

    self._pooling_init = keras.initializers.get(
        pooling_init or keras.initializers.Constant(0.4))
    self._pooling = pooling_cls(
        kernel_size=window_size, strides=stride, padding='same',
        use_bias=False, kernel_initializer=self._pooling_init,
        kernel_regularizer=self._regularizer if learn_pooling else None,
        trainable=learn_pooling)
    # Gabor filters, squared modulus and Gaussian pooling: computed together,
    # without the direct convolution (see `implementation`).
    self._filterbank_energies = None
    if (type(self._complex_conv) is convolution.GaborConv1D and
        type(self._activation) is SquaredModulus and
        type(self._pooling) is pooling.GaussianLowpass):
      self._filterbank_energies = fast_gabor.FilterbankEnergies(
          self._complex_conv, self._pooling, implementation)
    elif (type(self._complex_conv) is keras.layers.Conv1D and
          type(self._activation) is SquaredModulus and
          type(self._pooling) is pooling.LearnablePooling1D):
      # TD-filterbanks: the same by FFT, exactly (free filters have no
      # banded form).
      self._filterbank_energies = fast_gabor.ConvFilterbankEnergies(
          self._complex_conv, self._pooling)

    self._compression_arg = compression_fn
    if compression_fn == 'pcen':
      compression_fn = _default_pcen()
    elif compression_fn == 'log':
      compression_fn = log_compression
    elif isinstance(compression_fn, str):
      raise ValueError(f"compression_fn must be a layer, a function, None, "
                       f"'pcen' or 'log', got {compression_fn!r}.")
    self._compression = compression_fn

    self._instance_norm = (postprocessing.MeanVarianceNormalization()
                           if mean_var_norm else None)
    self._spec_augment = (postprocessing.SpecAugment()
                          if spec_augment else None)

  def build(self, input_shape):
    check_waveform_shape(input_shape, self.name)
    shape = (None, None, 1)
    if self._preemp_conv is not None:
      self._preemp_conv.build(shape)
    self._complex_conv.build(shape)
    channels = (None, None, self.n_filters)
    for layer in (self._activation, self._pooling, self._compression,
                  self._instance_norm, self._spec_augment):
      if isinstance(layer, keras.layers.Layer) and not layer.built:
        layer.build((None, None, 2 * self.n_filters)
                    if layer is self._activation else channels)

  def call(self, inputs, training=False):
    if self._compiles_small_input(inputs):
      # A new function at every trace, so that it is traced with the fast
      # mode's current plan. The exact computation stands in for it when the
      # weights have left the plan; the choice is made outside the compiled
      # function (a tf.cond inside one cannot be differentiated).
      banded, fits = tf.function(self._checked_banded_features,
                                 jit_compile=True, autograph=False)(inputs)
      outputs = tf.cond(fits, lambda: banded, fast_gabor.fallback_branch(
          lambda: self._features(inputs, self._filterbank_energies.exact)))
    else:
      outputs = self._features(inputs)
    if self._spec_augment is not None:
      outputs = self._spec_augment(outputs, training=training)
    # The filterbank and sPCEN compute in float32 under mixed precision too.
    return ops.cast(outputs, self.compute_dtype)

  def _checked_banded_features(self, inputs):
    """`_features` by the banded computation, and whether its plan fits."""
    fits = []

    def banded(waveform):
      energies, fit = self._filterbank_energies.checked_banded(waveform)
      fits.append(fit)
      return energies

    return self._features(inputs, banded), fits[0]

  def _compiles_small_input(self, inputs):
    """Whether the fast mode compiles this call's features with XLA.

    For a small input of a static shape (at most `XLA_MAX_SAMPLES` samples in
    all) in a function being traced: there TensorFlow's cost per op (about
    300 small ops) dominates, and one XLA computation is 1.4x faster (batch
    1 x 1 s: 2.6x mel's time down to 1.8x, on 2 CPU cores). Larger inputs
    are not compiled: at batch 1 x 10 s XLA is 10% slower, and at batch 32 it
    took more time and memory.
    """
    energies = self._filterbank_energies
    return (isinstance(energies, fast_gabor.FilterbankEnergies) and
            energies.banded and not tf.executing_eagerly() and
            inputs.shape.is_fully_defined() and
            inputs.shape.num_elements() <= XLA_MAX_SAMPLES)

  def _features(self, inputs, filterbank_energies=None):
    """The checked waveforms' features, pre-emphasis to compression and
    normalization: [batch, time(, 1)] -> [batch, frames, n_filters].
    `filterbank_energies` replaces the layer's (e.g. with its exact or banded
    computation alone)."""
    outputs = check_waveform(inputs, self.name)[:, :, None]
    if self._preemp_conv is not None:
      outputs = self._preemp_conv(outputs)
    filterbank_energies = filterbank_energies or self._filterbank_energies
    if filterbank_energies is not None:
      outputs = filterbank_energies(outputs[:, :, 0])
    else:
      outputs = self._complex_conv(outputs)
      outputs = self._activation(outputs)
      outputs = self._pooling(outputs)
    outputs = ops.maximum(outputs, 1e-5)
    if self._compression is not None:
      outputs = self._compression(outputs)
    if self._instance_norm is not None:
      outputs = self._instance_norm(outputs)
    return outputs

  def compute_output_shape(self, input_shape):
    return _framed_shape(input_shape, self.stride, self.n_filters)

  def fast_plans_outdated(self):
    """Whether training has moved the weights out of the fast mode's plans.

    With `implementation='fast'`, a function traced with this layer keeps the
    plan made for the weights at its tracing; once the weights leave it, the
    function computes exactly (same results, the exact mode's cost) until it
    is traced again. `leaf_audio.callbacks.RefreshFastPlans` does that for
    `Model.fit`; a custom training loop can check this between steps and
    trace its step function again.

    Returns:
      A Python bool (False unless the fast mode is in use).
    """
    return (self._filterbank_energies is not None and
            not self._filterbank_energies.plans_fit_weights())

  def get_config(self):
    config = super().get_config()
    config.update(self._config)
    compression = self._compression_arg
    if not isinstance(compression, str):
      compression = _serialize(compression)
    config.update({
        'conv1d_cls': _serialize_class(self._conv1d_cls),
        'pooling_cls': _serialize_class(self._pooling_cls),
        'activation': _serialize(self._activation),
        'compression_fn': compression,
        'preemp_init': _serialize(self._preemp_init),
        'complex_conv_init': _serialize(self._complex_conv_init),
        'pooling_init': _serialize(self._pooling_init),
        'regularizer_fn': _serialize(self._regularizer),
    })
    for arg in self._fixed_args:
      config.pop(arg, None)
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    for key in ('conv1d_cls', 'pooling_cls'):
      if key in config:
        config[key] = _deserialize_class(config[key])
    for key in ('activation', 'compression_fn', 'preemp_init',
                'complex_conv_init', 'pooling_init', 'regularizer_fn'):
      if key in config:
        config[key] = _deserialize(config[key])
    return cls(**config)


@utils.register
class TimeDomainFilterbanks(Leaf):
  """Time-Domain filterbanks (Zeghidour et al., 2018).

  A plain 1-D convolution of 2 * n_filters filters initialized as the Gabor
  approximation of mel filters (real and imaginary parts interleaved), the
  squared modulus, a learnable squared-Hann pooling window shared by all
  channels (with 'valid' padding, hence 98 frames for 1 s at 16 kHz), and
  log compression.

  Args:
    sample_rate: sampling rate, in Hz.
    name: layer name.
    **kwargs: other `Leaf` arguments, except those fixed here (conv1d_cls,
      activation, pooling_cls, complex_conv_init, pooling_init,
      compression_fn).

  Call arguments and outputs: as `Leaf`, with
  (time - W) // stride + 1 frames.
  """

  _fixed_args = ('conv1d_cls', 'activation', 'pooling_cls',
                 'complex_conv_init', 'pooling_init', 'compression_fn')

  def __init__(self, sample_rate=16000, name='tfbanks', **kwargs):
    super().__init__(
        conv1d_cls=keras.layers.Conv1D,
        activation=SquaredModulus(),
        pooling_cls=pooling.LearnablePooling1D,
        complex_conv_init=initializers.GaborInit(
            sample_rate=sample_rate, min_freq=60.,
            max_freq=default_max_freq(sample_rate)),
        pooling_init=initializers.LowpassInit(
            sample_rate=sample_rate,
            window_len=kwargs.get('window_len', 25.),
            window_type=utils.WindowType.SQUARED_HANNING),
        compression_fn='log', sample_rate=sample_rate, name=name, **kwargs)

  def compute_output_shape(self, input_shape):
    frames = None
    if input_shape[1] is not None:
      frames = (input_shape[1] - self.window_size) // self.stride + 1
    return (input_shape[0], frames, self.n_filters)


@utils.register
class SincNet(Leaf):
  """SincNet (Ravanelli & Bengio, 2018).

  Hamming-windowed sinc band-pass filters with learnable cutoffs (mel-spaced
  at initialization), LeakyReLU(0.2), max pooling, layer normalization.

  Args:
    name: layer name.
    **kwargs: other `Leaf` arguments, except those fixed here (conv1d_cls,
      complex_conv_init, activation, pooling_cls, compression_fn).
  """

  _fixed_args = ('conv1d_cls', 'activation', 'pooling_cls',
                 'complex_conv_init', 'compression_fn')

  def __init__(self, name='sincnet', **kwargs):
    super().__init__(
        conv1d_cls=convolution.SincConv1D,
        complex_conv_init=initializers.SincInit(
            sample_rate=kwargs.get('sample_rate', 16000)),
        activation=keras.layers.LeakyReLU(negative_slope=0.2),
        pooling_cls=pooling.MaxPooling1D,
        compression_fn=keras.layers.LayerNormalization(),
        name=name, **kwargs)


@utils.register
class SincNetPlus(Leaf):
  """SincNet+: SincNet with Gaussian lowpass pooling and PCEN.

  PCEN starts at alpha 0.96, s 0.04, delta 2, root 2, floor 1e-6 (the
  original's outputs at initialization) and learns all its parameters per
  channel, as counted in Table 4 of the paper (448 parameters at 64 filters).

  Args:
    name: layer name.
    **kwargs: other `Leaf` arguments, except those fixed here (conv1d_cls,
      complex_conv_init, activation, pooling_cls, pooling_init,
      compression_fn).
  """

  _fixed_args = ('conv1d_cls', 'activation', 'pooling_cls',
                 'complex_conv_init', 'pooling_init', 'compression_fn')

  def __init__(self, name='sincnet_plus', **kwargs):
    super().__init__(
        conv1d_cls=convolution.SincConv1D,
        complex_conv_init=initializers.SincInit(
            sample_rate=kwargs.get('sample_rate', 16000)),
        activation=keras.layers.LeakyReLU(negative_slope=0.2),
        pooling_cls=pooling.GaussianLowpass,
        pooling_init=keras.initializers.Constant(0.4),
        compression_fn=postprocessing.PCENLayer(
            alpha=0.96, smooth_coef=0.04, delta=2.0, root=2.0, floor=1e-6,
            trainable=True, learn_smooth_coef=True,
            per_channel_smooth_coef=True),
        name=name, **kwargs)


@utils.register
class MelFilterbanks(keras.layers.Layer):
  """Log-compressed mel-filterbanks, the baseline frontend.

  STFT (periodic Hann window of W = sample_rate * window_len / 1000 + 1
  samples, zero-padded at the end, FFT of n_fft points), power spectrum,
  projection on n_filters triangular mel filters between min_freq and
  max_freq, then compression.

  Args:
    n_filters: number of mel filters.
    sample_rate: sampling rate, in Hz.
    n_fft: FFT size (at least the window length).
    window_len: window length, in ms.
    window_stride: hop between frames, in ms.
    compression_fn: function or layer applied to the mel energies (default
      `log_compression`), or None for the raw energies.
    min_freq: lowest mel filter edge, in Hz.
    max_freq: highest mel filter edge, in Hz (None: sample_rate / 2).
    name: layer name.

  Call arguments:
    inputs: [batch, time] or [batch, time, 1] float waveforms.

  Returns:
    [batch, ceil(time / stride), n_filters].

  Example:
    >>> MelFilterbanks()(np.zeros((2, 16000), 'float32')).shape
    TensorShape([2, 100, 40])
  """

  def __init__(self, n_filters=40, sample_rate=16000, n_fft=512,
               window_len=25., window_stride=10.,
               compression_fn=log_compression, min_freq=60., max_freq=7800.,
               name='mel_filterbanks', **kwargs):
    super().__init__(name=name, **kwargs)
    self.n_filters = n_filters
    self.sample_rate = sample_rate
    self.n_fft = n_fft
    self.window_len = window_len
    self.window_stride = window_stride
    self.min_freq = min_freq
    self.max_freq = max_freq if max_freq else sample_rate / 2.
    self.compression_fn = compression_fn
    self.window_size = int(sample_rate * window_len // 1000 + 1)
    self.stride = int(sample_rate * window_stride // 1000)
    if n_filters < 1 or self.stride < 1:
      raise ValueError(f'n_filters and the stride must be positive, got '
                       f'{n_filters} and {self.stride} samples.')
    if n_fft < self.window_size:
      raise ValueError(
          f'n_fft={n_fft} is shorter than the window ({self.window_size} '
          f'samples at {sample_rate} Hz): pass n_fft >= {self.window_size}, '
          f'e.g. {2**math.ceil(math.log2(self.window_size))}.')
    if not 0. <= min_freq < self.max_freq <= sample_rate / 2.:
      raise ValueError(
          f'Expected 0 <= min_freq < max_freq <= sample_rate / 2 = '
          f'{sample_rate / 2:g} Hz, got min_freq={min_freq}, '
          f'max_freq={max_freq}: at {sample_rate} Hz pass e.g. '
          f'max_freq={default_max_freq(sample_rate):g}.')
    self.mel_matrix = melfilters.mel_weight_matrix(
        n_filters, n_fft, sample_rate, min_freq, self.max_freq)

  def build(self, input_shape):
    check_waveform_shape(input_shape, self.name)

  def call(self, inputs):
    waveform = check_waveform(inputs, self.name)
    stft = tf.signal.stft(waveform, frame_length=self.window_size,
                          frame_step=self.stride, fft_length=self.n_fft,
                          pad_end=True)
    power = tf.math.square(tf.math.abs(stft))
    mel_energies = ops.matmul(power, self.mel_matrix)
    if self.compression_fn is None:
      return mel_energies
    return self.compression_fn(mel_energies)

  def compute_output_shape(self, input_shape):
    return _framed_shape(input_shape, self.stride, self.n_filters)

  def get_config(self):
    config = super().get_config()
    config.update({
        'n_filters': self.n_filters, 'sample_rate': self.sample_rate,
        'n_fft': self.n_fft, 'window_len': self.window_len,
        'window_stride': self.window_stride,
        'compression_fn': _serialize(self.compression_fn),
        'min_freq': self.min_freq, 'max_freq': self.max_freq,
    })
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config['compression_fn'] = _deserialize(config.get('compression_fn'))
    return cls(**config)
