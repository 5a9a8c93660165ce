"""`example.inspect`: the numbers in frontend.json against formulas and
against the filters' measured responses, and the figures.

Center frequencies and bandwidths are checked twice: with the conversions
(rad/sample -> Hz, sigma -> FWHM in Hz) and by measuring the peak and the
half-maximum width of each filter's frequency response with a long FFT of
its impulse response. Pooling widths are measured on the pooling windows.
"""

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from example import cola
from example import inspect as inspect_lib
from leaf_audio import frontend
from leaf_audio import initializers
from leaf_audio import models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR = 16000


def _measured_peak_and_fwhm(impulse, n_fft=1 << 16):
  """Peak frequency and width at half maximum (Hz) of |FFT(impulse)|."""
  magnitude = np.abs(np.fft.fft(impulse, n_fft))[:n_fft // 2 + 1]
  freqs = np.arange(n_fft // 2 + 1) * SR / n_fft
  above = freqs[magnitude >= magnitude.max() / 2]
  return freqs[np.argmax(magnitude)], above.max() - above.min()


def _leaf(kernel, pooling_sigma, alpha=0.9, root=2.5):
  layer = frontend.Leaf(n_filters=len(kernel))
  layer.build((None, None))
  layer._complex_conv.kernel.assign(np.asarray(kernel, 'float32'))
  layer._pooling.kernel.assign(
      np.reshape(pooling_sigma, (1, 1, -1, 1)).astype('float32'))
  pcen = layer._compression
  pcen.alpha.assign(np.full(len(kernel), alpha, 'float32'))
  pcen.root.assign(np.full(len(kernel), root, 'float32'))
  return layer


def test_gabor_numbers_match_formulas_and_measured_responses():
  kernel = [[math.pi / 4, 10.], [0.3, 40.], [2.0, 3.]]
  layer = _leaf(kernel, [0.25, 0.1, 0.4])
  numbers = inspect_lib.frontend_parameters(layer)
  for (eta, sigma), center, fwhm in zip(kernel, numbers['center_hz'],
                                        numbers['bandwidth_hz']):
    assert center == pytest.approx(eta * SR / (2 * math.pi), rel=1e-6)
    assert fwhm == pytest.approx(
        2 * math.sqrt(2 * math.log(2)) / sigma * SR / (2 * math.pi), rel=1e-6)
  assert numbers['center_hz'][0] == pytest.approx(2000., rel=1e-6)
  filters = np.asarray(layer._complex_conv.impulse_responses())[:, 0, :]
  complex_filters = filters[:, 0::2] + 1j * filters[:, 1::2]
  for i in range(3):
    peak, width = _measured_peak_and_fwhm(complex_filters[:, i])
    assert peak == pytest.approx(numbers['center_hz'][i], abs=1.)
    assert width == pytest.approx(numbers['bandwidth_hz'][i], rel=0.01)


def test_pooling_and_pcen_numbers():
  layer = _leaf([[1., 5.], [2., 5.]], [0.25, 0.9], alpha=1.3, root=0.5)
  numbers = inspect_lib.frontend_parameters(layer)
  # std = sigma (W - 1) / 2 samples; W = 401 taps; sigma clipped to 0.5.
  std_ms = np.array([0.25, 0.5]) * 200 / SR * 1000
  np.testing.assert_allclose(numbers['pooling_std_ms'], std_ms, rtol=1e-6)
  np.testing.assert_allclose(numbers['pooling_width_ms'],
                             2 * math.sqrt(2 * math.log(2)) * std_ms,
                             rtol=1e-6)
  # Measured on the windows themselves: the first and last taps at or above
  # half the peak are within one tap of the half-maximum points.
  windows = np.asarray(layer._pooling.channel_windows())
  for window, width in zip(windows, numbers['pooling_width_ms']):
    above = np.flatnonzero(window >= 0.5)
    assert (above[-1] - above[0]) / SR * 1000 == pytest.approx(
        width, abs=2 * 1000 / SR)
  assert numbers['pcen_alpha'] == [1., 1.]  # min(alpha, 1)
  assert numbers['pcen_root'] == [1., 1.]   # max(root, 1)
  np.testing.assert_allclose(numbers['pcen_delta'], [2., 2.])
  np.testing.assert_allclose(numbers['pcen_smoothing'], [0.04, 0.04],
                             rtol=1e-6)


def test_sinc_numbers_are_the_cutoffs_sincconv_uses():
  layer = frontend.SincNet(n_filters=2)
  layer.build((None, None))
  layer._complex_conv.kernel.assign(np.array([[100., 200.], [-500., -7900.]],
                                             'float32'))
  numbers = inspect_lib.frontend_parameters(layer)
  # low = 50 + |k0|; high = clip(low + 50 + |k1|, 50, 8000).
  np.testing.assert_allclose(numbers['low_hz'], [150., 550.])
  np.testing.assert_allclose(numbers['high_hz'], [400., 8000.])
  np.testing.assert_allclose(numbers['center_hz'], [275., 4275.])
  np.testing.assert_allclose(numbers['bandwidth_hz'], [250., 7450.])


def test_report_of_a_keras_file(tmp_path):
  model = cola.ColaModel(
      frontend=frontend.Leaf(n_filters=6), encoder=models.ConvNet(filters=[4]),
      embedding_dim=4)
  model((np.zeros((1, 1600), 'float32'),) * 2)
  moved = model.frontend._complex_conv.kernel.numpy() + [[0.1, 1.]]
  model.frontend._complex_conv.kernel.assign(moved)
  path = str(tmp_path / 'model.keras')
  model.save(path)
  content = inspect_lib.inspect_frontend(path)
  out = tmp_path / 'inspect'
  with open(out / 'frontend.json') as f:
    saved = json.load(f)
  assert saved['initialization_reproducible'] is True
  init = initializers.GaborInit(sample_rate=SR, min_freq=60., max_freq=7800.)(
      (6, 2)).numpy()
  np.testing.assert_allclose(saved['initialization']['center_hz'],
                             init[:, 0] * SR / (2 * np.pi), rtol=1e-5)
  np.testing.assert_allclose(saved['learned']['center_hz'],
                             moved[:, 0] * SR / (2 * np.pi), rtol=1e-5)
  np.testing.assert_allclose(saved['mel_reference']['center_hz'],
                             saved['initialization']['center_hz'], rtol=1e-5)
  names = sorted(os.path.basename(p) for p in content['figures'])
  assert names == ['bandwidths.png', 'center_frequencies.png',
                   'frequency_response.png', 'output.png', 'pcen.png',
                   'pooling_widths.png']
  for path in content['figures']:
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_unseeded_random_init_is_flagged_and_json_needs_no_matplotlib(
    tmp_path, monkeypatch):
  layer = frontend.Leaf(n_filters=4,
                        complex_conv_init=initializers.RandomGaborInit())
  model = cola.ColaModel(frontend=layer, embedding_dim=4)
  model((np.zeros((1, 1600), 'float32'),) * 2)
  path = str(tmp_path / 'random.keras')
  model.save(path)
  monkeypatch.setitem(sys.modules, 'matplotlib', None)  # Not installed.
  content = inspect_lib.inspect_frontend(path, out=str(tmp_path / 'out'))
  assert content['figures'] == []
  assert content['initialization_reproducible'] is False
  assert os.listdir(tmp_path / 'out') == ['frontend.json']


def test_mel_frontend_reports_its_fixed_filters():
  numbers = inspect_lib.frontend_parameters(frontend.MelFilterbanks())
  reference = inspect_lib.mel_reference(frontend.Leaf())
  np.testing.assert_allclose(numbers['center_hz'], reference['center_hz'])
  assert numbers['channels'] == 40 and 'pcen_alpha' not in numbers


def test_command_line_refuses_a_missing_workdir(tmp_path):
  done = subprocess.run(
      [sys.executable, '-m', 'example.inspect',
       f'--workdir={tmp_path / "nothing"}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  assert 'neither a workdir nor a .keras file' in done.stderr
