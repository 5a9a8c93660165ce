"""The README's usage example runs and says what it computes."""

import os
import re

import numpy as np

README = os.path.join(os.path.dirname(__file__), '..', 'README.md')


def test_usage_example_runs():
  with open(README, encoding='utf-8') as f:
    blocks = re.findall(r'```python\n(.*?)```', f.read(), flags=re.S)
  assert blocks, 'README has no python example'
  namespace = {}
  exec(blocks[0], namespace)  # pylint: disable=exec-used
  assert namespace['features'].shape == (8, 100, 40)
  assert namespace['custom_leaf'](namespace['waveforms']).shape == (8, 50, 64)
  assert np.isfinite(np.asarray(namespace['features'])).all()
