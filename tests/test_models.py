"""Tests of leaf_audio.models: encoders, WaveGram and AudioClassifier."""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from leaf_audio import frontend
from leaf_audio import models


def _waveforms(batch=2, length=8000, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(-0.5, 0.5, (batch, length)).astype('float32')


def _features(batch=2, time=32, freq=16, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(batch, time, freq)).astype('float32')


def _randomize(layers, seed=0):
  """Moves float weights away from their init so that outputs are O(1)."""
  rng = np.random.default_rng(seed)
  for layer in layers:
    for variable in layer.weights:
      value = variable.numpy()
      if not np.issubdtype(value.dtype, np.floating):
        continue
      if 'variance' in variable.path:
        value = value * rng.uniform(0.5, 2.0, value.shape)
      else:
        value = value + rng.normal(0.0, 0.1, value.shape)
      variable.assign(value.astype(variable.dtype))


def _heads(model):
  return list(model.heads.values())


def _count(weights):
  return sum(int(np.prod(w.shape)) for w in weights)


def _conv_bn_params(kernel_elems, c_in, c_out, bias):
  """Weights of a conv (kernel_elems taps) + a BatchNorm (4 per channel)."""
  return kernel_elems * c_in * c_out + (c_out if bias else 0) + 4 * c_out


# ConvBlock / ConvNet.


def _numpy_same_conv(x, kernel, bias):
  """'same' 2-D convolution (cross-correlation), x [T, F, C], odd kernel."""
  kt, kf, _, c_out = kernel.shape
  padded = np.pad(x, ((kt // 2, kt // 2), (kf // 2, kf // 2), (0, 0)))
  out = np.zeros(x.shape[:2] + (c_out,))
  for t in range(x.shape[0]):
    for f in range(x.shape[1]):
      patch = padded[t:t + kt, f:f + kf]
      out[t, f] = np.tensordot(patch, kernel, axes=3) + bias
  return out


def test_conv_block_matches_a_numpy_reference_in_the_original_order():
  block = models.ConvBlock(3)
  block.build((None, 6, 4, 2))
  assert [tuple(w.shape) for w in block.weights] == [
      (3, 1, 2, 3), (3,), (3,), (3,), (3,), (3,),
      (1, 3, 3, 3), (3,), (3,), (3,), (3,), (3,)]
  _randomize([block], seed=1)
  (k1, b1, g1, be1, m1, v1, k2, b2, g2, be2, m2, v2) = [
      w.numpy().astype(np.float64) for w in block.weights]
  x = np.random.default_rng(2).normal(size=(1, 6, 4, 2)).astype('float32')

  def bn(h, gamma, beta, mean, var):
    return gamma * (h - mean) / np.sqrt(var + 1e-3) + beta

  # Convolution -> activation -> normalization, twice, then 2x2 max pooling.
  h = bn(np.maximum(_numpy_same_conv(x[0], k1, b1), 0), g1, be1, m1, v1)
  h = bn(np.maximum(_numpy_same_conv(h, k2, b2), 0), g2, be2, m2, v2)
  expected = h.reshape(3, 2, 2, 2, 3).max(axis=(1, 3))
  got = np.asarray(block(x, training=False))[0]
  assert got.shape == (3, 2, 3)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_conv_block_options_change_weights_and_shapes():
  block = models.ConvBlock(4, normalization_layer=None, max_pooling=False)
  out = block(np.zeros((2, 10, 8, 1), 'float32'))
  assert tuple(out.shape) == (2, 10, 8, 4)
  assert _count(block.weights) == (3 * 1 * 4 + 4) + (3 * 4 * 4 + 4)


def test_conv_net_pools_after_block_zero_and_odd_blocks():
  encoder = models.ConvNet(filters=[4, 5, 6, 7, 8], dropout=0.1)
  out = encoder(np.zeros((2, 32, 16, 1), 'float32'))
  # Pooling blocks 0, 1 and 3: 32 x 16 -> 4 x 2.
  assert tuple(out.shape) == (2, 4, 2, 8)
  assert [b.max_pooling for b in encoder._blocks] == [
      True, True, False, True, False]
  expected = sum(
      _conv_bn_params(3, c_in, c_out, True) + _conv_bn_params(3, c_out, c_out,
                                                              True)
      for c_in, c_out in zip([1, 4, 5, 6, 7], [4, 5, 6, 7, 8]))
  assert encoder.count_params() == expected


def test_conv_net_takes_conv_block_settings_from_gin_and_saves_them():
  gin.clear_config()
  try:
    gin.parse_config("""
        ConvNet.filters = [4, 8]
        ConvBlock.activation = 'tanh'
        ConvBlock.dropout = 0.25
    """)
    encoder = models.ConvNet()
  finally:
    gin.clear_config()
  config = encoder.get_config()
  assert config['filters'] == [4, 8]
  assert config['activation'] == 'tanh'
  assert config['dropout'] == 0.25
  rebuilt = models.ConvNet.from_config(config)
  assert rebuilt._blocks[1].dropout == 0.25
  assert rebuilt._blocks[1].activation is keras.activations.tanh


# PANN and WaveGram.


def test_pann_depth_6_has_the_cnn14_trunk_parameter_count():
  n_mels = 64
  encoder = models.PANN(depth=6, dropout_rate=0.2)
  encoder.build((None, None, n_mels, 1))
  # CNN14 (Kong et al. 2019): bn0 over the mel bins, then six blocks of two
  # bias-free 3x3 convolutions, each followed by a BatchNorm.
  widths = [64, 128, 256, 512, 1024, 2048]
  expected = 4 * n_mels
  for c_in, c_out in zip([1] + widths[:-1], widths):
    expected += _conv_bn_params(9, c_in, c_out, False)
    expected += _conv_bn_params(9, c_out, c_out, False)
  assert expected == 75_493_696
  assert encoder.count_params() == expected
  assert encoder.compute_output_shape((2, 100, n_mels, 1)) == (2, 4, 2, 2048)


def test_pann_output_shape_and_pool_types():
  encoder = models.PANN(depth=2)
  out = encoder(np.zeros((2, 16, 8, 1), 'float32'))
  assert tuple(out.shape) == (2, 4, 2, 128)

  x = np.random.default_rng(0).normal(size=(1, 4, 6, 2)).astype('float32')
  blocks = {kind: models.PANNConvBlock(3, pool_size=(2, 3), pool_type=kind)
            for kind in ('avg', 'max', 'avg+max')}
  for block in blocks.values():
    block.build(x.shape)
    block.set_weights(blocks['avg'].get_weights())
  outs = {kind: np.asarray(block(x)) for kind, block in blocks.items()}
  assert outs['avg'].shape == (1, 2, 2, 3)
  np.testing.assert_allclose(outs['avg+max'], outs['avg'] + outs['max'],
                             rtol=1e-6)
  assert np.all(outs['max'] >= outs['avg'])


@pytest.mark.parametrize('length, frames', [(16000, 25), (641, 2), (1, 1)])
def test_wavegram_frames_and_channels(length, frames):
  wavegram = models.WaveGram()
  out = wavegram(_waveforms(length=length))
  assert tuple(out.shape) == (2, frames, 64)


def test_wavegram_parameter_count_and_mono_channel_input():
  wavegram = models.WaveGram()
  x = _waveforms(length=1280)
  out_2d = np.asarray(wavegram(x))
  out_3d = np.asarray(wavegram(x[..., None]))
  np.testing.assert_array_equal(out_2d, out_3d)
  expected = (
      _conv_bn_params(11, 1, 64, False) +
      sum(_conv_bn_params(3, c_in, c_out, False) +
          _conv_bn_params(3, c_out, c_out, False)
          for c_in, c_out in [(64, 64), (64, 128), (128, 128)]) +
      _conv_bn_params(9, 128, 64, False) + _conv_bn_params(9, 64, 64, False))
  assert wavegram.count_params() == expected == 311_232


@pytest.mark.parametrize('inputs', [
    np.zeros((2, 100, 1, 1), 'float32'),
    np.zeros((2, 100, 2), 'float32'),
    np.zeros((2, 100), 'int16'),
])
def test_wavegram_rejects_what_is_not_a_float_mono_waveform(inputs):
  with pytest.raises(ValueError, match='WaveGram expects'):
    models.WaveGram()(inputs)


# EfficientNet.


def test_efficientnet_encoder_is_b0_with_one_channel_and_no_preprocessing():
  encoder = models.EfficientNetEncoder()
  out = encoder(np.zeros((2, 64, 40, 1), 'float32'))
  assert tuple(out.shape) == (2, 2, 1, 1280)
  # Keras' B0 without top, 3 channels, counts 4,049,564 weights without its
  # Normalization's statistics; one channel removes 3*3*(3-1)*32 stem weights.
  assert encoder.count_params() == 4_049_564 - 3 * 3 * (3 - 1) * 32
  assert encoder.count_params() == 4_048_988
  kinds = {type(layer) for layer in encoder._backbone.layers}
  assert keras.layers.Rescaling not in kinds
  assert keras.layers.Normalization not in kinds
  with pytest.raises(ValueError, match='one input channel'):
    encoder.build((None, 64, 40, 3))
  with pytest.raises(ValueError, match='at least 32 time frames'):
    encoder.build((None, 31, 40, 1))


# AudioClassifier.


def test_classifier_single_head_is_max_pooled_encoder_then_linear():
  model = models.AudioClassifier(
      5, frontend=models.WaveGram(), encoder=models.ConvNet(filters=[8, 16]))
  x = _waveforms(length=16000)
  logits = np.asarray(model(x))
  assert logits.shape == (2, 5)
  feature_map = model.encoder(model.frontend(x)[..., None])
  assert tuple(feature_map.shape) == (2, 6, 16, 16)
  embedding = np.asarray(feature_map).max(axis=(1, 2))
  kernel, bias = model.heads['head'].get_weights()
  np.testing.assert_allclose(logits, embedding @ kernel + bias, rtol=1e-5,
                             atol=1e-6)


def test_classifier_multi_head_shares_frontend_and_encoder():
  tasks = {'speaker': 7, 'language': 3, 'emotion': 4}
  model = models.AudioClassifier(
      tasks, frontend=models.WaveGram(), encoder=models.ConvNet(filters=[8]))
  x = _waveforms(length=6400)
  logits = model(x)
  assert set(logits) == set(tasks)
  for task, classes in tasks.items():
    assert tuple(logits[task].shape) == (2, classes)
    assert model.heads[task].name == task

  embedding_dim = 8
  frontend_params = model.frontend.count_params()
  encoder_params = model.encoder.count_params()
  heads_params = sum((embedding_dim + 1) * n for n in tasks.values())
  assert model.count_params() == (frontend_params + encoder_params +
                                  heads_params)
  assert len({id(w) for w in model.weights}) == len(model.weights)

  embedding = np.asarray(
      model.encoder(model.frontend(x)[..., None])).max(axis=(1, 2))
  for task in tasks:
    kernel, bias = model.heads[task].get_weights()
    np.testing.assert_allclose(np.asarray(logits[task]),
                               embedding @ kernel + bias, rtol=1e-5,
                               atol=1e-6)


def test_classifier_without_frontend_or_encoder_takes_features():
  features = _features()
  model = models.AudioClassifier(4)
  logits = np.asarray(model(features))
  kernel, bias = model.heads['head'].get_weights()
  expected = features.max(axis=(1, 2))[:, None] @ kernel + bias
  np.testing.assert_allclose(logits, expected, rtol=1e-6)
  with pytest.raises(ValueError, match=r'\[batch, time, freq\]'):
    models.AudioClassifier(4)(_waveforms())


def test_classifier_in_a_functional_model_gives_the_same_logits():
  tasks = {'a': 2, 'b': 3}
  classifier = models.AudioClassifier(
      tasks, frontend=frontend.MelFilterbanks(),
      encoder=models.ConvNet(filters=[8, 8]))
  inputs = keras.Input((8000,))
  functional = keras.Model(inputs, classifier(inputs))
  x = _waveforms()
  direct = classifier(x)
  wrapped = functional(x)
  assert set(wrapped) == set(tasks)
  for task in tasks:
    np.testing.assert_allclose(np.asarray(wrapped[task]),
                               np.asarray(direct[task]), rtol=1e-6)


def test_classifier_under_xla_matches_eager():
  model = models.AudioClassifier({'a': 4, 'b': 2}, frontend=models.WaveGram(),
                                 encoder=models.PANN(depth=2))
  x = _waveforms(length=12800)
  model(x)
  _randomize([model.encoder] + _heads(model))
  eager = model(x)

  @tf.function(jit_compile=True)
  def compiled(inputs):
    return model(inputs)

  xla = compiled(x)
  for task in ('a', 'b'):
    assert np.std(eager[task]) > 1e-3
    np.testing.assert_allclose(np.asarray(xla[task]), np.asarray(eager[task]),
                               rtol=1e-4, atol=1e-5)


def test_classifier_round_trips_a_plain_keras_encoder(tmp_path):
  model = models.AudioClassifier(
      3, frontend=frontend.MelFilterbanks(n_filters=16),
      encoder=keras.Sequential([keras.layers.Conv2D(6, 3, activation='tanh')]))
  x = _waveforms()
  logits = np.asarray(model(x))
  assert logits.shape == (2, 3)
  model.save(str(tmp_path / 'plain.keras'))
  loaded = keras.models.load_model(str(tmp_path / 'plain.keras'))
  assert isinstance(loaded.encoder, keras.Sequential)
  np.testing.assert_allclose(np.asarray(loaded(x)), logits, rtol=1e-6)


def test_multi_head_model_fits_with_one_loss_per_task():
  keras.utils.set_random_seed(0)
  tasks = {'a': 3, 'b': 2}
  model = models.AudioClassifier(tasks, frontend=frontend.MelFilterbanks(),
                                 encoder=models.ConvNet(filters=[8, 8]))
  model.compile(
      optimizer=keras.optimizers.Adam(1e-2),
      loss={task: keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            for task in tasks})
  x = _waveforms(batch=4)
  labels = {'a': np.array([0, 1, 2, 0]), 'b': np.array([1, 0, 1, 0])}
  history = model.fit(x, labels, batch_size=4, epochs=5, verbose=0)
  losses = history.history['loss']
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0]


@pytest.mark.parametrize('num_outputs, make_frontend', [
    (10, frontend.MelFilterbanks),
    ({'scene': 6, 'bird': 2}, frontend.Leaf),
])
def test_save_load_round_trip_with_efficientnet(tmp_path, num_outputs,
                                                make_frontend):
  model = models.AudioClassifier(num_outputs, frontend=make_frontend(),
                                 encoder=models.EfficientNetEncoder())
  x = _waveforms(length=8000)
  model(x)
  _randomize([model.encoder] + _heads(model))
  before = keras.tree.map_structure(np.asarray, model(x))
  path = str(tmp_path / 'model.keras')
  model.save(path)
  loaded = keras.models.load_model(path)
  after = keras.tree.map_structure(np.asarray, loaded(x))

  assert isinstance(loaded.encoder, models.EfficientNetEncoder)
  assert type(loaded.frontend) is make_frontend
  assert loaded.get_config()['num_outputs'] == num_outputs
  assert loaded.count_params() == model.count_params()
  for got, want in zip(keras.tree.flatten(after), keras.tree.flatten(before)):
    assert np.std(want) > 1e-3  # Not a degenerate all-zero comparison.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('num_outputs', [3, {'pitch': 5, 'instrument': 2}])
def test_export_serve_endpoint_gives_the_same_logits(tmp_path, num_outputs):
  model = models.AudioClassifier(num_outputs, frontend=frontend.Leaf(),
                                 encoder=models.ConvNet(filters=[8, 8]))
  x = _waveforms(length=4000)
  model(x)
  _randomize([model.encoder] + _heads(model))
  expected = keras.tree.map_structure(np.asarray, model(x))
  model.export(str(tmp_path / 'saved_model'), verbose=False)
  reloaded = tf.saved_model.load(str(tmp_path / 'saved_model'))
  served = reloaded.serve(x)
  if isinstance(num_outputs, dict):
    assert set(served) == set(num_outputs)
  served = keras.tree.map_structure(np.asarray, served)
  for got, want in zip(keras.tree.flatten(served),
                       keras.tree.flatten(expected)):
    assert np.std(want) > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('layer', [
    models.ConvBlock(8, activation='tanh', dropout=0.2, max_pooling=False),
    models.ConvNet(filters=[4, 8], normalization_layer=None),
    models.PANNWavBlock(16, pool_size=2),
    models.PANNConvBlock(16, pool_size=(2, 1), pool_type='avg+max'),
    models.PANN(depth=3, dropout_rate=0.1),
    models.AudioClassifier({'x': 2, 'y': 3}, encoder=models.PANN(depth=1)),
], ids=lambda layer: type(layer).__name__)
def test_config_round_trip(layer):
  config = layer.get_config()
  rebuilt = type(layer).from_config(config)
  assert rebuilt.get_config() == config


@pytest.mark.parametrize('num_outputs', [
    0, -3, 2.5, True, '10', {}, {'a': 0}, {'a': 2, 'b': -1}, {'a': 2.0},
    {'': 3}, {'a/b': 3}, {3: 4},
])
def test_classifier_rejects_bad_num_outputs(num_outputs):
  with pytest.raises(ValueError, match='num_outputs'):
    models.AudioClassifier(num_outputs)


@pytest.mark.parametrize('make, match', [
    (lambda: models.ConvBlock(0), 'num_filters must be a positive int'),
    (lambda: models.ConvBlock(8, dropout=1.0), r'dropout must be .* \[0, 1\)'),
    (lambda: models.ConvBlock(8, normalization_layer='bn'),
     'normalization_layer must be'),
    (lambda: models.ConvNet(filters=[]), 'non-empty sequence of positive'),
    (lambda: models.ConvNet(filters=[8, 0]), 'non-empty sequence of positive'),
    (lambda: models.PANN(depth=0), 'depth must be a positive int'),
    (lambda: models.PANN(dropout_rate=-0.1), 'dropout_rate must be'),
    (lambda: models.PANNConvBlock(8, pool_type='median'),
     "pool_type must be one of \\('avg', 'max', 'avg\\+max'\\)"),
    (lambda: models.PANNConvBlock(8, pool_size=(2,)), 'pool_size must be two'),
    (lambda: models.PANNWavBlock(8, pool_size=0), 'pool_size must be'),
])
def test_layers_reject_bad_arguments(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_pann_needs_a_known_frequency_axis():
  with pytest.raises(ValueError, match='frequency axis'):
    models.PANN(depth=1).build((None, None, None, 1))


def test_gin_configures_the_classifier_by_class_names():
  gin.clear_config()
  try:
    gin.parse_config("""
        AudioClassifier.encoder = @PANN()
        PANN.depth = 1
        PANN.dropout_rate = 0.0
    """)
    model = models.AudioClassifier(num_outputs=3)
  finally:
    gin.clear_config()
  assert isinstance(model.encoder, models.PANN)
  assert model.encoder.depth == 1
  logits = model(_features(freq=8))
  assert tuple(logits.shape) == (2, 3)
