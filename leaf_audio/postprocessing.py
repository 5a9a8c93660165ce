"""Compression, normalization and augmentation of time-frequency features."""

import math

import keras
from keras import ops
import numpy as np

from leaf_audio import utils


# Largest [batch, chunks, L, L, channels] product (elements) for which
# `_smooth` uses broadcast products instead of matrix products. Below it,
# their fixed cost on CPU (a transpose or a oneDNN matmul goes to the thread
# pool: ~50 us each, even for a few thousand values) dominates. Measured on 2
# CPU cores, 40 channels: 100 frames, batch 1 (40k elements), forward 0.23
# against 0.50 ms, forward+backward 0.31 against 0.66 ms; batch 8 (320k),
# even; 1000 frames, batch 1 (1.3M), slower (forward+backward 1.5 against
# 1.1 ms).
_BROADCAST_ELEMENTS = 2**18


def _steps(size, step):
  """[size] float32: 0, step, 2 step, ... (size a Python int or a tensor)."""
  return ops.cast(ops.arange(size), 'float32') * step


def _toeplitz_transposed(powers, size):
  """Per-channel lower-triangular Toeplitz matrices, transposed.

  Args:
    powers: [channels, size], row c holding p_c(0), p_c(1), ...
    size: the matrices' order L (a Python int or a scalar tensor).

  Returns:
    [channels, L, L] whose [c, j, i] is p_c(i - j) for i >= j and 0 below:
    the transpose of the matrix that maps a chunk to its EMA. Built by
    copies only (no L^2 powers, mask, gather or transpose): row j is
    w[L - 1 - j:][:L] for w = (0 x (L - 1), p(0) .. p(L - 1), 0), and
    those rows are read from w repeated L times, cut to L rows of 2L - 1.
  """
  channels = ops.shape(powers)[0]
  zeros = ops.zeros_like(powers)
  w = ops.concatenate([zeros[:, 1:], powers, zeros[:, :1]], axis=1)  # 2L
  repeated = ops.reshape(ops.tile(w[:, None, :], (1, size, 1)),
                         (channels, 2 * size * size))
  rows = ops.slice(repeated, (0, size - 1),
                   (channels, size * (2 * size - 1)))
  return ops.reshape(rows, (channels, size, 2 * size - 1))[:, :, :size]


def _smooth(inputs, smooth, initial_state):
  """Exact EMA `M_t = s x_t + (1 - s) M_{t-1}` without a loop over time.

  Time is cut into n chunks of L = ceil(sqrt(T)) frames. Within a chunk the
  EMA started from 0 is a product with the lower-triangular matrix
  `s (1 - s)^(j - i)`; the state carried from chunk to chunk is itself an EMA
  of the chunks' last values, with decay `(1 - s)^L`, solved with an n x n
  triangular matrix. Both matrices hold about T entries per channel, so the
  cost is O(T sqrt(T)) multiply-adds per channel, all in parallel, and it works
  for any T, known or not when the graph is built.

  Large inputs are laid out channel-major, [channels, batch * chunks, L], so
  that both products are plain batched matrix products; each matrix is
  gathered from its first column, the powers `exp(k log(1 - s))` (times s
  for the chunks' matrix, which so applies Eq. 6's input weight too). Measured on 2 CPU cores (batch 32,
  40 channels, 1000 frames, forward+backward): 22 ms, against 41 ms for the
  same chunking written with einsum and pow, and 39 ms for an associative
  scan over the frames. Small inputs of a static shape (see
  `_BROADCAST_ELEMENTS`) keep their layout and use broadcast products.

  Args:
    inputs: [batch, time, channels].
    smooth: [channels] or [1], the coefficients s, in [0, 1].
    initial_state: [batch, channels], M_{-1}.

  Returns:
    [batch, time, channels], the EMA M.
  """
  static = tuple(inputs.shape)
  if None not in static:
    batch, frames, channels = static
    chunk = math.ceil(math.sqrt(frames))
    if batch * frames * chunk * channels <= _BROADCAST_ELEMENTS:
      return _smooth_small(inputs, smooth, initial_state, chunk)
  shape = ops.shape(inputs)
  batch, frames, channels = shape[0], shape[1], shape[2]
  chunk = ops.cast(ops.ceil(ops.sqrt(ops.cast(frames, 'float32'))), 'int32')
  chunks = (frames + chunk - 1) // chunk
  smooth = ops.broadcast_to(smooth, (channels,))
  # log(1 - s), kept finite at s = 1 so that the powers' gradients are too.
  log_decay = ops.log(ops.maximum(1. - smooth, 1e-30))[:, None]  # [C, 1]

  # Eq. 6's smoother within each chunk, started from 0: [C, B * n, L].
  driven = ops.transpose(inputs, (2, 0, 1))  # [C, B, T]
  driven = ops.pad(driven, [[0, 0], [0, 0], [0, chunks * chunk - frames]])
  driven = ops.reshape(driven, (channels, batch * chunks, chunk))
  within = ops.matmul(driven, _toeplitz_transposed(
      smooth[:, None] * ops.exp(_steps(chunk, 1.) * log_decay), chunk))
  within = ops.reshape(within, (channels, batch, chunks, chunk))
  # State at the end of every chunk: an EMA over chunks of their last values.
  chunk_length = ops.cast(chunk, 'float32')
  ends = ops.matmul(within[:, :, :, -1], _toeplitz_transposed(
      ops.exp(_steps(chunks, chunk_length) * log_decay), chunks))  # [C, B, n]
  initial = ops.transpose(initial_state, (1, 0))[:, :, None]  # [C, B, 1]
  chunk_index = ops.cast(ops.arange(chunks), 'float32')[None, None, :]
  ends = ends + ops.exp((chunk_index + 1.) * chunk_length *
                       log_decay[:, :, None]) * initial
  previous = ops.concatenate([initial, ends[:, :, :-1]],
                             axis=2)  # state entering each chunk
  step_in_chunk = ops.cast(ops.arange(chunk), 'float32')[None, None, None, :]
  smoothed = within + ops.exp(
      (step_in_chunk + 1.) * log_decay[:, :, None, None]) * previous[..., None]
  smoothed = ops.reshape(smoothed, (channels, batch, chunks * chunk))
  return ops.transpose(smoothed[:, :, :frames], (1, 2, 0))


def _smooth_small(inputs, smooth, initial_state, chunk: int):
  """`_smooth` for a static [batch, time, channels], in that layout.

  The same chunked computation, with the per-channel triangular products
  written as broadcast products summed over one axis: no transpose and no
  matrix product, for inputs where their fixed cost dominates.
  """
  batch, frames, channels = inputs.shape
  chunks = -(-frames // chunk)
  smooth = ops.broadcast_to(smooth, (channels,))
  log_decay = ops.log(ops.maximum(1. - smooth, 1e-30))  # [C]

  def decay_powers(size, step):
    """[size, size, channels]: (1 - s)^(step (row - col)) on and below the
    diagonal, 0 above."""
    index = np.arange(size, dtype=np.float32)
    lags = (index[:, None] - index[None, :])[:, :, None]
    powers = ops.exp(
        ops.convert_to_tensor(step * np.maximum(lags, 0.)) * log_decay)
    return ops.where(ops.convert_to_tensor(lags >= 0.), powers, 0.)

  # Within each chunk, started from 0: [B, n, L, C].
  driven = ops.pad(smooth * inputs,
                   [[0, 0], [0, chunks * chunk - frames], [0, 0]])
  driven = ops.reshape(driven, (batch, chunks, 1, chunk, channels))
  within = ops.sum(driven * decay_powers(chunk, 1.), axis=3)
  # State at the end of every chunk, from the chunks' last values: [B, n, C].
  last = within[:, None, :, -1, :]
  ends = ops.sum(last * decay_powers(chunks, float(chunk)), axis=2)
  initial = initial_state[:, None, :]  # [B, 1, C]
  chunk_index = ops.convert_to_tensor(
      np.arange(chunks, dtype=np.float32)[:, None])
  ends = ends + ops.exp((chunk_index + 1.) * chunk * log_decay) * initial
  previous = ops.concatenate([initial, ends[:, :-1]], axis=1)
  step_in_chunk = ops.convert_to_tensor(
      np.arange(chunk, dtype=np.float32)[:, None])
  smoothed = within + ops.exp((step_in_chunk + 1.) * log_decay) * (
      previous[:, :, None, :])
  return ops.reshape(smoothed, (batch, chunks * chunk, channels))[:, :frames]


@utils.register
class ExponentialMovingAverage(keras.layers.Layer):
  """Exponential moving average along time, with a learnable coefficient.

  `M_t = s x_t + (1 - s) M_{t-1}`, with `M_{-1}` the initial state and s
  clipped to [0, 1]. Computed in parallel over time (see `_smooth`), not
  with a loop over frames.

  Args:
    coeff_init: initial smoothing coefficient s.
    per_channel: one coefficient per channel (weight shape [channels]) or one
      shared coefficient (shape [1]).
    trainable: whether s is learned.
    name: layer name.

  Call arguments:
    inputs: [batch, time, channels].
    initial_state: [batch, channels], the state before the first frame.

  Returns:
    [batch, time, channels], the smoothed inputs.
  """

  def __init__(self, coeff_init=0.04, per_channel=False, trainable=False,
               name='EMA', **kwargs):
    # Inputs are not cast to float16 under mixed precision: the EMA runs in
    # float32, and gradients reaching it (through PCEN) overflow float16.
    kwargs.setdefault('autocast', False)
    super().__init__(name=name, trainable=trainable, **kwargs)
    if not 0. <= float(coeff_init) <= 1.:
      raise ValueError(f'coeff_init must be in [0, 1], got {coeff_init}.')
    self.coeff_init = float(coeff_init)
    self.per_channel = per_channel

  def build(self, input_shape, initial_state_shape=None):
    self.smooth = self.add_weight(
        name='smooth',
        shape=(input_shape[-1],) if self.per_channel else (1,),
        initializer=keras.initializers.Constant(self.coeff_init),
        autocast=False)

  def call(self, inputs, initial_state):
    # In float32 whatever the dtype policy: under mixed precision the powers
    # of (1 - s) over a chunk would lose too much in float16.
    smoothed = _smooth(ops.cast(inputs, 'float32'),
                       ops.clip(ops.cast(self.smooth, 'float32'), 0., 1.),
                       ops.cast(initial_state, 'float32'))
    return ops.cast(smoothed, inputs.dtype)

  def get_config(self):
    config = super().get_config()
    config.update({'coeff_init': self.coeff_init,
                   'per_channel': self.per_channel})
    return config


@utils.register
class PCENLayer(keras.layers.Layer):
  """Per-Channel Energy Normalization, with learnable smoothing (sPCEN).

  Eq. 6 of the paper, with M the EMA of the input over time started at its
  first frame:
  `PCEN(x) = (x / (floor + M)^alpha + delta)^(1/r) - delta^(1/r)`,
  where alpha is clipped to at most 1 and r = root to at least 1.

  Args:
    alpha: initial exponent of the EMA normalizer.
    smooth_coef: initial EMA smoothing coefficient s.
    delta: initial offset added before the root compression.
    root: initial r, the compression is a 1/r power.
    floor: small constant added to the EMA.
    trainable: whether alpha, delta and root are learned.
    learn_smooth_coef: whether s is learned (sPCEN).
    per_channel_smooth_coef: one s per channel instead of one shared.
    name: layer name.

  Call arguments:
    inputs: [batch, time, channels] non-negative energies.

  Returns:
    [batch, time, channels].

  Weights, in order: alpha, delta, root [channels], then the EMA's smooth
  ([channels] or [1]).

  Example:
    >>> pcen = PCENLayer(trainable=True, learn_smooth_coef=True,
    ...                  per_channel_smooth_coef=True)
    >>> pcen(np.ones((2, 100, 40), 'float32')).shape
    TensorShape([2, 100, 40])
  """

  def __init__(self, alpha=0.96, smooth_coef=0.04, delta=2.0, root=2.0,
               floor=1e-6, trainable=False, learn_smooth_coef=False,
               per_channel_smooth_coef=False, name='PCEN', **kwargs):
    # Inputs are not cast to float16 under mixed precision: PCEN runs in
    # float32 (see `call`).
    kwargs.setdefault('autocast', False)
    super().__init__(name=name, trainable=trainable, **kwargs)
    if floor <= 0:
      raise ValueError(f'floor must be positive, got {floor}.')
    self.alpha_init = alpha
    self.smooth_coef = smooth_coef
    self.delta_init = delta
    self.root_init = root
    self.floor = floor
    self.learn_smooth_coef = learn_smooth_coef
    self.per_channel_smooth_coef = per_channel_smooth_coef
    self.ema = ExponentialMovingAverage(
        coeff_init=smooth_coef, per_channel=per_channel_smooth_coef,
        trainable=learn_smooth_coef)

  def build(self, input_shape):
    channels = input_shape[-1]

    def constant_weight(name, value):
      return self.add_weight(
          name=name, shape=(channels,),
          initializer=keras.initializers.Constant(value),
          trainable=self.trainable, autocast=False)

    self.alpha = constant_weight('alpha', self.alpha_init)
    self.delta = constant_weight('delta', self.delta_init)
    self.root = constant_weight('root', self.root_init)
    self.ema.build(input_shape)

  def call(self, inputs):
    # In float32 whatever the dtype policy (the weights are not autocast):
    # in float16, M^-alpha overflows near the 1e-5 floor of LEAF's energies,
    # and its gradient does for much larger M.
    dtype = inputs.dtype
    inputs = ops.cast(inputs, 'float32')
    alpha = ops.minimum(self.alpha, 1.)
    one_over_root = 1. / ops.maximum(self.root, 1.)
    smoother = ops.cast(self.ema(inputs, initial_state=inputs[:, 0, :]),
                        'float32')
    # Powers of whole feature maps as exp(p log x): TensorFlow's Pow kernel
    # is several times slower on CPU (14 ms against 4 ms for 1.3M floats).
    normalized = inputs * ops.exp(-alpha * ops.log(self.floor + smoother))
    outputs = (ops.exp(one_over_root * ops.log(normalized + self.delta)) -
               ops.power(self.delta, one_over_root))
    return ops.cast(outputs, dtype)

  def get_config(self):
    config = super().get_config()
    config.update({
        'alpha': self.alpha_init,
        'smooth_coef': self.smooth_coef,
        'delta': self.delta_init,
        'root': self.root_init,
        'floor': self.floor,
        'learn_smooth_coef': self.learn_smooth_coef,
        'per_channel_smooth_coef': self.per_channel_smooth_coef,
    })
    return config


@utils.register
class MeanVarianceNormalization(keras.layers.Layer):
  """Instance normalization over time, per example and channel.

  `y = gamma * (x - mean_t(x)) / sqrt(var_t(x) + epsilon) + beta`, with a
  learnable gamma and beta per channel (the original used
  tensorflow-addons' InstanceNormalization(axis=2)).

  Args:
    epsilon: added to the variance.
    name: layer name.

  Call arguments:
    inputs: [batch, time, channels].

  Returns:
    [batch, time, channels].
  """

  def __init__(self, epsilon=1e-6, name='tfbanks_instancenorm', **kwargs):
    super().__init__(name=name, **kwargs)
    self.epsilon = epsilon

  def build(self, input_shape):
    channels = input_shape[-1]
    self.gamma = self.add_weight(name='gamma', shape=(channels,),
                                 initializer='ones')
    self.beta = self.add_weight(name='beta', shape=(channels,),
                                initializer='zeros')

  def call(self, inputs):
    mean, variance = ops.moments(inputs, axes=[1], keepdims=True)
    normalized = (inputs - mean) * ops.rsqrt(variance + self.epsilon)
    return self.gamma * normalized + self.beta

  def get_config(self):
    config = super().get_config()
    config['epsilon'] = self.epsilon
    return config


@utils.register
class SpecAugment(keras.layers.Layer):
  """SpecAugment (Park et al., 2019): time warp, frequency and time masks.

  Applied only when called with `training=True`; otherwise the identity.
  Each example gets its own random warp and masks:
  - time warp: the frame at a random anchor moves by up to
    `min(time_warp_max_frames, time_warp_max_ratio * frames)` frames, and the
    two sides are stretched linearly to follow (linear interpolation);
  - `freq_mask_count` masks of up to `freq_mask_max_bins` consecutive
    channels set to 0;
  - `time_mask_count` masks of up to
    `min(time_mask_max_frames, time_mask_max_ratio * frames)` consecutive
    frames set to 0.

  Args:
    freq_mask_max_bins: widest frequency mask, in channels.
    freq_mask_count: number of frequency masks.
    time_mask_max_frames: widest time mask, in frames.
    time_mask_count: number of time masks.
    time_mask_max_ratio: widest time mask as a fraction of the frames.
    time_warp_max_frames: largest time warp, in frames.
    time_warp_max_ratio: largest time warp as a fraction of the frames.
    seed: optional seed of the random draws.
    name: layer name.

  Call arguments:
    inputs: [batch, frames, channels].
    training: whether to augment.

  Returns:
    [batch, frames, channels].
  """

  def __init__(self, freq_mask_max_bins=10, freq_mask_count=2,
               time_mask_max_frames=10, time_mask_count=2,
               time_mask_max_ratio=1.0, time_warp_max_frames=8,
               time_warp_max_ratio=1.0, seed=None, name='SpecAugment',
               **kwargs):
    super().__init__(name=name, **kwargs)
    for arg, value in [('freq_mask_max_bins', freq_mask_max_bins),
                       ('freq_mask_count', freq_mask_count),
                       ('time_mask_max_frames', time_mask_max_frames),
                       ('time_mask_count', time_mask_count),
                       ('time_warp_max_frames', time_warp_max_frames)]:
      if value < 0:
        raise ValueError(f'{arg} must be >= 0, got {value}.')
    for arg, value in [('time_mask_max_ratio', time_mask_max_ratio),
                       ('time_warp_max_ratio', time_warp_max_ratio)]:
      if not 0. <= value <= 1.:
        raise ValueError(f'{arg} must be in [0, 1], got {value}.')
    self.freq_mask_max_bins = freq_mask_max_bins
    self.freq_mask_count = freq_mask_count
    self.time_mask_max_frames = time_mask_max_frames
    self.time_mask_count = time_mask_count
    self.time_mask_max_ratio = time_mask_max_ratio
    self.time_warp_max_frames = time_warp_max_frames
    self.time_warp_max_ratio = time_warp_max_ratio
    self.seed = seed
    self._seed_generator = keras.random.SeedGenerator(seed)

  def _uniform_int(self, shape, maxval_exclusive):
    """Integers uniform in [0, maxval_exclusive), maxval may be a tensor."""
    draws = keras.random.uniform(shape, seed=self._seed_generator)
    return ops.cast(ops.floor(draws * ops.cast(maxval_exclusive, 'float32')),
                    'int32')

  def _masks(self, batch, length, max_width, count):
    """A [batch, length] float mask: 0 inside `count` random spans, 1 out."""
    positions = ops.arange(length)[None, :]
    keep = ops.ones((batch, length), 'float32')
    for _ in range(count):
      widths = self._uniform_int((batch, 1), max_width + 1)
      starts = self._uniform_int((batch, 1), length - widths + 1)
      inside = ops.logical_and(positions >= starts, positions < starts + widths)
      keep = keep * (1. - ops.cast(inside, 'float32'))
    return keep

  def _time_warp(self, inputs, frames):
    """Warps time piecewise-linearly around a random anchor per example."""
    batch = ops.shape(inputs)[0]
    frames_f = ops.cast(frames, 'float32')
    bound = ops.minimum(
        float(self.time_warp_max_frames),
        ops.floor(self.time_warp_max_ratio * frames_f))
    # The anchor stays off the ends so that both sides keep some length.
    bound = ops.minimum(bound, ops.floor((frames_f - 1.) / 2.))
    bound = ops.maximum(bound, 0.)
    uniform = lambda: keras.random.uniform((batch, 1),
                                           seed=self._seed_generator)
    anchor = bound + ops.floor(uniform() * (frames_f - 2. * bound))
    target = anchor + ops.floor(uniform() * (2. * bound + 1.)) - bound
    target = ops.clip(target, 1., ops.maximum(frames_f - 2., 1.))
    anchor = ops.clip(anchor, 1., ops.maximum(frames_f - 2., 1.))
    out_t = ops.cast(ops.arange(frames), 'float32')[None, :]
    last = frames_f - 1.
    source_t = ops.where(
        out_t <= target, out_t * anchor / target,
        anchor + (out_t - target) * (last - anchor) /
        ops.maximum(last - target, 1.))
    source_t = ops.clip(source_t, 0., ops.maximum(last, 0.))
    lower = ops.cast(ops.floor(source_t), 'int32')
    upper = ops.minimum(lower + 1, frames - 1)
    frac = (source_t - ops.cast(lower, 'float32'))[:, :, None]
    below = ops.take_along_axis(inputs, lower[:, :, None], axis=1)
    above = ops.take_along_axis(inputs, upper[:, :, None], axis=1)
    warped = below * (1. - frac) + above * frac
    return ops.where(bound > 0., warped, inputs)

  def call(self, inputs, training=False):
    if not training:
      return inputs
    shape = ops.shape(inputs)
    batch, frames, channels = shape[0], shape[1], shape[2]
    outputs = inputs
    if self.time_warp_max_frames > 0 and self.time_warp_max_ratio > 0:
      outputs = self._time_warp(outputs, frames)
    if self.freq_mask_count:
      max_bins = ops.minimum(self.freq_mask_max_bins, channels)
      outputs = outputs * self._masks(batch, channels, max_bins,
                                      self.freq_mask_count)[:, None, :]
    if self.time_mask_count:
      max_frames = ops.minimum(
          self.time_mask_max_frames,
          ops.cast(ops.floor(self.time_mask_max_ratio *
                             ops.cast(frames, 'float32')), 'int32'))
      outputs = outputs * self._masks(batch, frames, max_frames,
                                      self.time_mask_count)[:, :, None]
    return outputs

  def get_config(self):
    config = super().get_config()
    config.update({
        'freq_mask_max_bins': self.freq_mask_max_bins,
        'freq_mask_count': self.freq_mask_count,
        'time_mask_max_frames': self.time_mask_max_frames,
        'time_mask_count': self.time_mask_count,
        'time_mask_max_ratio': self.time_mask_max_ratio,
        'time_warp_max_frames': self.time_warp_max_frames,
        'time_warp_max_ratio': self.time_warp_max_ratio,
        'seed': self.seed,
    })
    return config
