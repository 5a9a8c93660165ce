"""LEAF's filtering, squared modulus and pooling without a direct convolution.

LEAF's first three stages (Section 3 of the paper) compute, for each channel
n and frame k,

 P_n[k] = sum_t g_n[t - c_k] |y_n[t]|^2,  y_n[t] = sum_tau x[t + tau] phi_n[tau]

with phi_n the W-tap complex Gabor filter of Eq. 4 (`GaborConv1D`, as a
cross-correlation, 'SAME' padding), |.|^2 the squared modulus of Eq. 3 and g_n
the W-tap Gaussian pooling window of Eq. 5 (`GaussianLowpass`, stride s,
'SAME' padding, |y|^2 taken as zero outside the clip). The original release
computes this as a direct convolution of 2N real filters at the full sample
rate. This module has two other formulations of the same P:

- `pooled_energies_fft`, exact up to float32 rounding: the filtering by FFT
  (overlap-save blocks of 100 frames: one FFT per block, one inverse FFT per
  block and channel), the squared modulus, and the pooling as one batched
  matrix product over blocks of s samples (`pool_blocks`).
- `pooled_energies_banded`, the fast mode (see `BandedPlan`): each channel is
  filtered in the frequency domain only over the bins where its response is
  not negligible, demodulated to baseband and evaluated at a reduced rate
  before the squared modulus, and pooled at that rate, with a quadrature that
  is exact for band-limited signals away from the clip's edges and accurate
  at them.

Both take the weights of the layers they replace, so that the parameters,
their layout and the output shape are those of the original.
`FilterbankEnergies` picks one for `Leaf(implementation=...)`.
"""

import functools
import math
import warnings

import numpy as np
import tensorflow as tf

from leaf_audio import impulse_responses


def _is_static(value):
  return isinstance(value, (int, np.integer))


def _maximum(a, b):
  return max(a, b) if _is_static(a) and _is_static(b) else tf.maximum(a, b)


# Every 2^a 3^b 5^c up to 2^30.
_FIVE_SMOOTH = np.array(sorted(
    2**a * 3**b * 5**c for a in range(31) for b in range(20) for c in range(14)
    if 2**a * 3**b * 5**c <= 2**30), np.int64)
# FFT lengths that TensorFlow's FFT computes fastest: multiples of 16 (or
# powers of 2) with no prime factor above 5 (on 2 CPU cores, 40 inverse FFTs
# of 16875 = 3^3 5^4 points take 6.9 ms, of 16384 or 17280 = 2^7 3^3 5 points
# 3.6-3.8 ms).
_SMOOTH_LENGTHS = _FIVE_SMOOTH[(_FIVE_SMOOTH % 16 == 0) |
                               (_FIVE_SMOOTH & (_FIVE_SMOOTH - 1) == 0)]


def fft_length(min_length: int, multiple: int = 1) -> int:
  """The smallest fast FFT length >= min_length that `multiple` divides.

  When `multiple` has a prime factor above 5 (a stride of 441 samples at
  44.1 kHz, 220 at 22.05 kHz), no fast length is a multiple of it: the
  length is then `multiple` times the smallest 2^a 3^b 5^c that reaches
  min_length.

  Args:
    min_length: the least length.
    multiple: a number the length must be a multiple of.

  Returns:
    A length from `_SMOOTH_LENGTHS`, or `multiple` times a 5-smooth number.
  """
  candidates = _SMOOTH_LENGTHS[np.searchsorted(_SMOOTH_LENGTHS, min_length):]
  fast = candidates[candidates % multiple == 0]
  if fast.size:
    return int(fast[0])
  factors = _FIVE_SMOOTH[_FIVE_SMOOTH * multiple >= min_length]
  return int(multiple * factors[0])


def same_padding(length, kernel_size: int, stride: int):
  """Frames and left padding of a 'SAME' strided window, as in TensorFlow.

  Args:
    length: number of input samples T (int or scalar int tensor).
    kernel_size: window length W.
    stride: hop s.

  Returns:
    (frames, pad_left): frames = ceil(T / s), and the number of zeros that
    'SAME' padding adds before the first sample; frame k covers input samples
    k s - pad_left .. k s - pad_left + W - 1.
  """
  frames = (length + stride - 1) // stride
  pad_total = _maximum((frames - 1) * stride + kernel_size - length, 0)
  return frames, pad_total // 2


@tf.custom_gradient
def squared_modulus(z):
  """|z|^2 of a complex tensor, with a one-op gradient (Eq. 3).

  TensorFlow's gradient of `real(z)^2 + imag(z)^2` builds and adds complex
  tensors and is ~5x slower than `2 dL/d|z|^2 z`, used here.

  Args:
    z: complex64 tensor.

  Returns:
    float32 tensor of the same shape.
  """
  energies = tf.math.real(z * tf.math.conj(z))

  def grad(upstream):
    return tf.cast(2. * upstream, tf.complex64) * z

  return energies, grad


@tf.custom_gradient
def as_complex(x):
  """A float32 tensor as complex64, by a cast (`tf.complex(x, 0.)` costs
  ~40 us more on CPU for a few thousand values), with the real part of the
  upstream gradient as its gradient (the cast's own gradient does the same
  but logs a warning about discarding the imaginary part)."""

  def grad(upstream):
    return tf.math.real(upstream)

  return tf.cast(x, tf.complex64), grad


def filter_responses(filters, n_fft):
  """Frequency responses of complex W-tap filters, for `N ifft(X H)`.

  `H_n[nu] = sum_tau conj(phi_n(tau)) exp(2 pi i nu tau / N)` for the taps
  phi_n(tau), tau = -(W // 2) .. (W - 1) // 2, so that `N ifft(X H_n)[t]` is
  the complex conjugate of `y_n[t] = sum_tau x[t + tau] phi_n(tau)`
  (circularly, for a real x).

  Args:
    filters: [n, W] complex64 taps.
    n_fft: N >= W.

  Returns:
    [n, n_fft] complex64.
  """
  kernel_size = filters.shape[1]
  taps = tf.math.conj(filters)
  half = kernel_size // 2
  circular = tf.concat([
      taps[:, half:],
      tf.zeros([tf.shape(taps)[0], n_fft - kernel_size], tf.complex64),
      taps[:, :half]], axis=1)
  return tf.signal.ifft(circular) * tf.complex(tf.cast(n_fft, tf.float32), 0.)


def gabor_responses(kernel, kernel_size: int, n_fft):
  """`filter_responses` of the W-tap Gabor filters (Eq. 4).

  `H_n[nu] = sum_{tau} a_n(tau) exp(i (2 pi nu / N - eta_n) tau)`, with a_n the
  truncated Gaussian envelope of phi_n: demodulated by eta_n.

  Args:
    kernel: [n, 2] Gabor parameters (center frequency, sigma), constrained.
    kernel_size: W, the number of taps.
    n_fft: N >= W.

  Returns:
    [n, n_fft] complex64.
  """
  real, imag = impulse_responses.gabor_real_imag(kernel, kernel_size)
  return filter_responses(tf.complex(real, imag), n_fft)


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


# From this many bins on, `band_gabor_responses` splits its basis (see there).
_SPLIT_BASIS_BINS = 2048


def band_gabor_responses(kernel, first_bin, kernel_size: int, n_fft: int,
                         bins: int):
  """`gabor_responses` over a band of bins only, for an odd W.

  With a symmetric envelope a_n (tau from -W // 2 to W // 2), the demodulated
  response H_n[nu] = A_n(2 pi nu / N - eta_n) of `gabor_responses` is real:
  A_n(phi) = a_n(0) + 2 sum_{tau >= 1} a_n(tau) cos(phi tau). At the bins
  nu = first_bin_n + j, phi = 2 pi j / N + delta_n with
  delta_n = 2 pi first_bin_n / N - eta_n, so that by the angle-sum formula
  every channel's response is one product with the same constant basis
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
    kernel: [n, 2] Gabor parameters (center frequency, sigma), constrained.
    first_bin: [n] int, each channel's first bin (any integer: the response
      is N-periodic in it).
    kernel_size: W, odd.
    n_fft: N.
    bins: how many bins from each first bin.

  Returns:
    [n, bins] float32.
  """
  if kernel_size % 2 != 1:
    raise ValueError(f'band_gabor_responses needs an odd number of taps, got '
                     f'{kernel_size}.')
  half = kernel_size // 2
  eta, sigma = kernel[:, 0:1], kernel[:, 1:2]
  tau = np.arange(1, half + 1, dtype=np.float32)[None, :]
  peak = 1. / (math.sqrt(2. * math.pi) * sigma)  # a_n(0), [n, 1]
  envelope = peak * tf.exp(-tf.square(tau) / (2. * tf.square(sigma)))
  # delta_n as (first bin - centre bin, wrapped to [-N / 2, N / 2) in
  # integers) + (centre bin - eta), both small: float32 keeps the phases
  # delta_n tau accurate whatever first_bin is.
  centre = tf.stop_gradient(
      tf.cast(tf.round(eta[:, 0] * (n_fft / (2. * math.pi))), tf.int32))
  offset = tf.math.floormod(first_bin - centre + n_fft // 2,
                            n_fft) - n_fft // 2
  delta = (tf.cast(offset, tf.float32)[:, None] * (2. * math.pi / n_fft) +
           (tf.cast(centre, tf.float32)[:, None] * (2. * math.pi / n_fft) -
            eta))
  cosines = 2. * envelope * tf.cos(delta * tau)  # [n, half]
  sines = -2. * envelope * tf.sin(delta * tau)
  if bins < _SPLIT_BASIS_BINS:
    return peak + tf.matmul(tf.concat([cosines, sines], axis=1),
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
  return peak + tf.reshape(responses, [-1, rows * cols])[:, :bins]


def _grid_interpolation_weights(values, decimation: int):
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


def _concat(tensors, axis):
  """tf.concat, without an op for a single tensor."""
  return tensors[0] if len(tensors) == 1 else tf.concat(tensors, axis)


def _static_size(tensor):
  """Number of elements of a tensor of a static shape, else infinity."""
  if tensor.shape.rank is None or None in tensor.shape.as_list():
    return math.inf
  return tensor.shape.num_elements()


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


def _in_xla_context():
  """Whether the graph being built is compiled with XLA (True if unknown)."""
  try:
    from tensorflow.python.ops import control_flow_util  # pylint: disable=g-import-not-at-top
  except ImportError:
    return True
  return control_flow_util.GraphOrParentsInXlaContext(
      tf.compat.v1.get_default_graph())


def pool_squared_modulus(filtered, windows, stride: int, frames,
                         first_block=0):
  """`pool_blocks(|filtered|^2, ...)`, without |filtered|^2 in memory.

  The complex samples are read as their interleaved real and imaginary parts
  (a bitcast, no copy) and squared in one pass; the pooling product takes
  each window tap twice, once for each part. Computing |z|^2 first costs
  three passes over complex tensors (conjugate, product, real part) and two
  more tensors alive at once. The gradient recomputes |z|^2. Under XLA,
  which has no bitcast of complex tensors (and fuses the passes itself),
  |z|^2 is computed first.

  Args:
    filtered: [batch, n, length] complex64, length as for `pool_blocks`.
    windows: [n, W] float32 pooling windows.
    stride: s.
    frames: number of output frames.
    first_block: the block where frame 0's window starts.

  Returns:
    [batch, n, frames] float32.
  """
  if _in_xla_context():
    return pool_blocks(squared_modulus(filtered), windows, stride, frames,
                       first_block)

  @tf.custom_gradient
  def pooled(filtered, windows):
    parts = tf.square(tf.bitcast(filtered, tf.float32))  # [b, n, length, 2]
    shape = tf.shape(parts)
    blocks = tf.reshape(parts, [shape[0], shape[1], -1, 2 * stride])
    kernel_size = windows.shape[1]
    padded = tf.pad(windows, [[0, 0], [0, -kernel_size % stride]])
    result = _pool_block_products(blocks, tf.repeat(padded, 2, axis=1),
                                  2 * stride, frames, first_block)

    def grad(upstream):
      energies = tf.math.real(filtered * tf.math.conj(filtered))
      with tf.GradientTape() as tape:
        tape.watch([energies, windows])
        recomputed = pool_blocks(energies, windows, stride, frames,
                                 first_block)
      d_energies, d_windows = tape.gradient(recomputed, [energies, windows],
                                            output_gradients=upstream)
      return tf.cast(2. * d_energies, tf.complex64) * filtered, d_windows

    return result, grad

  return pooled(filtered, windows)


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
                        kernel_size: int, stride: int):
  """Exact Gabor filterbank energies, pooled: P_n[k] above, by FFT.

  `filterbank_energies_fft` with the Gabor filters (Eq. 4) and 'SAME'
  pooling, as LEAF computes them.

  Args:
    waveform: [batch, time] float32.
    gabor_kernel: [n, 2] constrained Gabor parameters (`GaborConv1D`).
    pooling_windows: [W_pool, n] pooling windows (`GaussianLowpass.windows`).
    kernel_size: W, taps of the Gabor filters.
    stride: s, the pooling stride.

  Returns:
    [batch, frames, n] float32 pooled energies, frames = ceil(time / s).
  """
  real, imag = impulse_responses.gabor_real_imag(gabor_kernel, kernel_size)
  return filterbank_energies_fft(waveform, tf.complex(real, imag),
                                 pooling_windows, stride)


def filterbank_energies_fft(waveform, filters, pooling_windows, stride: int,
                            padding: str = 'SAME'):
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

  Args:
    waveform: [batch, time] float32.
    filters: [n, W] complex64 taps (tau = -(W // 2) .. (W - 1) // 2): the
      Gabor filters of LEAF, or TD-filterbanks' real and imaginary filters.
    pooling_windows: [W_pool, n] pooling windows, or [W_pool, 1] for one
      window shared by every channel.
    stride: s, the pooling stride.
    padding: the pooling's, 'SAME' (ceil(time / s) frames) or 'VALID'
      ((time - W_pool) // s + 1 frames, none for clips shorter than W_pool).

  Returns:
    [batch, frames, n] float32 pooled energies.
  """
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
    frames = _maximum((length - pool_size) // stride + 1, 0)
    pad_left = 0
  else:
    raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}.")
  per_block = block_frames(frames if _is_static(frames) else None)
  # At least one block, so that the shapes below stay valid for clips too
  # short for any 'VALID' frame (sliced to none at the end).
  blocks = _maximum((frames + per_block - 1) // per_block, 1)
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
  spectra = block_spectra(waveform, length, pool_half - pad_left + shift,
                          margin, n_fft, stride * per_block, blocks)
  responses = filter_responses(filters, n_fft)
  # |y_n|^2 in every block: [batch * blocks, n, n_fft].
  energies = squared_modulus(
      tf.signal.ifft(spectra[:, None, :] * responses[None]))
  # Clip sample of every position, to zero |y|^2 outside the clip.
  position = (stride * per_block * tf.range(blocks)[:, None] - pad_left -
              first_block * stride + tf.range(n_fft)[None])
  inside = tf.logical_and(position >= 0, position < length)
  energies = tf.reshape(energies, [batch, blocks, channels, n_fft]) * (
      tf.cast(inside, tf.float32)[None, :, None, :])
  windows = tf.broadcast_to(tf.transpose(pooling_windows),
                            [channels, pool_size])
  pooled = pool_blocks(tf.reshape(energies, [-1, channels, n_fft]), windows,
                       stride, per_block, first_block)
  pooled = tf.reshape(tf.transpose(tf.reshape(
      pooled, [batch, blocks, channels, per_block]), (0, 1, 3, 2)),
                      [batch, blocks * per_block, channels])
  return pooled[:, :frames]


# The banded formulation. Frequencies are in bins of the block FFT (2 pi /
# n_fft radians per sample), times in samples.


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


# A plan is made for the strict tolerance, and kept while the weights satisfy
# the loose one: a hysteresis, so that small steps of training do not
# invalidate it. Measured against the exact computation on the parity
# fixture's clips (relative L2 error of Leaf's output, PCEN included), a plan
# made for the loose tolerance itself stays within 0.7%, at LEAF's
# initialization and at weights far from it (`tests/test_fast.py`).
STRICT = Tolerance(gauss_width=4., sidelobe_energy=3e-6, pool_width=3.5)
LOOSE = Tolerance(gauss_width=3.5, sidelobe_energy=3e-5, pool_width=3.)
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
  half = kernel_size // 2
  bins_per_radian = n_fft / (2. * math.pi)
  gaussian = tolerance.gauss_width / sigma
  # Envelope at the last tap, relative to the response's peak (about 1): the
  # truncation's sidelobes are about edge / |2 sin(delta / 2)| at an offset
  # delta from the centre.
  envelope = xp.exp(-half**2 / (2. * sigma**2))
  edge = envelope / (math.sqrt(2. * math.pi) * sigma)
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
  """

  def __init__(self, sigma, pool_windows, kernel_size: int, stride: int,
               frames_per_block: int = FRAMES_PER_BLOCK):
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
        sigma, _pool_std(pool_windows.T), kernel_size, self.n_fft, STRICT)
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
      A Python bool: every channel's needs, at the `LOOSE` tolerance, fit.
    """
    widths = _half_widths(np.asarray(sigma, np.float64),
                          _pool_std(np.asarray(pool_windows, np.float64).T),
                          self.kernel_size, self.n_fft, LOOSE)
    return bool(np.all(self._fits(*widths, np)))

  def valid_in_graph(self, sigma, channel_windows):
    """`is_valid` for tensors, the windows as [n, W_pool]: a scalar bool."""
    widths = _half_widths(sigma, _pool_std(channel_windows, tf),
                          self.kernel_size, self.n_fft, LOOSE, tf)
    return tf.reduce_all(self._fits(*widths, tf))

  def __repr__(self):
    return (f'BandedPlan(n_fft={self.n_fft}, frames_per_block='
            f'{self.frames_per_block}, margin={self.margin}, groups='
            f'{self.groups})')


# Band signals of a group ([batch * blocks, n_g, Q] complex64) at least this
# large are not kept for the backward pass but computed again there from the
# block spectra (`band_energies(..., recompute=True)`). At batch 32 x 10 s
# the kept signals (the selected bins and the filtered signal) took 2 x 174
# MB; recomputing them: peak memory of forward+backward 735-747 -> 620-687 MB
# (2.9-3.0x -> 2.4-2.7x mel's, benchmark runs of 5-11 rounds), its time within
# the runs' noise (1.7-1.8x mel's either way).
REMATERIALIZE_ELEMENTS = 2**22


def band_energies(spectrum, response, grid_windows, chunk_index, flat_index,
                  batch, pooling, recompute=False):
  """One group's band signals, squared modulus and pooling on the grid.

  Args:
    spectrum: [batch * blocks, n_fft / CHUNK, CHUNK] complex64 block spectra.
    response: [n_g, Q] float32, the channels' responses on their bins.
    grid_windows: [n_g, 2 taps + 1] float32 pooling windows on the grid.
    chunk_index: [n_g, Q / CHUNK] int32, each channel's chunks of the
      spectrum.
    flat_index: [n_g, 4, 2 taps + 1] indices of the edge frames' grid
      samples in the flattened [batch, blocks * n_g * Q] signals.
    batch: the batch size (an int or a scalar tensor).
    pooling: (stride on the grid, frames per block, first block), as for
      `pool_squared_modulus`.
    recompute: whether the backward pass recomputes the band signals from
      `spectrum` rather than keeping them.

  Returns:
    ([batch * blocks, n_g, frames per block] pooled |y|^2 (times D^2), and
    [batch, n_g, 4, 2 taps + 1] |y|^2 at the edge frames' grid samples).
  """
  n_group, size = response.shape

  def filtered_signals(spectrum, response):
    """[batch * blocks, n_g, Q] complex64: y_n at every D-th sample, times D
    (the inverse FFT of Q points scales by 1 / Q instead of 1 / n_fft), so
    that |y_n|^2 is times D^2."""
    selected = tf.reshape(tf.gather(spectrum, chunk_index, axis=1),
                          [-1, n_group, size])
    return tf.signal.ifft(selected * as_complex(response))

  def edge_samples(signals):
    return tf.gather(tf.reshape(signals, [batch, -1]), flat_index, axis=1)

  def energies(spectrum, response, grid_windows):
    filtered = filtered_signals(spectrum, response)
    return (pool_squared_modulus(filtered, grid_windows, *pooling),
            squared_modulus(edge_samples(filtered)))

  if not recompute:
    return energies(spectrum, response, grid_windows)

  @tf.custom_gradient
  def computed(spectrum, response, grid_windows):
    def grad(d_pooled, d_samples):
      # The inputs as tensors of the graph being built (a gradient may be
      # built in another graph, e.g. a tf.cond's gradient branch, where the
      # tapes below would not see the captured originals).
      spectrum_, response_, windows_ = (
          tf.identity(spectrum), tf.identity(response),
          tf.identity(grid_windows))
      with tf.GradientTape() as gather_tape:
        gather_tape.watch(spectrum_)
        gathered = tf.gather(spectrum_, chunk_index, axis=1)
      selected = tf.reshape(gathered, [-1, n_group, size])
      with tf.GradientTape() as inverse_tape:
        product = selected * as_complex(response_)
        inverse_tape.watch(product)
        filtered = tf.signal.ifft(product)
      power = tf.math.real(filtered * tf.math.conj(filtered))
      with tf.GradientTape() as tape:
        tape.watch([power, windows_])
        again = (pool_blocks(power, windows_, *pooling),
                 edge_samples(power))
      d_power, d_windows = tape.gradient(
          again, [power, windows_], output_gradients=[d_pooled, d_samples])
      # |y|^2 (Eq. 3) -> y -> the product before the inverse FFT (linear).
      d_filtered = tf.cast(2. * d_power, tf.complex64) * filtered
      d_product = inverse_tape.gradient(filtered, product,
                                        output_gradients=d_filtered)
      # d/d response of the product, summed over the blocks.
      d_response = tf.reduce_sum(
          tf.math.real(d_product * tf.math.conj(selected)), 0)
      d_spectrum = tf.convert_to_tensor(gather_tape.gradient(
          gathered, spectrum_, output_gradients=tf.reshape(
              d_product * as_complex(response_), tf.shape(gathered))))
      return d_spectrum, d_response, d_windows

    return energies(spectrum, response, grid_windows), grad

  return computed(spectrum, response, grid_windows)


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
  spectrum = block_spectra(waveform, length, first_centre, margin, n_fft,
                           plan.hop, blocks)
  # [batch * blocks, n_fft / CHUNK, CHUNK]: the spectrum in chunks.
  spectrum = tf.reshape(spectrum, [batch * blocks, n_fft // CHUNK, CHUNK])

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
  edge_centre = margin + stride * (clipped % plan.frames_per_block)
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
    chunk_index = tf.math.floormod(
        first_chunk[:, None] + np.arange(size // CHUNK), n_fft // CHUNK)
    in_band = (np.arange(size) < group.chunks[:, None] * CHUNK).astype(
        np.float32)  # [n_g, size]
    # The kept bins, not wrapped (so negative below bin 0, past n_fft above
    # it): [n_g, size].
    first_bin = first_chunk * CHUNK
    kept = int(group.chunks.max()) * CHUNK
    responses = []
    if group.truncated:  # the W-tap filters' own responses
      truncated = slice(channels.start, channels.start + group.truncated)
      exact = band_gabor_responses(
          gabor_kernel[truncated], first_bin[:group.truncated],
          plan.kernel_size, n_fft, kept)
      responses.append(tf.pad(exact, [[0, 0], [0, size - kept]]))
    if group.truncated < n_group:  # the Gaussian closed form
      gaussian = slice(channels.start + group.truncated, channels.stop)
      offset_freq = (tf.cast(first_bin[group.truncated:, None] +
                             np.arange(size), tf.float32) *
                     (2. * math.pi / n_fft) - eta[gaussian][:, None])
      responses.append(tf.exp(-0.5 * tf.square(
          sigma[gaussian][:, None] * offset_freq)))
    response = _concat(responses, 0) * in_band
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
    flat_index = (((edge_block * n_group)[None, :, None] +
                   np.arange(n_group)[:, None, None]) * size +
                  (edge_centre // decimation)[None, :, None] +
                  np.arange(-taps, taps + 1))

    # [batch * blocks, n_g, Q] values (infinite for an unknown shape).
    band_elements = _static_size(spectrum) / n_fft * n_group * size
    group_pooled, samples = band_energies(
        spectrum, response, grid_windows, chunk_index, flat_index, batch,
        (stride // decimation, plan.frames_per_block,
         (margin - pool_half) // stride),
        recompute=band_elements >= REMATERIALIZE_ELEMENTS)
    pooled.append(tf.reshape(group_pooled, [batch, blocks, n_group,
                                            plan.frames_per_block]))
    # Edge frames: the window's part outside the clip, from the grid by
    # linear interpolation: [n_g, 4, 2 taps + 1].
    excluded = _grid_interpolation_weights(
        outside_windows[channels], decimation)
    corrections.append(tf.reduce_sum(samples * excluded, -1) /
                       float(decimation**2))  # [batch, n_g, 4]
  # [batch, blocks, n, frames per block], channels in the plan's order.
  channels = len(plan.order)
  pooled = _concat(pooled, 2)
  # Each correction goes to its edge frame (out-of-range edge frames of short
  # clips, counted 0, to a frame in range): [batch, n, 4] of indices
  # (batch, block, channel, frame in block).
  in_range = tf.logical_and(edge_frames >= 0, edge_frames < frames)
  corrections = _concat(corrections, 1) * tf.cast(in_range, tf.float32)
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
  if _static_size(pooled) <= _GATHER_ELEMENTS:  # one gather, no transpose
    order = (plan.order[None, :] * per_block +
             np.arange(per_block)[:, None]).reshape(-1)
    pooled = tf.gather(
        tf.reshape(pooled, [batch, blocks, channels * per_block]), order,
        axis=2)
  else:
    pooled = tf.transpose(tf.gather(pooled, plan.order, axis=2), (0, 1, 3, 2))
  return tf.reshape(pooled, [batch, blocks * per_block, channels])[:, :frames]


IMPLEMENTATIONS = ('conv', 'fast')


def fallback_branch(compute):
  """`compute` as one call op, for the untaken side of a `tf.cond`.

  TensorFlow lowers a `tf.cond` in a function to switch and merge ops, and
  its executor still visits every op of the branch not taken (to pass on
  their dead inputs): about 1 us each. The exact fallback is a few hundred
  ops that run only when the weights have left the fast plan, so it is kept
  out of line, a single call op that costs nothing when not taken (batch 1 x
  1 s, forward: 1.07 -> 0.95 ms on 2 CPU cores).

  Args:
    compute: a function of no arguments returning tensors.

  Returns:
    A function of no arguments, for `tf.cond`'s `false_fn`, that calls
    `compute` as a separate (not inlined) TensorFlow function.
  """
  return tf.function(compute, autograph=False,
                     experimental_attributes={'_noinline': True})


def check_implementation(implementation):
  """Raises a ValueError unless `implementation` is 'conv' or 'fast'."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"implementation must be 'conv' (exact) or 'fast' "
                     f"(banded), got {implementation!r}.")


class FilterbankEnergies:
  """LEAF's Gabor filtering, squared modulus and Gaussian pooling, fused.

  Reads the weights of the `GaborConv1D` and `GaussianLowpass` layers it is
  given (so that their layout, and `get_weights`, stay those of the original)
  and computes P = pool(|x * phi|^2) with `pooled_energies_fft` (exact,
  implementation 'conv') or `pooled_energies_banded` (implementation 'fast').
  Not a layer: it owns no weights.

  In the fast mode, the `BandedPlan` is made from the weights when the layer
  is traced (and, when it runs eagerly, whenever the weights have left the
  plan's `LOOSE` tolerance); in a traced function the weights are checked at
  every call, and the exact computation runs instead (a `tf.cond`) while
  they are outside the plan, so that training never silently degrades the
  output. A plan is made again at the next trace. Where there is no banded
  form (windows of an even length; a stride and half window with no common
  factor, as at 44.1 kHz) the fast mode computes exactly, with a warning.

  Args:
    gabor_conv: the `GaborConv1D` layer (2 n filters, stride 1, 'same').
    pooling: the `GaussianLowpass` layer (stride s, 'same').
    implementation: 'conv' or 'fast'.
  """

  def __init__(self, gabor_conv, pooling, implementation: str = 'conv'):
    check_implementation(implementation)
    self.gabor_conv = gabor_conv
    self.pooling = pooling
    self.implementation = implementation
    self._plans = {}
    # Whether the fast mode has a banded form here; if not, it computes
    # exactly (and says so once).
    self.banded = False
    if implementation == 'fast':
      sizes = (gabor_conv.kernel_size, pooling.kernel_size)
      pool_half = pooling.kernel_size // 2
      if any(size % 2 == 0 for size in sizes):
        reason = (f'windows of an even length ({sizes[0]} taps) have no '
                  'banded form')
      elif math.gcd(pooling.strides, pool_half) == 1:
        reason = (f'the stride ({pooling.strides} samples) and the half '
                  f'window ({pool_half}) share no factor, so no reduced '
                  'rate holds both the frame centres and the window ends')
      else:
        reason = None
        self.banded = True
      if reason:
        warnings.warn(
            f"Leaf(implementation='fast') computes exactly, as 'conv' does: "
            f'{reason}. A window_len giving an odd number of taps whose half '
            'shares factors with the stride (e.g. 25 ms and 10 ms at 16 or '
            '48 kHz) makes it fast.', stacklevel=4)

  def _weights(self):
    kernel = tf.cast(self.gabor_conv.constrained_kernel(), tf.float32)
    # [n, W_pool], the layout the banded formulation reads.
    windows = tf.cast(self.pooling.channel_windows(), tf.float32)
    return kernel, windows

  def _current_values(self):
    """The Gabor sigmas [n] and pooling windows [W, n], as NumPy arrays.

    Read outside any function being traced. Variables that the function
    being traced has just created hold no value yet; their initializers give
    the values they will start from.
    """
    values = []
    with tf.init_scope():
      for layer in (self.gabor_conv, self.pooling):
        variable = layer.kernel
        value = np.asarray(variable.numpy())
        if value.shape != tuple(variable.shape):
          value = np.asarray(layer.kernel_initializer(
              tuple(variable.shape), 'float32'))
        values.append(tf.constant(value, tf.float32))
      kernel = self.gabor_conv.constrained_kernel(values[0]).numpy()
      windows = self.pooling.windows(values[1]).numpy()[:, :, 0]
    return kernel[:, 1], windows

  def plan(self, frames=None):
    """The `BandedPlan` for clips of `frames` output frames (None: any).

    Made from the current weights, or reused while they stay within its
    tolerance.
    """
    per_block = block_frames(frames)
    sigma, windows = self._current_values()
    plan = self._plans.get(per_block)
    if plan is None or not plan.is_valid(sigma, windows):
      plan = BandedPlan(sigma, windows, self.gabor_conv.kernel_size,
                        self.pooling.strides, per_block)
      self._plans[per_block] = plan
    return plan

  def plans_fit_weights(self):
    """Whether every plan made so far still fits the current weights.

    A function traced with a plan that the weights have left computes
    exactly (correct, at the exact computation's cost) until it is traced
    again; `leaf_audio.callbacks.RefreshFastPlans` retraces a Keras model's
    functions when this turns False.

    Returns:
      A Python bool; always True for the 'conv' implementation.
    """
    if not self.banded or not self._plans:
      return True
    sigma, windows = self._current_values()
    return all(plan.is_valid(sigma, windows) for plan in self._plans.values())

  def __call__(self, waveform):
    """Pooled energies of a batch of waveforms.

    Args:
      waveform: [batch, time] float32.

    Returns:
      [batch, ceil(time / stride), n] float32.
    """
    if not self.banded:
      return self.exact(waveform)
    if tf.executing_eagerly():
      # The plan is checked against the weights when it is fetched.
      return self.checked_banded(waveform)[0]
    energies = None

    def banded():
      nonlocal energies
      energies, _ = self.checked_banded(waveform, check=False)
      return energies

    kernel, windows = self._weights()
    valid = self.plan(self._frames(waveform)).valid_in_graph(kernel[:, 1],
                                                             windows)
    return tf.cond(valid, banded,
                   fallback_branch(lambda: self.exact(waveform)))

  def _frames(self, waveform):
    length = waveform.shape[1]
    return None if length is None else -(-length // self.pooling.strides)

  def exact(self, waveform):
    """The pooled energies computed exactly (`pooled_energies_fft`)."""
    kernel, windows = self._weights()
    return pooled_energies_fft(waveform, kernel, tf.transpose(windows),
                               self.gabor_conv.kernel_size,
                               self.pooling.strides)

  def checked_banded(self, waveform, check=True):
    """The banded energies, and whether the weights fit their plan.

    Both are computed, with no `tf.cond` (so that it can be compiled with
    XLA whatever is differentiated): the caller uses the energies only where
    the plan fits, e.g. `tf.cond(fits, lambda: energies, exact)`.

    Args:
      waveform: [batch, time] float32.
      check: whether to compute the check (else None is returned for it).

    Returns:
      ([batch, ceil(time / stride), n] float32, a scalar bool tensor).
    """
    kernel, windows = self._weights()
    plan = self.plan(self._frames(waveform))
    fits = plan.valid_in_graph(kernel[:, 1], windows) if check else None
    return pooled_energies_banded(waveform, kernel, windows, plan), fits


class ConvFilterbankEnergies:
  """TD-filterbanks' convolution, squared modulus and pooling, by FFT.

  Computes exactly (up to float32 rounding) what the direct computation does:
  the 'same' stride-1 `keras.layers.Conv1D` of 2 n real filters (real and
  imaginary parts interleaved), the squared modulus of each pair and the
  'valid' pooling of `LearnablePooling1D`, with `filterbank_energies_fft`.
  Reads the layers' weights, which keep their layout. Not a layer: it owns
  no weights.

  Args:
    conv: the `Conv1D` layer (2 n filters, stride 1, 'same', no bias).
    pooling: the `LearnablePooling1D` layer.
  """

  def __init__(self, conv, pooling):
    self.conv = conv
    self.pooling = pooling

  def plans_fit_weights(self):
    """Always True: the computation is exact, with no plan."""
    return True

  def __call__(self, waveform):
    """Pooled energies: [batch, time] -> [batch, (time - W) // s + 1, n]."""
    kernel = tf.cast(self.conv.kernel, tf.float32)[:, 0, :]  # [W, 2 n]
    filters = tf.complex(tf.transpose(kernel[:, 0::2]),
                         tf.transpose(kernel[:, 1::2]))  # [n, W]
    window = tf.cast(self.pooling.kernel, tf.float32)[0, :, :, 0]  # [W, 1]
    return filterbank_energies_fft(tf.cast(waveform, tf.float32), filters,
                                   window, self.pooling.strides, 'VALID')

