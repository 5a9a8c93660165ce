"""Bad input gets a clear error naming what was expected."""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from leaf_audio import frontend

FRONTENDS = [frontend.Leaf, frontend.MelFilterbanks,
             frontend.TimeDomainFilterbanks, frontend.SincNet,
             frontend.SincNetPlus]


@pytest.mark.parametrize('cls', FRONTENDS)
@pytest.mark.parametrize('shape', [(16000,), (2, 1, 16000, 1)])
def test_wrong_rank(cls, shape):
  with pytest.raises(ValueError, match=r'\[batch, time\] or \[batch, time, 1\]'):
    cls()(np.zeros(shape, np.float32))


@pytest.mark.parametrize('cls', FRONTENDS)
def test_several_channels(cls):
  with pytest.raises(ValueError, match='mono waveforms.*2 channels'):
    cls()(np.zeros((2, 16000, 2), np.float32))


@pytest.mark.parametrize('cls', FRONTENDS)
def test_empty_clip(cls):
  with pytest.raises(ValueError, match='at least one sample'):
    cls()(np.zeros((2, 0), np.float32))


def test_empty_clip_in_a_graph_with_unknown_length():
  leaf = frontend.Leaf()
  run = tf.function(leaf, input_signature=[
      tf.TensorSpec((None, None), tf.float32)])
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='at least one sample'):
    run(tf.zeros((2, 0)))


@pytest.mark.parametrize('cls', FRONTENDS)
@pytest.mark.parametrize('dtype', [np.int16, np.int32])
def test_integer_waveform(cls, dtype):
  with pytest.raises(ValueError, match=r'float waveforms in \[-1, 1\].*scale'):
    cls()(np.zeros((2, 1600), dtype))


@pytest.mark.parametrize('cls', FRONTENDS)
@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_non_finite_samples_raise_instead_of_nan_outputs(cls, bad):
  x = np.zeros((2, 1600), np.float32)
  x[1, 800] = bad
  with pytest.raises(tf.errors.InvalidArgumentError, match='NaN or Inf'):
    cls()(x)


def test_non_finite_samples_raise_in_a_compiled_graph():
  leaf = frontend.Leaf()
  x = np.zeros((2, 1600), np.float32)
  x[0, 3] = np.nan
  with pytest.raises(tf.errors.InvalidArgumentError, match='NaN or Inf'):
    tf.function(leaf)(tf.constant(x))


def test_unknown_gin_parameter():
  with pytest.raises(ValueError, match='n_filterz'):
    gin.parse_config('Leaf.n_filterz = 3')


def test_unknown_gin_configurable():
  with pytest.raises(ValueError, match='Leafy'):
    gin.parse_config('Leafy.n_filters = 3')


def test_gin_binding_configures_the_frontend():
  with gin.config_scope(None):
    gin.parse_config(['Leaf.n_filters = 12', 'Leaf.window_stride = 20.'])
    try:
      leaf = frontend.Leaf()
    finally:
      gin.clear_config()
  assert leaf(np.zeros((1, 16000), np.float32)).shape == (1, 50, 12)


@pytest.mark.parametrize('kwargs,pattern', [
    ({'n_filters': 0}, 'n_filters must be positive'),
    ({'window_stride': 0.01}, 'below one sample'),
    ({'compression_fn': 'cubic'}, "'pcen' or 'log'"),
    ({'sample_rate': -1}, 'must be positive'),
])
def test_bad_leaf_arguments(kwargs, pattern):
  with pytest.raises(ValueError, match=pattern):
    frontend.Leaf(**kwargs)


def test_mel_fft_shorter_than_window():
  with pytest.raises(ValueError, match='shorter than the window'):
    frontend.MelFilterbanks(n_fft=256)


def test_keras_input_with_channels_is_rejected_at_build():
  with pytest.raises(ValueError, match='mono waveforms'):
    frontend.Leaf()(keras.Input((None, 2)))


def test_mel_filterbanks_at_other_sampling_rates_say_what_to_pass():
  with pytest.raises(ValueError, match='max_freq <= sample_rate / 2 = 4000 '
                     'Hz.*pass e.g. max_freq=3900'):
    frontend.MelFilterbanks(sample_rate=8000)
  with pytest.raises(ValueError, match='pass n_fft >= 1103, e.g. 2048'):
    frontend.MelFilterbanks(sample_rate=44100)
  mel = frontend.MelFilterbanks(sample_rate=44100, n_fft=2048)
  assert mel(np.zeros((1, 44100), np.float32)).shape == (1, 100, 40)


@pytest.mark.parametrize('cls,frames', [
    (frontend.Leaf, 100), (frontend.MelFilterbanks, 100),
    (frontend.TimeDomainFilterbanks, 98), (frontend.SincNet, 100),
    (frontend.SincNetPlus, 100)])
def test_empty_batch_gives_empty_features(cls, frames):
  layer = cls()
  assert layer(np.zeros((0, 16000), np.float32)).shape == (0, frames, 40)
  run = tf.function(layer, input_signature=[
      tf.TensorSpec((None, None), tf.float32)])
  assert run(tf.zeros((0, 16000))).shape == (0, frames, 40)
  assert run(tf.ones((1, 16000)) * 0.1).shape == (1, frames, 40)


@pytest.mark.parametrize('cls', FRONTENDS)
@pytest.mark.parametrize('kwargs,pattern', [
    ({'n_filters': '40'}, "n_filters must be an int, got '40' of type str"),
    ({'n_filters': 40.0}, 'n_filters must be an int, got 40.0 of type float'),
    ({'n_filters': True}, 'n_filters must be an int, got True'),
    ({'sample_rate': '16000'}, "sample_rate must be a number, got '16000'"),
    ({'window_len': None}, 'window_len must be a number, got None'),
    ({'window_stride': '10'}, "window_stride must be a number, got '10'")])
def test_constructor_arguments_of_the_wrong_type(cls, kwargs, pattern):
  with pytest.raises(TypeError, match=pattern):
    cls(**kwargs)
