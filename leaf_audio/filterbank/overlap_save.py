"""Pooled energies of complex filters, exactly, by FFT (overlap-save).

P_n[k] = sum_u g_n[u] |y_n[k s - pad + u]|^2, y_n the 'SAME' (stride 1)
cross-correlation of the clip with the W-tap complex filter phi_n (LEAF's
Gabor filters, or TD-filterbanks' free ones), |.|^2 the squared modulus of
Eq. 3 and g_n the pooling window of Eq. 5 at stride s. The original release
computes this as a direct convolution of 2N real filters at the full sample
rate; here the clip is cut into blocks with the context their windows reach
(overlap-save), transformed once each, filtered by one inverse FFT per block
and channel, and pooled by one batched matrix product (`pool_blocks`). Equal
to the direct convolution up to float32 rounding.

SincNet's real filters, LeakyReLU and max or Gaussian pooling take the same
blocks (`real_filterbank_pooled_fft`): one inverse real FFT per block and
channel, maxima from sub-block maxima (`max_pool_blocks`), the blocks of the
whole batch a few at a time so that their outputs stay in the CPU's caches,
with a backward pass of their own, and the elementwise work between the FFTs
compiled with XLA.
"""

import numpy as np
import tensorflow as tf

from leaf_audio import gabor
from leaf_audio.filterbank import fft_ops
from leaf_audio.filterbank.fft_ops import as_complex
from leaf_audio.filterbank.fft_ops import fft_length
from leaf_audio.filterbank.fft_ops import is_static
from leaf_audio.filterbank.fft_ops import same_padding
from leaf_audio.filterbank.fft_ops import squared_modulus
from leaf_audio.filterbank.fft_ops import static_maximum


def gabor_responses(kernel, kernel_size: int, n_fft):
  """`fft_ops.filter_responses` of the W-tap Gabor filters (Eq. 4).

  `H_n[nu] = sum_{tau} a_n(tau) exp(i (2 pi nu / N - eta_n) tau)`, with a_n the
  truncated Gaussian envelope of phi_n: demodulated by eta_n.

  Args:
    kernel: [n, 2] Gabor parameters (center frequency, sigma), constrained.
    kernel_size: W, the number of taps.
    n_fft: N >= W.

  Returns:
    [n, n_fft] complex64.
  """
  return fft_ops.filter_responses(gabor.filters(kernel, kernel_size), n_fft)


def pool_blocks(energies, windows, stride: int, frames, first_block=0):
  """Strided per-channel window sums as one batched matrix product.

  `pooled[b, n, k] = sum_u energies[b, n, (first_block + k) s + u]
  windows[n, u]`, computed with the signal cut into blocks of s samples: a
  window of W taps spans ceil(W / s) blocks, so every frame is the sum of
  ceil(W / s) block-by-window dot products, all obtained by one
  [.., blocks, s] x [s, ceil(W / s)] product.

  Args:
    energies: [batch, n, length] float32, length a multiple of s of at least
      (first_block + frames - 1 + ceil(W / s)) s.
    windows: [n, W] float32 pooling windows.
    stride: s.
    frames: number of output frames.
    first_block: the block where frame 0's window starts.

  Returns:
    [batch, n, frames] float32.
  """
  shape = tf.shape(energies)
  blocks = tf.reshape(energies, [shape[0], shape[1], -1, stride])
  return _pool_block_products(blocks, windows, stride, frames, first_block)


def window_blocks(windows, stride: int):
  """[n, W] pooling windows -> [n, ceil(W / s), s], zero-padded."""
  channels, kernel_size = windows.shape
  blocks_per_window = -(-kernel_size // stride)
  padded = tf.pad(windows,
                  [[0, 0], [0, blocks_per_window * stride - kernel_size]])
  return tf.reshape(padded, [channels, blocks_per_window, stride])


def pool_blocks_adjoint(d_pooled, blocks, windows, first_block: int,
                        frames: int):
  """The gradients of `pool_blocks` with respect to its signal and windows.

  With pooled[b, n, k] = sum_j sum_r blocks[b, n, first + k + j, r]
  windows[n, j, r]: dL/dblocks[b, n, m, r] = sum_j d[b, n, m, j]
  windows[n, j, r], where d[b, n, m, j] = dL/dpooled[b, n, m - first - j]
  (zero outside the frames), and dL/dwindows[n, j, r] = sum_{b, m}
  d[b, n, m, j] blocks[b, n, m, r]. The first is written as ceil(W / s)
  broadcast products rather than a matrix product of inner dimension
  ceil(W / s) (2 or 3), which XLA's CPU backend computes more slowly
  (SincNet+'s pooling backward at batch 4 x 17280 samples x 40 channels:
  11.0 against 13.6 ms).

  Args:
    d_pooled: [batch, n, frames] float32, dL/dpooled.
    blocks: [batch, n, blocks, s] float32, the pooled signal in blocks.
    windows: [n, ceil(W / s), s] float32 (`window_blocks`).
    first_block: the block where frame 0's window starts.
    frames: the number of frames (static, also where d_pooled's static shape
      is unknown, as when a SavedModel traces a gradient).

  Returns:
    (dL/dblocks [batch, n, blocks, s], dL/dwindows [n, ceil(W / s), s]).
  """
  blocks_per_window = windows.shape[1]
  count = blocks.shape[2]
  # d_partial[.., m, j]: frame m - first_block - j's upstream.
  d_partial = tf.stack([
      tf.pad(d_pooled, [[0, 0], [0, 0],
                        [first_block + j, count - first_block - j - frames]])
      for j in range(blocks_per_window)], -1)
  d_windows = tf.reduce_sum(tf.matmul(d_partial, blocks, adjoint_a=True), 0)
  d_blocks = tf.add_n([d_partial[..., j, None] * windows[:, None, j]
                       for j in range(blocks_per_window)])
  return d_blocks, d_windows


def _pool_block_products(blocks, windows, stride: int, frames, first_block):
  """`pool_blocks` of a signal already cut into [batch, n, blocks, s]."""
  channels, kernel_size = windows.shape[0], windows.shape[1]
  blocks_per_window = -(-kernel_size // stride)
  batch = tf.shape(blocks)[0]
  windows = window_blocks(windows, stride)
  # The windows are broadcast over the batch explicitly: TensorFlow 2.21's
  # CPU matmul crashed on a broadcast batch dimension with one channel. The
  # product reads them transposed (a transpose op costs ~50 us on CPU even
  # for a few hundred values: it always goes to the thread pool).
  windows = tf.broadcast_to(windows[None], [batch, channels,
                                            blocks_per_window, stride])
  partial = tf.matmul(blocks, windows, adjoint_b=True)
  return tf.add_n([
      partial[:, :, first_block + j:first_block + j + frames, j]
      for j in range(blocks_per_window)])



# Clips of more blocks than this are computed in groups of GROUP_BLOCKS
# (`filterbank_energies_fft`): at 16 kHz, 32 s of audio, whose intermediates
# take about 0.35 GB at batch 1. Shorter clips are computed at once, which is
# faster there (batch 1 x 10 s, forward+backward: 12.5x mel's time at once,
# 24x in groups of 4, whose backward pass computes them again).
MAX_BLOCKS = 32
# Blocks computed at once in a longer clip: at 16 kHz, 4 s of audio, whose
# intermediates take about 0.1 GB at batch 1.
# Smaller groups are also faster (batch 1 x 40 s, 2 CPU cores, forward and
# forward+backward: 0.7 and 2.0 s in groups of 4 blocks, 1.0 and 2.8 s in
# groups of 8, 1.4 and 4.0 s in groups of 16, 1.3 and 2.7 s all at once):
# they stay in the CPU's caches.
GROUP_BLOCKS = 4

# Output frames per FFT block: clips of more frames are cut into blocks of
# about this many (each one FFT, with context on both sides), shorter clips
# are one block sized to the clip.
FRAMES_PER_BLOCK = 100


def block_frames(frames):
  """Output frames per block for clips of `frames` frames (None: unknown)."""
  if frames is None:
    return FRAMES_PER_BLOCK
  frames = max(frames, 1)
  blocks = -(-frames // FRAMES_PER_BLOCK)
  return -(-frames // blocks)


def block_spectra(waveform, length, first_centre, margin: int, n_fft: int,
                  hop: int, blocks):
  """Spectra of overlapping blocks of the clip, one FFT each.

  Block b holds the n_fft samples from `margin` samples before clip sample
  b hop + first_centre (zero outside the clip).

  Args:
    waveform: [batch, time] float32.
    length: time (int or scalar int tensor).
    first_centre: clip sample at `margin` in block 0.
    margin: see above.
    n_fft: block length.
    hop: samples between blocks.
    blocks: number of blocks.

  Returns:
    [batch * blocks, n_fft] complex64 full (two-sided) spectra.
  """
  offset = margin - first_centre
  padded_length = (blocks - 1) * hop + n_fft
  padded = tf.pad(waveform,
                  [[0, 0], [offset, padded_length - offset - length]])
  chunks = tf.reshape(tf.signal.frame(padded, n_fft, hop), [-1, n_fft])
  # A complex FFT of the real blocks: on CPU it costs less than an rFFT
  # followed by rebuilding the negative frequencies (0.9 against 1.5 ms for
  # 32 blocks of 17280 samples; 49 against 180 us for one).
  return tf.signal.fft(as_complex(chunks))


def pooled_energies_fft(waveform, gabor_kernel, pooling_windows,
                        kernel_size: int, stride: int,
                        group_blocks: int = GROUP_BLOCKS,
                        max_blocks: int = MAX_BLOCKS):
  """Exact Gabor filterbank energies, pooled: P_n[k] above, by FFT.

  `filterbank_energies_fft` with the Gabor filters (Eq. 4) and 'SAME'
  pooling, as LEAF computes them.

  Args:
    waveform: [batch, time] float32.
    gabor_kernel: [n, 2] constrained Gabor parameters (`GaborConv1D`).
    pooling_windows: [W_pool, n] pooling windows (`GaussianLowpass.windows`).
    kernel_size: W, taps of the Gabor filters.
    stride: s, the pooling stride.
    group_blocks, max_blocks: see `filterbank_energies_fft`.

  Returns:
    [batch, frames, n] float32 pooled energies, frames = ceil(time / s).
  """
  return filterbank_energies_fft(
      waveform, gabor.filters(gabor_kernel, kernel_size), pooling_windows,
      stride, group_blocks=group_blocks, max_blocks=max_blocks)


def filterbank_energies_fft(waveform, filters, pooling_windows, stride: int,
                            padding: str = 'SAME',
                            group_blocks: int = GROUP_BLOCKS,
                            max_blocks: int = MAX_BLOCKS):
  """Pooled squared moduli of complex filters' outputs, exactly, by FFT.

  P_n[k] = sum_u g_n[u] |y_n[k s - pad + u]|^2 with y_n the 'SAME'
  (stride 1) cross-correlation of the clip with the filter phi_n, as
  TensorFlow pads it, and |y|^2 zero outside the clip. The clip is cut into
  blocks of `block_frames` output frames with the context their pooling
  windows and filters reach on both sides (overlap-save); each block is
  transformed once, and each channel's filtered signal in it is one inverse
  FFT of the block's spectrum times the filter's, exact where it is used; its
  squared modulus (Eq. 3) is masked to the clip; the pooling (Eq. 5) is
  `pool_blocks`. Equal to the direct convolution up to float32 rounding
  (about 1e-6 of the largest value).

  Clips of a static length of more than `max_blocks` blocks are computed
  in groups of at most `group_blocks` blocks each, one group after the other
  (a `tf.map_fn` with one iteration at a time), and the backward pass
  computes each group's intermediates again instead of keeping them
  (`_recomputing`): memory grows with the group, not with the clip (a
  block's intermediates are [batch, n, n_fft] complex; the clip itself and
  the [batch, frames, n] output are all that grow with its length). Every
  block is computed as in one call, so the outputs are the same.

  Args:
    waveform: [batch, time] float32.
    filters: [n, W] complex64 taps (tau = -(W // 2) .. (W - 1) // 2): the
      Gabor filters of LEAF, or TD-filterbanks' real and imaginary filters.
    pooling_windows: [W_pool, n] pooling windows, or [W_pool, 1] for one
      window shared by every channel.
    stride: s, the pooling stride.
    padding: the pooling's, 'SAME' (ceil(time / s) frames) or 'VALID'
      ((time - W_pool) // s + 1 frames, none for clips shorter than W_pool).
    group_blocks: the most blocks (of `block_frames` frames each) computed at
      once in a clip of more than `max_blocks` blocks, >= 1.
    max_blocks: the most blocks of a clip computed all at once, >= 1.

  Returns:
    [batch, frames, n] float32 pooled energies.
  """
  channels = filters.shape[0]
  pool_size = pooling_windows.shape[0]

  def operands(n_fft):
    return [fft_ops.filter_responses(filters, n_fft),
            tf.broadcast_to(tf.transpose(pooling_windows),
                            [channels, pool_size])]

  def features(chunks, responses, unused_windows):
    # A complex FFT of the real blocks: on CPU it costs less than an rFFT
    # followed by rebuilding the negative frequencies (0.9 against 1.5 ms
    # for 32 blocks of 17280 samples; 49 against 180 us for one).
    spectra = tf.signal.fft(as_complex(chunks))
    # |y_n|^2 in every block: [batch * count, n, n_fft].
    return squared_modulus(
        tf.signal.ifft(spectra[:, None, :] * responses[None]))

  def pool(energies, unused_responses, windows, first_block, frames):
    return pool_blocks(energies, windows, stride, frames, first_block)

  return _pooled_by_blocks(
      waveform, filters.shape[1], pool_size, stride, padding, channels,
      operands, features, pool, group_blocks, max_blocks)


def real_filter_responses(filters, n_fft):
  """One-sided spectra of real W-tap filters, for `irfft(X conj(H))`.

  `H_n[nu] = sum_tau h_n(tau) exp(-2 pi i nu tau / N)` for the taps h_n(tau),
  tau = -(W // 2) .. (W - 1) // 2, so that `irfft(rfft(x) conj(H_n))[t]` is
  the correlation `y_n[t] = sum_tau x[t + tau] h_n(tau)` (circularly).

  Args:
    filters: [n, W] float32 taps.
    n_fft: N >= W.

  Returns:
    [n, N // 2 + 1] complex64.
  """
  kernel_size = filters.shape[1]
  half = kernel_size // 2
  circular = tf.concat([
      filters[:, half:],
      tf.zeros([tf.shape(filters)[0], n_fft - kernel_size], tf.float32),
      filters[:, :half]], axis=1)
  return tf.signal.rfft(circular, [n_fft])


# The most samples a max pooling window may have beyond whole sub-blocks
# (`_sub_block`) that `_block_maxima` takes one by one.
_MAX_SINGLES = 4


def _sub_block(pool_size: int, stride: int):
  """The sub-block length d of `_block_maxima`: the largest divisor of the
  stride, at least a quarter of it, that leaves at most `_MAX_SINGLES`
  samples of a window beyond whole sub-blocks (80 for SincNet's 401-sample
  windows at a stride of 160: 5 sub-blocks and one sample), or None."""
  for length in range(stride, 0, -1):
    if 4 * length < stride:
      return None
    if stride % length == 0 and pool_size % length <= _MAX_SINGLES:
      return length
  return None


def _block_maxima(signal, pool_size: int, stride: int, frames,
                  first_block=0):
  """Window maxima and where they are (`max_pool_blocks`, no gradient).

  With the signal cut into sub-blocks of d samples (d divides s,
  `_sub_block`), a window of W = q d + r samples is q whole sub-blocks and
  r single samples: each frame's maximum is the largest of the q sub-block
  maxima (one pass over the signal) and the r samples; its position is found
  in the sub-block holding it alone (an argmax over one sub-block per frame).
  Without such a d, sub-blocks are the stride's blocks and the r samples
  the first ones of the next block (an argmax over them).

  Returns:
    (pooled, position): [batch, n, frames] float32 maxima and int32
    positions in the signal (the first one where several are equal).
  """
  shape = tf.shape(signal)
  length = _sub_block(pool_size, stride)
  if length is None:
    return _block_and_head_maxima(signal, pool_size, stride, frames,
                                  first_block)
  per_stride = stride // length
  whole, rest = divmod(pool_size, length)
  subs = tf.reshape(signal, [shape[0], shape[1], -1, length])
  sub_maxima = tf.reduce_max(subs, axis=-1)  # [batch, n, sub-blocks]
  start = first_block * per_stride
  span = (frames - 1) * per_stride + 1
  # Candidates in the order of their positions: argmax picks the first
  # largest.
  candidates = tf.stack(
      [sub_maxima[:, :, start + i:start + i + span:per_stride]
       for i in range(whole)] +
      [subs[:, :, start + whole:start + whole + span:per_stride, i]
       for i in range(rest)], axis=-1)  # [batch, n, frames, q + r]
  best = tf.math.argmax(candidates, axis=-1, output_type=tf.int32)
  pooled = tf.reduce_max(candidates, axis=-1)
  # Sub-block of the maximum (or the one after the window's last, for a
  # single sample).
  sub_block = (start + per_stride * tf.range(frames)[None, None] +
               tf.minimum(best, whole))
  inner = tf.math.argmax(tf.gather(subs, tf.minimum(sub_block, tf.shape(
      subs)[2] - 1), batch_dims=2), axis=-1, output_type=tf.int32)
  position = sub_block * length + tf.where(best < whole, inner,
                                           best - whole)
  return pooled, position


def _block_and_head_maxima(signal, pool_size: int, stride: int, frames,
                           first_block=0):
  """`_block_maxima` with blocks of the stride and heads of the rest."""
  whole, rest = divmod(pool_size, stride)
  shape = tf.shape(signal)
  blocks = tf.reshape(signal, [shape[0], shape[1], -1, stride])
  block_start = stride * tf.range(tf.shape(blocks)[2])
  offsets = []  # [batch, n, frames] positions in the signal
  if whole:
    block_arg = tf.math.argmax(blocks, axis=-1, output_type=tf.int32)
    block_arg += block_start
    offsets += [block_arg[:, :, first_block + j:first_block + j + frames]
                for j in range(whole)]
  if rest:
    head_arg = tf.math.argmax(blocks[..., :rest], axis=-1,
                              output_type=tf.int32)
    head_arg += block_start
    offsets.append(head_arg[:, :, first_block + whole:
                            first_block + whole + frames])
  # The candidates of each frame are in the order of their positions:
  # argmax picks the first largest.
  positions = tf.stack(offsets, axis=-1)  # [batch, n, frames, q + 1]
  candidates = tf.gather(signal, positions, batch_dims=2)
  best = tf.math.argmax(candidates, axis=-1, output_type=tf.int32)
  position = tf.gather(positions, best, batch_dims=3)
  pooled = tf.gather(candidates, best, batch_dims=3)
  return pooled, position


def _scattered(values, position, length: int):
  """[batch, n, length] zeros with `values` [batch, n, frames] added at
  `position` [batch, n, frames] along the last axis."""
  shape = tf.shape(values)
  rows = tf.range(shape[0] * shape[1])[:, None]
  flat = tf.reshape(position, [shape[0] * shape[1], -1]) + rows * length
  scattered = tf.scatter_nd(tf.reshape(flat, [-1, 1]),
                            tf.reshape(values, [-1]),
                            [shape[0] * shape[1] * length])
  return tf.reshape(scattered, [shape[0], shape[1], length])


def max_pool_blocks(signal, pool_size: int, stride: int, frames,
                    first_block=0):
  """Strided per-channel window maxima, from maxima over blocks.

  `pooled[b, n, k] = max_{0 <= u < W} signal[b, n, (first_block + k) s + u]`.
  With the signal cut into blocks of s samples, a window of W = q s + r
  samples is q whole blocks and the first r samples of the next one: each
  frame is the largest of q + 1 block maxima, found by one pass over the
  signal (and one over the first r samples of each block). The gradient
  goes, as `tf.nn.max_pool`'s does, to the position of each frame's maximum
  (the first one, if several are equal), scattered into zeros: no pass over
  the signal but that zero fill.

  Args:
    signal: [batch, n, length] float32, length a multiple of s of at least
      (first_block + frames - 1 + ceil(W / s)) s.
    pool_size: W.
    stride: s.
    frames: number of output frames.
    first_block: the block where frame 0's window starts.

  Returns:
    [batch, n, frames] float32.
  """
  length = signal.shape[-1]

  @tf.custom_gradient
  def pooled_maxima(signal):
    pooled, position = _block_maxima(signal, pool_size, stride, frames,
                                     first_block)
    return pooled, lambda upstream: _scattered(upstream, position, length)

  return pooled_maxima(signal)


# Blocks (of all the clips of a batch together) that
# `real_filterbank_pooled_fft` computes at once: their filter outputs, [n,
# n_fft] float32 each (5.5 MB for SincNet's 80 filters at 16 kHz), stay in
# the CPU's caches through the filtering, masking and pooling, and through
# the backward pass.
REAL_GROUP_BLOCKS = 4
# At most this many groups of blocks are unrolled into the graph rather than
# computed in a tf.while_loop.
UNROLLED_GROUPS = 16
# The most filter outputs (blocks x n x n_fft values) that SincNet+'s forward
# pass keeps for its backward pass; beyond, the backward pass computes them
# again, group by group (one more inverse FFT per block and channel), so that
# memory does not grow with the clip: 32 blocks of 80 x 17280, 177 MB.
REAL_KEPT_OUTPUTS = 32 * 80 * 17280


def real_filterbank_pooled_fft(waveform, filters, activation, stride: int,
                               pool_size: int, pooling_windows=None,
                               group_blocks: int = REAL_GROUP_BLOCKS,
                               kept_outputs: int = REAL_KEPT_OUTPUTS):
  """Pooled activations of real filters' outputs, exactly, by FFT (SincNet).

  P_n[k] = pool_{0 <= u < W_pool} a(y_n[k s - pad + u]), y_n the 'SAME'
  (stride 1) cross-correlation of the clip with the real filter h_n, as
  TensorFlow pads it, a an elementwise activation (SincNet's LeakyReLU), and
  the pool 'SAME' at stride s, either the window sum sum_u g_n[u] (.)
  (SincNet+'s Gaussian pooling, `pooling_windows`, a(y) zero outside the
  clip) or the maximum (SincNet's max pooling, positions outside the clip
  left out). The clip is cut into the overlap-save blocks of
  `filterbank_energies_fft`; a block is one real FFT, and each channel's
  filtered signal one inverse real FFT, exact where it is used. By FFT, an
  output whose filter window holds only zeros (digital silence, padding) is
  float32 rounding noise of the block's other samples (about 1e-7 of them),
  where the direct convolution gives exactly 0; after a LeakyReLU and
  Gaussian pooling that noise is above the frontends' 1e-5 floor, and
  sPCEN's gain control amplifies it (SincNet+ on a half-silent clip: 3.5% of
  the largest output), so such outputs are made exactly 0 (their gradient
  is that of the direct computation: they have one, the outputs outside the
  clip none).

  The blocks of every clip of the batch are computed `group_blocks` at a
  time (`_grouped_real_blocks`), so that a group's [group, n, n_fft] filter
  outputs stay in the CPU's caches, with a backward pass of its own, group
  by group: y_n = irfft(X conj(H_n)) has the gradient irfft(sum_n G_n H_n)
  for the block and sum_blocks G_n conj(X) (weighted by bin) for conj(H_n),
  G_n = rfft(dL/dy_n). Max pooling keeps only the position of each maximum
  for it; Gaussian pooling keeps the filter outputs (up to `kept_outputs`
  values; beyond, they are computed again, group by group, so that memory
  does not grow with the clip).

  Args:
    waveform: [batch, time] float32.
    filters: [n, W] float32 taps (tau = -(W // 2) .. (W - 1) // 2): the
      columns of a `Conv1D` kernel [W, 1, n], transposed.
    activation: a function applied to float32 filter outputs elementwise;
      with max pooling, non-decreasing (it is applied to the maxima).
    stride: s, the pooling stride.
    pool_size: W_pool, the pooling window.
    pooling_windows: [W_pool, n] pooling windows, or None for max pooling.
    group_blocks: blocks computed at once, >= 1.
    kept_outputs: see above, >= 1.

  Returns:
    [batch, ceil(time / s), n] float32.
  """
  _check_block_counts(group_blocks=group_blocks, kept_outputs=kept_outputs)
  channels, kernel_size = filters.shape
  layout = _BlockLayout(waveform, kernel_size, pool_size, stride, 'SAME')
  n_fft = layout.n_fft
  padded = tf.pad(waveform, [[0, 0], [layout.offset, layout.padded_length -
                                      layout.offset - layout.length]])
  # [batch * blocks, n_fft]: the blocks of clip 0, then of clip 1, ...
  chunks = tf.reshape(tf.signal.frame(padded, n_fft, layout.hop),
                      [-1, n_fft])
  responses = tf.math.conj(real_filter_responses(filters, n_fft))
  maxima = pooling_windows is None
  pooled = _grouped_real_blocks(
      chunks, responses,
      None if maxima else tf.transpose(pooling_windows), layout.inside(),
      _RealBlockSettings(kernel_size, activation, stride, pool_size,
                         layout.first_block, layout.per_block, group_blocks,
                         kept_outputs))
  pooled = tf.reshape(tf.transpose(tf.reshape(
      pooled, [layout.batch, layout.blocks, channels, layout.per_block]),
                                   (0, 1, 3, 2)),
                      [layout.batch, layout.blocks * layout.per_block,
                       channels])[:, :layout.frames]
  # A maximum commutes with a non-decreasing activation: it is applied to
  # the pooled maxima.
  return activation(pooled) if maxima else pooled


class _RealBlockSettings:
  """The static settings of `_grouped_real_blocks`."""

  def __init__(self, kernel_size, activation, stride, pool_size, first_block,
               per_block, group_blocks, kept_outputs):
    self.kernel_size = kernel_size
    self.activation = activation
    self.stride = stride
    self.pool_size = pool_size
    self.first_block = first_block
    self.per_block = per_block
    self.group_blocks = group_blocks
    self.kept_outputs = kept_outputs


def _window_any(flags, kernel_size: int):
  """Whether any of `flags` [rows, n] is set in each filter window.

  Output p reads positions p - W // 2 .. p + (W - 1) // 2 (clipped to the
  row): an OR over windows of doubling lengths, log2(W) passes.

  Returns:
    [rows, n] bool.
  """
  n = flags.shape[-1]
  # Unset beyond the row's ends: window p starts at p here.
  ors = tf.pad(flags, [[0, 0], [kernel_size // 2, kernel_size]])
  # ors[p]: any flag at p .. p + span - 1, span doubling up to W.
  span = 1
  while 2 * span <= kernel_size:
    ors = tf.logical_or(ors, tf.pad(ors[:, span:], [[0, 0], [0, span]]))
    span *= 2
  # A window of W = two of `span` (2 span > W), overlapping.
  first = ors[:, :n]
  second = ors[:, kernel_size - span:kernel_size - span + n]
  return tf.logical_or(first, second)


@fft_ops.xla_function
def _filter_spectra(spectra, responses):
  """[size, bins] x [n, bins] -> [size, n, bins] products."""
  return spectra[:, None, :] * responses[None]


@fft_ops.xla_function
def _responses_gradient(accumulated, grad_spectra, spectra):
  """accumulated + sum over the group of dL/dZ conj(spectra) [n, bins]."""
  return accumulated + tf.reduce_sum(
      grad_spectra * tf.math.conj(spectra)[:, None], 0)


@fft_ops.xla_function
def _spectra_gradient(grad_spectra, responses):
  """sum_n dL/dZ_n conj(responses_n): [size, bins]."""
  return tf.reduce_sum(grad_spectra * tf.math.conj(responses)[None], 1)


def _group_size(items: int, most: int) -> int:
  """Blocks per group, at most `most`, for `items` blocks: the fewest
  blocks computed in all (the last group is filled up with zeros) plus a
  quarter of a block per group (10 blocks: 5 groups of 2, not 3 of 4)."""
  return min(range(1, max(min(most, items), 1) + 1),
             key=lambda size: (-(-items // size) * (size + 0.25), -size))


def _grouped_real_blocks(chunks, responses, windows, inside, settings):
  """Pooled activations of every block's filter outputs, group by group.

  Args:
    chunks: [items, n_fft] float32 blocks, clip after clip.
    responses: [n, n_fft // 2 + 1] complex64: y_n = irfft(rfft(block)
      responses_n).
    windows: [n, W_pool] float32 pooling windows, or None for maxima (the
      activation is then not applied).
    inside: [blocks, n_fft] bool, `_BlockLayout.inside` (item i is block i
      mod blocks of its clip).
    settings: a `_RealBlockSettings`.

  Returns:
    [items, n, per_block] float32.
  """
  n_fft = chunks.shape[-1]
  channels = responses.shape[0]
  per_block = settings.per_block
  maxima = windows is None
  outside = float(np.finfo(np.float32).min) if maxima else 0.
  items = chunks.shape[0]
  if items is not None:
    size = _group_size(items, settings.group_blocks)
    groups = -(-items // size)
  else:
    items = tf.shape(chunks)[0]
    size = settings.group_blocks
    groups = (items + size - 1) // size
  total = groups * size
  blocks = tf.shape(inside)[0]
  keep = (not maxima and is_static(items) and
          items * channels * n_fft <= settings.kept_outputs)
  # A few groups of a static count are computed one after the other in the
  # graph (TensorFlow may run two at once on two cores), more (or none, for
  # an empty batch) in a loop.
  unrolled = is_static(groups) and 0 < groups <= UNROLLED_GROUPS
  # Bin weights of the inverse real FFT's gradient: bins 0 and N / 2 stand
  # for themselves, the others for a pair of conjugate bins.
  bins = n_fft // 2 + 1
  weights = np.full(bins, 2. / n_fft, np.float32)
  weights[0] = 1. / n_fft
  if n_fft % 2 == 0:
    weights[-1] = 1. / n_fft
  weights = tf.constant(weights.astype(np.complex64))

  def grouped(values):
    """[items, ...] -> [groups, size, ...], zeros after the last item."""
    values = tf.pad(values, [[0, total - items]] +
                    [[0, 0]] * (values.shape.rank - 1))
    return tf.reshape(values, [groups, size, *values.shape[1:]])

  def ungrouped(values):
    return tf.reshape(values, [total, *values.shape[2:]])[:items]

  chunk_groups = grouped(chunks)
  # [groups, size, n_fft]: whether each output is one of the clip's, and
  # whether it reads a nonzero sample (else it is exactly 0, as directly).
  item_inside = tf.reshape(tf.gather(inside, tf.range(total) % blocks),
                           [groups, size, n_fft])
  heard = tf.reshape(_window_any(
      tf.not_equal(tf.reshape(chunk_groups, [total, n_fft]), 0.),
      settings.kernel_size), [groups, size, n_fft])

  @fft_ops.xla_function
  def masked(outputs, heard, inside):
    """Outputs outside the clip `outside`, those reading only zeros 0."""
    fill = tf.where(inside, 0., outside)
    return tf.where(tf.logical_and(heard, inside)[:, None], outputs,
                    fill[:, None])

  @fft_ops.xla_function
  def masked_maxima(outputs, heard, inside):
    return _block_maxima(masked(outputs, heard, inside), settings.pool_size,
                         settings.stride, per_block, settings.first_block)

  def pool(outputs, windows):
    return pool_blocks(settings.activation(outputs), windows,
                       settings.stride, per_block, settings.first_block)

  @fft_ops.xla_function
  def pooled_activations(outputs, heard, inside, windows):
    return pool(masked(outputs, heard, inside), windows)

  @fft_ops.xla_function
  def scattered(upstream, position):
    return _scattered(upstream, position, n_fft)

  @fft_ops.xla_function
  def pooling_gradients(outputs, heard, inside, windows, upstream):
    """dL/d(outputs) and dL/d(windows): as directly, the outputs that read
    only zeros (exactly 0) have a gradient, those outside the clip none.
    The pooling's adjoint is written out (`pool_blocks_adjoint`), the
    activation's derivative left to TensorFlow."""
    outputs = masked(outputs, heard, inside)
    with tf.GradientTape() as tape:
      tape.watch(outputs)
      activated = settings.activation(outputs)
    shape = tf.shape(activated)
    grad_activated, grad_windows = pool_blocks_adjoint(
        upstream, tf.reshape(activated, [shape[0], channels, -1,
                                         settings.stride]),
        window_blocks(windows, settings.stride), settings.first_block,
        per_block)
    grad_outputs = tape.gradient(activated, outputs, output_gradients=(
        tf.reshape(grad_activated, shape)))
    grad_windows = tf.reshape(grad_windows, [channels, -1])[
        :, :windows.shape[1]]
    return grad_outputs * tf.cast(inside, tf.float32)[:, None], grad_windows

  def filtered(chunk, responses):
    """[size, n_fft] blocks -> [size, n, n_fft] filter outputs, [size,
    bins] spectra."""
    spectra = tf.signal.rfft(chunk)
    return (tf.signal.irfft(_filter_spectra(spectra, responses), [n_fft]),
            spectra)

  def forward(responses, windows):
    """Pooled [groups, size, n, per_block] and what the backward pass reads,
    [groups, ...] each."""
    def group_results(i):
      outputs, spectra = filtered(chunk_groups[i], responses)
      if maxima:
        return masked_maxima(outputs, heard[i], item_inside[i]) + (spectra,)
      return ((pooled_activations(outputs, heard[i], item_inside[i],
                                  windows), spectra) +
              ((outputs,) if keep else ()))

    if unrolled:
      # Lists of the groups' tensors (the pooled ones stacked): no copy
      # into a TensorArray and out of it.
      results = [list(kind) for kind in zip(
          *[group_results(i) for i in range(groups)])]
      return [tf.stack(results[0])] + results[1:]
    kinds = ([tf.float32, tf.int32, tf.complex64] if maxima else
             [tf.float32, tf.complex64] + ([tf.float32] if keep else []))
    arrays = [tf.TensorArray(kind, size=groups) for kind in kinds]

    def body(i, *arrays):
      return (i + 1,) + tuple(array.write(i, result) for array, result in
                              zip(arrays, group_results(i)))

    arrays = tf.while_loop(lambda i, *unused: i < groups, body,
                           [tf.constant(0)] + arrays,
                           parallel_iterations=1)[1:]
    # Stacked: a gradient function that read a TensorArray (a variant
    # tensor) could not be saved in a SavedModel.
    return [array.stack() for array in arrays]

  def backward(upstream, saved, responses, windows):
    """Gradients of chunks, responses and windows from dL/dpooled."""
    upstream = grouped(upstream)

    def group_gradients(i, grad_responses, grad_windows):
      """Group i's dL/dchunk, and the accumulated dL/dresponses and
      dL/dwindows."""
      if maxima:
        grad_outputs = scattered(upstream[i], saved[0][i])
        spectra = saved[1][i]
      else:
        spectra = saved[0][i]
        if keep:
          outputs = saved[1][i]
        else:
          outputs = filtered(chunk_groups[i], responses)[0]
        grad_outputs, grad_group_windows = pooling_gradients(
            outputs, heard[i], item_inside[i], windows, upstream[i])
        grad_windows += grad_group_windows
      grad_spectra = tf.signal.rfft(grad_outputs)  # [size, n, bins]
      grad_responses = _responses_gradient(grad_responses, grad_spectra,
                                           spectra)
      grad_chunk = tf.signal.irfft(
          _spectra_gradient(grad_spectra, responses), [n_fft])
      return grad_chunk, grad_responses, grad_windows

    grad_responses = tf.zeros_like(responses)
    grad_windows = (tf.zeros_like(windows) if windows is not None else
                    tf.zeros([]))
    if unrolled:
      grad_chunks = []
      for i in range(groups):
        grad_chunk, grad_responses, grad_windows = group_gradients(
            i, grad_responses, grad_windows)
        grad_chunks.append(grad_chunk)
      grad_chunks = tf.stack(grad_chunks)
    else:
      def body(i, grad_chunks, grad_responses, grad_windows):
        grad_chunk, grad_responses, grad_windows = group_gradients(
            i, grad_responses, grad_windows)
        return (i + 1, grad_chunks.write(i, grad_chunk), grad_responses,
                grad_windows)

      _, grad_chunks, grad_responses, grad_windows = tf.while_loop(
          lambda i, *unused: i < groups, body,
          [tf.constant(0), tf.TensorArray(tf.float32, size=groups,
                                          element_shape=[size, n_fft]),
           grad_responses, grad_windows], parallel_iterations=1)
      grad_chunks = grad_chunks.stack()
    grads = [ungrouped(grad_chunks), grad_responses * weights]
    return grads + ([] if maxima else [grad_windows])

  @tf.custom_gradient
  def compute(chunks, responses, *windows):
    del chunks  # read as chunk_groups
    outputs = forward(responses, *(windows or [None]))
    return ungrouped(outputs[0]), lambda upstream: backward(
        upstream, outputs[1:], responses, *(windows or [None]))

  return compute(chunks, responses,
                 *([] if windows is None else [windows]))


def _check_block_counts(**counts):
  for name, value in counts.items():
    if (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
        or value < 1):
      raise ValueError(f'{name} must be a number of blocks >= 1, got '
                       f'{value!r}.')


class _BlockLayout:
  """Where the overlap-save blocks of a clip lie, and how long they are.

  Attributes:
    length: T, the clip's samples (int or scalar int tensor).
    batch: scalar int tensor.
    frames: output frames (int or scalar int tensor).
    pad_left: zeros the pooling's padding adds before the clip.
    per_block: output frames per block (`block_frames`).
    blocks: blocks per clip, at least 1.
    first_block: the stride-sized block of a block's samples where frame 0's
      pooling window starts.
    n_fft: samples per block (its FFT length), a multiple of the stride.
    hop: samples between blocks, stride * per_block.
    offset: zeros before the clip in the padded signal whose frames of n_fft
      samples, every hop, are the blocks.
    padded_length: that padded signal's samples.
  """

  def __init__(self, waveform, kernel_size: int, pool_size: int,
               stride: int, padding: str):
    length = waveform.shape[1]
    if length is None:
      length = tf.shape(waveform)[1]
    self.length = length
    self.stride = stride
    self.batch = tf.shape(waveform)[0]
    pool_half = pool_size // 2
    if padding == 'SAME':
      frames, pad_left = same_padding(length, pool_size, stride)
    elif padding == 'VALID':
      frames = static_maximum((length - pool_size) // stride + 1, 0)
      pad_left = 0
    else:
      raise ValueError(
          f"padding must be 'SAME' or 'VALID', got {padding!r}.")
    self.frames, self.pad_left = frames, pad_left
    per_block = block_frames(frames if is_static(frames) else None)
    self.per_block = per_block
    # At least one block, so that the shapes stay valid for clips too short
    # for any 'VALID' frame (sliced to none at the end).
    self.blocks = static_maximum((frames + per_block - 1) // per_block, 1)
    # As TensorFlow's 'SAME' convolution pads it, y[t] = sum_k x[t - (W - 1)
    # // 2 + k] phi(k - W // 2): it reads x from `before` samples before t
    # to `after` after, and for an even W the filter's centre tap is `shift`
    # = 1 sample after t (y[t] = sum_tau x[t + shift + tau] phi(tau)).
    before, after = (kernel_size - 1) // 2, kernel_size // 2
    shift = kernel_size // 2 - (kernel_size - 1) // 2
    # In a block, frame j's window centre is at margin + j s; the first
    # window starts a whole number of strides in (for `pool_blocks`), at
    # least `before` in, where the filtered signal starts to be exact.
    self.first_block = -(-before // stride)
    margin = pool_half + self.first_block * stride
    last = margin + stride * (per_block - 1) + pool_size - pool_half
    self.n_fft = fft_length(max(
        last + after,
        (self.first_block + per_block - 1 + -(-pool_size // stride)) *
        stride, kernel_size), stride)
    self.hop = stride * per_block
    self.offset = margin - (pool_half - pad_left + shift)
    self.padded_length = (self.blocks - 1) * self.hop + self.n_fft

  def inside(self, first=0, count=None):
    """[count, n_fft] bool: whether each filter output of blocks first ..
    first + count - 1 is one of the clip's (at a clip sample 0 .. T - 1)."""
    count = self.blocks if count is None else count
    position = (self.hop * (first + tf.range(count)[:, None]) -
                self.pad_left - self.first_block * self.stride +
                tf.range(self.n_fft)[None])
    return tf.logical_and(position >= 0, position < self.length)


def _pooled_by_blocks(waveform, kernel_size: int, pool_size: int,
                      stride: int, padding: str, channels: int, operands,
                      features, pool, group_blocks: int, max_blocks: int):
  """The overlap-save computation of the complex filterbanks.

  Args:
    waveform: [batch, time] float32.
    kernel_size: W, the filters' taps.
    pool_size: W_pool.
    stride: s.
    padding: the pooling's, 'SAME' or 'VALID'.
    channels: n, the output channels.
    operands: n_fft -> a list of tensors the blocks are computed from (the
      filters' responses, the pooling windows), differentiated.
    features: (chunks [batch', n_fft] float32, *operands) -> [batch', n,
      n_fft] float32, the filtered and activated blocks.
    pool: (features, *operands, first_block, frames) -> [batch', n, frames]
      pooled features of each block.
    group_blocks, max_blocks: see `filterbank_energies_fft`.

  Returns:
    [batch, frames, n] float32.
  """
  _check_block_counts(group_blocks=group_blocks, max_blocks=max_blocks)
  layout = _BlockLayout(waveform, kernel_size, pool_size, stride, padding)
  length, batch, frames = layout.length, layout.batch, layout.frames
  per_block, blocks, first_block = (layout.per_block, layout.blocks,
                                    layout.first_block)
  n_fft, hop = layout.n_fft, layout.hop
  tensors = operands(n_fft)

  def pooled_blocks(segment, first, count, *tensors):
    """[batch, (count - 1) hop + n_fft] samples from block `first` on ->
    [batch, count * per_block, n] pooled features of `count` blocks."""
    chunks = tf.reshape(tf.signal.frame(segment, n_fft, hop), [-1, n_fft])
    outputs = tf.reshape(features(chunks, *tensors),
                         [batch, count, channels, n_fft])
    inside = layout.inside(first, count)
    # The features outside the clip are 0.
    outputs = outputs * tf.cast(inside, tf.float32)[None, :, None, :]
    pooled = pool(tf.reshape(outputs, [-1, channels, n_fft]), *tensors,
                  first_block, per_block)
    return tf.reshape(tf.transpose(tf.reshape(
        pooled, [batch, count, channels, per_block]), (0, 1, 3, 2)),
                      [batch, count * per_block, channels])

  offset = layout.offset
  if not is_static(blocks) or blocks <= max(max_blocks, group_blocks):
    padded_length = (blocks - 1) * hop + n_fft
    padded = tf.pad(waveform,
                    [[0, 0], [offset, padded_length - offset - length]])
    pooled = pooled_blocks(padded, 0, blocks, *tensors)
    return pooled[:, :frames]
  groups = -(-blocks // group_blocks)
  per_group = -(-blocks // groups)
  span = (per_group - 1) * hop + n_fft
  padded_length = (groups * per_group - 1) * hop + n_fft
  padded = tf.pad(waveform,
                  [[0, 0], [offset, padded_length - offset - length]])
  # [groups, batch, span]: the samples each group's blocks read.
  segments = tf.transpose(
      tf.signal.frame(padded, span, per_group * hop), (1, 0, 2))
  group_outputs = _recomputing(
      lambda segment, first, *tensors: pooled_blocks(
          segment, first, per_group, *tensors))
  pooled = tf.map_fn(
      lambda args: group_outputs(args[0], args[1], *tensors),
      (segments, per_group * tf.range(groups)),
      fn_output_signature=tf.float32, parallel_iterations=1)
  pooled = tf.reshape(tf.transpose(pooled, (1, 0, 2, 3)),
                      [batch, groups * per_group * per_block, channels])
  return pooled[:, :frames]


def _recomputing(compute):
  """`compute(segment, first, *tensors)`, with a backward pass that computes
  it again (keeping only its inputs) to take its gradient.

  The gradient reaches `segment` and `tensors`; `first` is an integer.
  """

  def run(segment, first, *tensors):

    @tf.custom_gradient
    def recomputed(segment, *tensors):

      def grad(upstream):
        inputs = [segment, *tensors]
        with tf.GradientTape() as tape:
          tape.watch(inputs)
          again = compute(segment, first, *tensors)
        return tape.gradient(again, inputs, output_gradients=upstream)

      return compute(segment, first, *tensors), grad

    return recomputed(segment, *tensors)

  return run
