"""LEAF's filtering, squared modulus and pooling without a direct convolution.

LEAF's first three stages (Section 3 of the paper) compute, for each channel
n and frame k,

  P_n[k] = sum_t g_n[t - c_k] |y_n[t]|^2,   y_n[t] = sum_tau x[t + tau] phi_n[tau]

with phi_n the W-tap complex Gabor filter of Eq. 4 (`GaborConv1D`, as a
cross-correlation, 'SAME' padding), |.|^2 the squared modulus of Eq. 3 and g_n
the W-tap Gaussian pooling window of Eq. 5 (`GaussianLowpass`, stride s,
'SAME' padding, |y|^2 taken as zero outside the clip). The original release
computes this as a direct convolution of 2N real filters at the full sample
rate. This module has two other formulations of the same P:

- `pooled_energies_fft`, exact up to float32 rounding: the filtering by FFT
  (one rFFT of the clip, one inverse FFT per channel), the squared modulus,
  and the pooling as one batched matrix product over blocks of s samples.
- `pooled_energies_banded`, the fast mode (see `BandedPlan`): each channel is
  filtered in the frequency domain only over the bins where its response is
  not negligible, demodulated to baseband and evaluated at a reduced rate
  before the squared modulus, and pooled at that rate, with a quadrature that
  is exact for band-limited signals away from the clip's edges and accurate
  at them.

Both take the weights of the layers they replace, so that the parameters,
their layout and the output shape are those of the original.
"""

import math

import numpy as np
import tensorflow as tf

from leaf_audio import impulse_responses


def _is_static(value):
  return isinstance(value, (int, np.integer))


def _maximum(a, b):
  return max(a, b) if _is_static(a) and _is_static(b) else tf.maximum(a, b)


# FFT lengths with no prime factor above 5, which the FFT computes fastest.
_SMOOTH_LENGTHS = np.array(sorted(
    2**a * 3**b * 5**c for a in range(31) for b in range(20) for c in range(14)
    if 2**a * 3**b * 5**c <= 2**30), np.int64)


def fft_length(min_length):
  """The smallest length >= min_length with no prime factor above 5.

  Args:
    min_length: a Python int, or a scalar int32 tensor when the clip length is
      only known when the graph runs.

  Returns:
    A Python int, or a scalar int32 tensor.
  """
  if _is_static(min_length):
    return int(_SMOOTH_LENGTHS[np.searchsorted(_SMOOTH_LENGTHS, min_length)])
  table = tf.constant(_SMOOTH_LENGTHS.astype(np.int32))
  index = tf.searchsorted(table, tf.reshape(min_length, [1]))
  return tf.gather(table, index)[0]


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
    return tf.complex(2. * upstream, 0.) * z

  return energies, grad


def full_spectrum(half_spectrum, n_fft):
  """The N-bin spectrum of a real signal from its rFFT (Hermitian symmetry).

  Args:
    half_spectrum: [..., n_fft // 2 + 1] complex, `tf.signal.rfft` output.
    n_fft: N.

  Returns:
    [..., n_fft] complex, X[N - nu] = conj(X[nu]).
  """
  negative = tf.math.conj(tf.reverse(half_spectrum[..., 1:n_fft - n_fft // 2],
                                     axis=[-1]))
  return tf.concat([half_spectrum, negative], axis=-1)


def gabor_responses(kernel, kernel_size: int, n_fft):
  """Frequency responses of the W-tap Gabor filters, demodulated (Eq. 4).

  `H_n[nu] = sum_{tau} a_n(tau) exp(i (2 pi nu / N - eta_n) tau)`, with a_n the
  truncated Gaussian envelope of phi_n (tau from -(W // 2) to (W - 1) // 2),
  so that `N ifft(X H_n)[t]` is the complex conjugate of the filter output
  `y_n[t] = sum_tau x[t + tau] phi_n(tau)` (circularly, for a real x).

  Args:
    kernel: [n, 2] Gabor parameters (center frequency, sigma), constrained.
    kernel_size: W, the number of taps.
    n_fft: N >= W.

  Returns:
    [n, n_fft] complex64.
  """
  real, imag = impulse_responses.gabor_real_imag(kernel, kernel_size)
  taps = tf.complex(real, -imag)  # a_n(tau) exp(-i eta_n tau)
  half = kernel_size // 2
  channels = tf.shape(taps)[0]
  circular = tf.concat([
      taps[:, half:], tf.zeros([channels, n_fft - kernel_size], tf.complex64),
      taps[:, :half]], axis=1)
  return tf.signal.ifft(circular) * tf.complex(tf.cast(n_fft, tf.float32), 0.)


def pool_blocks(energies, windows, stride: int, frames):
  """Strided per-channel window sums as one batched matrix product.

  `pooled[b, n, k] = sum_u energies[b, n, k s + u] windows[n, u]`, computed
  with the signal cut into blocks of s samples: a window of W taps spans
  ceil(W / s) blocks, so every frame is the sum of ceil(W / s) block-by-window
  dot products, all obtained by one [.., blocks, s] x [s, ceil(W / s)]
  product.

  Args:
    energies: [batch, n, (frames - 1 + ceil(W / s)) * s] float32, already
      padded so that frame k starts at sample k s.
    windows: [n, W] float32 pooling windows.
    stride: s.
    frames: number of output frames.

  Returns:
    [batch, n, frames] float32.
  """
  channels, kernel_size = windows.shape[0], windows.shape[1]
  blocks_per_window = -(-kernel_size // stride)
  shape = tf.shape(energies)
  blocks = tf.reshape(energies, [shape[0], shape[1], -1, stride])
  windows = tf.pad(windows,
                   [[0, 0], [0, blocks_per_window * stride - kernel_size]])
  windows = tf.reshape(windows, [channels, blocks_per_window, stride])
  partial = tf.matmul(blocks, tf.transpose(windows, (0, 2, 1))[None])
  return tf.add_n([partial[:, :, j:j + frames, j]
                   for j in range(blocks_per_window)])


def pooled_energies_fft(waveform, gabor_kernel, pooling_windows,
                        kernel_size: int, stride: int):
  """Exact Gabor filterbank energies, pooled: P_n[k] above, by FFT.

  The clip, shifted by 'SAME' pooling's left padding, is transformed once
  (length N >= the pooled span plus the filters' reach, so that the circular
  convolution equals the linear one where it is used); each channel's
  filtered signal is one inverse FFT of the clip's spectrum times the
  filter's (Eq. 4); its squared modulus (Eq. 3) is masked to the clip, as
  'SAME' padding zero-pads it; the pooling (Eq. 5) is `pool_blocks`.
  Equal to the direct convolution up to float32 rounding (about 1e-6 of the
  largest value).

  Args:
    waveform: [batch, time] float32.
    gabor_kernel: [n, 2] constrained Gabor parameters (`GaborConv1D`).
    pooling_windows: [W_pool, n] pooling windows (`GaussianLowpass.windows`).
    kernel_size: W, taps of the Gabor filters.
    stride: s, the pooling stride.

  Returns:
    [batch, frames, n] float32 pooled energies, frames = ceil(time / s).
  """
  length = waveform.shape[1]
  if length is None:
    length = tf.shape(waveform)[1]
  pool_size = pooling_windows.shape[0]
  frames, pad_left = same_padding(length, pool_size, stride)
  span = (frames - 1 + -(-pool_size // stride)) * stride
  reach = kernel_size - 1 - kernel_size // 2
  n_fft = fft_length(_maximum(span, pad_left + length + reach))
  n_fft = _maximum(n_fft, kernel_size)
  shifted = tf.pad(waveform, [[0, 0], [pad_left, 0]])
  spectrum = full_spectrum(tf.signal.rfft(shifted, [n_fft]), n_fft)
  responses = gabor_responses(gabor_kernel, kernel_size, n_fft)
  # conj(y_n), shifted by pad_left: [batch, n, span].
  filtered = tf.signal.ifft(spectrum[:, None, :] * responses[None])
  energies = squared_modulus(filtered[:, :, :span])
  position = tf.range(span)
  inside = tf.logical_and(position >= pad_left, position < pad_left + length)
  energies = energies * tf.cast(inside, tf.float32)
  pooled = pool_blocks(energies, tf.transpose(pooling_windows), stride, frames)
  return tf.transpose(pooled, (0, 2, 1))


IMPLEMENTATIONS = ('conv', 'fast')


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

  def __call__(self, waveform):
    """Pooled energies of a batch of waveforms.

    Args:
      waveform: [batch, time] float32.

    Returns:
      [batch, ceil(time / stride), n] float32.
    """
    kernel = tf.cast(self.gabor_conv.constrained_kernel(), tf.float32)
    windows = tf.cast(self.pooling.windows()[:, :, 0], tf.float32)
    return pooled_energies_fft(waveform, kernel, windows,
                               self.gabor_conv.kernel_size,
                               self.pooling.strides)
