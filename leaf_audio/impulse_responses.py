"""Impulse responses of the parametric filters used by the frontends.

Everything here is a pure function of the filter parameters, written with
`keras.ops` so that gradients flow to the parameters. The Gabor filter's
formulas are those of `leaf_audio.gabor`.
"""

import math

from keras import ops

from leaf_audio import gabor


def gabor_impulse_response(t, center, fwhm):
  """Complex Gabor impulse responses at times `t` (Eq. 4 of the paper).

  Args:
    t: [size] float tensor of sample times.
    center: [filters] center frequencies in radians per sample.
    fwhm: [filters] inverse bandwidths sigma, in samples (named as in the
      original release).

  Returns:
    A complex64 tensor of shape [filters, size] (`gabor.impulse_response`).
  """
  return gabor.impulse_response(t, center, fwhm)


def gabor_filters(kernel, size: int = 401):
  """Complex Gabor filters from their parameters (`gabor.filters`).

  Args:
    kernel: [filters, 2] tensor; column 0 the center frequencies eta (radians
      per sample), column 1 the inverse bandwidths sigma (samples).
    size: number of taps.

  Returns:
    A complex64 tensor of shape [filters, size].
  """
  return gabor.filters(kernel, size)


def sinc_impulse_response(t, frequency):
  """`sin(2 pi f t) / (2 pi f t)`, undefined at t = 0 (callers skip it).

  Args:
    t: times in seconds, broadcastable with `frequency`.
    frequency: cutoff frequencies in Hz.

  Returns:
    The elementwise sinc values.
  """
  argument = 2. * math.pi * frequency * t
  return ops.sin(argument) / argument


def sinc_filters(cutoff_freq_low, cutoff_freq_high, size: int = 401,
                 sample_rate: int = 16000):
  """Band-pass sinc filters, each scaled to a peak of 1.

  A band-pass is the difference of two ideal low-passes,
  `2 f2 sinc(2 pi f2 t) - 2 f1 sinc(2 pi f1 t)`, with the value `2 (f2 - f1)`
  at t = 0.

  An even number of taps centres the filters between the two middle taps (t
  = +-1/2, +-3/2, ... samples), as happens at 22.05 kHz with 25 ms windows.

  Args:
    cutoff_freq_low: [1, filters] lower cutoff frequencies in Hz.
    cutoff_freq_high: [1, filters] upper cutoff frequencies in Hz.
    size: number of taps.
    sample_rate: sampling rate in Hz.

  Returns:
    A [size, filters] float tensor.
  """
  if size < 2:
    raise ValueError(f'sinc filters need at least 2 taps, got {size}.')
  if size % 2 == 0:
    t = (ops.arange(size, dtype='float32')[:, None] - (size - 1) / 2.) / (
        sample_rate)
    band_pass = (2. * cutoff_freq_high *
                 sinc_impulse_response(t, cutoff_freq_high) -
                 2. * cutoff_freq_low * sinc_impulse_response(
                     t, cutoff_freq_low))
    return band_pass / ops.max(band_pass, axis=0, keepdims=True)
  half = size // 2
  left_t = ops.arange(-half, 0, dtype='float32')[:, None] / sample_rate
  right_t = ops.arange(1, half + 1, dtype='float32')[:, None] / sample_rate

  def lowpass(cutoff):
    left = 2. * cutoff * sinc_impulse_response(left_t, cutoff)
    right = 2. * cutoff * sinc_impulse_response(right_t, cutoff)
    return ops.concatenate([left, 2. * cutoff, right], axis=0)

  band_pass = lowpass(cutoff_freq_high) - lowpass(cutoff_freq_low)
  return band_pass / ops.max(band_pass, axis=0, keepdims=True)


def gaussian_lowpass(sigma, filter_size: int):
  """Gaussian pooling windows (Eq. 5 of the paper, peak normalized to 1).

  `w[t] = exp(-0.5 ((t - (W - 1) / 2) / (sigma (W - 1) / 2))^2)` for
  t = 0 .. W - 1, with sigma clipped to [2 / W, 0.5].

  Args:
    sigma: [1, 1, channels, 1] widths, relative to half the window.
    filter_size: W, the number of taps.

  Returns:
    A [1, filter_size, channels, 1] float tensor.
  """
  sigma = ops.clip(sigma, 2. / filter_size, 0.5)
  t = ops.reshape(ops.arange(filter_size, dtype='float32'),
                  (1, filter_size, 1, 1))
  half_width = 0.5 * (filter_size - 1)
  return ops.exp(-0.5 * ops.square((t - half_width) / (sigma * half_width)))
