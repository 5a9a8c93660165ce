"""Mel filterbanks and the Gabor filters that approximate them."""

import gin
from keras import ops
import numpy as np

from leaf_audio import gabor


def mel_weight_matrix(n_filters: int, n_fft: int, sample_rate: int,
                      min_freq: float, max_freq: float) -> np.ndarray:
  """Triangular mel filters on an FFT grid, float32 [n_fft // 2 + 1, n_filters].

  On the HTK mel scale m(f) = 1127 ln(1 + f / 700): n_filters + 2 edges
  evenly spaced in mel from m(min_freq) to m(max_freq); filter j rises
  linearly (in mel) from edge j to 1 at edge j + 1 and falls to 0 at edge
  j + 2, sampled at the frequencies of the FFT bins (0 .. sample_rate / 2);
  the DC bin gets no weight. In float32 and in the order of
  `tf.signal.linear_to_mel_weight_matrix`, which it reproduces (within 1e-5)
  in NumPy, so that it needs no TensorFlow and can run while any backend
  traces a function.
  """
  f32 = np.float32
  hz_to_mel = lambda hz: f32(1127.) * np.log1p(np.asarray(hz, f32) / f32(700.))
  bin_hz = np.linspace(0., sample_rate / 2., n_fft // 2 + 1, dtype=f32)[1:]
  bin_mel = hz_to_mel(bin_hz)[:, None]
  edges = np.linspace(hz_to_mel(min_freq), hz_to_mel(max_freq),
                      n_filters + 2, dtype=f32)
  lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
  rising = (bin_mel - lower) / (center - lower)
  falling = (upper - bin_mel) / (upper - center)
  weights = np.maximum(f32(0.), np.minimum(rising, falling))
  return np.pad(weights, [[1, 0], [0, 0]]).astype(f32)


@gin.configurable
class Gabor:
  """Gabor filters matched to a mel filterbank (Section 3.1.2).

  The mel filterbank is discretized on an `n_fft`-point FFT grid. For each
  filter, the center frequency of the matching Gabor filter is the bin where
  the square root of the filter peaks, and its inverse bandwidth follows from
  the full width at half maximum (FWHM, in bins) of that square root:
  `eta = center_bin * 2 pi / n_fft`,
  `sigma = sqrt(2 ln 2) * n_fft / (pi * FWHM)`
  (`gabor.params_from_mel_filters`).

  Args:
    n_filters: number of filters.
    min_freq: lowest frequency of the mel filterbank, in Hz.
    max_freq: highest frequency of the mel filterbank, in Hz.
    sample_rate: sampling rate, in Hz.
    window_len: length of the Gabor filters, in samples.
    n_fft: size of the FFT grid the mel filters are discretized on.
    normalize_energy: whether to divide each mel filter by its area, so that
      all filters have the same energy.

  Example:
    >>> params = Gabor(min_freq=60., max_freq=7800.).gabor_params_from_mels
    >>> params.shape
    (40, 2)
  """

  def __init__(self, n_filters: int = 40, min_freq: float = 0.,
               max_freq: float = 8000., sample_rate: int = 16000,
               window_len: int = 401, n_fft: int = 512,
               normalize_energy: bool = False):
    if n_filters < 1:
      raise ValueError(f'n_filters must be positive, got {n_filters}.')
    if not 0. <= min_freq < max_freq <= sample_rate / 2.:
      raise ValueError(
          'Expected 0 <= min_freq < max_freq <= sample_rate / 2, got '
          f'min_freq={min_freq}, max_freq={max_freq}, '
          f'sample_rate={sample_rate}.')
    self.n_filters = n_filters
    self.min_freq = min_freq
    self.max_freq = max_freq
    self.sample_rate = sample_rate
    self.window_len = int(window_len)
    self.n_fft = n_fft
    self.normalize_energy = normalize_energy

  def _areas(self, filters: np.ndarray) -> np.ndarray:
    """Area of each filter of [n_filters, bins], as peak x support width.

    The support width counts the nonzero bins plus the two zero ends of the
    triangle, in radians. Returns a [n_filters, 1] column.
    """
    peaks = filters.max(axis=1, keepdims=True)
    support = (filters > 0).sum(axis=1, keepdims=True).astype(np.float32)
    return peaks * (support + 2.) * np.float32(np.pi / self.n_fft)

  @property
  def mel_filters(self) -> np.ndarray:
    """The mel filterbank, float32 [n_filters, n_fft // 2 + 1]."""
    filters = mel_weight_matrix(self.n_filters, self.n_fft, self.sample_rate,
                                self.min_freq, self.max_freq).T
    if self.normalize_energy:
      filters = filters / self._areas(filters)
    return filters.astype(np.float32)

  @property
  def gabor_params_from_mels(self) -> np.ndarray:
    """Gabor parameters, float32 [n_filters, 2]: (eta, sigma) per filter."""
    return gabor.params_from_mel_filters(self.mel_filters, self.n_fft)

  @property
  def gabor_filter_parts(self):
    """Real and imaginary parts of the Gabor filters, scaled to the energies
    of the mel filters.

    Each filter is multiplied by `sqrt(area * 2 sqrt(pi) * sigma)`, so that its
    squared frequency response has the area of the mel filter it matches.
    Computed in NumPy (float64, returned as float32), so that an initializer
    called inside a traced function gets concrete values.

    Returns:
      (real, imag), float32 NumPy arrays of shape [n_filters, window_len].
    """
    params = self.gabor_params_from_mels.astype(np.float64)
    scale = np.sqrt(self._areas(self.mel_filters) * 2. * np.sqrt(np.pi) *
                    params[:, 1:2])
    real, imag = gabor.real_imag(params, self.window_len, xp=np)
    return (real * scale).astype(np.float32), (imag * scale).astype(np.float32)

  @property
  def gabor_filters(self):
    """`gabor_filter_parts` as one complex64 tensor [n_filters, window_len].
    """
    real, imag = self.gabor_filter_parts
    return gabor.complex_from_parts(ops.convert_to_tensor(real),
                                    ops.convert_to_tensor(imag))
