"""The fused computations of a filtering, squared modulus and pooling stack.

An engine reads the weights of the layers it is given (so that their layout,
and `get_weights`, stay those of the original) and computes their pooled
energies without the direct convolution. It owns no weights and is not a
layer: `layer.FilterbankEnergies` chooses one and owns the layers.

- `GaborEnergies`: LEAF's `GaborConv1D`, squared modulus and
  `GaussianLowpass`, exactly (`overlap_save.pooled_energies_fft`) or, in the
  fast mode, banded (`banded.pooled_energies_banded`, following a
  `plan.BandedPlan` made from the weights).
- `ConvEnergies`: TD-filterbanks' free `Conv1D` filters, squared modulus and
  `LearnablePooling1D`, exactly (`overlap_save.filterbank_energies_fft`).
- `SincEnergies`: SincNet's `SincConv1D` filters, LeakyReLU and max or
  Gaussian pooling, exactly (`overlap_save.real_filterbank_pooled_fft`).

The exact computations take long clips a few blocks at a time, with a
backward pass that recomputes each group (`overlap_save.GROUP_BLOCKS`), so
that their memory does not grow with the clip beyond its samples and
features; SincNet's takes every clip a few blocks at a time
(`overlap_save.REAL_GROUP_BLOCKS`), keeping for its backward pass only the
maxima's positions, or (Gaussian pooling) the filter outputs up to
`overlap_save.REAL_KEPT_OUTPUTS` values.
"""

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from leaf_audio.filterbank import banded
from leaf_audio.filterbank import overlap_save
from leaf_audio.filterbank import plan as plan_lib
from leaf_audio.filterbank.layer import check_implementation


class GaborEnergies:
  """LEAF's Gabor filtering, squared modulus and Gaussian pooling, fused.

  Computes P = pool(|x * phi|^2) exactly (implementation 'conv') or banded
  (implementation 'fast'). In the fast mode the `BandedPlan` is made from the
  weights when a function is traced (and, eagerly, again whenever the
  weights have left the plan's loose tolerance); `plan_fits` says in the
  graph whether the weights are still within it. Where there is no banded
  form (windows of an even length; a stride and half window with no common
  factor, as at 44.1 kHz) the fast mode computes exactly, with a warning.

  Args:
    gabor_conv: the `GaborConv1D` layer (2 n filters, stride 1, 'same').
    pooling: the `GaussianLowpass` layer (stride s, 'same').
    implementation: 'conv' or 'fast'.
    tolerance: the fast mode's `plan.TOLERANCES` pair, by name.

  Attributes:
    banded: whether the banded computation is used.
  """

  def __init__(self, gabor_conv, pooling, implementation: str = 'conv',
               tolerance: str = 'speed'):
    check_implementation(implementation)
    plan_lib.check_tolerance(tolerance)
    self.tolerance = tolerance
    self.gabor_conv = gabor_conv
    self.pooling = pooling
    self._plans = {}
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
            '48 kHz) makes it fast.', stacklevel=5)

  def weights(self):
    """The constrained Gabor kernel [n, 2] and the pooling windows [n, W],
    float32."""
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
    per_block = overlap_save.block_frames(frames)
    sigma, windows = self._current_values()
    plan = self._plans.get(per_block)
    if plan is None or not plan.is_valid(sigma, windows):
      plan = plan_lib.BandedPlan(sigma, windows, self.gabor_conv.kernel_size,
                                 self.pooling.strides, per_block,
                                 self.tolerance)
      self._plans[per_block] = plan
    return plan

  def plans_fit_weights(self):
    """Whether every plan made so far still fits the current weights.

    Returns:
      A Python bool; always True without the banded computation.
    """
    if not self.banded or not self._plans:
      return True
    sigma, windows = self._current_values()
    return all(plan.is_valid(sigma, windows) for plan in self._plans.values())

  def _frames(self, waveform):
    length = waveform.shape[1]
    return None if length is None else -(-length // self.pooling.strides)

  def exact(self, waveform, weights=None):
    """[batch, time] -> [batch, ceil(time / s), n] pooled energies, exactly
    (`pooled_energies_fft`), of the layers' weights or of `weights`, a pair
    as `weights()` returns."""
    kernel, windows = weights or self.weights()
    return overlap_save.pooled_energies_fft(
        waveform, kernel, tf.transpose(windows), self.gabor_conv.kernel_size,
        self.pooling.strides)

  def banded_energies(self, waveform):
    """The same by the banded computation, following the plan for this
    clip length (made, or made again eagerly, from the current weights)."""
    kernel, windows = self.weights()
    return banded.pooled_energies_banded(waveform, kernel, windows,
                                         self.plan(self._frames(waveform)))

  def plan_fits(self, waveform):
    """A scalar bool tensor: whether the weights are within the plan that
    `banded_energies(waveform)` follows."""
    kernel, windows = self.weights()
    return self.plan(self._frames(waveform)).valid_in_graph(kernel[:, 1],
                                                            windows)


class ConvEnergies:
  """TD-filterbanks' convolution, squared modulus and pooling, by FFT.

  Computes exactly (up to float32 rounding) what the direct computation does:
  the 'same' stride-1 `keras.layers.Conv1D` of 2 n real filters (real and
  imaginary parts interleaved), the squared modulus of each pair and the
  'valid' pooling of `LearnablePooling1D`, with `filterbank_energies_fft`.

  Args:
    conv: the `Conv1D` layer (2 n filters, stride 1, 'same', no bias).
    pooling: the `LearnablePooling1D` layer.
  """

  banded = False

  def __init__(self, conv, pooling):
    self.conv = conv
    self.pooling = pooling

  def plans_fit_weights(self):
    """Always True: the computation is exact, with no plan."""
    return True

  def exact(self, waveform):
    """Pooled energies: [batch, time] -> [batch, (time - W) // s + 1, n]."""
    kernel = tf.cast(self.conv.kernel, tf.float32)[:, 0, :]  # [W, 2 n]
    filters = tf.complex(tf.transpose(kernel[:, 0::2]),
                         tf.transpose(kernel[:, 1::2]))  # [n, W]
    window = tf.cast(self.pooling.kernel, tf.float32)[0, :, :, 0]  # [W, 1]
    return overlap_save.filterbank_energies_fft(
        tf.cast(waveform, tf.float32), filters, window, self.pooling.strides,
        'VALID')


class SincEnergies:
  """SincNet's filtering, activation and pooling, by FFT.

  Computes exactly (up to float32 rounding) what the direct computation does:
  the 'same' stride-1 convolution of `SincConv1D`'s n real windowed sinc
  filters, an elementwise activation (LeakyReLU for SincNet and SincNet+),
  and 'same' pooling: max pooling (SincNet) or `GaussianLowpass` (SincNet+),
  with `real_filterbank_pooled_fft`.

  Args:
    conv: the `SincConv1D` layer (stride 1, 'same', no bias).
    activation: a `keras.layers.LeakyReLU` or `keras.layers.ReLU`.
    pooling: a `keras.layers.MaxPooling1D` or `GaussianLowpass` ('same').
  """

  banded = False

  def __init__(self, conv, activation, pooling):
    self.conv = conv
    self.activation = activation
    self.pooling = pooling

  def plans_fit_weights(self):
    """Always True: the computation is exact, with no plan."""
    return True

  def _activate(self, outputs):
    # The layer's own computation, in float32 (its __call__ would cast to
    # its compute dtype under mixed precision).
    return self.activation.call(outputs)

  def exact(self, waveform):
    """[batch, time] -> [batch, ceil(time / s), n] pooled activations."""
    filters = tf.transpose(
        tf.cast(self.conv.impulse_responses(), tf.float32)[:, 0, :])
    pooling = self.pooling
    if isinstance(pooling, keras.layers.MaxPooling1D):
      pool_size, stride, windows = (pooling.pool_size[0], pooling.strides[0],
                                    None)
    else:  # GaussianLowpass
      pool_size, stride = pooling.kernel_size, pooling.strides
      windows = tf.transpose(tf.cast(pooling.channel_windows(), tf.float32))
    return overlap_save.real_filterbank_pooled_fft(
        tf.cast(waveform, tf.float32), filters, self._activate, stride,
        pool_size, windows)
