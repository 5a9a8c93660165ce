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

`MelFilterbanks` converts with builtins as it is (RFFT2D) and is returned
unchanged. `to_tflite` converts a function of a fixed-length waveform batch.
"""

import math
from typing import Callable, Optional, Sequence

import keras
from keras import ops
import numpy as np
import tensorflow as tf

from leaf_audio import frontend as frontend_lib
from leaf_audio import postprocessing

QUANTIZATIONS = (None, 'float16', 'dynamic_int8')


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


class BuiltinOpsFrontend(keras.layers.Layer):
  """A trained frontend's features from TensorFlow Lite builtin ops only.

  Shares the wrapped frontend's weights (nothing is copied): the learnable
  frontends (`Leaf`, `TimeDomainFilterbanks`, `SincNet`, `SincNetPlus`: every
  `LearnableFrontend`) are computed
  as described in the module docstring, in inference mode (no SpecAugment);
  `MelFilterbanks` and any other layer are called as they are.

  Args:
    frontend: a built frontend layer.
    name: layer name.

  Call arguments:
    inputs: [batch, time] float waveforms, `time` static for LEAF's sPCEN.

  Returns:
    the frontend's features [batch, frames, n_filters], equal to
    `frontend(inputs)` up to float32 rounding (its 'conv' mode; its 'fast'
    mode is within 1% of that).
  """

  def __init__(self, frontend: keras.layers.Layer, name='builtin_frontend',
               **kwargs):
    super().__init__(name=name, **kwargs)
    if not isinstance(frontend, keras.layers.Layer):
      raise TypeError(f'expected a frontend layer, got {frontend!r}')
    self.frontend = frontend

  def build(self, input_shape):
    if not self.frontend.built:
      self.frontend.build(input_shape)

  def call(self, inputs):
    f = self.frontend
    if not isinstance(f, frontend_lib.LearnableFrontend):
      return f(inputs)
    x = ops.reshape(ops.cast(inputs, 'float32'), (-1, inputs.shape[1], 1))
    if f._preemp_conv is not None:  # pylint: disable=protected-access
      x = f._preemp_conv(x)  # pylint: disable=protected-access
    conv = f._complex_conv  # pylint: disable=protected-access
    filters = (conv.impulse_responses() if hasattr(conv, 'impulse_responses')
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
