"""The frontends: LEAF, its learnable baselines, mel-filterbanks, WaveGram.

Every frontend is a Keras layer mapping waveforms [batch, time] or
[batch, time, 1] (float, in [-1, 1]) to features [batch, frames, n_filters].

LEAF and its learnable baselines (`TimeDomainFilterbanks`, `SincNet`,
`SincNetPlus`) are `LearnableFrontend`s: each builds its own parts (filters,
activation, pooling, compression) and they share the pipeline that runs
them.

Example:
  >>> import leaf_audio.frontend as frontend
  >>> leaf = frontend.Leaf()
  >>> leaf(np.zeros((8, 16000), 'float32')).shape
  TensorShape([8, 100, 40])
"""

import importlib
import math
import numbers

import gin
import keras
from keras import ops
import numpy as np

from leaf_audio import convolution
from leaf_audio import filterbank
from leaf_audio import initializers
from leaf_audio import melfilters
from leaf_audio import models
from leaf_audio import pooling
from leaf_audio import postprocessing
from leaf_audio import utils
from leaf_audio.convolution import SquaredModulus  # pylint: disable=unused-import


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
      integer dtype, when they are known at call time; on JAX and PyTorch,
      for NaN or Inf samples in a concrete (not traced) tensor.
    tf.errors.InvalidArgumentError: on TensorFlow, at run time, for NaN or
      Inf samples or an empty clip whose length was unknown when the graph
      was built. (Inside `jax.jit` the values are not known when the
      function is traced, and NaN or Inf samples are not reported.)
  """
  shape = tuple(inputs.shape)
  check_waveform_shape(shape, layer_name)
  dtype = keras.backend.standardize_dtype(inputs.dtype)
  if not dtype.startswith(('float', 'bfloat')):
    raise ValueError(
        f'{layer_name} expects float waveforms in [-1, 1], got dtype {dtype}; '
        'scale integer PCM first, e.g. x.astype("float32") / 32768 for int16.')
  waveform = inputs[:, :, 0] if len(shape) == 3 else inputs
  waveform = ops.cast(waveform, 'float32')
  message = (f'{layer_name} received NaN or Inf samples; the waveforms must '
             'be finite floats in [-1, 1]')
  if keras.backend.backend() != 'tensorflow':
    if _is_concrete(waveform) and not bool(ops.all(ops.isfinite(waveform))):
      raise ValueError(message)
    return waveform
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if shape[1] is None:
    tf.debugging.assert_positive(
        tf.shape(waveform)[1],
        message=f'{layer_name} expects at least one sample per clip')
  # One vectorized pass (`check_numerics` reads the samples one by one: 7.7
  # against 1.0 ms at 32 x 160000 on 2 CPU cores).
  finite = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(waveform)),
                               [message])
  with tf.control_dependencies([finite]):
    return tf.identity(waveform)


def _is_concrete(tensor):
  """Whether `tensor` holds values now (JAX: not a tracer; PyTorch and NumPy
  run eagerly), so that they can be checked."""
  if keras.backend.backend() == 'jax':
    import jax  # pylint: disable=g-import-not-at-top
    return not isinstance(tensor, jax.core.Tracer)
  return True


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


def default_max_freq(sample_rate):
  """The top of the mel range the Gabor filters start from, in Hz.

  7800 Hz (the paper's, 97.5% of the Nyquist frequency at 16 kHz), or 97.5%
  of the Nyquist frequency at lower sampling rates, so that `Leaf` and
  `TimeDomainFilterbanks` work at 8 kHz as at 16 kHz.
  """
  return min(7800., 0.4875 * sample_rate)


def _default_pcen():
  """sPCEN as LEAF uses it: every parameter learned, per channel."""
  return postprocessing.PCENLayer(
      alpha=0.96, smooth_coef=0.04, delta=2.0, floor=1e-12, trainable=True,
      learn_smooth_coef=True, per_channel_smooth_coef=True)


def _check_types(**arguments):
  """Raises a TypeError naming each argument of the wrong type.

  `n_filters` and `n_fft` must be ints; the others (rates, lengths in ms,
  frequencies) ints or floats. Booleans, strings and None are refused.
  """
  for name, value in arguments.items():
    integral = name in ('n_filters', 'n_fft')
    kind = numbers.Integral if integral else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
      raise TypeError(f'{name} must be {"an int" if integral else "a number"},'
                      f' got {value!r} of type {type(value).__name__}.')


def _frame_sizes(n_filters, sample_rate, window_len, window_stride):
  """(W, s): window taps and stride in samples, after checking the sizes."""
  _check_types(n_filters=n_filters, sample_rate=sample_rate,
               window_len=window_len, window_stride=window_stride)
  if n_filters < 1:
    raise ValueError(f'n_filters must be positive, got {n_filters}.')
  if sample_rate <= 0 or window_len <= 0 or window_stride <= 0:
    raise ValueError('sample_rate, window_len and window_stride must be '
                     f'positive, got {sample_rate}, {window_len}, '
                     f'{window_stride}.')
  stride = utils.hop_samples(sample_rate, window_stride)
  if stride < 1:
    raise ValueError(f'window_stride={window_stride} ms is below one sample '
                     f'at {sample_rate} Hz.')
  return utils.window_samples(sample_rate, window_len), stride


# Constructor arguments of the learnable frontends that hold classes, and
# those that hold Keras objects (serialized in their configs).
_CLASS_ARGS = ('conv1d_cls', 'pooling_cls')
_OBJECT_ARGS = ('activation', 'compression_fn', 'preemp_init',
                'complex_conv_init', 'pooling_init', 'regularizer_fn')


class LearnableFrontend(keras.layers.Layer):
  """The pipeline LEAF and its learnable baselines share.

  In order: an optional learnable pre-emphasis (2-tap filter); the filterbank
  energies, i.e. filtering, activation and pooling (`FilterbankEnergies`,
  which computes them fused where it can); a floor at 1e-5; compression; an
  optional per-channel mean-variance normalization; SpecAugment when enabled
  and training. Each frontend builds its own parts in its constructor and
  hands them to `_assemble`; they are its sublayers, in the order of the
  original release's weights (pre-emphasis, filters, pooling, compression).

  Call arguments:
    inputs: [batch, time] or [batch, time, 1] float waveforms in [-1, 1].
    training: whether SpecAugment (if enabled) is applied.

  Returns:
    [batch, frames, n_filters] features.
  """

  def _assemble(self, args, *, window_size, stride, conv, activation,
                pooling_layer, compression, preemp_conv=None,
                mean_var_norm=False, spec_augment=False,
                implementation='conv', xla_max_samples=(
                    filterbank.XLA_MAX_SAMPLES), fast_tolerance='speed'):
    """Sets the parts, in the order of the weights.

    Args:
      args: the constructor's arguments, for `get_config` (classes and Keras
        objects among them are serialized there).
      window_size, stride: W and s, in samples.
      conv, activation, pooling_layer: the filterbank's layers.
      compression: a layer or function applied after the floor, or None.
      preemp_conv: the pre-emphasis layer, or None.
      mean_var_norm, spec_augment: whether to add them.
      implementation, xla_max_samples, fast_tolerance: see
        `FilterbankEnergies`.
    """
    self._args = dict(args)
    self.n_filters = args['n_filters']
    self.window_size = window_size
    self.stride = stride
    # The attribute names are the paths of the weights in .keras files.
    self._preemp_conv = preemp_conv
    self._complex_conv = conv
    self._activation = activation
    self._pooling = pooling_layer
    self.filterbank = filterbank.FilterbankEnergies(
        conv, activation, pooling_layer, implementation=implementation,
        xla_max_samples=xla_max_samples, fast_tolerance=fast_tolerance,
        name='filterbank_energies')
    self._compression = compression
    self._instance_norm = (postprocessing.MeanVarianceNormalization()
                           if mean_var_norm else None)
    self._spec_augment = (postprocessing.SpecAugment()
                          if spec_augment else None)

  @staticmethod
  def _preemphasis(preemp, preemp_init, learn_filters, regularizer):
    """(layer or None, initializer): the optional 2-tap pre-emphasis."""
    if not preemp:
      return None, preemp_init
    preemp_init = keras.initializers.get(
        preemp_init or initializers.PreempInit())
    return keras.layers.Conv1D(
        filters=1, kernel_size=2, padding='same', use_bias=False,
        kernel_initializer=preemp_init,
        kernel_regularizer=regularizer if learn_filters else None,
        trainable=learn_filters, name='tfbanks_preemp'), preemp_init

  def build(self, input_shape):
    check_waveform_shape(input_shape, self.name)
    if self._preemp_conv is not None:
      self._preemp_conv.build((None, None, 1))
    self.filterbank.build((None, None))
    for layer in (self._compression, self._instance_norm, self._spec_augment):
      if isinstance(layer, keras.layers.Layer) and not layer.built:
        layer.build((None, None, self.n_filters))

  def call(self, inputs, training=False):
    waveform = check_waveform(inputs, self.name)
    if self._preemp_conv is not None:
      waveform = self._preemp_conv(waveform[:, :, None])[:, :, 0]
    # The floor, compression and normalization are computed by the
    # filterbank layer with its energies (compiled together with XLA, and in
    # its exact fallback).
    outputs = self.filterbank(waveform,
                              postprocess=self._compress_and_normalize)
    if self._spec_augment is not None:
      outputs = self._spec_augment(outputs, training=training)
    # The filterbank and sPCEN compute in float32 under mixed precision too.
    return ops.cast(outputs, self.compute_dtype)

  def _compress_and_normalize(self, energies):
    """Floor at 1e-5, compression, optional normalization."""
    outputs = ops.maximum(energies, 1e-5)
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
    return not self.filterbank.plans_fit_weights()

  def get_config(self):
    config = super().get_config()
    for key, value in self._args.items():
      if key in _CLASS_ARGS:
        value = _serialize_class(value)
      elif key in _OBJECT_ARGS and not isinstance(value, str):
        value = _serialize(value)
      config[key] = value
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    for key in _CLASS_ARGS:
      if key in config:
        config[key] = _deserialize_class(config[key])
    for key in _OBJECT_ARGS:
      if key in config:
        config[key] = _deserialize(config[key])
    return cls(**config)


@utils.register
class Leaf(LearnableFrontend):
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
      computed, with the same weights and output shape
      (`filterbank.FilterbankEnergies`). 'conv' (default): the original's
      computation, exactly (up to float32 rounding); with Gabor filters,
      squared modulus and Gaussian pooling (subclasses included) it is
      evaluated by FFT (`filterbank.overlap_save`). 'fast': each Gabor filter
      applied in the frequency domain only where its response is not
      negligible, at a reduced rate (`filterbank.plan.BandedPlan`), within
      0.5% of 'conv' (0.1% with fast_tolerance='accuracy'; relative L2 on
      the parity fixture's clips); other layer stacks (e.g. sinc filters and LeakyReLU, which
      have no banded form) compute as with 'conv', as do windows of an even
      length and strides that share no factor with half the window (44.1 kHz
      at 25 ms / 10 ms), with a warning.
    xla_max_samples: in the fast mode, a traced function compiles inputs of
      a static shape of at most this many samples in all (e.g. batch 4 x
      1 s) with XLA, which costs about a second at the first call for each
      shape; 0 turns it off.
    fast_tolerance: in the fast mode, 'speed' (default) or 'accuracy':
      what its plans keep (`filterbank.FilterbankEnergies`). 'accuracy' is
      within 0.1% of 'conv' at initialization and at moved weights (0.083%
      at worst on the parity fixture's clips; 'speed' 0.43%), and slower.
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

  def __init__(self, learn_pooling=True, learn_filters=True,
               conv1d_cls=convolution.GaborConv1D, activation=None,
               pooling_cls=pooling.GaussianLowpass, n_filters=40,
               sample_rate=16000, window_len=25., window_stride=10.,
               compression_fn='pcen', preemp=False, preemp_init=None,
               complex_conv_init=None, pooling_init=None,
               regularizer_fn=None, mean_var_norm=False, spec_augment=False,
               implementation='conv',
               xla_max_samples=filterbank.XLA_MAX_SAMPLES,
               fast_tolerance='speed', name='leaf', **kwargs):
    super().__init__(name=name, **kwargs)
    filterbank.check_implementation(implementation)
    window_size, stride = _frame_sizes(n_filters, sample_rate, window_len,
                                       window_stride)
    regularizer = keras.regularizers.get(regularizer_fn)
    preemp_conv, preemp_init = self._preemphasis(preemp, preemp_init,
                                                 learn_filters, regularizer)
    complex_conv_init = keras.initializers.get(
        complex_conv_init or initializers.GaborInit(
            sample_rate=sample_rate, min_freq=60.,
            max_freq=default_max_freq(sample_rate)))
    conv_kwargs = {}
    if issubclass(conv1d_cls, convolution.SincConv1D):
      conv_kwargs['sample_rate'] = sample_rate
    conv = conv1d_cls(
        filters=2 * n_filters, kernel_size=window_size, strides=1,
        padding='same', use_bias=False, kernel_initializer=complex_conv_init,
        kernel_regularizer=regularizer if learn_filters else None,
        name='tfbanks_complex_conv', trainable=learn_filters, **conv_kwargs)
    activation = activation if activation is not None else SquaredModulus()
    pooling_init = keras.initializers.get(
        pooling_init or keras.initializers.Constant(0.4))
    pooling_layer = pooling_cls(
        kernel_size=window_size, strides=stride, padding='same',
        use_bias=False, kernel_initializer=pooling_init,
        kernel_regularizer=regularizer if learn_pooling else None,
        trainable=learn_pooling)
    if compression_fn == 'pcen':
      compression = _default_pcen()
    elif compression_fn == 'log':
      compression = log_compression
    elif isinstance(compression_fn, str):
      raise ValueError(f"compression_fn must be a layer, a function, None, "
                       f"'pcen' or 'log', got {compression_fn!r}.")
    else:
      compression = compression_fn
    self._assemble(
        dict(learn_pooling=learn_pooling, learn_filters=learn_filters,
             conv1d_cls=conv1d_cls, activation=activation,
             pooling_cls=pooling_cls, n_filters=n_filters,
             sample_rate=sample_rate, window_len=window_len,
             window_stride=window_stride, compression_fn=compression_fn,
             preemp=preemp, preemp_init=preemp_init,
             complex_conv_init=complex_conv_init, pooling_init=pooling_init,
             regularizer_fn=regularizer, mean_var_norm=mean_var_norm,
             spec_augment=spec_augment, implementation=implementation,
             xla_max_samples=xla_max_samples, fast_tolerance=fast_tolerance),
        window_size=window_size, stride=stride, conv=conv,
        activation=activation, pooling_layer=pooling_layer,
        compression=compression, preemp_conv=preemp_conv,
        mean_var_norm=mean_var_norm, spec_augment=spec_augment,
        implementation=implementation, xla_max_samples=xla_max_samples,
        fast_tolerance=fast_tolerance)


@utils.register
class TimeDomainFilterbanks(LearnableFrontend):
  """Time-Domain filterbanks (Zeghidour et al., 2018).

  A plain 1-D convolution of 2 * n_filters filters of W taps initialized as
  the Gabor approximation of mel filters (real and imaginary parts
  interleaved), the squared modulus, a learnable squared-Hann pooling window
  shared by all channels (with 'valid' padding, hence 98 frames for 1 s at
  16 kHz), and log compression (offset 1e-5). Computed by FFT, exactly
  (`filterbank.engines.ConvEnergies`).

  Args:
    learn_pooling: whether the pooling window is learned.
    learn_filters: whether the filters (and the pre-emphasis) are learned.
    n_filters: number of output channels.
    sample_rate: sampling rate, in Hz.
    window_len: filter and pooling window length, in ms.
    window_stride: hop between frames, in ms.
    preemp: whether to apply a learnable pre-emphasis first.
    preemp_init: its initializer (default `PreempInit()`).
    regularizer_fn: optional regularizer of the learned filters and pooling.
    mean_var_norm: whether to normalize each channel over time.
    spec_augment: whether to apply SpecAugment in training.
    implementation: 'conv' or 'fast'; the same exact computation either way
      (free filters have no banded form).
    name: layer name.

  Call arguments and outputs: as `Leaf`, with
  (time - W) // stride + 1 frames.

  Weights, in order: [the pre-emphasis,] the filters [W, 1, 2 n_filters],
  the pooling window [1, W, 1, 1].
  """

  def __init__(self, learn_pooling=True, learn_filters=True, n_filters=40,
               sample_rate=16000, window_len=25., window_stride=10.,
               preemp=False, preemp_init=None, regularizer_fn=None,
               mean_var_norm=False, spec_augment=False,
               implementation='conv', name='tfbanks', **kwargs):
    super().__init__(name=name, **kwargs)
    filterbank.check_implementation(implementation)
    window_size, stride = _frame_sizes(n_filters, sample_rate, window_len,
                                       window_stride)
    regularizer = keras.regularizers.get(regularizer_fn)
    preemp_conv, preemp_init = self._preemphasis(preemp, preemp_init,
                                                 learn_filters, regularizer)
    conv = keras.layers.Conv1D(
        filters=2 * n_filters, kernel_size=window_size, strides=1,
        padding='same', use_bias=False,
        kernel_initializer=initializers.GaborInit(
            sample_rate=sample_rate, min_freq=60.,
            max_freq=default_max_freq(sample_rate)),
        kernel_regularizer=regularizer if learn_filters else None,
        name='tfbanks_complex_conv', trainable=learn_filters)
    pooling_layer = pooling.LearnablePooling1D(
        kernel_size=window_size, strides=stride, padding='same',
        use_bias=False,
        kernel_initializer=initializers.LowpassInit(
            sample_rate=sample_rate, window_len=window_len,
            window_type=utils.WindowType.SQUARED_HANNING),
        kernel_regularizer=regularizer if learn_pooling else None,
        trainable=learn_pooling)
    self._assemble(
        dict(learn_pooling=learn_pooling, learn_filters=learn_filters,
             n_filters=n_filters, sample_rate=sample_rate,
             window_len=window_len, window_stride=window_stride,
             preemp=preemp, preemp_init=preemp_init,
             regularizer_fn=regularizer, mean_var_norm=mean_var_norm,
             spec_augment=spec_augment, implementation=implementation),
        window_size=window_size, stride=stride, conv=conv,
        activation=SquaredModulus(), pooling_layer=pooling_layer,
        compression=log_compression, preemp_conv=preemp_conv,
        mean_var_norm=mean_var_norm, spec_augment=spec_augment,
        implementation=implementation)

  def compute_output_shape(self, input_shape):
    frames = None
    if input_shape[1] is not None:
      frames = max((input_shape[1] - self.window_size) // self.stride + 1, 0)
    return (input_shape[0], frames, self.n_filters)


class _SincFrontend(LearnableFrontend):
  """SincNet's parts: sinc filters, LeakyReLU(0.2), then the pooling and
  compression each variant gives (see `SincNet` and `SincNetPlus`)."""

  def _assemble_sinc(self, args, pooling_layer, compression, preemp_init,
                     regularizer):
    window_size, stride = _frame_sizes(
        args['n_filters'], args['sample_rate'], args['window_len'],
        args['window_stride'])
    learn_filters = args['learn_filters']
    preemp_conv, preemp_init = self._preemphasis(
        args['preemp'], preemp_init, learn_filters, regularizer)
    conv = convolution.SincConv1D(
        filters=2 * args['n_filters'], kernel_size=window_size, strides=1,
        padding='same', use_bias=False,
        kernel_initializer=initializers.SincInit(
            sample_rate=args['sample_rate']),
        kernel_regularizer=regularizer if learn_filters else None,
        name='tfbanks_complex_conv', trainable=learn_filters,
        sample_rate=args['sample_rate'])
    self._assemble(
        dict(args, preemp_init=preemp_init, regularizer_fn=regularizer),
        window_size=window_size, stride=stride, conv=conv,
        activation=keras.layers.LeakyReLU(negative_slope=0.2),
        pooling_layer=pooling_layer(window_size, stride),
        compression=compression, preemp_conv=preemp_conv,
        mean_var_norm=args['mean_var_norm'],
        spec_augment=args['spec_augment'],
        implementation=args['implementation'])


@utils.register
class SincNet(_SincFrontend):
  """SincNet (Ravanelli & Bengio, 2018).

  Hamming-windowed sinc band-pass filters with learnable cutoffs (mel-spaced
  at initialization, `SincInit`), LeakyReLU(0.2), max pooling (window W,
  stride s, 'same'), layer normalization.

  Args:
    learn_pooling: accepted as by `Leaf`; max pooling has no weights.
    learn_filters: whether the cutoffs (and the pre-emphasis) are learned.
    n_filters: number of output channels.
    sample_rate: sampling rate, in Hz.
    window_len: filter and pooling window length, in ms.
    window_stride: hop between frames, in ms.
    preemp: whether to apply a learnable pre-emphasis first.
    preemp_init: its initializer (default `PreempInit()`).
    pooling_init: accepted as by `Leaf`; max pooling has no weights.
    regularizer_fn: optional regularizer of the learned filters.
    mean_var_norm: whether to normalize each channel over time.
    spec_augment: whether to apply SpecAugment in training.
    implementation: 'conv' or 'fast'; the same exact computation either
      way (sinc filters and LeakyReLU have no banded form): on TensorFlow
      by FFT (`filterbank.engines.SincEnergies`), elsewhere by the direct
      convolution.
    name: layer name.

  Call arguments and outputs: as `Leaf`.
  """

  def __init__(self, learn_pooling=True, learn_filters=True, n_filters=40,
               sample_rate=16000, window_len=25., window_stride=10.,
               preemp=False, preemp_init=None, pooling_init=None,
               regularizer_fn=None, mean_var_norm=False, spec_augment=False,
               implementation='conv', name='sincnet', **kwargs):
    super().__init__(name=name, **kwargs)
    filterbank.check_implementation(implementation)
    pooling_init = keras.initializers.get(
        pooling_init or keras.initializers.Constant(0.4))
    self._assemble_sinc(
        dict(learn_pooling=learn_pooling, learn_filters=learn_filters,
             n_filters=n_filters, sample_rate=sample_rate,
             window_len=window_len, window_stride=window_stride,
             preemp=preemp, pooling_init=pooling_init,
             mean_var_norm=mean_var_norm, spec_augment=spec_augment,
             implementation=implementation),
        lambda size, stride: pooling.MaxPooling1D(
            kernel_size=size, strides=stride, padding='same'),
        keras.layers.LayerNormalization(), preemp_init,
        keras.regularizers.get(regularizer_fn))


@utils.register
class SincNetPlus(_SincFrontend):
  """SincNet+: SincNet with Gaussian lowpass pooling and PCEN.

  PCEN starts at alpha 0.96, s 0.04, delta 2, root 2, floor 1e-6 (the
  original's outputs at initialization) and learns all its parameters per
  channel, as counted in Table 4 of the paper (448 parameters at 64 filters).

  Args:
    learn_pooling: whether the pooling widths are learned (from 0.4).
    learn_filters: whether the cutoffs (and the pre-emphasis) are learned.
    n_filters: number of output channels.
    sample_rate: sampling rate, in Hz.
    window_len: filter and pooling window length, in ms.
    window_stride: hop between frames, in ms.
    preemp: whether to apply a learnable pre-emphasis first.
    preemp_init: its initializer (default `PreempInit()`).
    regularizer_fn: optional regularizer of the learned filters and pooling.
    mean_var_norm: whether to normalize each channel over time.
    spec_augment: whether to apply SpecAugment in training.
    implementation: 'conv' or 'fast'; the same exact computation either
      way (sinc filters and LeakyReLU have no banded form): on TensorFlow
      by FFT (`filterbank.engines.SincEnergies`), elsewhere by the direct
      convolution.
    name: layer name.

  Call arguments and outputs: as `Leaf`.
  """

  def __init__(self, learn_pooling=True, learn_filters=True, n_filters=40,
               sample_rate=16000, window_len=25., window_stride=10.,
               preemp=False, preemp_init=None, regularizer_fn=None,
               mean_var_norm=False, spec_augment=False,
               implementation='conv', name='sincnet_plus', **kwargs):
    super().__init__(name=name, **kwargs)
    filterbank.check_implementation(implementation)
    regularizer = keras.regularizers.get(regularizer_fn)
    self._assemble_sinc(
        dict(learn_pooling=learn_pooling, learn_filters=learn_filters,
             n_filters=n_filters, sample_rate=sample_rate,
             window_len=window_len, window_stride=window_stride,
             preemp=preemp, mean_var_norm=mean_var_norm,
             spec_augment=spec_augment, implementation=implementation),
        lambda size, stride: pooling.GaussianLowpass(
            kernel_size=size, strides=stride, padding='same',
            use_bias=False,
            kernel_initializer=keras.initializers.Constant(0.4),
            kernel_regularizer=regularizer if learn_pooling else None,
            trainable=learn_pooling),
        postprocessing.PCENLayer(
            alpha=0.96, smooth_coef=0.04, delta=2.0, root=2.0, floor=1e-6,
            trainable=True, learn_smooth_coef=True,
            per_channel_smooth_coef=True),
        preemp_init, regularizer)


@utils.register
class MelFilterbanks(keras.layers.Layer):
  """Log-compressed mel-filterbanks, the baseline frontend.

  STFT (the Hann window of `tf.signal.stft`, of W = sample_rate *
  window_len / 1000 + 1 samples, zero-padded at the end, FFT of n_fft
  points), power spectrum,
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
    _check_types(n_filters=n_filters, sample_rate=sample_rate, n_fft=n_fft,
                 window_len=window_len, window_stride=window_stride,
                 min_freq=min_freq,
                 **({} if max_freq is None else {'max_freq': max_freq}))
    self.n_filters = n_filters
    self.sample_rate = sample_rate
    self.n_fft = n_fft
    self.window_len = window_len
    self.window_stride = window_stride
    self.min_freq = min_freq
    self.max_freq = max_freq if max_freq else sample_rate / 2.
    self.compression_fn = compression_fn
    self.window_size = utils.window_samples(sample_rate, window_len)
    self.stride = utils.hop_samples(sample_rate, window_stride)
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
    # The STFT and the log run in float32 (check_waveform casts); the
    # features follow the dtype policy (float16 under mixed_float16), as the
    # other frontends' do.
    waveform = check_waveform(inputs, self.name)
    mel_energies = ops.matmul(self._power_spectrogram(waveform),
                              self.mel_matrix)
    if self.compression_fn is not None:
      mel_energies = self.compression_fn(mel_energies)
    return ops.cast(mel_energies, self.compute_dtype)

  def _power_spectrogram(self, waveform):
    """|STFT|^2, [batch, frames, n_fft // 2 + 1].

    Frame k is samples k s .. k s + W - 1 times the periodic Hann window,
    zero-padded to n_fft points; the clip is zero-padded at the end so that
    there are ceil(T / s) frames. On TensorFlow, `tf.signal.stft` (any
    length, known or not when traced); elsewhere `keras.ops.stft` with that
    window zero-padded to n_fft taps, which frames the same samples.
    """
    if keras.backend.backend() == 'tensorflow':
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      # The RFFT kernel fails on an empty batch: answer [0, frames, bins].
      frames = -(-tf.shape(waveform)[1] // self.stride)
      return tf.cond(
          tf.shape(waveform)[0] > 0,
          lambda: tf.math.square(tf.math.abs(tf.signal.stft(
              waveform, frame_length=self.window_size,
              frame_step=self.stride, fft_length=self.n_fft, pad_end=True))),
          lambda: tf.zeros(tf.stack([0, frames, self.n_fft // 2 + 1]),
                           waveform.dtype))
    return self.power_spectrogram_with_ops(waveform)

  def power_spectrogram_with_ops(self, waveform):
    """`_power_spectrogram` with `keras.ops` only (any backend), for clips
    of a length known when traced: [batch, time] -> [batch, frames, bins]."""
    length = waveform.shape[1]
    frames = -(-length // self.stride)
    padding = (frames - 1) * self.stride + self.n_fft - length
    waveform = ops.pad(waveform, [[0, 0], [0, padding]])
    real, imag = ops.stft(waveform, self.n_fft, self.stride, self.n_fft,
                          window=self._padded_window, center=False)
    return ops.square(real) + ops.square(imag)

  @property
  def _padded_window(self):
    """The Hann window of `tf.signal.stft`, zero-padded to n_fft taps.

    `tf.signal.hann_window(W, periodic=True)`: 0.5 - 0.5 cos(2 pi n / D),
    n = 0 .. W - 1, with D = W for an even W but D = W - 1 (the symmetric
    window) for an odd W such as the 401 taps of 25 ms at 16 kHz.
    """
    size = self.window_size
    period = size if size % 2 == 0 else size - 1
    hann = (0.5 - 0.5 * np.cos(2. * np.pi * np.arange(size) / period)
            if size > 1 else np.ones(1))
    return np.pad(hann, (0, self.n_fft - self.window_size)).astype('float32')

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


@utils.register
class WaveGram(keras.layers.Layer):
  """PANN's Wavegram (Kong et al., 2019), a learnable frontend.

  Conv1D(64 filters, 11 taps, stride 5, no bias) -> BatchNorm -> ReLU, then
  three `PANNWavBlock`s (64, 128, 128 filters, pooling 4 each), then the 128
  channels are laid along a frequency axis of size 1 and a `PANNConvBlock`
  (64 filters, pooling (2, 1)) mixes them into 64 channels, which become the
  frequency axis of the output. The total hop is 5 * 4**3 * 2 = 640 samples
  (25 frames per second at 16 kHz), about 311k weights (309.6k trainable).

  The original release returned `[batch, frames, 64, 1]`; this returns
  `[batch, frames, 64]`, the frontend contract, so that it can be the
  `frontend` of an `AudioClassifier`. Built from `models.PANNWavBlock` and
  `models.PANNConvBlock`, the blocks of the PANN encoder. Every pooling uses 'same' padding, so
  frames = ceil(T / 640) for any T >= 1.

  Args:
    **kwargs: base layer arguments (name, dtype, trainable).

  Call arguments:
    inputs: float waveforms `[batch, T]` or `[batch, T, 1]`.
    training: whether batch normalization runs in training mode.

  Input shape: `[batch, T]` or `[batch, T, 1]`.
  Output shape: `[batch, ceil(T / 640), 64]`.

  Example:
    >>> WaveGram()(keras.ops.zeros((2, 16000))).shape
    TensorShape([2, 25, 64])
  """

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self._stem_conv = keras.layers.Conv1D(
        64, 11, strides=5, padding='same', use_bias=False, name='pre_conv0')
    self._stem_norm = keras.layers.BatchNormalization(name='pre_bn0')
    self._wav_blocks = [
        models.PANNWavBlock(filters, pool_size=4, name=f'pre_block{i + 1}')
        for i, filters in enumerate((64, 128, 128))
    ]
    self._last_block = models.PANNConvBlock(64, pool_size=(2, 1), name='pre_block4')

  def build(self, input_shape):
    check_waveform_shape(input_shape, 'WaveGram')
    shape = (input_shape[0], input_shape[1], 1)
    self._stem_conv.build(shape)
    shape = self._stem_conv.compute_output_shape(shape)
    self._stem_norm.build(shape)
    for block in self._wav_blocks:
      block.build(shape)
      shape = block.compute_output_shape(shape)
    self._last_block.build((shape[0], shape[1], 1, shape[2]))

  def call(self, inputs, training=None):
    outputs = ops.expand_dims(check_waveform(inputs, 'WaveGram'), -1)
    outputs = ops.relu(
        self._stem_norm(self._stem_conv(outputs), training=training))
    for block in self._wav_blocks:
      outputs = block(outputs, training=training)
    outputs = self._last_block(ops.expand_dims(outputs, 2), training=training)
    return ops.squeeze(outputs, axis=2)

  def compute_output_shape(self, input_shape):
    return _framed_shape(input_shape, 640, 64)
