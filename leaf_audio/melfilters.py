"""Mel filterbanks and the Gabor filters that approximate them."""

import gin
import numpy as np
import tensorflow as tf

from leaf_audio import gabor


def mel_weight_matrix(n_filters: int, n_fft: int, sample_rate: int,
                      min_freq: float, max_freq: float) -> np.ndarray:
  """Triangular mel filters on an FFT grid, float32 [n_fft // 2 + 1, n_filters].

  The filters of `tf.signal.linear_to_mel_weight_matrix` (HTK mel scale),
  computed eagerly even when called while a graph is being traced, so that
  initializers can run inside `tf.function`.
  """
  with tf.init_scope():
    return tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=n_filters, num_spectrogram_bins=n_fft // 2 + 1,
        sample_rate=sample_rate, lower_edge_hertz=min_freq,
        upper_edge_hertz=max_freq).numpy()


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
  def gabor_filters(self):
    """Complex Gabor filters scaled to the energies of the mel filters.

    Each filter is multiplied by `sqrt(area * 2 sqrt(pi) * sigma)`, so that its
    squared frequency response has the area of the mel filter it matches.

    Returns:
      A complex64 tensor of shape [n_filters, window_len].
    """
    params = self.gabor_params_from_mels
    scale = np.sqrt(self._areas(self.mel_filters) * 2. * np.sqrt(np.pi) *
                    params[:, 1:2]).astype(np.float32)
    filters = gabor.filters(params, size=self.window_len)
    return filters * tf.cast(scale, tf.complex64)
