"""The banded computation of LEAF's pooled energies (the fast mode).

Each channel is filtered in the frequency domain only over the bins where
its response is not negligible (`plan.BandedPlan`), demodulated to baseband
and evaluated at a reduced rate before the squared modulus, and pooled at
that rate, with a quadrature that is exact for band-limited signals away
from the clip's edges and accurate at them.
"""

import math

import numpy as np
import tensorflow as tf

from leaf_audio import gabor
from leaf_audio.filterbank.fft_ops import as_complex
from leaf_audio.filterbank.fft_ops import concat
from leaf_audio.filterbank.fft_ops import in_xla_context
from leaf_audio.filterbank.fft_ops import same_padding
from leaf_audio.filterbank.fft_ops import squared_modulus
from leaf_audio.filterbank.fft_ops import static_size
from leaf_audio.filterbank.fft_ops import xla_function
from leaf_audio.filterbank.overlap_save import pool_blocks
from leaf_audio.filterbank.overlap_save import pool_blocks_adjoint
from leaf_audio.filterbank.overlap_save import window_blocks
from leaf_audio.filterbank.plan import CHUNK
from leaf_audio.filterbank.plan import BandedPlan


def grid_interpolation_weights(values, decimation: int):
  """Full-rate weights moved onto a grid of step D by linear interpolation.

  out[..., m] = sum_k max(0, 1 - |k| / D) values[..., m D + k]: the weight
  each grid point m gets when `values` (on offsets 0 .. L - 1) are spread
  over their two neighbouring grid points. Offset m D + r (0 <= r < D) gives
  1 - r / D of its value to point m and r / D to point m + 1, so this is one
  product of the values cut in blocks of D with those two weight columns.

  Args:
    values: [..., L] float32, L - 1 a multiple of D.
    decimation: D.

  Returns:
    [..., (L - 1) / D + 1] float32.
  """
  length = values.shape[-1]
  points = (length - 1) // decimation + 1
  blocks = tf.pad(values, [[0, 0]] * (len(values.shape) - 1) +
                  [[0, points * decimation - length]])
  blocks = tf.reshape(blocks, [-1, points, decimation])
  fraction = np.arange(decimation, dtype=np.float32) / decimation
  # (Sums of products rather than a [D, 2] matrix product: on small inputs
  # they are several times faster on CPU.)
  to_next = tf.reduce_sum(blocks * fraction, -1)
  to_this = tf.reduce_sum(blocks, -1) - to_next
  weights = to_this + tf.pad(to_next[:, :-1], [[0, 0], [1, 0]])
  return tf.reshape(weights, tf.concat([tf.shape(values)[:-1], [points]], 0))


# Below this size (elements, static shapes), a gather replaces a transpose: on
# CPU a transpose goes to the thread pool and costs ~50 us whatever its size,
# while a small gather runs inline. (Measured on 2 cores: reordering 40
# channels x 100 frames, 10 against 60 us by one gather; at 40k values the
# gather is already slower.)
_GATHER_ELEMENTS = 2**14


# Band signals of a group ([batch * blocks, n_g, Q] complex64) at least this
# large are not kept for the backward pass but computed again there from the
# block spectra (`band_energies(..., recompute=True)`). At batch 32 x 10 s
# the kept signals (the selected bins and the filtered signal) took 2 x 174
# MB; recomputing them: peak memory of forward+backward 735-747 -> 620-687 MB
# (2.9-3.0x -> 2.4-2.7x mel's, benchmark runs of 5-11 rounds), its time within
# the runs' noise (1.7-1.8x mel's either way).
REMATERIALIZE_ELEMENTS = 2**22


@xla_function
def _band_signals_gradient(d_pooled, d_samples, filtered, windows,
                           sample_index, first_block: int, frames: int):
  """dL/dy / Q from the upstream of `band_energies`' pooled |y|^2 and edge
  samples, and dL/dwindows, compiled.

  With e = |y|^2: dL/de = the upstream frames, each at the blocks its window
  met, times the window blocks (the pooling's adjoint), plus the edge
  samples' upstream at their positions; dL/dy = 2 y dL/de; dL/dwindows =
  the upstream frames times the blocks of e, summed over the rows.

  Args:
    d_pooled: [rows, n, frames]; d_samples: [batch, n, 4, W].
    filtered: [rows, n, Q] complex64; windows: [n, per_window, s].
    sample_index: [batch, n, 4, W] positions of the edge samples in the
      flattened signals.
    first_block, frames: see `band_energies`.

  Returns:
    (dL/dy / Q [rows, n, Q] complex64, dL/dwindows [n, per_window, s]).
  """
  channels, size = filtered.shape[1:]
  stride = windows.shape[2]
  rows = tf.shape(filtered)[0]
  energies = tf.reshape(tf.math.real(filtered * tf.math.conj(filtered)),
                        [rows, channels, size // stride, stride])
  d_energies, d_windows = pool_blocks_adjoint(d_pooled, energies, windows,
                                              first_block, frames)
  # The edge samples' upstream, added at their grid samples.
  d_energies = tf.tensor_scatter_nd_add(
      tf.reshape(d_energies, [-1]), sample_index[..., None], d_samples)
  d_energies = tf.reshape(d_energies, tf.shape(filtered))
  return tf.cast((2. / size) * d_energies, tf.complex64) * filtered, d_windows


@xla_function
def _response_gradient(d_product, selected):
  """sum over the rows of Re(dL/dproduct conj(selected)): [n, Q]."""
  return tf.reduce_sum(tf.math.real(d_product * tf.math.conj(selected)), 0)


def band_energies(spectrum, response, grid_windows, chunk_index, edges,
                  batch, pooling, recompute=False):
  """One group's band signals, squared modulus and pooling on the grid.

  y = ifft(X[bands] H) (times D, see below), P[k] = sum_u g[u] |y[k s + u]|^2
  over the block's frames, and |y|^2 at the edge frames' grid samples.

  Outside XLA, the gradient is written out, with its work between
  TensorFlow's FFTs compiled (`fft_ops.xla_function`): TensorFlow's own
  gradient of these few ops took about twice the forward pass's time at
  batch 32 x 1 s (it added the pooling's shifted slices back one full-size
  tensor each, spread the edge samples' gradient by a transpose and a
  segment sum over the whole signal, and differentiated |y|^2 through
  complex conjugates, casts and products); written out, the backward pass
  of fast LEAF at batch 32 x 1 s went from 63 to 34 ms (2 CPU cores):
    dL/dy: `_band_signals_gradient`;
    dL/dproduct = fft(dL/dy) / Q (the inverse FFT's adjoint);
    dL/dH = sum over the blocks of Re(dL/dproduct conj(X[bands]));
    dL/dX (the gather's adjoint), built but only computed when something
      asks for it (a waveform gradient).

  Args:
    spectrum: [batch * blocks, bins / CHUNK, CHUNK] complex64 block spectra
      (`band_spectra`).
    response: [n_g, Q] float32, the channels' responses on their bins.
    grid_windows: [n_g, 2 taps + 1] float32 pooling windows on the grid.
    chunk_index: [n_g, Q / CHUNK] int32, each channel's chunks of the
      spectrum.
    edges: ([4] int32 blocks, [4] int32 frames in the block): the four edge
      frames, whose windows' 2 taps + 1 grid samples are returned.
    batch: the batch size (an int or a scalar tensor).
    pooling: (stride on the grid, frames per block, first block): frame k of
      a block pools the grid samples from (first block + k) stride on.
    recompute: whether the backward pass recomputes the band signals from
      `spectrum` rather than keeping them.

  Returns:
    ([batch * blocks, n_g, frames per block] pooled |y|^2 (times D^2), and
    [batch, n_g, 4, 2 taps + 1] |y|^2 at the edge frames' grid samples).
  """
  n_group, size = response.shape
  stride, frames, first_block = pooling
  edge_block, edge_frame = edges
  window_size = grid_windows.shape[1]
  # Each edge frame's window starts at pooling block first_block + frame
  # (the pooling's alignment): [n_g, 4, 2 taps + 1] indices of its grid
  # samples in the flattened [batch, blocks * n_g * Q] signals.
  flat_index = (((edge_block * n_group)[None, :, None] +
                 np.arange(n_group)[:, None, None]) * size +
                ((first_block + edge_frame) * stride)[None, :, None] +
                np.arange(window_size))
  # [batch, n_g, 4, 2 taps + 1]: the same in the flattened signals of the
  # whole batch.
  row_values = (tf.shape(spectrum)[0] // batch) * n_group * size
  sample_index = (tf.reshape(tf.range(batch) * row_values, [-1, 1, 1, 1]) +
                  flat_index[None])

  def band_signals(spectrum, response):
    """The selected bins [batch * blocks, n_g, Q] and y_n at every D-th
    sample, times D (the inverse FFT of Q points scales by 1 / Q instead of
    1 / n_fft), so that |y_n|^2 is times D^2: both complex64."""
    selected = tf.reshape(tf.gather(spectrum, chunk_index, axis=1),
                          [-1, n_group, size])
    return selected, tf.signal.ifft(selected * as_complex(response))

  def edge_samples(filtered):
    return squared_modulus(tf.gather(tf.reshape(filtered, [-1]),
                                     sample_index))

  if in_xla_context():  # TensorFlow's gradient; XLA fuses its passes
    _, filtered = band_signals(spectrum, response)
    return (pool_blocks(squared_modulus(filtered), grid_windows, *pooling),
            edge_samples(filtered))

  @tf.custom_gradient
  def computed(spectrum, response, windows):
    selected, filtered = band_signals(spectrum, response)
    # |y|^2 pooled as the squares of y's interleaved real and imaginary
    # parts (a bitcast, no copy), each window tap taken twice: one pass over
    # y, where |y|^2 first costs three (conjugate, product, real part).
    parts = tf.square(tf.bitcast(filtered, tf.float32))
    pooled = pool_blocks(
        tf.reshape(parts, [-1, n_group, 2 * size]),
        tf.reshape(tf.repeat(windows, 2, axis=2), [n_group, -1]), 2 * stride,
        frames, first_block)
    samples = edge_samples(filtered)
    kept = None if recompute else (selected, filtered)

    def grad(d_pooled, d_samples):
      # (Tensors of the forward pass pass through an identity in the graph
      # being built, which may be a tf.cond's gradient branch: handed to a
      # nested function directly, they are not found as its captures.)
      spectrum_, response_, windows_, index_ = [
          tf.identity(value)
          for value in (spectrum, response, windows, sample_index)]
      selected, filtered = [tf.identity(value) for value in (
          kept or band_signals(spectrum_, response_))]
      d_filtered, d_windows = _band_signals_gradient(
          d_pooled, d_samples, filtered, windows_, index_, first_block,
          frames)
      # The inverse FFT's adjoint: fft(dL/dy) / Q (the 1 / Q applied above).
      d_product = tf.signal.fft(d_filtered)
      d_response = _response_gradient(d_product, selected)
      # The gather's adjoint: each channel's chunks added back where they
      # were read.
      rows = tf.shape(selected)[0]
      d_selected = tf.reshape(d_product * as_complex(response_),
                              [rows, -1, CHUNK])
      d_spectrum = tf.transpose(tf.math.unsorted_segment_sum(
          tf.transpose(d_selected, [1, 0, 2]),
          tf.reshape(chunk_index, [-1]), spectrum.shape[1]), [1, 0, 2])
      return d_spectrum, d_response, d_windows

    return (pooled, samples), grad

  return computed(spectrum, response, window_blocks(grid_windows, stride))


def spectrum_reach(plan: BandedPlan):
  """The bins below 0 and above n_fft / 2 that the plan's bands may reach.

  A channel's centre bin is within [0, n_fft / 2] (eta in [0, pi]); its
  band is gathered from the chunk holding the bin `below` bins under it,
  `n_fft / D` bins in all.

  Returns:
    (low, high): multiples of `CHUNK`, or None when they cover the rest of
    the spectrum (then the whole two-sided spectrum is used).
  """
  half = plan.n_fft // 2
  if half % CHUNK:
    return None
  low = high = 0
  for group in plan.groups:
    size = plan.n_fft // group.decimation
    below = int(group.below.max())
    low = max(low, -(-below // CHUNK) * CHUNK)
    high = max(high, -(-(size - int(group.below.min())) // CHUNK) * CHUNK)
  if low + high >= half:
    return None
  return low, high


def band_spectra(waveform, length, first_centre, plan: BandedPlan, blocks):
  """The blocks' spectra over the bins the plan's bands may reach.

  As `overlap_save.block_spectra`, from a real FFT: the waveform is real, so
  X[-nu] = conj(X[nu]), and the bins below 0 and above n_fft / 2 that the
  bands reach (`spectrum_reach`) are the conjugates of bins within. A real
  FFT and those few bins cost less than the complex FFT of the blocks (on 2
  CPU cores, 32 blocks of 17280 samples: about 20% less with the bins
  rebuilt, 60% less without).

  Args:
    waveform: [batch, time] float32.
    length: time (int or scalar int tensor).
    first_centre: clip sample at `margin` in block 0.
    plan: the `BandedPlan`.
    blocks: number of blocks.

  Returns:
    ([batch * blocks, bins] complex64, low_chunks): bins -CHUNK low_chunks
    to n_fft / 2 + high - 1, or all n_fft bins (0 to n_fft - 1) with
    low_chunks None where the bands may reach every bin.
  """
  n_fft, margin = plan.n_fft, plan.margin
  half = n_fft // 2
  offset = margin - first_centre
  padded_length = (blocks - 1) * plan.hop + n_fft
  padded = tf.pad(waveform,
                  [[0, 0], [offset, padded_length - offset - length]])
  frames = tf.reshape(tf.signal.frame(padded, n_fft, plan.hop), [-1, n_fft])
  # Bins 0 .. n_fft / 2 (an odd n_fft: 0 .. (n_fft - 1) / 2).
  half_spectrum = tf.signal.rfft(tf.cast(frames, tf.float32))
  reach = spectrum_reach(plan)
  if reach is None:  # every bin: bins half + 1 .. n_fft - 1 are conjugates
    upper = half_spectrum[:, 1:(n_fft + 1) // 2]
    return concat([half_spectrum[:, :half + 1],
                   tf.math.conj(tf.reverse(upper, [1]))], 1), None
  low, high = reach
  parts = [half_spectrum[:, :half]]
  if low:  # bins -low .. -1: conj(X[low .. 1])
    parts.insert(0, tf.math.conj(tf.reverse(half_spectrum[:, 1:low + 1], [1])))
  if high:  # bins half .. half + high - 1: conj(X[half .. half - high + 1])
    parts.append(tf.math.conj(tf.reverse(
        half_spectrum[:, half - high + 1:half + 1], [1])))
  return concat(parts, 1), low // CHUNK


def pooled_energies_banded(waveform, gabor_kernel, channel_windows,
                           plan: BandedPlan):
  """Gabor filterbank energies, pooled, in the banded formulation (fast mode).

  Computes P_n[k] (see the module docstring) following `plan`. At LEAF's
  initialization the pooled energies are within about 1e-4 (relative L2) of
  `pooled_energies_fft`'s, and gradients reach every weight as in the exact
  computation. Frames whose pooling window crosses the clip's start or end
  ('SAME' padding zero-pads the squared modulus there) are corrected by
  subtracting the part of the window outside the clip, estimated from the
  grid by linear interpolation.

  Args:
    waveform: [batch, time] float32.
    gabor_kernel: [n, 2] constrained Gabor parameters.
    channel_windows: [n, W_pool] pooling windows, one row per channel.
    plan: a `BandedPlan` made for weights like these.

  Returns:
    [batch, frames, n] float32, frames = ceil(time / stride).
  """
  length = waveform.shape[1]
  if length is None:
    length = tf.shape(waveform)[1]
  batch = waveform.shape[0]
  if batch is None:
    batch = tf.shape(waveform)[0]
  stride, n_fft, margin = plan.stride, plan.n_fft, plan.margin
  pool_half = plan.pool_half
  frames, pad_left = same_padding(length, plan.pool_size, stride)
  first_centre = pool_half - pad_left  # frame 0's window centre in the clip
  blocks = (frames + plan.frames_per_block - 1) // plan.frames_per_block
  # Block b's FFT starts `margin` samples before frame (b * frames per
  # block)'s centre.
  spectrum, low_chunks = band_spectra(waveform, length, first_centre, plan,
                                      blocks)
  # [batch * blocks, bins / CHUNK, CHUNK]: the spectrum in chunks.
  spectrum = tf.reshape(spectrum, [batch * blocks, spectrum.shape[1] // CHUNK,
                                  CHUNK])

  # The channels' weights in the plan's order, each group's a contiguous
  # range (one gather each, not one per group and weight).
  planned = np.concatenate([group.channels for group in plan.groups])
  gabor_kernel = tf.gather(gabor_kernel, planned)
  channel_windows = tf.gather(channel_windows, planned)
  eta, sigma = gabor_kernel[:, 0], gabor_kernel[:, 1]
  centre_bin = tf.stop_gradient(
      tf.cast(tf.round(eta * (n_fft / (2. * math.pi))), tf.int32))
  # The two first and two last frames, whose windows may leave the clip.
  edge_frames = tf.stack([0, 1, frames - 2, frames - 1])
  clipped = tf.clip_by_value(edge_frames, 0, frames - 1)
  edge_block = clipped // plan.frames_per_block
  offsets = tf.range(-pool_half, pool_half + 1)
  clip_position = (first_centre + stride * edge_frames)[:, None] + offsets
  outside = tf.cast(tf.concat(
      [clip_position[:2] < 0, clip_position[2:] >= length], 0), tf.float32)
  # The edge frames' windows outside the clip, full rate:
  # [n, 4, 2 pool_half + 1].
  outside_windows = channel_windows[:, None, :] * outside[None]
  pooled, corrections = [], []
  start = 0
  for group in plan.groups:
    n_group = len(group.channels)
    channels = slice(start, start + n_group)  # the group's, in plan order
    start += n_group
    decimation = group.decimation
    size = n_fft // decimation
    # Each channel's band: the `size` bins from the chunk holding its bin
    # `below` under the centre (wrapped around n_fft), of which its first
    # `chunks` chunks are kept (the response is zero on the others):
    # [batch * blocks, n_g, size].
    first_chunk = tf.math.floordiv(
        centre_bin[channels] - group.below, CHUNK)
    chunk_index = first_chunk[:, None] + np.arange(size // CHUNK)
    if low_chunks is None:  # the whole spectrum, periodic
      chunk_index = tf.math.floormod(chunk_index, n_fft // CHUNK)
    else:  # the bins from -CHUNK low_chunks on
      chunk_index = chunk_index + low_chunks
    in_band = (np.arange(size) < group.chunks[:, None] * CHUNK).astype(
        np.float32)  # [n_g, size]
    # The kept bins, not wrapped (so negative below bin 0, past n_fft above
    # it): [n_g, size].
    first_bin = first_chunk * CHUNK
    kept = int(group.chunks.max()) * CHUNK
    responses = []
    if group.truncated:  # the W-tap filters' own responses
      truncated = slice(channels.start, channels.start + group.truncated)
      exact = gabor.band_responses(
          gabor_kernel[truncated], first_bin[:group.truncated],
          plan.kernel_size, n_fft, kept)
      responses.append(tf.pad(exact, [[0, 0], [0, size - kept]]))
    if group.truncated < n_group:  # the Gaussian closed form
      gaussian = slice(channels.start + group.truncated, channels.stop)
      offset_freq = (tf.cast(first_bin[group.truncated:, None] +
                             np.arange(size), tf.float32) *
                     (2. * math.pi / n_fft) - eta[gaussian][:, None])
      responses.append(gabor.gaussian_response(offset_freq,
                                               sigma[gaussian][:, None]))
    response = concat(responses, 0) * in_band
    # Pooling on the grid: taps at offsets i D, weights D g(i D) / D^2, half
    # plus 1 / (2 D) at the window's ends (trapezoid + Euler-Maclaurin).
    taps = pool_half // decimation
    grid_windows = channel_windows[channels, ::decimation]
    ends = np.ones(2 * taps + 1, np.float32)
    if decimation > 1:
      ends[[0, -1]] = (decimation + 1.) / (2. * decimation)
    grid_windows = grid_windows * (ends / decimation)
    # The edge frames' grid samples: [n_g, 4, 2 taps + 1] indices of the
    # flattened [batch, blocks * n_g * size] signals.

    # [batch * blocks, n_g, Q] values (infinite for an unknown shape).
    band_elements = (static_size(spectrum) / (spectrum.shape[1] * CHUNK) *
                     n_group * size)
    group_pooled, samples = band_energies(
        spectrum, response, grid_windows, chunk_index,
        (edge_block, clipped % plan.frames_per_block), batch,
        (stride // decimation, plan.frames_per_block,
         (margin - pool_half) // stride),
        recompute=band_elements >= REMATERIALIZE_ELEMENTS)
    pooled.append(tf.reshape(group_pooled, [batch, blocks, n_group,
                                            plan.frames_per_block]))
    # Edge frames: the window's part outside the clip, from the grid by
    # linear interpolation: [n_g, 4, 2 taps + 1].
    excluded = grid_interpolation_weights(
        outside_windows[channels], decimation)
    corrections.append(tf.reduce_sum(samples * excluded, -1) /
                       float(decimation**2))  # [batch, n_g, 4]
  # [batch, blocks, n, frames per block], channels in the plan's order.
  channels = len(plan.order)
  pooled = concat(pooled, 2)
  # Each correction goes to its edge frame (out-of-range edge frames of short
  # clips, counted 0, to a frame in range): [batch, n, 4] of indices
  # (batch, block, channel, frame in block).
  in_range = tf.logical_and(edge_frames >= 0, edge_frames < frames)
  corrections = concat(corrections, 1) * tf.cast(in_range, tf.float32)
  index_shape = [batch, channels, 4]
  indices = tf.stack([
      tf.broadcast_to(tf.range(batch)[:, None, None], index_shape),
      tf.broadcast_to(edge_block, index_shape),
      tf.broadcast_to(np.arange(channels, dtype=np.int32)[:, None],
                      index_shape),
      tf.broadcast_to(clipped % plan.frames_per_block, index_shape)], -1)
  pooled = tf.tensor_scatter_nd_sub(pooled, indices, corrections)
  # To [batch, frames, n], channels in their order.
  per_block = plan.frames_per_block
  if static_size(pooled) <= _GATHER_ELEMENTS:  # one gather, no transpose
    order = (plan.order[None, :] * per_block +
             np.arange(per_block)[:, None]).reshape(-1)
    pooled = tf.gather(
        tf.reshape(pooled, [batch, blocks, channels * per_block]), order,
        axis=2)
  else:
    pooled = tf.transpose(tf.gather(pooled, plan.order, axis=2), (0, 1, 3, 2))
  return tf.reshape(pooled, [batch, blocks * per_block, channels])[:, :frames]
