"""Each building block against a plain NumPy computation of its formula."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from leaf_audio import convolution
from leaf_audio import frontend
from leaf_audio import gabor
from leaf_audio import impulse_responses
from leaf_audio import initializers
from leaf_audio import melfilters
from leaf_audio import pooling
from leaf_audio import postprocessing
from leaf_audio import utils

RNG = np.random.default_rng(1234)


def numpy_correlate_same(x, kernel):
  """'SAME' cross-correlation of [B, T] with [taps, channels] -> [B, T, C]."""
  taps = kernel.shape[0]
  left = (taps - 1) // 2
  padded = np.pad(x, [(0, 0), (left, taps - 1 - left)])
  out = np.zeros(x.shape + (kernel.shape[1],))
  for k in range(taps):
    out += padded[:, k:k + x.shape[1], None] * kernel[k][None, None, :]
  return out


def test_mel_scale_known_values():
  assert utils.hz2mel(1000.) == pytest.approx(1000., abs=0.05)
  assert utils.hz2mel(700.) == pytest.approx(2595. * math.log10(2.))
  freqs = np.array([0., 60., 440., 7800.])
  np.testing.assert_allclose(utils.mel2hz(utils.hz2mel(freqs)), freqs,
                             atol=1e-9)


def test_windows():
  n = np.arange(401)
  hann = 0.5 * (1 - np.cos(2 * np.pi * (n - 1) / 400))
  np.testing.assert_allclose(utils.window(utils.WindowType.HANNING, 401),
                             hann)
  np.testing.assert_allclose(
      utils.window(utils.WindowType.SQUARED_HANNING, 401), hann**2)
  np.testing.assert_allclose(utils.window(utils.WindowType.HAMMING, 401),
                             0.54 - 0.46 * np.cos(2 * np.pi * n / 401))
  with pytest.raises(ValueError, match='WindowType'):
    utils.window('hann', 10)


def test_gabor_filters_formula():
  kernel = np.array([[0.3, 20.], [2.0, 5.5], [0., 90.]], np.float32)
  filters = np.asarray(impulse_responses.gabor_filters(kernel, 401))
  t = np.arange(-200, 201)
  expected = (np.exp(1j * kernel[:, :1] * t) *
              np.exp(-t**2 / (2 * kernel[:, 1:]**2)) /
              (np.sqrt(2 * np.pi) * kernel[:, 1:]))
  np.testing.assert_allclose(filters, expected, atol=1e-6)
  # Its frequency response is a Gaussian centered on eta (Section 3.1.2).
  response = np.abs(np.fft.fft(expected[0], 4096))
  peak_bin = np.argmax(response)
  assert peak_bin * 2 * np.pi / 4096 == pytest.approx(0.3, abs=2e-3)
  # An even size is centered like the original: t = -size//2 .. size//2 - 1.
  even = np.asarray(impulse_responses.gabor_filters(kernel, 4))
  assert np.argmax(np.abs(even[2])) == 2
  # The NumPy path (float64, for initializers) computes the same formula.
  for size, times in ((401, t), (4, np.arange(-2, 2))):
    real, imag = gabor.real_imag(kernel, size, xp=np)
    assert real.dtype == imag.dtype == np.float64
    np.testing.assert_allclose(
        real + 1j * imag,
        np.exp(1j * kernel[:, :1] * times) *
        np.exp(-times**2 / (2 * kernel[:, 1:]**2)) /
        (np.sqrt(2 * np.pi) * kernel[:, 1:]), rtol=1e-12, atol=1e-15)


def test_gabor_constraint_clips_to_the_papers_ranges():
  constraint = convolution.GaborConstraint(401)
  kernel = np.array([[-1., 0.1], [4., 1e4], [1., 10.]], np.float32)
  clipped = np.asarray(constraint(kernel))
  low = 4 * math.sqrt(2 * math.log(2)) / math.pi
  high = 401 * math.sqrt(2 * math.log(2)) / math.pi
  np.testing.assert_allclose(clipped, [[0., low], [math.pi, high], [1., 10.]],
                             rtol=1e-6)


def test_gabor_conv_interleaves_real_and_imaginary_parts():
  kernel = np.array([[0.5, 8.], [1.5, 4.]], np.float32)
  conv = convolution.GaborConv1D(
      filters=4, kernel_size=33,
      kernel_initializer=keras.initializers.Constant(kernel))
  x = RNG.standard_normal((2, 200)).astype(np.float32)
  out = np.asarray(conv(x[:, :, None]))
  filters = np.asarray(impulse_responses.gabor_filters(kernel, 33))
  taps = np.stack([filters[0].real, filters[0].imag, filters[1].real,
                   filters[1].imag], axis=1)
  np.testing.assert_allclose(out, numpy_correlate_same(x, taps), atol=1e-5)


def test_squared_modulus():
  x = RNG.standard_normal((2, 7, 6)).astype(np.float32)
  out = np.asarray(frontend.SquaredModulus()(x))
  np.testing.assert_allclose(out, x[..., 0::2]**2 + x[..., 1::2]**2,
                             rtol=1e-6)


def test_gaussian_lowpass_window_and_pooling():
  sigma = np.array([0.4, 0.1, 0.9, 0.001], np.float32).reshape(1, 1, 4, 1)
  windows = np.asarray(impulse_responses.gaussian_lowpass(sigma, 101))
  t = np.arange(101)[:, None]
  clipped = np.clip(sigma.reshape(4), 2. / 101, 0.5)
  expected = np.exp(-0.5 * ((t - 50) / (clipped * 50))**2)
  np.testing.assert_allclose(windows[0, :, :, 0], expected, rtol=1e-5,
                             atol=1e-30)

  pool = pooling.GaussianLowpass(
      kernel_size=101, strides=40,
      kernel_initializer=keras.initializers.Constant(sigma))
  x = RNG.random((2, 400, 4)).astype(np.float32)
  out = np.asarray(pool(x))
  assert out.shape == (2, 10, 4)
  # 'SAME' with stride 40: 10 frames, total padding (10-1)*40+101-400 = 61.
  padded = np.pad(x, [(0, 0), (30, 31), (0, 0)])
  manual = np.stack([(padded[:, 40 * f:40 * f + 101] * expected).sum(1)
                     for f in range(10)], axis=1)
  np.testing.assert_allclose(out, manual, rtol=1e-5)


def test_learnable_pooling_is_valid_and_shared():
  window = utils.window(utils.WindowType.SQUARED_HANNING, 21)
  pool = pooling.LearnablePooling1D(
      kernel_size=21, strides=10,
      kernel_initializer=initializers.LowpassInit(
          sample_rate=1000, window_len=20.))
  x = RNG.random((2, 100, 3)).astype(np.float32)
  out = np.asarray(pool(x))
  frames = (100 - 21) // 10 + 1
  manual = np.stack([(x[:, 10 * f:10 * f + 21] * window[None, :, None]).sum(1)
                     for f in range(frames)], axis=1)
  np.testing.assert_allclose(out, manual, rtol=1e-5)


def test_channel_wise_pooling():
  kernel = RNG.random((5, 1, 3)).astype(np.float32)
  pool = pooling.ChannelWiseLearnablePooling1D(
      kernel_size=5, strides=1, padding='valid',
      kernel_initializer=keras.initializers.Constant(kernel))
  x = RNG.random((1, 20, 3)).astype(np.float32)
  manual = np.stack([(x[:, f:f + 5] * kernel[:, 0][None]).sum(1)
                     for f in range(16)], axis=1)
  np.testing.assert_allclose(pool(x), manual, rtol=1e-5)


def test_sinc_filters_formula():
  low = np.array([[50., 1000.]], np.float32)
  high = np.array([[400., 3000.]], np.float32)
  filters = np.asarray(impulse_responses.sinc_filters(low, high, 101, 16000))
  t = np.arange(-50, 51) / 16000.
  with np.errstate(invalid='ignore', divide='ignore'):
    band = (2 * high * np.sinc(2 * high * t[:, None]) -
            2 * low * np.sinc(2 * low * t[:, None]))
  expected = band / band.max(axis=0, keepdims=True)
  np.testing.assert_allclose(filters, expected, atol=1e-4)
  # An even size: centred between the middle taps, t = +-1/2, +-3/2, ...
  filters = np.asarray(impulse_responses.sinc_filters(low, high, 100, 16000))
  t = (np.arange(100) - 49.5) / 16000.
  band = (2 * high * np.sinc(2 * high * t[:, None]) -
          2 * low * np.sinc(2 * low * t[:, None]))
  np.testing.assert_allclose(filters, band / band.max(axis=0, keepdims=True),
                             atol=1e-4)
  with pytest.raises(ValueError, match='at least 2 taps'):
    impulse_responses.sinc_filters(low, high, 1)


def test_sinc_init_is_mel_spaced():
  kernel = np.asarray(initializers.SincInit()((40, 2)))
  edges = np.concatenate([kernel[:, 0], [kernel[-1].sum()]])
  mels = utils.hz2mel(edges)
  np.testing.assert_allclose(np.diff(mels), np.diff(mels)[0], rtol=1e-4)
  assert edges[0] == pytest.approx(50.)
  assert edges[-1] == pytest.approx(8000. - 100., rel=1e-5)


def test_gabor_init_for_plain_conv_interleaves_filters():
  kernel = np.asarray(initializers.GaborInit(min_freq=60., max_freq=7800.)(
      (401, 1, 80)))
  filters = np.asarray(melfilters.Gabor(min_freq=60.,
                                        max_freq=7800.).gabor_filters)
  np.testing.assert_allclose(kernel[:, 0, 0::2], filters.real.T, atol=1e-7)
  np.testing.assert_allclose(kernel[:, 0, 1::2], filters.imag.T, atol=1e-7)
  with pytest.raises(ValueError, match='n_filters, 2'):
    initializers.GaborInit()((40, 3))


def test_preemphasis_is_the_2_tap_filter():
  leaf = frontend.Leaf(preemp=True, compression_fn=None, n_filters=4)
  plain = frontend.Leaf(compression_fn=None, n_filters=4)
  x = RNG.standard_normal((2, 1600)).astype(np.float32) * 0.1
  # 'same' padding of a 2-tap kernel [-0.97, 1] reads x[n] and x[n + 1].
  emphasized = -0.97 * x + np.concatenate([x[:, 1:], np.zeros((2, 1))], 1)
  np.testing.assert_allclose(leaf(x), plain(emphasized.astype(np.float32)),
                             rtol=1e-4, atol=1e-6)


def numpy_ema(x, smooth, initial):
  out = np.zeros_like(x, dtype=np.float64)
  state = initial.astype(np.float64)
  for t in range(x.shape[1]):
    state = smooth * x[:, t] + (1 - smooth) * state
    out[:, t] = state
  return out


def ema_caller(ema, shapes):
  """Calls `ema` with static shapes (broadcast products for small inputs)
  or through a function traced for any shape (matrix products)."""
  if shapes == 'static':
    return ema
  return tf.function(ema, input_signature=[
      tf.TensorSpec([None, None, None]), tf.TensorSpec([None, None])])


@pytest.mark.parametrize('shapes', ['static', 'dynamic'])
@pytest.mark.parametrize('frames', [1, 2, 7, 100, 1001])
def test_ema_matches_the_recursion(frames, shapes):
  smooth = np.array([0., 0.04, 0.5, 1., 0.9], np.float32)
  ema = postprocessing.ExponentialMovingAverage(per_channel=True)
  ema.build((None, None, 5))
  ema.set_weights([smooth])
  x = RNG.random((3, frames, 5)).astype(np.float32)
  initial = RNG.random((3, 5)).astype(np.float32)
  np.testing.assert_allclose(ema_caller(ema, shapes)(x, initial),
                             numpy_ema(x, smooth, initial), rtol=2e-5,
                             atol=1e-6)


@pytest.mark.parametrize('shapes', ['static', 'dynamic'])
def test_ema_gradient_matches_finite_differences(shapes):
  x = RNG.random((1, 50, 2)).astype(np.float64)
  ema = postprocessing.ExponentialMovingAverage(per_channel=True,
                                                trainable=True)
  ema.build((None, None, 2))
  smooth = np.array([0.1, 0.6])

  def loss(s):
    return float(np.sum(numpy_ema(x, s, x[:, 0])**2))

  ema.smooth.assign(smooth.astype(np.float32))
  with tf.GradientTape() as tape:
    value = tf.reduce_sum(ema_caller(ema, shapes)(
        x.astype(np.float32), x[:, 0].astype(np.float32))**2)
  grad = tape.gradient(value, ema.smooth).numpy()
  eps = 1e-5
  for c in range(2):
    delta = np.zeros(2)
    delta[c] = eps
    numeric = (loss(smooth + delta) - loss(smooth - delta)) / (2 * eps)
    assert grad[c] == pytest.approx(numeric, rel=1e-3)


def test_pcen_formula():
  pcen = postprocessing.PCENLayer(alpha=0.8, smooth_coef=0.1, delta=1.5,
                                  root=3., floor=1e-6, trainable=True,
                                  learn_smooth_coef=True,
                                  per_channel_smooth_coef=True)
  x = RNG.random((2, 30, 4)).astype(np.float32) * 10
  out = np.asarray(pcen(x))
  smoother = numpy_ema(x, 0.1, x[:, 0])
  expected = (x / (1e-6 + smoother)**0.8 + 1.5)**(1 / 3.) - 1.5**(1 / 3.)
  # (atol: subtracting 1.5^(1/3) ~ 1.14 in float32 leaves errors of its ulp.)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=5e-7)
  # alpha is used at most 1 and root at least 1.
  pcen.set_weights([np.full(4, 1.5), np.full(4, 1.5), np.full(4, 0.5),
                    np.full(4, 0.1)])
  expected = (x / (1e-6 + smoother)) + 1.5 - 1.5
  np.testing.assert_allclose(pcen(x), expected, rtol=1e-4, atol=1e-5)


def test_mean_variance_normalization():
  x = RNG.standard_normal((2, 50, 3)).astype(np.float32) * 4 + 2
  out = np.asarray(postprocessing.MeanVarianceNormalization()(x))
  expected = (x - x.mean(1, keepdims=True)) / np.sqrt(
      x.var(1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('taps,samples', [(401, 3000), (31, 100), (4, 37)])
def test_fft_convolutions_match_direct_convolution(taps, samples):
  x = RNG.standard_normal((2, samples, 1)).astype(np.float32)
  filters = RNG.standard_normal((taps, 1, 3)).astype(np.float32)
  direct = tf.nn.conv1d(x, filters, 1, 'SAME').numpy()
  np.testing.assert_allclose(numpy_correlate_same(x[..., 0], filters[:, 0]),
                             direct, atol=1e-3)
  fft_out, spectrum_l1 = convolution.fft_conv1d(x, filters)
  np.testing.assert_allclose(fft_out, direct, atol=1e-3)
  assert float(spectrum_l1) > 0
  np.testing.assert_allclose(
      convolution.overlap_add_conv1d(x, filters, fft_length=512), direct,
      atol=1e-3)


def test_fft_conv_layer_matches_conv1d():
  x = RNG.standard_normal((2, 500, 1)).astype(np.float32)
  direct = keras.layers.Conv1D(4, 65, padding='same')
  direct.build(x.shape)
  fft = convolution.FFTConv1D(4, 65, padding='same')
  fft.build(x.shape)
  fft.set_weights(direct.get_weights())
  np.testing.assert_allclose(fft(x), direct(x), atol=1e-4)
  with pytest.raises(ValueError, match='padding="same"'):
    convolution.FFTConv1D(4, 65, padding='valid')


def test_normalized_conv_uses_unit_norm_filters():
  kernel = RNG.standard_normal((9, 1, 2)).astype(np.float32) * 3
  conv = convolution.NormalizedConv1D(
      filters=2, kernel_size=9,
      kernel_initializer=keras.initializers.Constant(kernel))
  x = RNG.standard_normal((1, 40)).astype(np.float32)
  unit = kernel[:, 0] / np.linalg.norm(kernel[:, 0], axis=0)
  np.testing.assert_allclose(conv(x[:, :, None]),
                             numpy_correlate_same(x, unit), atol=1e-5)


def test_spec_augment_masks_and_warp():
  x = RNG.random((8, 100, 40)).astype(np.float32) + 1.
  augment = postprocessing.SpecAugment(seed=3)
  np.testing.assert_array_equal(augment(x, training=False), x)
  out = np.asarray(augment(x, training=True))
  zero_channels = (out == 0).all(axis=1).sum(axis=1)
  zero_frames = (out == 0).all(axis=2).sum(axis=1)
  # Two masks of at most 10 channels / frames each.
  assert zero_channels.max() <= 20 and zero_frames.max() <= 20
  assert zero_channels.sum() > 0 and zero_frames.sum() > 0

  masks_only = postprocessing.SpecAugment(time_warp_max_frames=0, seed=3)
  out = np.asarray(masks_only(x, training=True))
  kept = out != 0
  np.testing.assert_array_equal(out[kept], x[kept])

  warp_only = postprocessing.SpecAugment(freq_mask_count=0, time_mask_count=0,
                                         seed=5)
  ramp = np.tile(np.arange(100, dtype=np.float32)[None, :, None], (8, 1, 3))
  warped = np.asarray(warp_only(ramp, training=True))
  # The warp is monotonic, keeps both ends and moves frames by at most 8.
  assert (np.diff(warped, axis=1) >= -1e-4).all()
  np.testing.assert_allclose(warped[:, 0], 0., atol=1e-5)
  np.testing.assert_allclose(warped[:, -1], 99., atol=1e-4)
  assert np.abs(warped - ramp).max() <= 8. + 1e-4
  assert np.abs(warped - ramp).max() > 0.


@pytest.mark.parametrize('sample_rate', [8000, 22050])
def test_baselines_at_other_sampling_rates(sample_rate):
  """Frame counts from the rate's window and stride (25 ms: 201 and 552
  taps, an even sinc filter at 22.05 kHz; 10 ms: 80 and 220 samples)."""
  samples = sample_rate // 2
  window = int(sample_rate * 25 // 1000 + 1)
  stride = int(sample_rate * 10 // 1000)
  waveforms = RNG.uniform(-.5, .5, (2, samples)).astype(np.float32)
  for layer, frames in [
      (frontend.SincNet(sample_rate=sample_rate), -(-samples // stride)),
      (frontend.SincNetPlus(sample_rate=sample_rate), -(-samples // stride)),
      (frontend.TimeDomainFilterbanks(sample_rate=sample_rate),
       (samples - window) // stride + 1)]:
    outputs = np.asarray(layer(waveforms))
    assert outputs.shape == (2, frames, 40), layer.name
    assert np.isfinite(outputs).all() and outputs.std() > 0, layer.name


@pytest.mark.parametrize('layer_cls', [pooling.GaussianLowpass,
                                       pooling.LearnablePooling1D,
                                       pooling.ChannelWiseLearnablePooling1D])
def test_valid_pooling_of_clips_shorter_than_the_window(layer_cls):
  """No frame below the window's length, one at it: the window's dot
  product (TensorFlow's own depthwise conv returns garbage below it)."""
  layer = layer_cls(kernel_size=9, strides=4, padding='valid',
                    kernel_initializer=keras.initializers.Constant(0.3))
  x = RNG.random((2, 9, 3)).astype(np.float32)
  one = np.asarray(layer(x))
  assert np.asarray(layer(x[:, :7])).shape == (2, 0, 3)
  assert one.shape == (2, 1, 3)
  if layer_cls is pooling.GaussianLowpass:
    window = np.asarray(layer.windows())[:, :, 0]  # [9, 3]
  else:
    window = np.full((9, 3), 0.3, np.float32)
  np.testing.assert_allclose(one[:, 0], (x * window[None]).sum(1), rtol=1e-5)


def test_time_domain_kernel_init_works_inside_a_traced_function():
  # `fit` on an unbuilt TimeDomainFilterbanks model builds it inside the
  # traced train step, where TensorFlow initializes variables in a graph.
  eager = initializers.GaborInit()((401, 1, 80)).numpy()
  traced = tf.function(lambda: initializers.GaborInit()((401, 1, 80)))()
  np.testing.assert_array_equal(traced.numpy(), eager)
  filters = np.asarray(
      melfilters.Gabor(n_filters=40, window_len=401).gabor_filters)
  np.testing.assert_allclose(eager[:, 0, 0::2].T, filters.real, atol=1e-6)
  np.testing.assert_allclose(eager[:, 0, 1::2].T, filters.imag, atol=1e-6)
  model = keras.Sequential([frontend.TimeDomainFilterbanks(),
                            keras.layers.GlobalAveragePooling1D(),
                            keras.layers.Dense(2)])
  model.compile(optimizer=keras.optimizers.SGD(0.),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  model.fit(np.zeros((2, 1600), np.float32), np.array([0, 1]), verbose=0)
  built_eagerly = frontend.TimeDomainFilterbanks()
  built_eagerly(np.zeros((1, 1600), np.float32))
  for traced_weight, eager_weight in zip(model.layers[0].weights,
                                         built_eagerly.weights):
    # Equal but for subnormal taps (1e-40), which the graph flushes to 0.
    np.testing.assert_allclose(traced_weight.numpy(), eager_weight.numpy(),
                               rtol=0, atol=1e-37)
