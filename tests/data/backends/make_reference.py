"""Writes reference.npz: every case of tests/backend_cases.py on TensorFlow.

For each case: its (moved) weights and its outputs, in inference and in
training mode where that changes them; and the losses of a few steps of
`Model.fit`. tests/test_backends.py recomputes them on the backend it runs
on. Run again whenever a case or a layer's computation changes:

    KERAS_BACKEND=tensorflow python tests/data/backends/make_reference.py
"""

import os
import sys

os.environ['KERAS_BACKEND'] = 'tensorflow'
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..'))

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

import backend_cases  # pylint: disable=g-import-not-at-top

PATH = os.path.join(os.path.dirname(__file__), 'reference.npz')


def main():
  arrays = {}
  for name in backend_cases.CASES:
    keras.utils.set_random_seed(0)
    layer, x = backend_cases.build(name)
    weights = backend_cases.moved_weights(layer.get_weights())
    layer.set_weights(weights)
    for i, w in enumerate(weights):
      arrays[f'{name}/weight_{i}'] = w
    arrays[f'{name}/output'] = backend_cases.call(layer, x)
  keras.utils.set_random_seed(0)
  model = backend_cases.fit_model()
  model(backend_cases.waveform())
  weights = backend_cases.moved_weights(model.get_weights())
  model.set_weights(weights)
  for i, w in enumerate(weights):
    arrays[f'fit/weight_{i}'] = w
  arrays['fit/losses'] = backend_cases.fit_losses(model)
  np.savez(PATH, **arrays)
  print(f'wrote {len(arrays)} arrays to {PATH}')


if __name__ == '__main__':
  main()
