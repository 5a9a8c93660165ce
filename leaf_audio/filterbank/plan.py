"""The banded plan: which bins and which reduced rate each channel gets.

Frequencies are in bins of the block FFT (2 pi / n_fft radians per sample),
times in samples. The plan is made from the weights (NumPy, outside any
traced function) and checked against them in the graph (`valid_in_graph`).
"""

import math

import numpy as np
import tensorflow as tf

from leaf_audio import gabor
from leaf_audio.filterbank.fft_ops import fft_length
from leaf_audio.filterbank.overlap_save import FRAMES_PER_BLOCK


class Tolerance:
  """How much of each response the banded formulation keeps.

  Attributes:
    gauss_width: bins are kept out to this many standard deviations of each
      Gaussian frequency response (beyond, its energy is below
      exp(-width^2): with 4, 1e-7 of the peak, under the 1e-5 floor of the
      pooled energies even for a full-scale tone).
    sidelobe_energy: when the W-tap truncation of a filter's envelope
      matters, bins are also kept out to where the truncation's sidelobes
      fall below this fraction of the peak energy.
    pool_width: the pooling windows are treated as band-limited to this many
      standard deviations of their spectra.
  """

  def __init__(self, gauss_width, sidelobe_energy, pool_width):
    self.gauss_width = gauss_width
    self.sidelobe_energy = sidelobe_energy
    self.pool_width = pool_width


# A plan is made for a strict tolerance, and kept while the weights satisfy
# a loose one: a hysteresis, so that small steps of training do not
# invalidate it. The loose one bounds the error of any plan in use. Two
# pairs, chosen by name (`FilterbankEnergies(fast_tolerance=...)`). Measured
# against the exact computation on the parity fixture's clips (relative L2
# error of Leaf's output, sPCEN included; `tests/test_fast.py`'s weights:
# 'init', ten draws of 'far', 'narrow', 'wide'):
# - 'speed': 0.054% at init, 0.025-0.43% at moved weights ('narrow' 0.40%);
#   a plan made for its loose tolerance up to 1.2%.
# - 'accuracy': 0.051% at init, 0.024-0.082% at moved weights; a plan made
#   for its loose tolerance within 0.083%. Its cost: LEAF's initial channel 0
#   (60 Hz, sigma 96 samples, its envelope cut at 11% of its peak) needs
#   every bin and is computed at the full rate, as the exact mode computes
#   each channel: batch 32 forward, CPU time 1.95-2.24x mel's at 1 s and
#   1.95-1.96x at 10 s, against 1.41-1.71x and 1.39-1.51x for 'speed' (two
#   runs of 7-15 interleaved rounds, 2 CPU cores at load 9-13). Its strict
#   tolerance is only a little stricter than its loose one (4.1 against 4
#   standard deviations, sidelobes to 2e-7 against 3e-7, pooling spectra to
#   3.1 against 3): the plan for LEAF's initial weights then holds 86832
#   bins per block in all channels against 92448 with the former 4.25 / 1e-7
#   / 3.25 (2.09-2.30x and 2.25-2.45x mel's time in the same runs), and is
#   kept while every sigma shrinks by up to 4.0% or grows by up to 6.6%
#   (5.8% and 10.0% before).
# What sets the levels: a chirp or a tone far from a channel's band reaches
# it only through the tails of its response, and sPCEN makes those small
# energies count (the 1e-5 floor is ~3e-6 of the chirp's peak): the W-tap
# truncation's sidelobes cut at 3e-6 of the peak gave up to 0.43%, at 1e-6
# 0.32% ('narrow', every sigma doubled), at 3e-7 0.083%; the Gaussian cut
# at 3.5 standard deviations 0.42%, at 4 0.083%; the pooling windows'
# spectra cut at 3 standard deviations change nothing measurable.
# Where the remaining error is ('speed', by output frame): at init, 48% of
# the squared error is in one frame, the onset of the tone after silence in
# the fixture's fourth clip (frame 48; presumably because the onset reaches
# every band while sPCEN's smoother is still near zero), and 30% in the four
# frames at the clips' edges (where the window's part outside the clip is
# estimated by linear interpolation); at 'far' draws 2 and 5, 84% is in that
# onset frame. Above 0.1% it is the truncation's sidelobes of heavily
# truncated filters (sigma grown to 64-150 samples): with sidelobes cut at
# 3e-7, 'far' 3 falls from 0.43% to 0.032% and 'narrow' from 0.40% to
# 0.076%. Those filters need bins far from their band (all of them for
# LEAF's initial 60 Hz filter), which is what makes 0.1% cost more than
# 'speed' at init: 86832 against 67824 bins per block; at any rate (not only
# divisors of 40 samples) the same tolerances would need about 70000 and
# 50000.
TOLERANCES = {
    'speed': (Tolerance(gauss_width=4., sidelobe_energy=3e-6, pool_width=3.5),
              Tolerance(gauss_width=3.5, sidelobe_energy=3e-5,
                        pool_width=3.)),
    'accuracy': (Tolerance(gauss_width=4.1, sidelobe_energy=2e-7,
                           pool_width=3.1),
                 Tolerance(gauss_width=4., sidelobe_energy=3e-7,
                           pool_width=3.)),
}


def check_tolerance(name):
  """Raises a ValueError unless `name` is a key of `TOLERANCES`."""
  if name not in TOLERANCES:
    raise ValueError(f'fast_tolerance must be one of {sorted(TOLERANCES)} '
                     f"('speed': the default; 'accuracy': within 0.1% of the "
                     f'exact computation), got {name!r}.')


# The Gaussian closed form replaces the truncated filter's response when the
# envelope at the last tap is below this fraction of its peak.
_TRUNCATION = 1e-3
# Each channel's band is gathered as whole chunks of this many consecutive
# bins (TensorFlow gathers long slices much faster than single elements); the
# band is demodulated by its first chunk's first bin, which changes its phase
# only.
CHUNK = 16


def _half_widths(sigma, pool_std, kernel_size: int, n_fft: int,
                 tolerance: Tolerance, xp=np):
  """Bins needed on each side of each channel's centre, and by its pooling.

  Args:
    sigma: [n] Gabor inverse bandwidths (samples).
    pool_std: [n] RMS widths of the pooling windows (samples).
    kernel_size: W, the Gabor filters' taps.
    n_fft: the FFT length the bins refer to.
    tolerance: a `Tolerance`.
    xp: np for NumPy arrays, tf for tensors.

  Returns:
    (filter_bins, pool_bins, truncated): the half-width of the band each
    filter needs, the half-width of each pooling window's spectrum (both
    float, rounded up), and whether the truncation of the filter matters.
  """
  bins_per_radian = n_fft / (2. * math.pi)
  gaussian = tolerance.gauss_width / sigma
  # The truncation's sidelobes are about edge / |2 sin(delta / 2)| at an
  # offset delta from the centre.
  envelope, edge = gabor.truncation(sigma, kernel_size, xp)
  ratio = xp.minimum(edge / math.sqrt(tolerance.sidelobe_energy), 1.)
  arcsin = np.arcsin if xp is np else tf.asin
  sidelobes = 2. * arcsin(ratio)
  ceil = np.ceil if xp is np else tf.math.ceil
  filter_bins = ceil(xp.maximum(gaussian, sidelobes) * bins_per_radian)
  pool_bins = ceil(tolerance.pool_width * bins_per_radian / pool_std)
  return filter_bins, pool_bins, envelope > _TRUNCATION


def _pool_std(channel_windows, xp=np):
  """RMS width (samples) of each pooling window: [n, W] -> [n]."""
  size = channel_windows.shape[1]
  offsets = np.arange(size, dtype=np.float32) - size // 2
  mass = (xp.reduce_sum(channel_windows, 1) if xp is tf
          else channel_windows.sum(1))
  second = offsets**2 * channel_windows
  second = xp.reduce_sum(second, 1) if xp is tf else second.sum(1)
  return xp.sqrt(second / mass)


class BandedGroup:
  """Channels computed together, at one reduced rate.

  Attributes:
    channels: the channels' indices in the layer, truncated ones first.
    truncated: how many of them (the first ones) use the truncated filters'
      exact responses rather than the Gaussian closed form.
    decimation: D; the group's signals are computed at every D-th sample.
    chunks: [n_g] the number of `CHUNK`-bin chunks of the spectrum kept for
      each channel, from the chunk holding the bin `below` bins under its
      centre.
    below: [n_g] bins kept below each channel's centre (at least).
  """

  def __init__(self, channels, truncated, decimation, chunks, below):
    self.channels = [int(c) for c in channels]
    self.truncated = int(truncated)
    self.decimation = int(decimation)
    self.chunks = np.asarray(chunks, np.int64)
    self.below = np.asarray(below, np.int64)

  @property
  def reach(self):
    """[n_g] bins kept on both sides of each channel's centre (at least)."""
    return np.minimum(self.below, (self.chunks - 1) * CHUNK - self.below)

  def __repr__(self):
    return (f'BandedGroup(channels={self.channels}, truncated='
            f'{self.truncated}, decimation={self.decimation}, '
            f'chunks={self.chunks.tolist()})')


class BandedPlan:
  """Static layout of the banded formulation, chosen from the weights.

  The clip is cut into blocks of `frames_per_block` output frames; each block,
  with `margin` samples of context before its first frame's centre and at
  least as many after its last, is one FFT of `n_fft` points. Channel n keeps
  the bins around its centre round(eta_n n_fft / 2 pi) where its response is
  not negligible (their position follows eta at every call, their number is
  fixed by the plan). These bins, times the filter's frequency response
  (Eq. 4; the truncated W-tap filter's where truncation matters, the
  Gaussian's closed form elsewhere), shifted to baseband (a phase the
  modulus removes), are inverse transformed at Q = n_fft / D points: the
  filtered signal at every D-th sample, exact for the kept band. Its squared
  modulus (Eq. 3) there is then exact too, and the pooling (Eq. 5) is a sum
  over the grid with the window's own taps times D (trapezoidal at the
  window's ends), which equals the full-rate sum when Q exceeds the kept bins
  plus the pooling window's bandwidth; that sets D. Channels with the same D
  are batched in one group.

  Args:
    sigma: [n] Gabor inverse bandwidths (samples).
    pool_windows: [W_pool, n] pooling windows (W_pool odd).
    kernel_size: W, taps of the Gabor filters.
    stride: s, the pooling stride.
    frames_per_block: output frames per block.
    tolerance: the name of a pair of `TOLERANCES`: the plan keeps what the
      strict one needs, and holds weights while the loose one is met.
  """

  def __init__(self, sigma, pool_windows, kernel_size: int, stride: int,
               frames_per_block: int = FRAMES_PER_BLOCK,
               tolerance: str = 'speed'):
    check_tolerance(tolerance)
    self.tolerance = tolerance
    strict, self.loose = TOLERANCES[tolerance]
    sigma = np.asarray(sigma, np.float64)
    pool_windows = np.asarray(pool_windows, np.float64)
    if pool_windows.shape[0] % 2 == 0 or kernel_size % 2 == 0:
      raise ValueError('The banded formulation needs filters and pooling '
                       'windows of an odd length, got '
                       f'{kernel_size} and {pool_windows.shape[0]}.')
    self.kernel_size = kernel_size
    self.stride = stride
    self.pool_size = pool_windows.shape[0]
    self.pool_half = self.pool_size // 2
    self.frames_per_block = frames_per_block
    # Grid steps D divide the stride (frame centres fall on the grid) and the
    # pooling window's half-width (so do its ends).
    step = math.gcd(stride, self.pool_half)
    self.decimations = [d for d in range(step, 0, -1) if step % d == 0]
    # Context on each side of a block's frames: the pooling window's and the
    # filter's reach, and slack for the band-limited responses' tails.
    # The first window starts a whole number of strides into the block, so
    # that the grid pools in whole blocks of the stride (`pool_blocks`).
    reach = kernel_size // 2 + kernel_size // 5
    self.margin = self.pool_half + stride * -(-reach // stride)
    span = 2 * self.margin + stride * (frames_per_block - 1)
    self.n_fft = fft_length(
        span, CHUNK * step * stride // math.gcd(CHUNK * step, stride))
    self.hop = stride * frames_per_block
    filter_bins, pool_bins, truncated = _half_widths(
        sigma, _pool_std(pool_windows.T), kernel_size, self.n_fft, strict)
    members = {}
    for channel in range(len(sigma)):
      # The grid of Q = n_fft / D points holds the pooling's bandwidth and
      # whole chunks reaching `filter_bins` on both sides of the centre
      # (the chunks are laid out as below; for short clips, whose FFTs have
      # few bins, the rounding to chunks matters).
      chunks_needed = math.ceil(2 * filter_bins[channel] / CHUNK) + 1
      decimation = next(
          (d for d in self.decimations
           if (self.n_fft // d - pool_bins[channel]) // CHUNK >= chunks_needed),
          1)
      members.setdefault(decimation, []).append(channel)
    self.groups = []
    for decimation in sorted(members, reverse=True):
      channels = sorted(members[decimation], key=lambda c: not truncated[c])
      size = self.n_fft // decimation
      if size == self.n_fft:  # every bin: the computation is exact.
        chunks = np.full(len(channels), self.n_fft // CHUNK)
      else:  # every chunk the grid allows beyond the pooling's bandwidth.
        chunks = (size - pool_bins[channels].astype(np.int64)) // CHUNK
      self.groups.append(BandedGroup(
          channels, sum(truncated[c] for c in channels), decimation, chunks,
          (chunks - 1) * CHUNK // 2))
    self.order = np.argsort(np.concatenate([g.channels for g in self.groups]))

  def _fits(self, filter_bins, pool_bins, truncated, xp):
    """Per-channel validity (NumPy or TensorFlow, xp = np or tf).

    A channel fits while the bins its filter needs are within the ones kept,
    those and the pooling's bandwidth fit the grid (so that the pooling sum
    on the grid stays exact), and, in the Gaussian part of a group, its
    truncation stays negligible. Channels of a full-rate, every-bin group
    are computed exactly whatever their weights.
    """
    reach = np.zeros(len(self.order), np.float32)
    size = np.zeros(len(self.order), np.float32)
    gaussian = np.zeros(len(self.order), bool)
    exact = np.zeros(len(self.order), bool)
    for group in self.groups:
      channels = np.array(group.channels)
      reach[channels] = group.reach
      size[channels] = self.n_fft // group.decimation
      gaussian[channels[group.truncated:]] = True
      exact[channels] = self.n_fft // group.decimation == self.n_fft
    fits = xp.logical_and(filter_bins <= reach,
                          2. * filter_bins + 1. + pool_bins <= size)
    fits = xp.logical_and(fits, xp.logical_not(xp.logical_and(truncated,
                                                              gaussian)))
    return xp.logical_or(fits, exact)

  def is_valid(self, sigma, pool_windows):
    """Whether NumPy weights are still computed accurately by the plan.

    Args:
      sigma: [n] Gabor inverse bandwidths.
      pool_windows: [W_pool, n] pooling windows.

    Returns:
      A Python bool: every channel's needs, at the loose tolerance, fit.
    """
    widths = _half_widths(np.asarray(sigma, np.float64),
                          _pool_std(np.asarray(pool_windows, np.float64).T),
                          self.kernel_size, self.n_fft, self.loose)
    return bool(np.all(self._fits(*widths, np)))

  def valid_in_graph(self, sigma, channel_windows):
    """`is_valid` for tensors, the windows as [n, W_pool]: a scalar bool."""
    widths = _half_widths(sigma, _pool_std(channel_windows, tf),
                          self.kernel_size, self.n_fft, self.loose, tf)
    return tf.reduce_all(self._fits(*widths, tf))

  def __repr__(self):
    return (f'BandedPlan(tolerance={self.tolerance!r}, n_fft={self.n_fft}, '
            f'frames_per_block='
            f'{self.frames_per_block}, margin={self.margin}, groups='
            f'{self.groups})')
