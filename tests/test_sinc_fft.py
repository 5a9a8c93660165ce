"""SincNet and SincNet+ by FFT (`engines.SincEnergies`).

The references: the direct computation in NumPy (outputs of
`overlap_save.real_filterbank_pooled_fft`), the frontends' own layers run one
after the other (the direct convolution, LeakyReLU and pooling: outputs and
gradients), and the same function computing every block at once (gradients
of long clips computed in groups).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from leaf_audio import convolution
from leaf_audio import frontend
from leaf_audio import pooling
from leaf_audio.filterbank import layer as filterbank_layer
from leaf_audio.filterbank import overlap_save

STRIDE, POOL = 4, 11
SAMPLES = 3123  # 8 blocks of 100 frames at a stride of 4


def leaky(x):
  return tf.nn.leaky_relu(x, 0.2)


def direct_pooled(waveform, filters, windows, pool, stride):
  """NumPy: 'SAME' cross-correlation as TensorFlow pads it, LeakyReLU(0.2),
  'SAME' pooling: window sums (zeros outside the clip) or maxima (positions
  outside left out)."""
  _, length = waveform.shape
  taps = filters.shape[1]
  padded = np.pad(waveform.astype(np.float64),
                  [(0, 0), ((taps - 1) // 2, taps // 2)])
  outputs = np.stack([padded[:, j:j + length] for j in range(taps)],
                     -1) @ filters.T.astype(np.float64)
  outputs = np.where(outputs > 0, outputs, 0.2 * outputs)
  frames = -(-length // stride)
  pad_left = max((frames - 1) * stride + pool - length, 0) // 2
  pooled = []
  for k in range(frames):
    start = k * stride - pad_left
    lo, hi = max(start, 0), min(start + pool, length)
    if windows is None:
      pooled.append(outputs[:, lo:hi].max(axis=1))
    else:
      pooled.append(np.einsum('but,ut->bt', outputs[:, lo:hi],
                              windows[lo - start:hi - start]))
  return np.stack(pooled, 1)


def problem(taps, seed=0):
  rng = np.random.default_rng(seed)
  waveform = rng.standard_normal((2, SAMPLES)).astype(np.float32)
  filters = rng.standard_normal((3, taps)).astype(np.float32)
  windows = rng.uniform(0., 1., (POOL, 3)).astype(np.float32)
  return waveform, filters, windows


def pooled_and_gradients(waveform, filters, windows, group_blocks,
                         kept_outputs=overlap_save.REAL_KEPT_OUTPUTS):
  waveform, filters = tf.constant(waveform), tf.constant(filters)
  sources = [waveform, filters]
  if windows is not None:
    windows = tf.constant(windows)
    sources.append(windows)
  with tf.GradientTape() as tape:
    tape.watch(sources)
    pooled = overlap_save.real_filterbank_pooled_fft(
        waveform, filters, leaky, STRIDE, POOL, windows,
        group_blocks=group_blocks, kept_outputs=kept_outputs)
    weights = tf.sin(tf.reshape(tf.range(tf.size(pooled), dtype=tf.float32),
                                tf.shape(pooled)))
    loss = tf.reduce_sum(pooled * weights)
  return pooled, tape.gradient(loss, sources)


def max_relative_error(actual, expected):
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape
  return np.abs(actual - expected).max() / np.abs(expected).max()


@pytest.mark.parametrize('pool', ['max', 'windows'])
@pytest.mark.parametrize('taps', [25, 24])
def test_real_filterbank_by_fft_equals_direct_and_groups(pool, taps):
  """Against NumPy; computed in groups of 3 blocks (8 blocks in all), the
  same outputs and gradients as all at once."""
  waveform, filters, windows = problem(taps)
  windows = windows if pool == 'windows' else None
  pooled, grads = pooled_and_gradients(waveform, filters, windows, 3)
  assert max_relative_error(
      pooled, direct_pooled(waveform, filters, windows, POOL, STRIDE)) < 1e-5
  whole, whole_grads = pooled_and_gradients(waveform, filters, windows, 1000)
  assert max_relative_error(pooled, whole) < 1e-6
  for grad, whole_grad in zip(grads, whole_grads):
    assert max_relative_error(grad, whole_grad) < 1e-5


@pytest.mark.parametrize('pool', ['max', 'windows'])
def test_groups_in_a_loop_equal_the_unrolled_groups(pool, monkeypatch):
  """More groups than `UNROLLED_GROUPS` are computed in a tf.while_loop:
  the same outputs and gradients as the groups unrolled (8 blocks in
  groups of 3)."""
  waveform, filters, windows = problem(25, seed=1)
  windows = windows if pool == 'windows' else None
  unrolled, unrolled_grads = pooled_and_gradients(waveform, filters, windows,
                                                  3)
  monkeypatch.setattr(overlap_save, 'UNROLLED_GROUPS', 0)
  looped, looped_grads = pooled_and_gradients(waveform, filters, windows, 3)
  np.testing.assert_allclose(looped, unrolled, rtol=1e-6, atol=1e-6)
  for grad, unrolled_grad in zip(looped_grads, unrolled_grads):
    assert max_relative_error(grad, unrolled_grad) < 1e-6


def test_gaussian_pooling_computes_outputs_again_beyond_kept_outputs():
  """With no filter outputs kept for the backward pass (computed again
  there, group by group), the same outputs and gradients."""
  waveform, filters, windows = problem(25, seed=2)
  waveform[1, :700] = 0.
  kept, kept_grads = pooled_and_gradients(waveform, filters, windows, 3)
  again, again_grads = pooled_and_gradients(waveform, filters, windows, 3,
                                            kept_outputs=1)
  np.testing.assert_array_equal(again, kept)
  for grad, kept_grad in zip(again_grads, kept_grads):
    assert max_relative_error(grad, kept_grad) < 1e-6


@pytest.mark.parametrize('taps', [1, 2, 24, 25, 64, 401])
def test_silence_mask_is_any_nonzero_sample_in_each_filter_window(taps):
  """`_window_any` against NumPy: output p reads samples p - W // 2 ..
  p + (W - 1) // 2 of its row."""
  rng = np.random.default_rng(taps)
  flags = rng.uniform(size=(4, 700)) < 0.004
  flags[0] = False
  flags[1] = False
  flags[1, 0] = True
  flags[2] = False
  flags[2, -1] = True
  expected = np.stack([[
      row[max(p - taps // 2, 0):p + (taps - 1) // 2 + 1].any()
      for p in range(row.size)] for row in flags])
  np.testing.assert_array_equal(
      overlap_save._window_any(tf.constant(flags), taps), expected)  # pylint: disable=protected-access


@pytest.mark.parametrize('pool', ['max', 'windows'])
def test_outputs_that_read_only_silence_are_exactly_zero(pool):
  """Where every filter window is silent (zeros), the pooled outputs are
  exactly those of the direct computation (0), not FFT rounding noise."""
  waveform, filters, windows = problem(25, seed=4)
  waveform[0, :1500] = 0.
  windows = windows if pool == 'windows' else None
  pooled, _ = pooled_and_gradients(waveform, filters, windows, 1000)
  direct = direct_pooled(waveform, filters, windows, POOL, STRIDE)
  silent = direct == 0.
  assert silent[0, :300].all()
  np.testing.assert_array_equal(np.asarray(pooled)[silent], 0.)
  assert max_relative_error(pooled, direct) < 1e-5


@pytest.mark.parametrize('pool_size,stride', [
    (11, 4),  # sub-blocks of 4 and 3 single samples
    (12, 4),  # whole sub-blocks
    (401, 160),  # SincNet's: sub-blocks of 80 and a single sample
    (13, 7),  # no sub-block: blocks of 7 and heads of 6
])
def test_max_pooling_gradient_goes_to_each_maximum(pool_size, stride):
  """The block maxima and their gradient are those of `tf.nn.max_pool1d`."""
  rng = np.random.default_rng(3)
  frames = 13
  signal = tf.constant(rng.standard_normal(
      (2, 3, stride * (frames + -(-pool_size // stride)))).astype(np.float32))
  upstream = tf.constant(rng.standard_normal((2, 3, frames)).astype(
      np.float32))
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(signal)
    ours = overlap_save.max_pool_blocks(signal, pool_size, stride, frames,
                                        first_block=0)
    theirs = tf.transpose(tf.nn.max_pool1d(
        tf.transpose(signal, (0, 2, 1)), pool_size, stride, 'VALID'),
                          (0, 2, 1))[:, :, :frames]
  np.testing.assert_array_equal(ours, theirs)
  np.testing.assert_allclose(
      tape.gradient(ours, signal, output_gradients=upstream),
      tape.gradient(theirs, signal, output_gradients=upstream), atol=1e-6)


@pytest.mark.parametrize('kernel_size, stride, first_block', [
    (401, 160, 1),  # SincNet+'s windows: 3 blocks each
    (21, 8, 2),  # a fast LEAF grid window
    (8, 8, 0),  # one block
])
def test_pooling_adjoint_is_the_pooling_gradient(kernel_size, stride,
                                                 first_block):
  """`pool_blocks_adjoint` against the gradients of the window sums written
  in NumPy: dL/dsignal[t] = sum_k d[k] w[t - (first + k) s] and
  dL/dw[u] = sum_k d[k] signal[(first + k) s + u]."""
  rng = np.random.default_rng(kernel_size)
  frames = 7
  per_window = -(-kernel_size // stride)
  count = first_block + frames + per_window
  signal = rng.standard_normal((2, 3, count * stride)).astype(np.float32)
  windows = rng.standard_normal((3, kernel_size)).astype(np.float32)
  upstream = rng.standard_normal((2, 3, frames)).astype(np.float32)
  d_signal = np.zeros_like(signal)
  d_windows = np.zeros_like(windows)
  for k in range(frames):
    start = (first_block + k) * stride
    d_signal[..., start:start + kernel_size] += (upstream[..., k, None] *
                                                windows)
    d_windows += np.sum(upstream[..., k, None] *
                        signal[..., start:start + kernel_size], 0)
  blocks = tf.reshape(signal, (2, 3, count, stride))
  ours_signal, ours_windows = overlap_save.pool_blocks_adjoint(
      tf.constant(upstream), blocks,
      overlap_save.window_blocks(tf.constant(windows), stride), first_block,
      frames)
  np.testing.assert_allclose(np.reshape(ours_signal, signal.shape), d_signal,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      np.reshape(ours_windows, (3, -1))[:, :kernel_size], d_windows,
      rtol=1e-5, atol=1e-4)
  # And the pooling itself with the same layout.
  pooled = overlap_save.pool_blocks(tf.constant(signal), tf.constant(windows),
                                    stride, frames, first_block)
  expected = np.stack([
      np.sum(signal[..., (first_block + k) * stride:][..., :kernel_size] *
             windows, -1) for k in range(frames)], -1)
  np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-4)


def moved(make, seed=0):
  layer = make()
  layer.build((None, None))
  rng = np.random.default_rng(seed)
  layer.set_weights([w * rng.uniform(0.7, 1.3, w.shape).astype(np.float32)
                     for w in layer.get_weights()])
  return layer


def filterbank_outputs_and_gradients(layer, compute, waveform):
  waveform = tf.constant(waveform)
  sources = [waveform] + layer.filterbank.trainable_variables
  with tf.GradientTape() as tape:
    tape.watch(waveform)
    pooled = compute(waveform)
    weights = tf.cos(tf.reshape(tf.range(tf.size(pooled), dtype=tf.float32),
                                tf.shape(pooled)))
    loss = tf.reduce_sum(pooled * weights)
  return pooled, tape.gradient(loss, sources)


@pytest.mark.parametrize('make', [frontend.SincNet, frontend.SincNetPlus])
@pytest.mark.parametrize('samples', [300, 4321])
def test_sincnet_by_fft_equals_its_layers(make, samples):
  """Outputs and gradients (waveform, cut-offs, pooling widths) of the FFT
  computation against the direct convolution, LeakyReLU and pooling, at
  moved weights, on a clip and a half-silent clip."""
  layer = moved(make, samples)
  assert layer.filterbank.fused and not layer.filterbank.banded
  waveform = 0.1 * np.random.default_rng(samples).standard_normal(
      (2, samples)).astype(np.float32)
  waveform[1, :samples // 2] = 0.  # silence: exact zeros, as directly
  fused, fused_grads = filterbank_outputs_and_gradients(
      layer, layer.filterbank.engine.exact, waveform)
  direct, direct_grads = filterbank_outputs_and_gradients(
      layer, layer.filterbank.layer_by_layer, waveform)
  assert fused.shape == (2, -(-samples // 160), 40)
  assert max_relative_error(fused, direct) < 1e-5
  assert len(fused_grads) == (2 if make is frontend.SincNet else 3)
  for grad, direct_grad in zip(fused_grads, direct_grads):
    assert max_relative_error(grad, direct_grad) < 1e-4


def test_sincnet_by_fft_at_22050_hz_with_even_taps():
  """25 ms at 22.05 kHz: 551 taps, stride 220 (10 ms); whole frontend."""
  layer = moved(lambda: frontend.SincNetPlus(sample_rate=22050), 1)
  waveform = tf.constant(0.1 * np.random.default_rng(1).standard_normal(
      (1, 5000)).astype(np.float32))
  fused = layer(waveform)
  direct = layer._compress_and_normalize(
      layer.filterbank.layer_by_layer(waveform))
  assert max_relative_error(fused, direct) < 1e-5


def test_real_filterbank_by_fft_compiles_with_xla():
  """Outputs and gradients (max pooling's own) of a function compiled with
  XLA equal those without."""
  waveform, filters, _ = problem(25, seed=1)
  windows = None
  whole, whole_grads = pooled_and_gradients(waveform, filters, windows, 1000)
  pooled, grads = tf.function(
      lambda: pooled_and_gradients(waveform, filters, windows, 1000),
      jit_compile=True)()
  assert max_relative_error(pooled, whole) < 1e-5
  for grad, whole_grad in zip(grads, whole_grads):
    assert max_relative_error(grad, whole_grad) < 1e-5


def test_only_sinc_stacks_it_computes_are_fused():
  """Sinc filters with an elementwise activation and max or Gaussian
  pooling are fused; with another pooling they run layer by layer."""
  sinc = convolution.SincConv1D(80, 401)
  fused = filterbank_layer.FilterbankEnergies(
      sinc, keras.layers.ReLU(), pooling.MaxPooling1D(401, strides=160))
  assert fused.fused
  other = filterbank_layer.FilterbankEnergies(
      sinc, keras.layers.LeakyReLU(0.2),
      pooling.LearnablePooling1D(401, strides=160))
  assert not other.fused
  squared = filterbank_layer.FilterbankEnergies(
      sinc, keras.layers.Activation('tanh'),
      pooling.GaussianLowpass(401, strides=160))
  assert not squared.fused
