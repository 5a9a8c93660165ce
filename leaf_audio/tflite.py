"""Frontends computed with TensorFlow Lite builtin operations only.

`Leaf()` as trained computes its Gabor filtering by FFT in overlapping
blocks (complex arithmetic: RFFT, IFFT, Conj), which TensorFlow Lite has no
builtin kernels for; converted, it needs the Flex delegate, which the LiteRT
Python interpreter and most phones lack. `BuiltinOpsFrontend` wraps a
trained frontend and computes the same features, reading its weights, from
operations that all have builtin kernels:

  - the filtering as a direct convolution (CONV_2D) of the waveform with the
    2N real filters (the real and imaginary parts of the N Gabor filters,
    `impulse_responses()` of the filtering layer), real arithmetic only;
  - the squared modulus, the pooling (DEPTHWISE_CONV_2D at the stride), the
    floor and the compression as the frontend computes them;
  - sPCEN's EMA `M_t = s x_t + (1 - s) M_{t-1}` (M_{-1} = x_0) in chunks of
    L = ceil(sqrt(frames)) frames: within a chunk a product with the lower
    triangular matrix s (1 - s)^(t - k) (MUL and SUM), from chunk to chunk
    the state carried by (1 - s)^(t + 1), unrolled over the ceil(frames / L)
    chunks (a static clip length is needed, as TensorFlow Lite models have).

`BuiltinOpsFrontend(leaf, implementation='fast')` computes LEAF's pooled
energies at the reduced rates of the fast mode's plan instead
(`grid_pooled_energies`): about a tenth of the direct convolution's work,
within the fast mode's error of the exact features.

`MelFilterbanks` converts with builtins as it is (RFFT2D) and is returned
unchanged. `to_tflite` converts a function of a fixed-length waveform batch.
"""

import math
from typing import Callable, Optional, Sequence

import keras
from keras import ops
import numpy as np
import tensorflow as tf

from leaf_audio import convolution
from leaf_audio import frontend as frontend_lib
from leaf_audio import pooling
from leaf_audio import postprocessing
from leaf_audio.filterbank import banded
from leaf_audio.filterbank import plan as plan_lib
from leaf_audio.filterbank.fft_ops import same_padding

QUANTIZATIONS = (None, 'float16', 'dynamic_int8')
# How `BuiltinOpsFrontend` computes a learnable frontend's filtering.
IMPLEMENTATIONS = ('conv', 'fast')


def _ema_builtin(inputs, smooth):
  """sPCEN's EMA with builtin operations, for a static number of frames.

  M_t = s x_t + (1 - s) M_{t-1} with M_{-1} = x_0, per channel.

  Args:
    inputs: [batch, frames, channels] with `frames` known.
    smooth: [channels] or [1] coefficients s in [0, 1].

  Returns:
    [batch, frames, channels].
  """
  frames, channels = inputs.shape[1], inputs.shape[2]
  if frames is None or channels is None:
    raise ValueError('the builtin-ops EMA needs a static number of frames '
                     f'and channels, got shape {inputs.shape}; convert with '
                     'a fixed clip length')
  chunk = max(1, math.ceil(math.sqrt(frames)))
  chunks = -(-frames // chunk)
  smooth = ops.broadcast_to(ops.cast(smooth, 'float32'), (channels,))
  log_decay = ops.log(ops.maximum(1. - smooth, 1e-30))  # [C]
  index = np.arange(chunk, dtype=np.float32)
  lags = (index[:, None] - index[None, :])[:, :, None]  # [t, k, 1]
  # [t, k, C]: s (1 - s)^(t - k) for k <= t, 0 above the diagonal.
  within_matrix = smooth * ops.exp(np.maximum(lags, 0.) * log_decay) * (
      (lags >= 0).astype(np.float32))
  # [t, C]: (1 - s)^(t + 1), how the state entering a chunk decays in it.
  carry = ops.exp((index[:, None] + 1.) * log_decay)
  padded = ops.pad(inputs, [[0, 0], [0, chunks * chunk - frames], [0, 0]])
  blocks = ops.reshape(padded, (-1, chunks, 1, chunk, channels))
  within = ops.sum(blocks * within_matrix, axis=3)  # [B, n, L, C]
  state = inputs[:, 0:1, :]  # [B, 1, C]
  outputs = []
  for j in range(chunks):
    smoothed = within[:, j] + carry * state  # [B, L, C]
    outputs.append(smoothed)
    state = smoothed[:, chunk - 1:chunk, :]
  return ops.concatenate(outputs, axis=1)[:, :frames]


def _pcen_builtin(pcen: postprocessing.PCENLayer, inputs):
  """`PCENLayer.call` with the EMA of `_ema_builtin` (same equation)."""
  alpha = ops.minimum(pcen.alpha, 1.)
  one_over_root = 1. / ops.maximum(pcen.root, 1.)
  smoother = _ema_builtin(inputs, ops.clip(pcen.ema.smooth, 0., 1.))
  normalized = inputs * ops.exp(-alpha * ops.log(pcen.floor + smoother))
  return (ops.exp(one_over_root * ops.log(normalized + pcen.delta)) -
          ops.power(pcen.delta, one_over_root))


def _check_grid_frontend(frontend):
  """Raises a ValueError unless `frontend` is a LEAF the grid computes."""
  problems = []
  if not isinstance(frontend._complex_conv, convolution.GaborConv1D):  # pylint: disable=protected-access
    problems.append('Gabor filters (GaborConv1D)')
  if not isinstance(frontend._activation, convolution.SquaredModulus):  # pylint: disable=protected-access
    problems.append('the squared modulus')
  pool = frontend._pooling  # pylint: disable=protected-access
  if not (isinstance(pool, pooling.GaussianLowpass) and
          pool.padding == 'same'):
    problems.append("Gaussian pooling with 'same' padding")
  if problems:
    raise ValueError(
        "implementation='fast' computes LEAF's Gabor filters, squared "
        "modulus and Gaussian pooling; this frontend lacks "
        f"{', '.join(problems)}. Use implementation='conv'.")


def grid_pooled_energies(waveform, gabor_conv, pool, tolerance='speed'):
  """LEAF's pooled energies from the filtered signals at reduced rates.

  P_n[k] = sum_u g_n[u] |y_n[s k - p + u]|^2, with y_n = x * h_n the W-tap
  Gabor filter's output ('same' padding), g_n the pooling window
  (u = 0 .. W_pool - 1), s the stride and p the pooling's left padding.
  The fast mode's plan (`plan.BandedPlan`, made from the weights the layers
  hold when this is traced) gives each channel a step D that divides s and
  W_pool // 2, at which |y_n|^2 varies slowly enough for the pooling sum to
  be taken on every D-th sample: D g_n[i D], (D + 1) / 2 g_n at the
  window's ends (trapezoid with the Euler-Maclaurin end correction). y_n is
  evaluated there exactly, by a convolution of stride D (a tenth of the
  full-rate convolution's multiply-adds at LEAF's initialization); a
  window that crosses the clip's edge (where the exact pooling sees zeros)
  loses the part outside, estimated from the grid by linear interpolation,
  as the fast mode does.

  Args:
    waveform: [batch, time] float32, time static.
    gabor_conv: the `GaborConv1D` (W odd).
    pool: the `GaussianLowpass` ('same' padding, W_pool odd).
    tolerance: the plan's `plan.TOLERANCES` name.

  Returns:
    [batch, ceil(time / s), n] float32.
  """
  length = waveform.shape[1]
  if length is None:
    raise ValueError('grid_pooled_energies needs a static clip length, got '
                     f'shape {waveform.shape}; convert with a fixed length')
  filters = ops.cast(gabor_conv.impulse_responses(), 'float32')  # [W, 1, 2n]
  width = filters.shape[0]
  windows = ops.cast(pool.channel_windows(), 'float32')  # [n, W_pool]
  pool_size = windows.shape[1]
  stride = pool.strides
  with tf.init_scope():  # the plan is made from the weights' values
    sigma = ops.convert_to_numpy(gabor_conv.constrained_kernel())[:, 1]
    plan = plan_lib.BandedPlan(
        sigma, ops.convert_to_numpy(pool.channel_windows()).T, width, stride,
        tolerance=tolerance)
  # Window k covers clip samples s k - pad_left + u, u = 0 .. W_pool - 1.
  frames, pad_left = same_padding(length, pool_size, stride)
  span = (frames - 1) * stride + pool_size
  outside = (np.arange(span) - pad_left < 0) | (
      np.arange(span) - pad_left >= length)
  edge_frames = sorted({k for k in (0, 1, frames - 2, frames - 1)
                        if 0 <= k < frames and
                        outside[k * stride:k * stride + pool_size].any()})
  groups = []
  for group in plan.groups:
    step = group.decimation
    members = np.asarray(group.channels)
    points = (span - 1) // step + 1  # grid samples s k - pad_left + m D
    needed = (points - 1) * step + width
    left = pad_left + width // 2
    padded = ops.pad(waveform, [[0, 0], [left, max(needed - left - length,
                                                   0)]])[:, :needed]
    pairs = np.stack([2 * members, 2 * members + 1], 1).reshape(-1)
    filtered = ops.conv(padded[:, :, None], ops.take(filters, pairs, axis=2),
                        strides=step, padding='valid')  # [B, points, 2 n_g]
    energies = ops.sum(ops.reshape(ops.square(filtered),
                                   (-1, points, len(members), 2)), axis=-1)
    group_windows = ops.take(windows, members, axis=0)  # [n_g, W_pool]
    taps = group_windows[:, ::step]  # [n_g, K]
    ends = np.full(taps.shape[1], float(step), np.float32)
    if step > 1:
      ends[[0, -1]] = (step + 1.) / 2.
    pooled = ops.depthwise_conv(
        energies, ops.transpose(taps * ends)[:, :, None],
        strides=stride // step, padding='valid')  # [B, frames, n_g]
    if edge_frames:
      # [frames, edges] one-hots placing each edge frame's correction.
      place = np.zeros((frames, len(edge_frames)), np.float32)
      corrections = []
      for i, k in enumerate(edge_frames):
        place[k, i] = 1.
        mask = outside[k * stride:k * stride + pool_size].astype(np.float32)
        weights = banded.grid_interpolation_weights(group_windows * mask,
                                                    step)  # [n_g, K]
        start = k * stride // step
        corrections.append(ops.sum(
            energies[:, start:start + taps.shape[1]] *
            ops.transpose(weights)[None], axis=1))  # [B, n_g]
      pooled = pooled - ops.einsum('fe,ben->bfn', place,
                                   ops.stack(corrections, axis=1))
    groups.append(pooled)
  return ops.take(ops.concatenate(groups, axis=-1), plan.order, axis=2)


class BuiltinOpsFrontend(keras.layers.Layer):
  """A trained frontend's features from TensorFlow Lite builtin ops only.

  Shares the wrapped frontend's weights (nothing is copied): the learnable
  frontends (`Leaf`, `TimeDomainFilterbanks`, `SincNet`, `SincNetPlus`: every
  `LearnableFrontend`) are computed
  as described in the module docstring, in inference mode (no SpecAugment);
  `MelFilterbanks` and any other layer are called as they are.

  Args:
    frontend: a built frontend layer.
    implementation: 'conv', the direct convolution (exact); or 'fast', for a
      `Leaf`: the pooled energies on the grid of the fast mode's plan for
      the Leaf's `fast_tolerance` (`grid_pooled_energies`; with 'accuracy',
      channels that need every bin at the full rate), about 6x faster in
      LiteRT with 'speed', within the fast
      mode's error of the exact features (relative L2 4e-4 to 9e-4 on demo
      clips at weights moved by 10%, `tests/test_tflite.py`; up to 1.7e-3
      at `tests/test_fast.py`'s 'far' and 'narrow' weights, where the
      Keras fast mode is off by up to 4.3e-3).
    name: layer name.

  Call arguments:
    inputs: [batch, time] float waveforms, `time` static for LEAF's sPCEN.

  Returns:
    the frontend's features [batch, frames, n_filters], equal to
    `frontend(inputs)` up to float32 rounding with 'conv' (the frontend's
    exact mode; its 'fast' mode is within 1% of that).
  """

  def __init__(self, frontend: keras.layers.Layer, implementation='conv',
               name='builtin_frontend', **kwargs):
    super().__init__(name=name, **kwargs)
    if not isinstance(frontend, keras.layers.Layer):
      raise TypeError(f'expected a frontend layer, got {frontend!r}')
    if implementation not in IMPLEMENTATIONS:
      raise ValueError("implementation must be 'conv' or 'fast', got "
                       f'{implementation!r}')
    if implementation == 'fast':
      if not isinstance(frontend, frontend_lib.LearnableFrontend):
        raise ValueError("implementation='fast' is for LEAF; got "
                         f'{type(frontend).__name__}')
      _check_grid_frontend(frontend)
    self.frontend = frontend
    self.implementation = implementation

  def build(self, input_shape):
    if not self.frontend.built:
      self.frontend.build(input_shape)

  def call(self, inputs):
    f = self.frontend
    if not isinstance(f, frontend_lib.LearnableFrontend):
      return f(inputs)
    if inputs.shape[1] is None:
      raise ValueError('BuiltinOpsFrontend needs a static clip length (as '
                       'TensorFlow Lite models have), got inputs of shape '
                       f'{inputs.shape}; convert with a fixed length.')
    x = ops.reshape(ops.cast(inputs, 'float32'), (-1, inputs.shape[1], 1))
    if f._preemp_conv is not None:  # pylint: disable=protected-access
      x = f._preemp_conv(x)  # pylint: disable=protected-access
    conv = f._complex_conv  # pylint: disable=protected-access
    if self.implementation == 'fast':
      # The plan's tolerance: the Leaf's own `fast_tolerance`.
      tolerance = getattr(getattr(f, 'filterbank', None), 'fast_tolerance',
                          'speed')
      x = grid_pooled_energies(x[:, :, 0], conv, f._pooling, tolerance)  # pylint: disable=protected-access
    else:
      filters = (conv.impulse_responses()
                 if hasattr(conv, 'impulse_responses')
                 else conv.kernel)  # [W, 1, 2N]
      x = ops.conv(x, ops.cast(filters, 'float32'), strides=1,
                   padding=conv.padding)
      if getattr(conv, 'bias', None) is not None:
        x = x + conv.bias
      x = f._activation(x)  # pylint: disable=protected-access
      x = f._pooling(x)  # pylint: disable=protected-access
    x = ops.maximum(x, 1e-5)
    compression = f._compression  # pylint: disable=protected-access
    if isinstance(compression, postprocessing.PCENLayer):
      x = _pcen_builtin(compression, x)
    elif compression is not None:
      x = compression(x)
    if f._instance_norm is not None:  # pylint: disable=protected-access
      x = f._instance_norm(x)  # pylint: disable=protected-access
    return ops.cast(x, f.compute_dtype)

  def compute_output_shape(self, input_shape):
    return self.frontend.compute_output_shape(input_shape)

  def get_config(self):
    config = super().get_config()
    config['frontend'] = keras.saving.serialize_keras_object(self.frontend)
    config['implementation'] = self.implementation
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config['frontend'] = keras.saving.deserialize_keras_object(
        config['frontend'])
    return cls(**config)


def to_tflite(fn: Callable, input_shape: Sequence[int],
              quantization: Optional[str] = None) -> bytes:
  """Converts `fn(waveforms)` to a TensorFlow Lite flatbuffer, builtins only.

  Args:
    fn: maps float32 waveforms of `input_shape` to a tensor or a dict of
      tensors, with TensorFlow ops that have builtin kernels (e.g. a
      `BuiltinOpsFrontend`, or a classifier around one).
    input_shape: the static input shape, e.g. (1, 16000).
    quantization: None (float32), 'float16' (weights stored in float16) or
      'dynamic_int8' (weights in int8, activations quantized at run time).

  Returns:
    the .tflite model bytes.

  Raises:
    ValueError: an unknown quantization.
    tf.lite conversion errors naming the ops without a builtin kernel.
  """
  if quantization not in QUANTIZATIONS:
    raise ValueError(f'quantization must be one of {QUANTIZATIONS}, got '
                     f'{quantization!r}')
  # The weights are frozen into constants: `fn` is wrapped, not tracked (a
  # tracked layer would keep its variables as TFLite resource variables,
  # which the interpreter leaves uninitialized).
  module = tf.Module()
  module.serve = tf.function(lambda waveform: fn(waveform), autograph=False)
  function = module.serve.get_concrete_function(
      tf.TensorSpec(list(input_shape), tf.float32, name='waveform'))
  converter = tf.lite.TFLiteConverter.from_concrete_functions([function],
                                                              module)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if quantization is not None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if quantization == 'float16':
    converter.target_spec.supported_types = [tf.float16]
  return converter.convert()
