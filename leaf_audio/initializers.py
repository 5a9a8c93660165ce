"""Keras initializers for the layers of the learnable frontends."""

import gin
import keras
import numpy as np

from leaf_audio import gabor
from leaf_audio import melfilters
from leaf_audio import utils

gin.external_configurable(keras.initializers.Constant,
                          module='tf.keras.initializers')


@utils.register
class PreempInit(keras.initializers.Initializer):
  """Initializes a 2-tap pre-emphasis filter, `y[n] = x[n] - alpha x[n-1]`.

  Args:
    alpha: pre-emphasis coefficient, in (0, 1); larger boosts high frequencies
      more.

  Example:
    >>> PreempInit()((2, 1, 1))[:, 0, 0]  # [-0.97, 1.]
  """

  def __init__(self, alpha: float = 0.97):
    self.alpha = alpha

  def __call__(self, shape, dtype=None):
    if tuple(shape) != (2, 1, 1):
      raise ValueError(
          f'PreempInit initializes a kernel of shape (2, 1, 1), got {shape}.')
    kernel = np.array([-self.alpha, 1.], dtype=np.float32).reshape(shape)
    return keras.ops.convert_to_tensor(kernel, dtype=dtype or 'float32')

  def get_config(self):
    return {'alpha': self.alpha}


@utils.register
class GaborInit(keras.initializers.Initializer):
  """Initializes Gabor filters that match a mel filterbank.

  For a kernel of shape [n_filters, 2] (a `GaborConv1D`), returns the Gabor
  parameters (center frequency in radians per sample, sigma in samples) of
  `melfilters.Gabor`. For a kernel of shape [window_len, 1, 2 * n_filters] (a
  plain `Conv1D`, as in TD-filterbanks), returns the filters themselves, with
  real and imaginary parts interleaved along the last axis.

  Args:
    **kwargs: arguments of `melfilters.Gabor` (e.g. `sample_rate`, `min_freq`,
      `max_freq`, `n_fft`); `n_filters` and `window_len` are taken from the
      shape.

  Example:
    >>> GaborInit(min_freq=60., max_freq=7800.)((40, 2)).shape
    TensorShape([40, 2])
  """

  def __init__(self, **kwargs):
    kwargs.pop('n_filters', None)
    kwargs.pop('window_len', None)
    self._kwargs = kwargs

  def __call__(self, shape, dtype=None):
    dtype = dtype or 'float32'
    if len(shape) == 2:
      if shape[1] != 2:
        raise ValueError(
            f'GaborInit expects a [n_filters, 2] kernel, got shape {shape}.')
      mel_gabor = melfilters.Gabor(n_filters=shape[0], **self._kwargs)
      return keras.ops.convert_to_tensor(mel_gabor.gabor_params_from_mels,
                                         dtype)
    if len(shape) != 3 or shape[1] != 1 or shape[2] % 2:
      raise ValueError(
          'GaborInit expects a [n_filters, 2] or a [window_len, 1, '
          f'2 * n_filters] kernel, got shape {shape}.')
    mel_gabor = melfilters.Gabor(n_filters=shape[2] // 2,
                                 window_len=shape[0], **self._kwargs)
    # NumPy parts: a layer first built inside a traced function (`fit` on an
    # unbuilt model) calls this in a graph, where backend ops are symbolic.
    real, imag = mel_gabor.gabor_filter_parts  # [n, W] each
    interleaved = np.stack([real, imag], axis=1)
    interleaved = interleaved.reshape(shape[2], shape[0])  # re0, im0, re1, ..
    kernel = interleaved.T[:, None, :]
    return keras.ops.convert_to_tensor(kernel.astype(np.float32), dtype)

  def get_config(self):
    return dict(self._kwargs)


@utils.register
class SincInit(keras.initializers.Initializer):
  """Initializes sinc band-pass filters with mel-spaced edges.

  The band edges are evenly spaced on the mel scale from `min_low_hz` to
  `sample_rate / 2 - (min_low_hz + min_band_hz)`. The kernel's column 0 is
  each filter's lower edge in Hz, column 1 its width in Hz.

  Args:
    sample_rate: sampling rate, in Hz.
    min_low_hz: lowest lower cutoff frequency, in Hz.
    min_band_hz: smallest band width, in Hz.
  """

  def __init__(self, sample_rate: int = 16000, min_low_hz: float = 50.,
               min_band_hz: float = 50.):
    self._sample_rate = sample_rate
    self._min_low_hz = min_low_hz
    self._min_band_hz = min_band_hz

  def __call__(self, shape, dtype=None):
    if len(shape) != 2 or shape[1] != 2:
      raise ValueError(
          f'SincInit expects a [n_filters, 2] kernel, got shape {shape}.')
    high_hz = 0.5 * self._sample_rate - (self._min_low_hz + self._min_band_hz)
    edges_mel = np.linspace(utils.hz2mel(self._min_low_hz),
                            utils.hz2mel(high_hz), shape[0] + 1)
    edges_hz = utils.mel2hz(edges_mel)
    kernel = np.stack([edges_hz[:-1], np.diff(edges_hz)], axis=1)
    return keras.ops.convert_to_tensor(kernel.astype(np.float32),
                                       dtype or 'float32')

  def get_config(self):
    return {'sample_rate': self._sample_rate, 'min_low_hz': self._min_low_hz,
            'min_band_hz': self._min_band_hz}


@utils.register
class LowpassInit(keras.initializers.Initializer):
  """Initializes a pooling kernel with a fixed window in every channel.

  Args:
    sample_rate: sampling rate, in Hz.
    window_len: window length in ms; the window has
      `int(sample_rate * window_len // 1000 + 1)` taps.
    window_type: a `utils.WindowType` (or its name).

  The kernel may be [taps, 1, channels] or [1, taps, channels, 1].
  """

  def __init__(self, sample_rate: int = 16000, window_len: float = 25.,
               window_type=utils.WindowType.SQUARED_HANNING):
    if isinstance(window_type, str):
      window_type = utils.WindowType[window_type]
    self.sample_rate = sample_rate
    self.window_len = window_len
    self.window_type = window_type

  def __call__(self, shape, dtype=None):
    taps = utils.window_samples(self.sample_rate, self.window_len)
    lowpass = utils.window(self.window_type, taps).astype(np.float32)
    if len(shape) == 3 and shape[0] == taps and shape[1] == 1:
      kernel = np.tile(lowpass[:, None, None], (1, 1, shape[2]))
    elif len(shape) == 4 and shape[0] == 1 and shape[1] == taps and (
        shape[3] == 1):
      kernel = np.tile(lowpass[None, :, None, None], (1, 1, shape[2], 1))
    else:
      raise ValueError(
          f'LowpassInit expects a [{taps}, 1, channels] or [1, {taps}, '
          f'channels, 1] kernel, got shape {shape}.')
    return keras.ops.convert_to_tensor(kernel, dtype or 'float32')

  def get_config(self):
    return {'sample_rate': self.sample_rate, 'window_len': self.window_len,
            'window_type': self.window_type.name}


def _check_seed(seed):
  if seed is not None and (not isinstance(seed, (int, np.integer)) or
                           isinstance(seed, bool) or seed < 0):
    raise ValueError(f'seed must be None or an int >= 0, got {seed!r}.')


@utils.register
class RandomGaborInit(keras.initializers.Initializer):
  """Initializes Gabor filters at random (the random init of Yadav &
  Zeghidour, 2022), for a `GaborConv1D` kernel [n_filters, 2].

  Each filter draws, independently:
  - its center frequency f ~ Uniform(min_freq, max_freq) in Hz, stored as
    eta = 2 pi f / sample_rate (radians per sample, column 0);
  - its bandwidth, the full width at half maximum of its frequency response,
    B ~ Uniform(min_bandwidth, max_bandwidth) in Hz, stored as
    sigma = sqrt(2 ln 2) sample_rate / (pi B) (samples, column 1;
    `gabor.sigma_from_fwhm`).
  By default the bandwidths span `gabor.bandwidth_range(kernel_size,
  sample_rate)`, the FWHM of `gabor.sigma_range`, which
  `convolution.GaborConstraint` clips to: B in [sample_rate / kernel_size,
  sample_rate / 4], so the constraint leaves every drawn filter as it is.

  Args:
    sample_rate: sampling rate, in Hz.
    min_freq: lowest center frequency, in Hz.
    max_freq: highest center frequency, in Hz (at most sample_rate / 2).
    kernel_size: taps of the filters (401 for 25 ms at 16 kHz); sets the
      default bandwidth range.
    min_bandwidth: narrowest FWHM in Hz (None: the narrowest of
      `gabor.bandwidth_range`, sample_rate / kernel_size).
    max_bandwidth: widest FWHM in Hz (None: its widest, sample_rate / 4).
    seed: None for new draws at every call; an int for the same draws at
      every call.

  Example:
    >>> RandomGaborInit(seed=0)((40, 2)).shape
    TensorShape([40, 2])
  """

  def __init__(self, sample_rate: int = 16000, min_freq: float = 60.,
               max_freq: float = 7800., kernel_size: int = 401,
               min_bandwidth=None, max_bandwidth=None, seed=None):
    _check_seed(seed)
    if not 0. <= min_freq < max_freq <= sample_rate / 2.:
      raise ValueError(
          'RandomGaborInit needs 0 <= min_freq < max_freq <= sample_rate / 2, '
          f'got min_freq={min_freq}, max_freq={max_freq}, '
          f'sample_rate={sample_rate}.')
    if kernel_size < 4:
      raise ValueError(f'kernel_size must be >= 4 taps, got {kernel_size}.')
    narrowest, widest = gabor.bandwidth_range(kernel_size, sample_rate)
    low = narrowest if min_bandwidth is None else min_bandwidth
    high = widest if max_bandwidth is None else max_bandwidth
    # A relative margin: sigma -> FWHM -> sigma round trips in floating point.
    tolerance = 1e-9 * widest
    if not narrowest - tolerance <= low <= high <= widest + tolerance:
      raise ValueError(
          'RandomGaborInit bandwidths must lie within GaborConstraint\'s range '
          f'gabor.bandwidth_range({kernel_size}, {sample_rate}) = '
          f'[{narrowest:g}, {widest:g}] Hz, with min_bandwidth <= '
          f'max_bandwidth; got [{low}, {high}].')
    self.sample_rate = sample_rate
    self.min_freq = min_freq
    self.max_freq = max_freq
    self.kernel_size = kernel_size
    self.min_bandwidth = min_bandwidth
    self.max_bandwidth = max_bandwidth
    self.seed = seed
    self._bandwidth_range = (float(low), float(high))

  def __call__(self, shape, dtype=None):
    if len(shape) != 2 or shape[1] != 2:
      raise ValueError('RandomGaborInit expects a [n_filters, 2] kernel (a '
                       f'GaborConv1D), got shape {shape}.')
    rng = np.random.default_rng(self.seed)
    freqs = rng.uniform(self.min_freq, self.max_freq, shape[0])
    bandwidths = rng.uniform(*self._bandwidth_range, shape[0])
    kernel = np.stack([
        2. * np.pi * freqs / self.sample_rate,
        gabor.sigma_from_fwhm(bandwidths, self.sample_rate)
    ], axis=1)
    return keras.ops.convert_to_tensor(kernel.astype(np.float32),
                                       dtype or 'float32')

  def get_config(self):
    return {'sample_rate': self.sample_rate, 'min_freq': self.min_freq,
            'max_freq': self.max_freq, 'kernel_size': self.kernel_size,
            'min_bandwidth': self.min_bandwidth,
            'max_bandwidth': self.max_bandwidth, 'seed': self.seed}


@utils.register
class RandomSincInit(keras.initializers.Initializer):
  """Initializes sinc band-pass filters with random cut-off frequencies,
  for a `SincConv1D` kernel [n_filters, 2].

  Each filter draws two frequencies u1, u2 ~ Uniform(min_low_hz,
  sample_rate / 2 - min_band_hz), independently; its cut-offs are
  low = min(u1, u2) and high = max(u1, u2) + min_band_hz, so every band is
  at least min_band_hz wide and below the Nyquist frequency. The kernel
  holds what `SincConv1D` adds to its minima: column 0 = low - min_low_hz,
  column 1 = high - low - min_band_hz (both >= 0).

  Args:
    sample_rate: sampling rate, in Hz.
    min_low_hz: lowest lower cut-off, in Hz (as `SincConv1D.min_low_hz`).
    min_band_hz: narrowest band, in Hz (as `SincConv1D.min_band_hz`).
    seed: None for new draws at every call; an int for the same draws at
      every call.
  """

  def __init__(self, sample_rate: int = 16000, min_low_hz: float = 50.,
               min_band_hz: float = 50., seed=None):
    _check_seed(seed)
    if not 0. <= min_low_hz < sample_rate / 2. - min_band_hz or min_band_hz < 0:
      raise ValueError(
          'RandomSincInit needs 0 <= min_low_hz < sample_rate / 2 - '
          f'min_band_hz and min_band_hz >= 0, got min_low_hz={min_low_hz}, '
          f'min_band_hz={min_band_hz}, sample_rate={sample_rate}.')
    self.sample_rate = sample_rate
    self.min_low_hz = min_low_hz
    self.min_band_hz = min_band_hz
    self.seed = seed

  def __call__(self, shape, dtype=None):
    if len(shape) != 2 or shape[1] != 2:
      raise ValueError('RandomSincInit expects a [n_filters, 2] kernel (a '
                       f'SincConv1D), got shape {shape}.')
    rng = np.random.default_rng(self.seed)
    draws = rng.uniform(self.min_low_hz,
                        self.sample_rate / 2. - self.min_band_hz,
                        (shape[0], 2))
    low, high = draws.min(axis=1), draws.max(axis=1) + self.min_band_hz
    kernel = np.stack([low - self.min_low_hz,
                       high - low - self.min_band_hz], axis=1)
    return keras.ops.convert_to_tensor(kernel.astype(np.float32),
                                       dtype or 'float32')

  def get_config(self):
    return {'sample_rate': self.sample_rate, 'min_low_hz': self.min_low_hz,
            'min_band_hz': self.min_band_hz, 'seed': self.seed}
