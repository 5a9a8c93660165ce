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


def _pool_block_products(blocks, windows, stride: int, frames, first_block):
  """`pool_blocks` of a signal already cut into [batch, n, blocks, s]."""
  channels, kernel_size = windows.shape[0], windows.shape[1]
  blocks_per_window = -(-kernel_size // stride)
  batch = tf.shape(blocks)[0]
  windows = tf.pad(windows,
                   [[0, 0], [0, blocks_per_window * stride - kernel_size]])
  windows = tf.reshape(windows, [channels, blocks_per_window, stride])
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
  for name, value in (('group_blocks', group_blocks),
                      ('max_blocks', max_blocks)):
    if (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
        or value < 1):
      raise ValueError(f'{name} must be a number of blocks >= 1, got '
                       f'{value!r}.')
  length = waveform.shape[1]
  if length is None:
    length = tf.shape(waveform)[1]
  batch = tf.shape(waveform)[0]
  channels, kernel_size = filters.shape[0], filters.shape[1]
  pool_size = pooling_windows.shape[0]
  pool_half = pool_size // 2
  if padding == 'SAME':
    frames, pad_left = same_padding(length, pool_size, stride)
  elif padding == 'VALID':
    frames = static_maximum((length - pool_size) // stride + 1, 0)
    pad_left = 0
  else:
    raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}.")
  per_block = block_frames(frames if is_static(frames) else None)
  # At least one block, so that the shapes below stay valid for clips too
  # short for any 'VALID' frame (sliced to none at the end).
  blocks = static_maximum((frames + per_block - 1) // per_block, 1)
  # As TensorFlow's 'SAME' convolution pads it, y[t] = sum_k x[t - (W - 1)
  # // 2 + k] phi(k - W // 2): it reads x from `before` samples before t to
  # `after` after, and for an even W the filter's centre tap is `shift` = 1
  # sample after t (y[t] = sum_tau x[t + shift + tau] phi(tau)).
  before, after = (kernel_size - 1) // 2, kernel_size // 2
  shift = kernel_size // 2 - (kernel_size - 1) // 2
  # In a block, frame j's window centre is at margin + j s; the first window
  # starts a whole number of strides in (for `pool_blocks`), at least
  # `before` in, where the filtered signal starts to be exact.
  first_block = -(-before // stride)
  margin = pool_half + first_block * stride
  last = margin + stride * (per_block - 1) + pool_size - pool_half
  n_fft = fft_length(max(
      last + after,
      (first_block + per_block - 1 + -(-pool_size // stride)) * stride,
      kernel_size), stride)
  hop = stride * per_block
  responses = fft_ops.filter_responses(filters, n_fft)
  windows = tf.broadcast_to(tf.transpose(pooling_windows),
                            [channels, pool_size])

  def pooled_blocks(segment, first, count, responses, windows):
    """[batch, (count - 1) hop + n_fft] samples from block `first` on ->
    [batch, count * per_block, n] pooled energies of `count` blocks."""
    chunks = tf.reshape(tf.signal.frame(segment, n_fft, hop), [-1, n_fft])
    # A complex FFT of the real blocks: on CPU it costs less than an rFFT
    # followed by rebuilding the negative frequencies (0.9 against 1.5 ms
    # for 32 blocks of 17280 samples; 49 against 180 us for one).
    spectra = tf.signal.fft(as_complex(chunks))
    # |y_n|^2 in every block: [batch * count, n, n_fft].
    energies = squared_modulus(
        tf.signal.ifft(spectra[:, None, :] * responses[None]))
    # Clip sample of every position, to zero |y|^2 outside the clip.
    position = (hop * (first + tf.range(count)[:, None]) - pad_left -
                first_block * stride + tf.range(n_fft)[None])
    inside = tf.logical_and(position >= 0, position < length)
    energies = tf.reshape(energies, [batch, count, channels, n_fft]) * (
        tf.cast(inside, tf.float32)[None, :, None, :])
    pooled = pool_blocks(tf.reshape(energies, [-1, channels, n_fft]),
                         windows, stride, per_block, first_block)
    return tf.reshape(tf.transpose(tf.reshape(
        pooled, [batch, count, channels, per_block]), (0, 1, 3, 2)),
                      [batch, count * per_block, channels])

  offset = margin - (pool_half - pad_left + shift)
  if not is_static(blocks) or blocks <= max(max_blocks, group_blocks):
    padded_length = (blocks - 1) * hop + n_fft
    padded = tf.pad(waveform,
                    [[0, 0], [offset, padded_length - offset - length]])
    pooled = pooled_blocks(padded, 0, blocks, responses, windows)
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
  group_energies = _recomputing(
      lambda segment, first, responses, windows: pooled_blocks(
          segment, first, per_group, responses, windows))
  pooled = tf.map_fn(
      lambda args: group_energies(args[0], args[1], responses, windows),
      (segments, per_group * tf.range(groups)),
      fn_output_signature=tf.float32, parallel_iterations=1)
  pooled = tf.reshape(tf.transpose(pooled, (1, 0, 2, 3)),
                      [batch, groups * per_group * per_block, channels])
  return pooled[:, :frames]


def _recomputing(compute):
  """`compute(segment, first, responses, windows)`, with a backward pass that
  computes it again (keeping only its inputs) to take its gradient.

  The gradient reaches `segment`, `responses` and `windows`; `first` is an
  integer.
  """

  def run(segment, first, responses, windows):

    @tf.custom_gradient
    def recomputed(segment, responses, windows):

      def grad(upstream):
        with tf.GradientTape() as tape:
          tape.watch([segment, responses, windows])
          again = compute(segment, first, responses, windows)
        return tape.gradient(again, [segment, responses, windows],
                             output_gradients=upstream)

      return compute(segment, first, responses, windows), grad

    return recomputed(segment, responses, windows)

  return run
