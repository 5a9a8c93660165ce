"""Every frontend behaves as an ordinary Keras layer."""

import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from leaf_audio import frontend

FRONTENDS = {
    'leaf': frontend.Leaf,
    'mel': frontend.MelFilterbanks,
    'tfbanks': frontend.TimeDomainFilterbanks,
    'sincnet': frontend.SincNet,
    'sincnet_plus': frontend.SincNetPlus,
}


def waveforms(batch=2, samples=4000, seed=0):
  rng = np.random.default_rng(seed)
  return (0.1 * rng.standard_normal((batch, samples))).astype(np.float32)


def expected_frames(name, samples):
  if name == 'tfbanks':  # 'valid' pooling of 401 taps, stride 160
    return (samples - 401) // 160 + 1
  return -(-samples // 160)


@pytest.mark.parametrize('name', FRONTENDS)
def test_sequential_first_layer(name):
  model = keras.Sequential([keras.Input((None,)), FRONTENDS[name]()])
  x = waveforms()
  np.testing.assert_allclose(model(x), FRONTENDS[name]()(x), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize('name', FRONTENDS)
def test_functional_variable_length_and_channel_axis(name):
  inputs = keras.Input((None,))
  model = keras.Model(inputs, FRONTENDS[name]()(inputs))
  for samples in (2000, 4321):
    x = waveforms(samples=samples)
    out = model(x)
    assert out.shape == (2, expected_frames(name, samples), 40)
    # [B, T, 1] gives the same as [B, T].
    np.testing.assert_allclose(model.layers[-1](x[:, :, None]), out,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', ['leaf', 'mel', 'sincnet_plus'])
def test_short_clip_gives_one_frame(name):
  layer = FRONTENDS[name]()
  assert layer(waveforms(samples=1)).shape == (2, 1, 40)
  assert layer(waveforms(samples=161)).shape == (2, 2, 40)


@pytest.mark.parametrize('name', FRONTENDS)
def test_keras_file_round_trip(name, tmp_path):
  inputs = keras.Input((None,))
  model = keras.Model(inputs, FRONTENDS[name]()(inputs))
  # Move the weights away from their initial values, so that the reload
  # must restore them rather than re-initialize.
  model.set_weights([w * 1.05 for w in model.get_weights()])
  path = str(tmp_path / 'frontend.keras')
  model.save(path)
  reloaded = keras.models.load_model(path)
  x = waveforms()
  np.testing.assert_allclose(reloaded(x), model(x), rtol=1e-6, atol=1e-6)
  assert type(reloaded.layers[-1]) is FRONTENDS[name]


def test_leaf_config_round_trip_keeps_every_argument():
  leaf = frontend.Leaf(n_filters=24, window_len=20., window_stride=5.,
                       preemp=True, mean_var_norm=True, learn_pooling=False,
                       compression_fn=frontend.log_compression)
  clone = frontend.Leaf.from_config(leaf.get_config())
  config = clone.get_config()
  for key, value in leaf.get_config().items():
    assert config[key] == value, key
  x = waveforms()
  clone.build(x.shape)
  leaf.build(x.shape)
  clone.set_weights(leaf.get_weights())
  np.testing.assert_allclose(clone(x), leaf(x), rtol=1e-6, atol=1e-6)
  assert clone(x).shape == (2, 4000 // 80, 24)  # stride 5 ms = 80 samples


@pytest.mark.parametrize('name', ['leaf', 'mel', 'sincnet_plus', 'tfbanks'])
def test_saved_model_export_serves_same_outputs(name, tmp_path):
  inputs = keras.Input((None,))
  model = keras.Model(inputs, FRONTENDS[name]()(inputs))
  path = str(tmp_path / 'export')
  model.export(path, verbose=False)
  reloaded = tf.saved_model.load(path)
  for samples in (3000, 4000):
    x = waveforms(samples=samples)
    np.testing.assert_allclose(reloaded.serve(tf.constant(x)), model(x),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', FRONTENDS)
def test_jit_compile(name):
  layer = FRONTENDS[name]()
  x = waveforms()
  eager = layer(x)
  compiled = tf.function(lambda w: layer(w), jit_compile=True)
  np.testing.assert_allclose(compiled(tf.constant(x)), eager, rtol=1e-4,
                             atol=1e-4)


@pytest.mark.parametrize('name,count', [
    ('leaf', 448), ('sincnet', 256), ('sincnet_plus', 448),
    ('tfbanks', 128 * 401 + 401), ('mel', 0)])
def test_trainable_parameter_counts_match_table_4(name, count):
  layer = FRONTENDS[name](n_filters=64)
  layer.build((None, None))
  trainable = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
  assert trainable == count


def test_frozen_leaf_has_no_trainable_filters():
  leaf = frontend.Leaf(learn_filters=False, learn_pooling=False)
  leaf.build((None, None))
  # Only sPCEN stays learnable: alpha, delta, root and smooth.
  assert sum(int(np.prod(w.shape)) for w in leaf.trainable_weights) == 160


def test_leaf_spec_augment_only_in_training():
  leaf = frontend.Leaf(spec_augment=True)
  x = waveforms(samples=16000)
  np.testing.assert_allclose(leaf(x, training=False), frontend.Leaf()(x),
                             rtol=1e-5, atol=1e-6)
  augmented = np.asarray(leaf(x, training=True))
  assert augmented.shape == (2, 100, 40)
  # Masks zero out whole channels and frames somewhere in the batch.
  assert (augmented == 0).sum() > 0
  assert not np.allclose(augmented, leaf(x, training=False))


def test_leaf_trains_in_a_model_fit():
  """One fit step moves every learnable frontend weight."""
  inputs = keras.Input((None,))
  features = frontend.Leaf(n_filters=8)(inputs)
  logits = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(
      features))
  model = keras.Model(inputs, logits)
  model.compile(optimizer=keras.optimizers.Adam(1e-2),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  before = [np.array(w) for w in model.layers[1].get_weights()]
  x = waveforms(batch=4, samples=3200)
  model.fit(x, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
  after = model.layers[1].get_weights()
  for b, a in zip(before, after):
    assert not np.allclose(a, b)


FIXTURES = pathlib.Path(__file__).parent / 'data' / 'frontends_v0'


@pytest.mark.parametrize('name', ['leaf', 'tfbanks', 'sincnet',
                                  'sincnet_plus'])
def test_keras_files_saved_by_the_earlier_layout_load(name):
  """.keras files saved before the filterbank layer and the baselines' own
  constructors (commit ad0f539, tests/data/frontends_v0/make_fixtures.py):
  tiny frontends with moved weights give the outputs that code gave."""
  expected = np.load(FIXTURES / 'frontends_v0.npz')
  model = keras.models.load_model(FIXTURES / f'{name}_v0.keras')
  outputs = np.asarray(model(expected['x']))
  assert outputs.shape == expected[name].shape
  np.testing.assert_allclose(outputs, expected[name], rtol=1e-5,
                             atol=1e-5 * np.abs(expected[name]).max())
