"""FFT lengths, 'SAME' padding arithmetic and complex ops with cheap gradients.

The helpers the exact (`overlap_save`) and banded (`banded`) computations of
the filterbank energies share.
"""

import math

import numpy as np
import tensorflow as tf


def is_static(value):
  return isinstance(value, (int, np.integer))


def static_maximum(a, b):
  return max(a, b) if is_static(a) and is_static(b) else tf.maximum(a, b)


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
  pad_total = static_maximum((frames - 1) * stride + kernel_size - length, 0)
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


def concat(tensors, axis):
  """tf.concat, without an op for a single tensor."""
  return tensors[0] if len(tensors) == 1 else tf.concat(tensors, axis)


def static_size(tensor):
  """Number of elements of a tensor of a static shape, else infinity."""
  if tensor.shape.rank is None or None in tensor.shape.as_list():
    return math.inf
  return tensor.shape.num_elements()


def in_xla_context():
  """Whether the graph being built is compiled with XLA (True if unknown)."""
  try:
    from tensorflow.python.ops import control_flow_util  # pylint: disable=g-import-not-at-top
  except ImportError:
    return True
  return control_flow_util.GraphOrParentsInXlaContext(
      tf.compat.v1.get_default_graph())



def xla_function(function):
  """`function` compiled with XLA, for the elementwise work around the
  FFTs: on CPU, TensorFlow's own kernels for a broadcast complex product, a
  masked maximum or a scatter take 1.5-3x the time of XLA's fused loops
  (2 cores, [4, 80, 8641] complex values: 23 against 6 ms for the product)
  and TensorFlow's FFTs 1.6x XLA's, so only what lies between the FFTs is
  compiled."""
  return tf.function(function, jit_compile=True, autograph=False)
