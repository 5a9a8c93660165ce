"""The Gabor filter of LEAF (Eq. 4 of the paper): every formula of it.

A Gabor filter of centre frequency eta (radians per sample) and inverse
bandwidth sigma (samples) has the impulse response

  phi(t) = exp(i eta t) a(t),  a(t) = exp(-t^2 / (2 sigma^2)) / (sqrt(2 pi) sigma)

and, untruncated, the frequency response exp(-sigma^2 (omega - eta)^2 / 2).
LEAF truncates it to W taps, t = -(W // 2) .. (W + 1) // 2 - 1. This module
holds the parameter ranges (`sigma_range`, `constrain`; in Hz,
`bandwidth_range`, `fwhm_hz`, `sigma_from_fwhm`), the taps
(`tap_times`, `envelope`, `real_imag`, `impulse_response`, `filters`), the
frequency responses (`gaussian_response`, untruncated; `band_responses`, of
the W-tap filter over a band of FFT bins; `truncation`, how much the W taps
cut off) and the matching of mel filters (`params_from_mel_filters`). The
layers (`convolution.GaborConv1D`), the mel matching (`melfilters.Gabor`) and
the fused computations (`leaf_audio.filterbank`) all call it.

The tap formulas are written with `keras.ops` (any backend); the band
responses, which only the TensorFlow fast mode uses, with TensorFlow, which
is imported there only.
"""

import functools
import math

import keras
from keras import ops
import numpy as np

# sqrt(2 ln 2): sigma = SQRT_2_LN_2 / (pi FWHM) for an FWHM in cycles per
# sample.
SQRT_2_LN_2 = math.sqrt(2. * math.log(2.))


def sigma_range(kernel_size: int):
  """The inverse bandwidths LEAF allows (Section 3.1.2), in samples.

  [4 sqrt(2 ln 2) / pi, W sqrt(2 ln 2) / pi]: the full width at half maximum
  of the frequency response (`fwhm_hz`) stays within [1 / W, 1 / 4] of the
  sampling rate (`bandwidth_range`).

  Args:
    kernel_size: W, the number of taps.

  Returns:
    (lowest, highest) sigma, floats.
  """
  return 4. * SQRT_2_LN_2 / math.pi, kernel_size * SQRT_2_LN_2 / math.pi


def fwhm_hz(sigma, sample_rate: float):
  """Full width at half maximum of the frequency response, in Hz.

  |H(w)| = exp(-sigma^2 (w - eta)^2 / 2) halves at |w - eta| =
  sqrt(2 ln 2) / sigma rad/sample, so FWHM = sqrt(2 ln 2) sr / (pi sigma).
  NumPy or float in, same out.
  """
  return SQRT_2_LN_2 * sample_rate / (math.pi * sigma)


def sigma_from_fwhm(fwhm, sample_rate: float):
  """The sigma (samples) whose `fwhm_hz` is `fwhm` Hz (its own inverse)."""
  return fwhm_hz(fwhm, sample_rate)


def bandwidth_range(kernel_size: int, sample_rate: float):
  """`sigma_range` as FWHM in Hz: (narrowest, widest) = (sr / W, sr / 4)."""
  low, high = sigma_range(kernel_size)
  return fwhm_hz(high, sample_rate), fwhm_hz(low, sample_rate)


def constrain(kernel, kernel_size: int):
  """Gabor parameters clipped to their ranges: eta to [0, pi], sigma to
  `sigma_range(kernel_size)`.

  Args:
    kernel: [n, 2] (eta, sigma).
    kernel_size: W.

  Returns:
    [n, 2].
  """
  low, high = sigma_range(kernel_size)
  return ops.stack([ops.clip(kernel[:, 0], 0., math.pi),
                    ops.clip(kernel[:, 1], low, high)], axis=1)


def tap_times(size: int):
  """Sample times of the taps, t = -(size // 2) .. (size + 1) // 2 - 1,
  float32 [size]."""
  return ops.arange(-(size // 2), (size + 1) // 2, dtype='float32')


def peak(sigma):
  """The envelope's peak a(0) = 1 / (sqrt(2 pi) sigma)."""
  return 1. / (math.sqrt(2. * math.pi) * sigma)


def envelope(t, sigma, xp=ops):
  """The Gaussian envelope a(t) = exp(-t^2 / (2 sigma^2)) / (sqrt(2 pi) sigma),
  broadcast over t and sigma (`xp`: `keras.ops`, or np for NumPy arrays)."""
  return xp.exp(-xp.square(t) / (2. * xp.square(sigma))) / (
      math.sqrt(2. * math.pi) * sigma)


def real_imag(kernel, size: int = 401, xp=ops):
  """Real and imaginary parts of the W-tap Gabor filters.

  Args:
    kernel: [n, 2] (eta, sigma).
    size: W, the number of taps.
    xp: `keras.ops` for tensors (float32); np for NumPy arrays (float64),
      which stay concrete inside a traced function (initializers).

  Returns:
    (a(t) cos(eta t), a(t) sin(eta t)), [n, size] each.
  """
  if xp is np:
    kernel = np.asarray(kernel, np.float64)
    t = np.arange(-(size // 2), (size + 1) // 2, dtype=np.float64)[None, :]
  else:
    kernel = ops.convert_to_tensor(kernel, 'float32')
    t = tap_times(size)[None, :]
  amplitude = envelope(t, kernel[:, 1:2], xp)
  phase = kernel[:, 0:1] * t
  return amplitude * xp.cos(phase), amplitude * xp.sin(phase)


def impulse_response(t, eta, sigma):
  """phi(t) at arbitrary times: complex64 [n, len(t)].

  Args:
    t: [size] sample times.
    eta: [n] centre frequencies, radians per sample.
    sigma: [n] inverse bandwidths, samples.
  """
  t = ops.convert_to_tensor(t, 'float32')[None, :]
  eta = ops.convert_to_tensor(eta, 'float32')[:, None]
  amplitude = envelope(t, ops.convert_to_tensor(sigma, 'float32')[:, None])
  return complex_from_parts(amplitude * ops.cos(eta * t),
                            amplitude * ops.sin(eta * t))


def filters(kernel, size: int = 401):
  """The W-tap complex filters of parameters `kernel` [n, 2]: complex64
  [n, size]."""
  return complex_from_parts(*real_imag(kernel, size))


def complex_from_parts(real, imag):
  """real + i imag as complex64, on any backend (`keras.ops` has no complex
  constructor; TensorFlow's `tf.complex` is one op and differentiable)."""
  if keras.backend.backend() == 'tensorflow':
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.complex(ops.cast(real, 'float32'), ops.cast(imag, 'float32'))
  return ops.cast(real, 'complex64') + 1j * ops.cast(imag, 'complex64')


def gaussian_response(offset, sigma):
  """The untruncated filter's frequency response at `offset` = omega - eta
  radians per sample from its centre: exp(-(sigma offset)^2 / 2)."""
  return ops.exp(-0.5 * ops.square(sigma * offset))


def truncation(sigma, kernel_size: int, xp=np):
  """How much the W taps cut off each filter.

  Args:
    sigma: [n] inverse bandwidths.
    kernel_size: W.
    xp: np for NumPy arrays, tf for tensors.

  Returns:
    (relative, edge): the envelope at the last tap relative to its peak,
    exp(-(W // 2)^2 / (2 sigma^2)), and its value a(W // 2) there, which is
    about the height of the truncation's spectral sidelobes relative to the
    response's peak (1).
  """
  relative = xp.exp(-(kernel_size // 2)**2 / (2. * sigma**2))
  return relative, relative / (math.sqrt(2. * math.pi) * sigma)


@functools.lru_cache(maxsize=16)
def _cosine_sine_basis(half: int, n_fft: int, bins: int):
  """[2 half, bins] float32: cos(2 pi j tau / N) over sin(2 pi j tau / N).

  Rows tau = 1 .. half, columns j = 0 .. bins - 1; the phases are reduced
  modulo N in integers, so that they are exact whatever the product j tau.
  """
  phase = (np.arange(1, half + 1)[:, None] * np.arange(bins)[None, :]) % n_fft
  phase = phase * (2. * math.pi / n_fft)
  return np.concatenate([np.cos(phase), np.sin(phase)]).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _split_cosine_sine_bases(half: int, n_fft: int, rows: int, cols: int):
  """The phases 2 pi j tau / N of `_cosine_sine_basis` split as j = J q + r.

  Returns:
    cos and sin of 2 pi J q tau / N, [rows, half] each (q = 0 .. rows - 1,
    tau = 1 .. half, J = cols), and [2 half, cols]: cos(2 pi r tau / N) over
    sin(2 pi r tau / N), r = 0 .. cols - 1. Phases reduced modulo N in
    integers.
  """
  tau = np.arange(1, half + 1)
  outer = (np.arange(rows)[:, None] * cols * tau) % n_fft * (2. * math.pi /
                                                             n_fft)
  inner = (tau[:, None] * np.arange(cols)) % n_fft * (2. * math.pi / n_fft)
  return (np.cos(outer).astype(np.float32), np.sin(outer).astype(np.float32),
          np.concatenate([np.cos(inner), np.sin(inner)]).astype(np.float32))


# From this many bins on, `band_responses` splits its basis (see there).
_SPLIT_BASIS_BINS = 2048


def band_responses(kernel, first_bin, kernel_size: int, n_fft: int,
                   bins: int):
  """The W-tap filters' responses, demodulated, over a band of bins (odd W).

  The response of the truncated filter at bin nu of an N-point FFT,
  demodulated by eta, is H[nu] = A(2 pi nu / N - eta) with
  A(phi) = sum_tau a(tau) exp(i phi tau); for an odd W the envelope is
  symmetric (tau from -W // 2 to W // 2) and A is real:
  A(phi) = a(0) + 2 sum_{tau >= 1} a(tau) cos(phi tau). At the bins
  nu = first_bin + j, phi = 2 pi j / N + delta with
  delta = 2 pi first_bin / N - eta, so that by the angle-sum formula every
  channel's response is one product with the same constant basis
  (`_cosine_sine_basis`): far cheaper than an N-point transform per channel.

  For many bins that basis is large (5.2 MB for 200 taps x 3328 bins), and
  reading it from memory costs more than the product when the caches are
  cold (after other work). There the bins are split as j = J q + r and the
  angle-sum formula applied once more: the coefficients are rotated by each
  row's phase 2 pi J q tau / N (element-wise, [n, rows, W // 2]), then one
  product with the [W - 1, J] basis of the phases 2 pi r tau / N gives the
  [n, rows, J] responses. Same arithmetic, constants of ~180 KB: measured on
  2 CPU cores for 1 channel x 3328 bins, 209 against 238 us (warm caches)
  and 402 against 503 us (cold).

  Args:
    kernel: [n, 2] Gabor parameters (eta, sigma), constrained.
    first_bin: [n] int, each channel's first bin (any integer: the response
      is N-periodic in it).
    kernel_size: W, odd.
    n_fft: N.
    bins: how many bins from each first bin.

  Returns:
    [n, bins] float32.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if kernel_size % 2 != 1:
    raise ValueError(f'band_responses needs an odd number of taps, got '
                     f'{kernel_size}.')
  half = kernel_size // 2
  eta, sigma = kernel[:, 0:1], kernel[:, 1:2]
  tau = np.arange(1, half + 1, dtype=np.float32)[None, :]
  top = peak(sigma)  # a(0), [n, 1]
  amplitude = envelope(tau, sigma)  # [n, half]
  # delta as (first bin - centre bin, wrapped to [-N / 2, N / 2) in
  # integers) + (centre bin - eta), both small: float32 keeps the phases
  # delta tau accurate whatever first_bin is.
  centre = tf.stop_gradient(
      tf.cast(tf.round(eta[:, 0] * (n_fft / (2. * math.pi))), tf.int32))
  offset = tf.math.floormod(first_bin - centre + n_fft // 2,
                            n_fft) - n_fft // 2
  delta = (tf.cast(offset, tf.float32)[:, None] * (2. * math.pi / n_fft) +
           (tf.cast(centre, tf.float32)[:, None] * (2. * math.pi / n_fft) -
            eta))
  cosines = 2. * amplitude * tf.cos(delta * tau)  # [n, half]
  sines = -2. * amplitude * tf.sin(delta * tau)
  if bins < _SPLIT_BASIS_BINS:
    return top + tf.matmul(tf.concat([cosines, sines], axis=1),
                            _cosine_sine_basis(half, n_fft, bins))
  cols = math.ceil(math.sqrt(bins))
  rows = -(-bins // cols)
  cos_rows, sin_rows, basis = _split_cosine_sine_bases(half, n_fft, rows,
                                                       cols)
  cosines, sines = cosines[:, None, :], sines[:, None, :]
  # c cos(a + b) + s sin(a + b) = (c cos a + s sin a) cos b
  #                             + (s cos a - c sin a) sin b.
  rotated = tf.concat([cosines * cos_rows + sines * sin_rows,
                       sines * cos_rows - cosines * sin_rows], axis=2)
  responses = tf.matmul(rotated, basis)  # [n, rows, cols]
  return top + tf.reshape(responses, [-1, rows * cols])[:, :bins]


def params_from_mel_filters(mel_filters, n_fft: int):
  """Gabor parameters matching mel filters on an FFT grid (Section 3.1.2).

  For each filter, eta is the bin where the square root of the filter peaks
  and sigma follows from the full width at half maximum (FWHM, in bins,
  counted at or above half the peak) of that square root:
  `eta = center_bin 2 pi / n_fft`, `sigma = sqrt(2 ln 2) n_fft / (pi FWHM)`.

  Args:
    mel_filters: [n, n_fft // 2 + 1] NumPy array.
    n_fft: the FFT size of the grid.

  Returns:
    float32 [n, 2] (eta, sigma).
  """
  sqrt_filters = np.sqrt(mel_filters)
  center_bins = np.argmax(sqrt_filters, axis=1).astype(np.float32)
  half_peaks = sqrt_filters.max(axis=1, keepdims=True) / 2.
  fwhms = (sqrt_filters >= half_peaks).sum(axis=1).astype(np.float32)
  center_freqs = center_bins * 2. * np.pi / n_fft
  sigmas = np.sqrt(2. * np.log(2.)) * n_fft / (np.pi * fwhms)
  return np.stack([center_freqs, sigmas], axis=1).astype(np.float32)
