"""Numerical parity with the original google-research/leaf-audio release."""

import numpy as np
import pytest
import tensorflow as tf

from leaf_audio import frontend
from leaf_audio import melfilters


def max_error_relative_to_max(actual, expected):
  return np.abs(np.asarray(actual) - expected).max() / np.abs(expected).max()


@pytest.mark.parametrize('key,cls,limit', [
    ('leaf', frontend.Leaf, 1e-4),
    ('mel', frontend.MelFilterbanks, 1e-3),
    ('tfbanks', frontend.TimeDomainFilterbanks, 1e-3),
    ('sincnet', frontend.SincNet, 1e-3),
    ('sincnet_plus', frontend.SincNetPlus, 1e-3),
])
def test_frontend_outputs_match_original(original, key, cls, limit):
  outputs = cls()(original['x'])
  assert outputs.shape == original[key].shape
  assert max_error_relative_to_max(outputs, original[key]) < limit


@pytest.mark.parametrize('kwargs,key', [
    ({}, 'gabor_params'),
    ({'min_freq': 60., 'max_freq': 7800.}, 'gabor_params_60_7800'),
])
def test_gabor_parameters_match_original(original, kwargs, key):
  params = melfilters.Gabor(**kwargs).gabor_params_from_mels
  np.testing.assert_allclose(params, original[key], rtol=1e-6)


def test_gabor_init_gives_leaf_the_original_parameters(original):
  leaf = frontend.Leaf()
  leaf.build((None, None))
  np.testing.assert_allclose(leaf.get_weights()[0],
                             original['gabor_params_60_7800'], rtol=1e-6)


def test_leaf_gradients_match_original(original):
  leaf = frontend.Leaf()
  channel_weights = np.arange(40, dtype=np.float32) / 40.
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(leaf(original['x']) * channel_weights)
  grads = tape.gradient(loss, leaf.trainable_variables)
  keys = ['grad_kernel_2', 'grad_kernel_4', 'grad_alpha_1', 'grad_delta_1',
          'grad_root_1', 'grad_smooth_1']
  assert len(grads) == len(keys)
  for grad, key in zip(grads, keys):
    assert grad.shape == original[key].shape, key
    assert max_error_relative_to_max(grad, original[key]) < 1e-4, key


def test_leaf_weights_keep_the_original_order_and_shapes():
  leaf = frontend.Leaf()
  leaf.build((None, None))
  shapes = [w.shape for w in leaf.get_weights()]
  assert shapes == [(40, 2), (1, 1, 40, 1), (40,), (40,), (40,), (40,)]
  weights = leaf.get_weights()
  np.testing.assert_allclose(weights[1], 0.4)
  np.testing.assert_allclose(weights[2], 0.96)
  np.testing.assert_allclose(weights[3], 2.0)
  np.testing.assert_allclose(weights[4], 2.0)
  np.testing.assert_allclose(weights[5], 0.04)


def test_set_weights_from_original_layout_reproduces_outputs(original):
  """Weights in the original's order load by set_weights, in a new Leaf."""
  trained = frontend.Leaf()
  trained.build((None, None))
  rng = np.random.default_rng(0)
  moved = [w * rng.uniform(0.8, 1.2, size=w.shape).astype(np.float32)
           for w in trained.get_weights()]
  trained.set_weights(moved)
  fresh = frontend.Leaf()
  fresh.build((None, None))
  fresh.set_weights([np.array(w) for w in moved])
  x = original['x']
  np.testing.assert_allclose(fresh(x), trained(x), rtol=1e-6, atol=1e-7)
  # The moved weights change the output: the set_weights call was not a no-op.
  assert max_error_relative_to_max(fresh(x), original['leaf']) > 1e-3
