"""What a frontend learned: `python -m example.inspect --workdir=W`.

W is a training workdir (`example.main`), a pre-training workdir
(`example.pretrain`) or a .keras file holding a model with a `frontend`.
Writes, into W/inspect/ (next to a .keras file: <dir>/inspect/):

    frontend.json   per channel, learned and at initialization: filter center
                    frequency and bandwidth (FWHM) in Hz, pooling width in
                    ms, sPCEN alpha / delta / root / smoothing
    *.png           with matplotlib (`pip install leaf-audio[plots]`): center
                    frequencies against the mel scale and the initialization,
                    bandwidths, pooling widths, sPCEN parameters, the filters'
                    frequency responses, and the frontend's output for one
                    clip next to that clip's mel spectrogram

Conversions (sample rate sr):
    Gabor center  eta rad/sample          -> eta sr / (2 pi) Hz
    Gabor sigma   samples                 -> FWHM = sqrt(2 ln 2) sr / (pi sigma) Hz
                  (|H(w)| = exp(-sigma^2 (w - eta)^2 / 2): FWHM
                  2 sqrt(2 ln 2) / sigma rad/sample)
    sinc cut-offs low, high Hz            -> center (low + high) / 2,
                                             bandwidth high - low
    Gaussian pooling sigma_c (of (W-1)/2) -> std sigma_c (W - 1) / 2 samples,
                                             width (FWHM) 2 sqrt(2 ln 2) std,
                                             in ms
The values are those the layers compute with: Gabor parameters after
`GaborConstraint`, pooling sigma clipped to [2 / W, 0.5], sPCEN's alpha
min(alpha, 1), root max(root, 1), smoothing clipped to [0, 1].

The initialization is the frontend rebuilt from its own config: exact for
the mel-based initializers and for seeded random ones; an unseeded random
initializer cannot be recomputed, and the JSON says so
("initialization_reproducible": false).
"""

import json
import math
import os
import sys
from typing import Dict, Optional, Sequence, Tuple

from absl import app
from absl import flags
import gin
import keras
import numpy as np

from . import audio_io
from . import callbacks
from . import console
from . import data
from . import main as main_lib
from . import pretrained
from leaf_audio import convolution
from leaf_audio import frontend as frontend_lib
from leaf_audio import melfilters
from leaf_audio import pooling
from leaf_audio import postprocessing

FWHM_FACTOR = math.sqrt(2. * math.log(2.))  # FWHM = 2 * this * std.

console.define_workdir_flag('Training or pre-training workdir, or a .keras '
                            'file.')
flags.DEFINE_string('clip', None, 'Audio file shown in the output figure '
                    '(default: a 1 s tone sweep).')
flags.DEFINE_string('output', None, 'Output folder (default: <workdir>/'
                    'inspect).')
FLAGS = flags.FLAGS


# Loading.


def _classifier_from_training_workdir(workdir: str) -> keras.Model:
  """The best (else last) weights of a training workdir, in the classifier
  its operative config builds."""
  labels_path = os.path.join(workdir, 'export', 'labels.json')
  metrics_path = os.path.join(workdir, 'metrics.json')
  if os.path.exists(labels_path):
    with open(labels_path) as f:
      num_classes = {t: len(names) for t, names in json.load(f).items()}
  elif os.path.exists(metrics_path):
    with open(metrics_path) as f:
      num_classes = {t: m['num_classes'] for t, m in json.load(f).items()}
  else:
    raise ValueError(f'{workdir} has neither export/labels.json nor '
                     'metrics.json: is the training finished?')
  weights = os.path.join(workdir, 'best.weights.h5')
  if not os.path.exists(weights):
    weights = callbacks.Backup(os.path.join(workdir, 'state')).weights_path
  gin.clear_config()
  try:
    main_lib.parse_config([os.path.join(workdir, 'operative_config.gin')], [])
    bindings = gin.get_bindings('train')
    model = pretrained.classifier(num_classes, bindings.get('init_from'),
                                  bindings.get('freeze'))
    # One head per task, or a single 'head' (as train.build_model builds).
    model(np.zeros([1, data.WINDOW], 'float32'))
  finally:
    gin.clear_config()
  model.load_weights(weights)
  return model


def load_frontend(source: str) -> Tuple[keras.layers.Layer, str]:
  """The frontend of a workdir or .keras file, and the default output folder.

  Raises:
    ValueError: `source` is none of the accepted forms.
  """
  if source.endswith('.keras') and os.path.isfile(source):
    model = pretrained.load(source)
    return model.frontend, os.path.join(os.path.dirname(source), 'inspect')
  if not os.path.isdir(source):
    raise ValueError(f'{source} is neither a workdir nor a .keras file')
  out = os.path.join(source, 'inspect')
  if os.path.exists(os.path.join(source, pretrained.PRETRAINED_FILE)):
    return pretrained.load(source).frontend, out
  if os.path.exists(os.path.join(source, 'operative_config.gin')):
    return _classifier_from_training_workdir(source).frontend, out
  raise ValueError(f'{source} holds neither {pretrained.PRETRAINED_FILE} '
                   '(pre-training) nor operative_config.gin (training)')


def initial_frontend(layer: keras.layers.Layer) -> keras.layers.Layer:
  """The same frontend, freshly built from its config (its initialization)."""
  fresh = type(layer).from_config(layer.get_config())
  fresh.build((None, None))
  return fresh


def _is_reproducible(layer: keras.layers.Layer) -> bool:
  """Whether rebuilding gives the layer's actual initialization: no unseeded
  random initializer among its filters."""
  conv = getattr(layer, '_complex_conv', None)
  init = getattr(conv, 'kernel_initializer', None)
  config = init.get_config() if hasattr(init, 'get_config') else {}
  return not ('seed' in config and config['seed'] is None)


# Numbers.


def gabor_hz(kernel: np.ndarray, sample_rate: float) -> Dict[str, list]:
  """Center frequency and FWHM in Hz of Gabor parameters [n, 2]."""
  centers = kernel[:, 0] * sample_rate / (2. * math.pi)
  fwhm = FWHM_FACTOR * sample_rate / (math.pi * kernel[:, 1])
  return {'center_hz': centers.tolist(), 'bandwidth_hz': fwhm.tolist()}


def sinc_hz(conv: convolution.SincConv1D) -> Dict[str, list]:
  """Cut-offs, center and bandwidth in Hz of a SincConv1D's filters."""
  kernel = np.asarray(conv.kernel, np.float64)
  low = conv.min_low_hz + np.abs(kernel[:, 0])
  high = np.clip(low + conv.min_band_hz + np.abs(kernel[:, 1]),
                 conv.min_low_hz, conv.sample_rate / 2.)
  return {'center_hz': ((low + high) / 2.).tolist(),
          'bandwidth_hz': (high - low).tolist(),
          'low_hz': low.tolist(), 'high_hz': high.tolist()}


def gaussian_pooling_ms(kernel: np.ndarray, kernel_size: int,
                        sample_rate: float) -> Dict[str, list]:
  """Std and FWHM in ms of Gaussian pooling windows of kernel [.., n, 1]."""
  sigma = np.clip(np.reshape(kernel, [-1]).astype(np.float64),
                  2. / kernel_size, 0.5)
  std_ms = sigma * (kernel_size - 1) / 2. / sample_rate * 1000.
  return {'pooling_std_ms': std_ms.tolist(),
          'pooling_width_ms': (2. * FWHM_FACTOR * std_ms).tolist()}


def _find(layer, cls):
  """The sublayers of `layer` (itself included) of class `cls`."""
  found = [layer] if isinstance(layer, cls) else []
  for sub in getattr(layer, '_flatten_layers', lambda **_: [])(
      include_self=False, recursive=True):
    if isinstance(sub, cls):
      found.append(sub)
  return found


def frontend_parameters(layer: keras.layers.Layer) -> Dict[str, object]:
  """Per-channel numbers of a frontend, as the layers compute with them.

  Returns:
    {'frontend': class name, 'sample_rate', 'channels', and the lists that
    apply: 'center_hz', 'bandwidth_hz' (filters), 'low_hz', 'high_hz' (sinc),
    'pooling_std_ms', 'pooling_width_ms' (Gaussian pooling),
    'pcen_alpha', 'pcen_delta', 'pcen_root', 'pcen_smoothing' (sPCEN)}.
  """
  sample_rate = float(getattr(layer, 'sample_rate', None) or
                      layer.get_config().get('sample_rate', 16000))
  result = {'frontend': type(layer).__name__, 'sample_rate': sample_rate}
  if isinstance(layer, frontend_lib.MelFilterbanks):
    gabor = melfilters.Gabor(n_filters=layer.n_filters,
                             sample_rate=layer.sample_rate,
                             min_freq=layer.min_freq, max_freq=layer.max_freq,
                             n_fft=layer.n_fft)
    result.update(gabor_hz(np.asarray(gabor.gabor_params_from_mels),
                           sample_rate))
    result['channels'] = layer.n_filters
    return result
  for conv in _find(layer, convolution.GaborConv1D):
    kernel = np.asarray(conv.constrained_kernel(), np.float64)
    result.update(gabor_hz(kernel, sample_rate))
  for conv in _find(layer, convolution.SincConv1D):
    result.update(sinc_hz(conv))
  for pool in _find(layer, pooling.GaussianLowpass):
    result.update(gaussian_pooling_ms(np.asarray(pool.kernel),
                                      pool.kernel_size, sample_rate))
  for pcen in _find(layer, postprocessing.PCENLayer):
    channels = int(np.size(pcen.alpha))
    smooth = np.clip(np.asarray(pcen.ema.smooth, np.float64), 0., 1.)
    result.update({
        'pcen_alpha': np.minimum(np.asarray(pcen.alpha), 1.).tolist(),
        'pcen_delta': np.asarray(pcen.delta, np.float64).tolist(),
        'pcen_root': np.maximum(np.asarray(pcen.root), 1.).tolist(),
        'pcen_smoothing': np.broadcast_to(smooth, [channels]).tolist(),
    })
  result['channels'] = getattr(layer, 'n_filters', None)
  return result


def mel_reference(layer: keras.layers.Layer) -> Dict[str, list]:
  """Center frequencies and FWHM of the mel filters LEAF starts from (same
  number of channels), the mel-scale reference of the figures."""
  n = getattr(layer, 'n_filters', 40)
  sample_rate = getattr(layer, 'sample_rate', 16000)
  gabor = melfilters.Gabor(n_filters=n, sample_rate=sample_rate,
                           min_freq=60., max_freq=frontend_lib.default_max_freq(
                               sample_rate))
  return gabor_hz(np.asarray(gabor.gabor_params_from_mels), sample_rate)


def report(layer: keras.layers.Layer) -> Dict[str, object]:
  """The JSON content: learned and initial numbers, and the mel reference."""
  reproducible = _is_reproducible(layer)
  return {'learned': frontend_parameters(layer),
          'initialization': frontend_parameters(initial_frontend(layer)),
          'initialization_reproducible': reproducible,
          'mel_reference': mel_reference(layer)}


def write_json(content: Dict, path: str) -> None:
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(content, f, indent=2)
  os.replace(tmp, path)


# Figures.


def default_clip(seconds: float = 1., sample_rate: int = 16000) -> np.ndarray:
  """An exponential sweep from 100 Hz to 7 kHz, 1 s, at half scale."""
  t = np.arange(int(seconds * sample_rate)) / sample_rate
  f0, f1 = 100., 7000.
  k = math.log(f1 / f0) / seconds
  phase = 2. * math.pi * f0 * (np.exp(k * t) - 1.) / k
  return (0.5 * np.sin(phase)).astype('float32')


def _load_clip(path: Optional[str]) -> np.ndarray:
  if path is None:
    return default_clip()
  samples, rate = audio_io.read_audio(path)
  if rate != data.SAMPLE_RATE:
    samples = audio_io.resample(samples, rate, data.SAMPLE_RATE)
  return np.asarray(samples, np.float32)


def _responses(layer) -> Optional[np.ndarray]:
  """|frequency response| of each filter, [n_fft // 2 + 1, channels]."""
  convs = (_find(layer, convolution.GaborConv1D) +
           _find(layer, convolution.SincConv1D))
  if not convs:
    return None
  filters = np.asarray(convs[0].impulse_responses())[:, 0, :]
  if isinstance(convs[0], convolution.GaborConv1D):  # re, im interleaved.
    filters = filters[:, 0::2] + 1j * filters[:, 1::2]
  return np.abs(np.fft.fft(filters, 2048, axis=0))[:1025]


def plot(content: Dict, layer, initial, clip: np.ndarray, out: str) -> list:
  """Writes the PNG figures; returns their paths. Needs matplotlib."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  learned, init = content['learned'], content['initialization']
  mel = content['mel_reference']
  name = learned['frontend']
  written = []

  def save(fig, filename):
    path = os.path.join(out, filename)
    fig.tight_layout()
    fig.savefig(path + '.tmp.png', dpi=100)
    os.replace(path + '.tmp.png', path)
    plt.close(fig)
    written.append(path)

  if 'center_hz' in learned:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sorted(mel['center_hz']), 'k:', label='mel scale')
    ax.plot(sorted(init['center_hz']), 'o', ms=3, mfc='none',
            label='initialization')
    ax.plot(sorted(learned['center_hz']), 'o', ms=3, label='learned')
    ax.set(xlabel='filter (sorted by center frequency)',
           ylabel='center frequency (Hz)', title=f'{name}: center frequencies')
    ax.legend()
    save(fig, 'center_frequencies.png')

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(mel['center_hz'], mel['bandwidth_hz'], 'k:', label='mel scale')
    ax.plot(init['center_hz'], init['bandwidth_hz'], 'o', ms=3, mfc='none',
            label='initialization')
    ax.plot(learned['center_hz'], learned['bandwidth_hz'], 'o', ms=3,
            label='learned')
    ax.set(xlabel='center frequency (Hz)', ylabel='bandwidth, FWHM (Hz)',
           yscale='log', title=f'{name}: bandwidths')
    ax.legend()
    save(fig, 'bandwidths.png')

  if 'pooling_width_ms' in learned:
    fig, ax = plt.subplots(figsize=(6, 4))
    x = learned.get('center_hz') or list(range(len(learned[
        'pooling_width_ms'])))
    x0 = init.get('center_hz') or x
    ax.plot(x0, init['pooling_width_ms'], 'o', ms=3, mfc='none',
            label='initialization')
    ax.plot(x, learned['pooling_width_ms'], 'o', ms=3, label='learned')
    ax.set(xlabel='center frequency (Hz)' if 'center_hz' in learned else
           'channel', ylabel='pooling window FWHM (ms)',
           title=f'{name}: pooling widths')
    ax.legend()
    save(fig, 'pooling_widths.png')

  pcen_keys = [k for k in ('pcen_alpha', 'pcen_delta', 'pcen_root',
                           'pcen_smoothing') if k in learned]
  if pcen_keys:
    fig, axes = plt.subplots(2, 2, figsize=(8, 6))
    for ax, key in zip(axes.flat, pcen_keys):
      ax.plot(init[key], 'o', ms=3, mfc='none', label='initialization')
      ax.plot(learned[key], 'o', ms=3, label='learned')
      ax.set(xlabel='channel', title=key.replace('pcen_', 'sPCEN '))
    axes.flat[0].legend()
    save(fig, 'pcen.png')

  responses = _responses(layer)
  if responses is not None:
    freqs = np.linspace(0, learned['sample_rate'] / 2, responses.shape[0])
    fig, axes = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for ax, resp, title in ((axes[0], _responses(initial), 'initialization'),
                            (axes[1], responses, 'learned')):
      db = 20 * np.log10(resp / resp.max(axis=0, keepdims=True) + 1e-6)
      ax.plot(freqs, db, lw=0.6)
      ax.set(ylim=(-40, 2), ylabel='|H| (dB)', title=f'{name}: {title}')
    axes[1].set(xlabel='frequency (Hz)')
    save(fig, 'frequency_response.png')

  mel_layer = frontend_lib.MelFilterbanks(
      n_filters=getattr(layer, 'n_filters', 40))
  features = np.asarray(layer(clip[None]))[0]
  mel_features = np.asarray(mel_layer(clip[None]))[0]
  # Channels shown from the lowest center frequency up, as the mel bands.
  order = np.argsort(learned.get('center_hz', range(features.shape[-1])),
                     kind='stable')
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, values, title in ((axes[0], mel_features, 'log mel filterbanks'),
                            (axes[1], features[:, order], f'{name} output')):
    ax.imshow(values.T, origin='lower', aspect='auto', cmap='magma')
    ax.set(xlabel='frame (10 ms)', title=title,
           ylabel='channel (by center frequency)')
  save(fig, 'output.png')
  return written


def inspect_frontend(source: str, out: Optional[str] = None,
                     clip: Optional[str] = None) -> Dict[str, object]:
  """Writes frontend.json (and the figures, with matplotlib) for `source`.

  Returns:
    the JSON content, plus 'figures': the PNG paths written.
  """
  layer, default_out = load_frontend(source)
  out = out or default_out
  os.makedirs(out, exist_ok=True)
  content = report(layer)
  write_json(content, os.path.join(out, 'frontend.json'))
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    print('matplotlib is not installed: wrote frontend.json only; '
          "`pip install 'leaf-audio[plots]'` for the figures.",
          file=sys.stderr)
    return {**content, 'figures': []}
  figures = plot(content, layer, initial_frontend(layer), _load_clip(clip),
                 out)
  return {**content, 'figures': figures}


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS.workdir:
    raise app.UsageError('--workdir is required (a training or pre-training '
                         'workdir, or a .keras file)')
  content = inspect_frontend(FLAGS.workdir, FLAGS.output, FLAGS.clip)
  out = FLAGS.output or os.path.dirname(content['figures'][0]) if content[
      'figures'] else FLAGS.output
  print(f'{content["learned"]["frontend"]}: wrote frontend.json and '
        f'{len(content["figures"])} figure(s)' + (f' in {out}' if out else ''))


def run() -> None:
  """Entry point of the `leaf-audio-inspect` console script."""
  app.run(main)


if __name__ == '__main__':
  run()
