"""Shared pytest fixtures: the parity fixture of the original release."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import pytest

FIXTURE_PATH = os.path.join(os.path.dirname(__file__), 'data',
                            'original_release_at_init.npz')


@pytest.fixture(scope='session')
def original():
  """Outputs of the original release (see shared/parity/README.md)."""
  with np.load(FIXTURE_PATH) as data:
    return {key: data[key] for key in data.files}


@pytest.fixture(autouse=True)
def _gin_bindings_stay_in_their_test():
  """Clears gin's bindings around each test. A test that parses a recipe
  leaves its bindings in the worker otherwise, and the next test's
  gin-configurable layers take them (`frontend.Leaf()` computed in the
  recipe's fast mode after a test trained `configs/leaf.gin`). The backend
  tests run without gin installed."""
  try:
    import gin  # pylint: disable=g-import-not-at-top
  except ImportError:
    yield
    return
  gin.clear_config()
  yield
  gin.clear_config()
