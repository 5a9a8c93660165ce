"""Every layer computes, trains and saves alike on every Keras backend.

The reference is the TensorFlow backend's (tests/data/backends/
reference.npz, made by make_reference.py there). `make test` runs this file
on TensorFlow with the rest of the suite, `make test-jax` on JAX in an
environment without TensorFlow, `make test-torch` on PyTorch.
"""

import os
import pathlib
import sys
import warnings

import keras
import numpy as np
import pytest

import backend_cases

REFERENCE = pathlib.Path(__file__).parent / 'data' / 'backends' / (
    'reference.npz')
BACKEND = keras.backend.backend()
# Largest difference allowed, relative to the largest reference value.
TOLERANCE = 1e-5


@pytest.fixture(scope='module')
def reference():
  with np.load(REFERENCE) as data:
    return {key: data[key] for key in data.files}


def _weights(reference, name):
  count = sum(key.startswith(f'{name}/weight_') for key in reference)
  return [reference[f'{name}/weight_{i}'] for i in range(count)]


def _assert_close(actual, expected, tolerance=TOLERANCE):
  assert actual.shape == expected.shape
  scale = np.abs(expected).max()
  error = np.abs(actual - expected).max() / scale
  assert error <= tolerance, f'max error {error:.2e} of the largest value'


def _expected_output(reference, name):
  # The fast mode's banded computation is TensorFlow's; elsewhere the fast
  # mode computes exactly, as the default does (same weights).
  if name == 'leaf_fast' and BACKEND != 'tensorflow':
    return reference['leaf/output']
  return reference[f'{name}/output']


@pytest.mark.parametrize('name', sorted(backend_cases.CASES))
def test_outputs_match_tensorflow(reference, name):
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # the fast mode's, off TensorFlow
    layer, x = backend_cases.build(name)
  weights = _weights(reference, name)
  assert [w.shape for w in layer.get_weights()] == [w.shape for w in weights]
  layer.set_weights(weights)
  tolerance = 1e-3 if name == 'leaf_fast' and BACKEND == 'tensorflow' else (
      TOLERANCE)
  _assert_close(backend_cases.call(layer, x),
                _expected_output(reference, name), tolerance)


def test_fit_losses_match_tensorflow(reference):
  """A few SGD steps of `Model.fit` (compiled as the backend compiles it:
  `jax.jit` on JAX) give the reference's losses."""
  keras.utils.set_random_seed(0)
  model = backend_cases.fit_model()
  model(backend_cases.waveform())
  model.set_weights(_weights(reference, 'fit'))
  losses = backend_cases.fit_losses(model)
  expected = reference['fit/losses']
  assert losses[-1] < losses[0]  # it learns
  np.testing.assert_allclose(losses, expected, rtol=1e-4)


@pytest.mark.parametrize('name', ['leaf', 'tfbanks', 'sincnet_plus', 'mel',
                                  'classifier'])
def test_keras_file_round_trip(reference, name, tmp_path):
  layer, x = backend_cases.build(name)
  layer.set_weights(_weights(reference, name))
  if isinstance(layer, keras.Model):
    model = layer
  else:
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
  path = tmp_path / f'{name}.keras'
  model.save(path)
  loaded = keras.models.load_model(path)
  _assert_close(backend_cases.call(loaded, x), _expected_output(reference,
                                                                name))


@pytest.mark.parametrize('name', ['leaf', 'tfbanks', 'sincnet',
                                  'sincnet_plus'])
def test_keras_files_saved_with_tensorflow_load(name):
  """.keras files written by the TensorFlow backend (tests/data/
  frontends_v0) load and compute the same outputs here."""
  folder = pathlib.Path(__file__).parent / 'data' / 'frontends_v0'
  expected = np.load(folder / 'frontends_v0.npz')
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    model = keras.models.load_model(folder / f'{name}_v0.keras')
  tolerance = 1e-2 if name == 'leaf' and BACKEND != 'tensorflow' else 1e-5
  _assert_close(keras.ops.convert_to_numpy(model(expected['x'])),
                expected[name], tolerance)


def test_fast_mode_off_tensorflow_warns_and_computes_exactly():
  if BACKEND == 'tensorflow':
    pytest.skip('the banded computation runs on TensorFlow')
  with pytest.warns(UserWarning, match='needs the TensorFlow backend'):
    from leaf_audio import frontend  # pylint: disable=g-import-not-at-top
    frontend.Leaf(implementation='fast')


def test_non_finite_samples_are_refused():
  from leaf_audio import frontend  # pylint: disable=g-import-not-at-top
  x = backend_cases.waveform()
  x[1, 100] = np.nan
  with pytest.raises(Exception, match='NaN or Inf'):
    frontend.MelFilterbanks()(x)


def test_frontend_imports_without_tensorflow():
  """Off TensorFlow, importing the frontends imports no TensorFlow (it need
  not be installed: `make test-jax` runs without it)."""
  if BACKEND == 'tensorflow':
    pytest.skip('TensorFlow is the backend')
  import leaf_audio.frontend  # pylint: disable=g-import-not-at-top,unused-import
  assert 'tensorflow' not in sys.modules, os.environ.get('KERAS_BACKEND')


def test_spec_augment_masks_in_training():
  """In training, SpecAugment without warping only zeroes whole channels
  and whole frames (at most its masks' widths), and leaves the rest."""
  from leaf_audio import postprocessing  # pylint: disable=g-import-not-at-top
  layer = postprocessing.SpecAugment(
      freq_mask_max_bins=3, freq_mask_count=2, time_mask_max_frames=5,
      time_mask_count=1, time_warp_max_frames=0, seed=1)
  x = backend_cases.energies() + 1.  # no zeros of its own
  np.testing.assert_array_equal(backend_cases.call(layer, x), x)
  y = backend_cases.call(layer, x, training=True)
  kept = y != 0
  np.testing.assert_array_equal(y[kept], x[kept])
  for example in ~kept:
    channels = example.all(axis=0).sum()
    frames = example.all(axis=1).sum()
    assert channels <= 2 * 3 and frames <= 5
    # Every zero lies in a masked channel or a masked frame.
    assert not (example & ~example.all(axis=0)[None, :] &
                ~example.all(axis=1)[:, None]).any()
  assert (~kept).any()
