"""Makes the .keras files of this folder; run at commit ad0f539.

That commit is the last before `filterbank.FilterbankEnergies` (the fused
filtering and pooling as a layer) and the baselines' own constructors. Each
file holds a tiny frontend whose weights were moved from their initial
values; frontends_v0.npz holds the input `x` and each frontend's output on it
as that code computed them. tests/test_keras_contract.py reloads the files
with the current code and compares.

Usage: python tests/data/frontends_v0/make_fixtures.py tests/data/frontends_v0
"""

import os
import sys

import keras
import numpy as np

from leaf_audio import frontend


def main(out):
  x = (0.1 * np.random.default_rng(0).standard_normal((2, 1200))).astype(
      np.float32)
  frontends = {
      'leaf': lambda: frontend.Leaf(n_filters=4, preemp=True,
                                    implementation='fast'),
      'tfbanks': lambda: frontend.TimeDomainFilterbanks(
          n_filters=4, window_len=5., window_stride=2.5),
      'sincnet': lambda: frontend.SincNet(n_filters=4, window_len=5.),
      'sincnet_plus': lambda: frontend.SincNetPlus(n_filters=4,
                                                   window_len=5.),
  }
  arrays = {'x': x}
  for name, make in frontends.items():
    inputs = keras.Input((None,))
    model = keras.Model(inputs, make()(inputs))
    model.set_weights([w * np.float32(1.05) + np.float32(0.01) * (i % 2)
                       for i, w in enumerate(model.get_weights())])
    model.save(os.path.join(out, f'{name}_v0.keras'))
    arrays[name] = np.asarray(model(x))
  np.savez(os.path.join(out, 'frontends_v0.npz'), **arrays)


if __name__ == '__main__':
  main(sys.argv[1])
