"""MelFilterbanks follows the dtype policy like the other frontends: under
mixed_float16 it returns float16 features computed in float32."""

import keras
import numpy as np
import tensorflow as tf

from leaf_audio import frontend


def test_mel_filterbanks_follows_mixed_float16():
  waveforms = np.random.default_rng(0).uniform(
      -0.5, 0.5, (2, 8000)).astype(np.float32)
  expected = np.asarray(frontend.MelFilterbanks()(waveforms))
  keras.mixed_precision.set_global_policy('mixed_float16')
  try:
    mel = frontend.MelFilterbanks()
    outputs = mel(waveforms)
    model = keras.Sequential([keras.Input((8000,)), frontend.MelFilterbanks(),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    logits = model(waveforms)
  finally:
    keras.mixed_precision.set_global_policy('float32')
  assert outputs.dtype == tf.float16
  # float16 keeps 11 bits: log-mel values of magnitude <= 20 within 0.01.
  np.testing.assert_allclose(np.asarray(outputs, np.float32), expected,
                             atol=0.02, rtol=1e-3)
  assert logits.dtype == tf.float16
