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
