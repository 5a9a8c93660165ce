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
channel, maxima from block maxima (`max_pool_blocks`).
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
      operands, features, pool, 0., group_blocks, max_blocks)


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
  whole, rest = divmod(pool_size, stride)
  length = signal.shape[-1]

  @tf.custom_gradient
  def pooled_maxima(signal):
    shape = tf.shape(signal)
    blocks = tf.reshape(signal, [shape[0], shape[1], -1, stride])
    offsets = []  # [batch, n, frames] positions in the signal
    if whole:
      block_arg = tf.math.argmax(blocks, axis=-1, output_type=tf.int32)
      block_start = stride * tf.range(tf.shape(blocks)[2])
      block_arg += block_start
      offsets += [block_arg[:, :, first_block + j:first_block + j + frames]
                  for j in range(whole)]
    if rest:
      head_arg = tf.math.argmax(blocks[..., :rest], axis=-1,
                                output_type=tf.int32)
      head_arg += stride * tf.range(tf.shape(blocks)[2])
      offsets.append(head_arg[:, :, first_block + whole:
                              first_block + whole + frames])
    # The candidates of each frame are in the order of their positions:
    # argmax picks the first largest.
    positions = tf.stack(offsets, axis=-1)  # [batch, n, frames, q + 1]
    candidates = tf.gather(signal, positions, batch_dims=2)
    best = tf.math.argmax(candidates, axis=-1, output_type=tf.int32)
    position = tf.gather(positions, best, batch_dims=3)  # [batch, n, frames]
    pooled = tf.gather(candidates, best, batch_dims=3)

    def grad(upstream):
      rows = tf.range(shape[0] * shape[1])[:, None]
      flat = tf.reshape(position, [shape[0] * shape[1], -1]) + rows * length
      gradient = tf.scatter_nd(tf.reshape(flat, [-1, 1]),
                               tf.reshape(upstream, [-1]),
                               [shape[0] * shape[1] * length])
      return tf.reshape(gradient, shape)

    return pooled, grad

  return pooled_maxima(signal)


def real_filterbank_pooled_fft(waveform, filters, activation, stride: int,
                               pool_size: int, pooling_windows=None,
                               group_blocks: int = GROUP_BLOCKS,
                               max_blocks: int = MAX_BLOCKS):
  """Pooled activations of real filters' outputs, exactly, by FFT (SincNet).

  P_n[k] = pool_{0 <= u < W_pool} a(y_n[k s - pad + u]), y_n the 'SAME'
  (stride 1) cross-correlation of the clip with the real filter h_n, as
  TensorFlow pads it, a an elementwise activation (SincNet's LeakyReLU), and
  the pool 'SAME' at stride s, either the window sum sum_u g_n[u] (.)
  (SincNet+'s Gaussian pooling, `pooling_windows`, a(y) zero outside the
  clip) or the maximum (SincNet's max pooling, positions outside the clip
  left out). The overlap-save blocks, grouping of long clips and exactness
  are those of `filterbank_energies_fft`; a block is one real FFT, and each
  channel's filtered signal one inverse real FFT.

  Args:
    waveform: [batch, time] float32.
    filters: [n, W] float32 taps (tau = -(W // 2) .. (W - 1) // 2): the
      columns of a `Conv1D` kernel [W, 1, n], transposed.
    activation: a function applied to float32 filter outputs elementwise;
      with max pooling, non-decreasing (it is applied to the maxima).
    stride: s, the pooling stride.
    pool_size: W_pool, the pooling window.
    pooling_windows: [W_pool, n] pooling windows, or None for max pooling.
    group_blocks, max_blocks: see `filterbank_energies_fft`.

  Returns:
    [batch, ceil(time / s), n] float32.
  """
  channels = filters.shape[0]

  def operands(n_fft):
    responses = tf.math.conj(real_filter_responses(filters, n_fft))
    if pooling_windows is None:
      return [responses]
    return [responses, tf.transpose(pooling_windows)]

  def features(chunks, responses, *unused_windows):
    n_fft = chunks.shape[-1]
    spectra = tf.signal.rfft(chunks)
    return tf.signal.irfft(spectra[:, None, :] * responses[None], [n_fft])

  def pool(outputs, unused_responses, *windows_and_block):
    *windows, first_block, frames = windows_and_block
    if windows:
      return pool_blocks(activation(outputs), windows[0], stride, frames,
                         first_block)
    return max_pool_blocks(outputs, pool_size, stride, frames, first_block)

  if pooling_windows is not None:
    return _pooled_by_blocks(
        waveform, filters.shape[1], pool_size, stride, 'SAME', channels,
        operands, features, pool, 0., group_blocks, max_blocks,
        silence=True)
  # A maximum commutes with a non-decreasing activation: it is applied to
  # the pooled maxima.
  return activation(_pooled_by_blocks(
      waveform, filters.shape[1], pool_size, stride, 'SAME', channels,
      operands, features, pool, float(np.finfo(np.float32).min),
      group_blocks, max_blocks, silence=True))


def _pooled_by_blocks(waveform, kernel_size: int, pool_size: int,
                      stride: int, padding: str, channels: int, operands,
                      features, pool, outside: float, group_blocks: int,
                      max_blocks: int, silence: bool = False):
  """The overlap-save computation both filterbanks share.

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
    outside: the value of a feature at positions outside the clip (0 for
      sums, the lowest float for maxima).
    group_blocks, max_blocks: see `filterbank_energies_fft`.
    silence: whether the filter outputs at positions whose filter window
      holds only zero samples are made exactly 0, as the direct convolution
      gives them (`_masked_outputs`).

  Returns:
    [batch, frames, n] float32.
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
  tensors = operands(n_fft)

  def pooled_blocks(segment, first, count, *tensors):
    """[batch, (count - 1) hop + n_fft] samples from block `first` on ->
    [batch, count * per_block, n] pooled features of `count` blocks."""
    chunks = tf.reshape(tf.signal.frame(segment, n_fft, hop), [-1, n_fft])
    outputs = tf.reshape(features(chunks, *tensors),
                         [batch, count, channels, n_fft])
    # Clip sample of every position, for the features outside the clip.
    position = (hop * (first + tf.range(count)[:, None]) - pad_left -
                first_block * stride + tf.range(n_fft)[None])
    inside = tf.logical_and(position >= 0, position < length)
    if silence:
      outputs = _masked_outputs(outputs, inside, _heard(chunks, kernel_size),
                                outside)
    elif outside == 0.:
      outputs = outputs * tf.cast(inside, tf.float32)[None, :, None, :]
    else:
      outputs = tf.where(inside[None, :, None, :], outputs, outside)
    pooled = pool(tf.reshape(outputs, [-1, channels, n_fft]), *tensors,
                  first_block, per_block)
    return tf.reshape(tf.transpose(tf.reshape(
        pooled, [batch, count, channels, per_block]), (0, 1, 3, 2)),
                      [batch, count * per_block, channels])

  offset = margin - (pool_half - pad_left + shift)
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


def _heard(chunks, kernel_size: int):
  """Whether each filter output of each block reads a nonzero sample.

  Args:
    chunks: [batch * count, n_fft] blocks of the clip.
    kernel_size: W.

  Returns:
    [batch * count, n_fft] bool: output p of a block, sum_tau x[p + tau]
    h(tau) over tau = -(W // 2) .. (W - 1) // 2, reads a nonzero sample.
  """
  n_fft = chunks.shape[-1]
  counts = tf.pad(tf.cumsum(tf.cast(tf.not_equal(chunks, 0.), tf.float32),
                            axis=1), [[0, 0], [1, 0]])
  index = np.arange(n_fft)
  start = np.clip(index - kernel_size // 2, 0, n_fft)
  stop = np.clip(index + (kernel_size - 1) // 2 + 1, 0, n_fft)
  return (tf.gather(counts, stop, axis=1) -
          tf.gather(counts, start, axis=1)) > 0.5


def _masked_outputs(outputs, inside, heard, outside: float):
  """Filter outputs with those outside the clip set to `outside` and those
  that read only zero samples set to exactly 0.

  By FFT, an output whose filter window holds only zeros (digital silence,
  zero padding) is float32 rounding noise of the block's other samples
  (about 1e-7 of them), where the direct convolution gives exactly 0; after
  a LeakyReLU and Gaussian pooling that noise is above the frontends' 1e-5
  floor, and sPCEN's gain control amplifies it (SincNet+ on a half-silent
  clip: 3.5% of the largest output). The gradient is that of the direct
  computation: upstream at the outputs inside the clip (silent ones
  included), none outside; for maxima (`outside` the lowest float), whose
  gradient never reaches outside outputs, upstream as it is.

  Args:
    outputs: [batch, count, channels, n_fft] filter outputs.
    inside: [count, n_fft] bool, the positions inside the clip.
    heard: [batch * count, n_fft] bool (`_heard`).
    outside: 0 (sums) or the lowest float (maxima).

  Returns:
    [batch, count, channels, n_fft].
  """
  shape = tf.shape(outputs)
  heard = tf.reshape(heard, [shape[0], shape[1], 1, shape[3]])
  keep = tf.logical_and(heard, inside[None, :, None, :])
  fill = tf.where(inside, 0., outside)[None, :, None, :]
  gradient_mask = (tf.cast(inside, tf.float32)[None, :, None, :]
                   if outside == 0. else None)

  @tf.custom_gradient
  def masked(outputs):

    def grad(upstream):
      return upstream if gradient_mask is None else upstream * gradient_mask

    return tf.where(keep, outputs, fill), grad

  return masked(outputs)


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
