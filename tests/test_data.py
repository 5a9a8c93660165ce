"""Data side of the training program: transforms, pipelines, audio reading,
resampling, the folder dataset builder and the metrics, each checked against
plain NumPy / standard-library references."""

import math
import os
import struct

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import example_fixtures as fx
from example import audio_io
from example import data
from example import folder_dataset
from example import metrics
from example import tasks

# ---------------------------------------------------------------- transforms


def test_loudness_normalization_matches_formula():
  rng = np.random.default_rng(0)
  loud = 0.2 * rng.normal(size=16000)
  quiet = 1e-4 * rng.normal(size=16000)  # Needs more than the 30 dB cap.
  out = data.loudness_normalization(tf.constant(np.stack([loud, quiet]),
                                                tf.float32)).numpy()
  target, cap = 10 ** (15 / 20), 10 ** (30 / 20)
  np.testing.assert_allclose(out[0], loud * target / loud.std(), rtol=1e-4)
  np.testing.assert_allclose(out[1], quiet * cap, rtol=1e-4)
  assert out[0].std() == pytest.approx(target, rel=1e-4)


def test_align_crops_a_contiguous_slice_and_pads_short_clips():
  long = np.arange(40000, dtype=np.float32)
  for _ in range(5):
    crop = data.align(tf.constant(long)).numpy()
    assert crop.shape == (16000,)
    np.testing.assert_array_equal(crop, np.arange(crop[0], crop[0] + 16000))
  short = np.arange(1, 501, dtype=np.float32)
  crop = data.align(tf.constant(short)).numpy()
  np.testing.assert_array_equal(crop, np.r_[short, np.zeros(15500)])


def test_add_noise_reaches_the_requested_snr():
  tf.random.set_seed(1)
  clean = fx.tone(440., 4., noise=0.)
  noisy = data.add_noise(tf.constant(clean, tf.float32), snr_db=5.).numpy()
  noise = noisy - clean
  snr = 10 * np.log10(np.mean(clean ** 2) / np.mean(noise ** 2))
  assert snr == pytest.approx(5., abs=0.1)
  assert abs(np.mean(noise)) < 0.01 * noise.std() * 10
  same = data.add_noise(tf.constant(clean, tf.float32), snr_db=None)
  np.testing.assert_array_equal(same.numpy(), clean.astype(np.float32))


@pytest.mark.parametrize('length,count', [(40000, 3), (16000, 1), (1, 1),
                                          (0, 1), (32001, 3)])
def test_split_windows_matches_numpy(length, count):
  x = np.random.default_rng(length).normal(size=(2, length)).astype('f4')
  windows = data.split_windows(tf.constant(x)).numpy()
  expected = np.pad(x, [(0, 0), (0, count * 16000 - length)])
  np.testing.assert_array_equal(windows, expected.reshape(2, count, 16000))


def test_transform_roles():
  fns = [data.align, data.add_noise, data.loudness_normalization]
  assert data.window_transforms(fns) == (data.add_noise,
                                         data.loudness_normalization)
  assert data.serving_transforms(fns) == (data.loudness_normalization,)


def test_encode_label_one_and_multi_hot():
  np.testing.assert_array_equal(
      data.encode_label(tf.constant(2), 4).numpy(), [0, 0, 1, 0])
  np.testing.assert_array_equal(
      data.encode_label(tf.constant([0, 3, 3]), 4).numpy(), [1, 0, 0, 1])
  np.testing.assert_array_equal(
      data.encode_label(tf.zeros([0], tf.int64), 3).numpy(), [0, 0, 0])


def test_mixup_mixes_inputs_targets_and_weights():
  """Rows are basis vectors, so each mixed row reveals lam and its partner."""
  tf.random.set_seed(3)
  batch = 6
  x = np.eye(batch, 16, dtype=np.float32) * 2.
  y_a = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
  y_b = np.eye(2, dtype=np.float32)[[0, 1, 0, 1, 0, 1]]
  w_a = np.array([1, 1, 1, 0, 0, 0], np.float32)
  targets = {'a': tf.constant(y_a * w_a[:, None]),
             'b': tf.constant(y_b * (1 - w_a)[:, None])}
  weights = {'a': tf.constant(w_a), 'b': tf.constant(1 - w_a)}
  mx, my, mw = data.mixup(tf.constant(x), targets, weights, alpha=0.5)
  mx = mx.numpy() / 2.
  for i in range(batch):
    lam = mx[i, i] if np.count_nonzero(mx[i]) > 1 else 1.
    others = [j for j in np.flatnonzero(mx[i]) if j != i]
    j = others[0] if others else i
    assert np.sum(mx[i]) == pytest.approx(1., abs=1e-6)
    for name, y, w in (('a', y_a, w_a), ('b', y_b, 1 - w_a)):
      weight = lam * w[i] + (1 - lam) * w[j]
      assert mw[name][i].numpy() == pytest.approx(weight, abs=1e-6)
      if weight > 0:
        target = (lam * w[i] * y[i] + (1 - lam) * w[j] * y[j]) / weight
        np.testing.assert_allclose(my[name][i].numpy(), target, atol=1e-5)


def _fake_split(lengths, labels, offset=0.):
  audio = [np.full(n, offset + i, np.float32) for i, n in enumerate(lengths)]
  return tf.data.Dataset.from_generator(
      lambda: ({'audio': a, 'label': l} for a, l in zip(audio, labels)),
      output_signature={'audio': tf.TensorSpec([None], tf.float32),
                        'label': tf.TensorSpec([], tf.int64)})


def test_prepare_mixes_tasks_uniformly_and_masks_other_heads():
  tf.random.set_seed(0)
  splits = [{'train': _fake_split([20000] * 4, [0, 1, 2, 0]),
             'eval': _fake_split([16000, 40000], [1, 2])},
            {'train': _fake_split([8000] * 3, [1, 0, 1], offset=100.),
             'eval': _fake_split([100], [1], offset=100.)}]
  streams = data.prepare(splits, {'a': 3, 'b': 2}, batch_size=8,
                         transform_fns=(data.align,), shuffle_buffer=4)
  own_a = []
  for x, y, w in streams['train'].take(50):
    assert x.shape == (8, 16000)
    np.testing.assert_array_equal(w['a'].numpy() + w['b'].numpy(), 1.)
    from_a = w['a'].numpy() == 1
    # Task a's clips hold values 0..3, task b's 100..102.
    np.testing.assert_array_equal(x.numpy()[:, 0] < 50, from_a)
    np.testing.assert_array_equal(y['a'].numpy()[~from_a], 0.)
    np.testing.assert_array_equal(y['b'].numpy()[from_a], 0.)
    np.testing.assert_array_equal(y['a'].numpy()[from_a].sum(1), 1.)
    own_a.append(from_a.mean())
  assert np.mean(own_a) == pytest.approx(0.5, abs=0.07)
  windows = list(streams['eval'].unbatch())
  # 1 + 3 windows of task a, 1 window of task b, then 3 padding windows of
  # weight 0 that fill the batch of 8.
  assert len(windows) == 8
  assert [w['a'].numpy() for _, _, w in windows] == [1, 1, 1, 1, 0, 0, 0, 0]
  assert [w['b'].numpy() for _, _, w in windows] == [0, 0, 0, 0, 1, 0, 0, 0]
  np.testing.assert_array_equal(windows[7][0].numpy(), 0.)
  np.testing.assert_array_equal(windows[2][0].numpy()[:8000], 1.)
  np.testing.assert_array_equal(windows[3][0].numpy()[8000:], 0.)
  np.testing.assert_array_equal(windows[3][1]['a'].numpy(), [0, 0, 1])


# ---------------------------------------------------------------- audio I/O


@pytest.mark.parametrize('width', [1, 2, 3, 4])
def test_read_wav_pcm_widths(tmp_path, width):
  x = fx.tone(300., 0.1, amplitude=0.8)
  ints = fx.write_wav(str(tmp_path / 'a.wav'), x, width=width)
  scale = 2. ** (8 * width - 1)
  samples, rate = audio_io.read_audio(str(tmp_path / 'a.wav'))
  assert rate == 16000
  np.testing.assert_allclose(samples, ints / scale, atol=1e-7)


def test_read_wav_stereo_is_averaged_to_mono(tmp_path):
  left, right = fx.tone(300., 0.1), fx.tone(900., 0.1, seed=5)
  ints = fx.write_wav(str(tmp_path / 's.wav'), np.stack([left, right], 1),
                      rate=22050, channels=2)
  samples, rate = audio_io.read_audio(str(tmp_path / 's.wav'))
  assert rate == 22050
  np.testing.assert_allclose(samples, ints.reshape(-1, 2).mean(1) / 32768.,
                             atol=1e-7)


def test_read_wav_float32(tmp_path):
  x = fx.tone(300., 0.05).astype('<f4')
  path = str(tmp_path / 'f.wav')
  fmt = struct.pack('<HHIIHH', 3, 1, 8000, 8000 * 4, 4, 32)
  body = (b'WAVE' + b'fmt ' + struct.pack('<I', len(fmt)) + fmt +
          b'data' + struct.pack('<I', x.nbytes) + x.tobytes())
  with open(path, 'wb') as f:
    f.write(b'RIFF' + struct.pack('<I', len(body)) + body)
  samples, rate = audio_io.read_audio(path)
  assert rate == 8000
  np.testing.assert_array_equal(samples, x)


def test_read_flac(tmp_path):
  import soundfile  # pylint: disable=g-import-not-at-top
  x = fx.tone(500., 0.2)
  soundfile.write(str(tmp_path / 'a.flac'), x, 16000, subtype='PCM_16')
  samples, rate = audio_io.read_audio(str(tmp_path / 'a.flac'))
  assert rate == 16000
  np.testing.assert_allclose(samples, np.round(x * 32767) / 32768, atol=1e-4)


def test_unreadable_files_raise(tmp_path):
  (tmp_path / 'bad.wav').write_bytes(b'not audio at all')
  with pytest.raises(audio_io.UnreadableAudioError):
    audio_io.read_audio(str(tmp_path / 'bad.wav'))


# Resampling: tests/test_audio_io.py (tone SNR against the former resampler's).


# ---------------------------------------------------------------- folders


def test_folder_with_split_folders(tmp_path):
  files, names = fx.make_split_dataset(str(tmp_path / 'birds'),
                                       counts=(3, 1, 2))
  builder = folder_dataset.load_folder(str(tmp_path / 'birds'),
                                       data_dir=str(tmp_path / 'tfds'))
  assert builder.info.features['label'].names == names
  for split, expected in files.items():
    got = sorted((ex['path'].numpy().decode(), int(ex['label']))
                 for ex in builder.as_dataset(split=split))
    assert got == [(os.path.relpath(p, tmp_path / 'birds'), l)
                   for p, l in expected]
  example = next(iter(builder.as_dataset(split='test')))
  path = os.path.join(tmp_path / 'birds', example['path'].numpy().decode())
  samples, _ = audio_io.read_audio(path)
  np.testing.assert_allclose(example['audio'].numpy() / 32767., samples,
                             atol=1e-4)


def test_folder_without_splits_is_split_deterministically(tmp_path):
  root = tmp_path / 'flat'
  for name, count in (('a', 10), ('b', 7), ('c', 2)):
    for i in range(count):
      fx.write_wav(str(root / name / f'{i}.wav'), fx.tone(200., 0.1, seed=i))
  names, first = folder_dataset.scan(str(root))
  _, second = folder_dataset.scan(str(root))
  assert names == ['a', 'b', 'c'] and first == second
  per_class = {s: {n: sum(1 for _, c in first[s] if c == n) for n in names}
               for s in first}
  # round(10 * 0.1) = 1 and round(7 * 0.1) = 1 held out per split; a class
  # of 2 files stays in train.
  assert per_class['test'] == {'a': 1, 'b': 1, 'c': 0}
  assert per_class['validation'] == {'a': 1, 'b': 1, 'c': 0}
  assert per_class['train'] == {'a': 8, 'b': 5, 'c': 2}
  every = [p for s in first.values() for p, _ in s]
  assert len(every) == len(set(every)) == 19


def test_folder_resamples_and_skips_unreadable_files(tmp_path, caplog):
  root = tmp_path / 'mixed'
  fx.make_split_dataset(str(root), counts=(2, 1, 1))
  fx.write_wav(str(root / 'train' / 'low' / 'slow.wav'),
               fx.tone(400., 0.5, rate=8000), rate=8000)
  (root / 'train' / 'high' / 'broken.wav').write_bytes(b'RIFF....WAVEjunk')
  (root / 'test' / 'low' / 'empty.wav').write_bytes(b'')
  builder = folder_dataset.load_folder(str(root),
                                       data_dir=str(tmp_path / 'tfds'))
  skipped = builder.info.metadata['skipped']
  assert sorted(os.path.basename(p) for v in skipped.values() for p in v) == [
      'broken.wav', 'empty.wav']
  assert builder.info.splits['train'].num_examples == 5
  assert any('broken.wav' in r.getMessage() for r in caplog.records)
  lengths = {ex['path'].numpy().decode(): ex['audio'].shape[0]
             for ex in builder.as_dataset(split='train')}
  assert lengths[os.path.join('train', 'low', 'slow.wav')] == 8000


def test_folder_refuses_other_rates_when_resampling_is_off(tmp_path):
  root = tmp_path / 'rates'
  fx.make_split_dataset(str(root), counts=(1, 1, 1))
  fx.write_wav(str(root / 'train' / 'low' / 'cd.wav'),
               fx.tone(400., 0.1, rate=44100), rate=44100)
  with pytest.raises(ValueError, match=r'cd\.wav is sampled at 44100 Hz'):
    folder_dataset.load_folder(str(root), data_dir=str(tmp_path / 'tfds'),
                               resample=False)


def test_folder_errors(tmp_path):
  with pytest.raises(ValueError, match='does not exist'):
    folder_dataset.scan(str(tmp_path / 'nowhere'))
  (tmp_path / 'notes' / 'a').mkdir(parents=True)
  (tmp_path / 'notes' / 'a' / 'readme.txt').write_text('no audio here')
  with pytest.raises(ValueError, match=r'notes/a holds no audio file'):
    folder_dataset.scan(str(tmp_path / 'notes'))
  (tmp_path / 'nothing').mkdir()
  with pytest.raises(ValueError, match='holds no class folder'):
    folder_dataset.scan(str(tmp_path / 'nothing'))
  fx.make_split_dataset(str(tmp_path / 'mix'), counts=(1, 1, 1))
  (tmp_path / 'mix' / 'extra').mkdir()
  with pytest.raises(ValueError, match='mixes split folders'):
    folder_dataset.scan(str(tmp_path / 'mix'))
  fx.make_split_dataset(str(tmp_path / 'hole'), counts=(3, 0, 1))
  (tmp_path / 'hole' / 'train' / 'silent').mkdir()
  with pytest.raises(ValueError, match=r'train/silent holds no audio'):
    folder_dataset.scan(str(tmp_path / 'hole'))


def test_tfds_split_names_map_to_train_eval_test():
  assert tasks._split_specs(['train', 'validation', 'test']) == {
      'train': 'train', 'eval': 'validation', 'test': 'test'}
  assert tasks._split_specs(['test', 'train', 'valid']) == {
      'train': 'train', 'eval': 'valid', 'test': 'test'}
  assert tasks._split_specs(['train', 'test']) == {
      'train': 'train[:90%]', 'eval': 'train[90%:100%]', 'test': 'test'}
  assert tasks._split_specs(['train']) == {
      'train': 'train[:80%]', 'eval': 'train[80%:90%]',
      'test': 'train[90%:100%]'}


# ---------------------------------------------------------------- metrics


def test_classification_metrics_match_numpy():
  rng = np.random.default_rng(0)
  logits, labels = rng.normal(size=(50, 5)) * 3, rng.integers(0, 5, 50)
  got = metrics.classification_metrics(logits, labels)
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  assert got['loss'] == pytest.approx(-np.log(probs[range(50), labels]).mean())
  assert got['accuracy'] == pytest.approx(np.mean(logits.argmax(1) == labels))


def test_auc_ap_and_d_prime_match_references():
  rng = np.random.default_rng(1)
  targets = (rng.random((60, 4)) < 0.3).astype(float)
  logits = np.round(rng.normal(size=(60, 4)) + 1.5 * targets, 1)  # Ties.
  targets[:, 3] = 0  # A class with no positive: left out of both means.
  aucs = [fx.auc_pairs(logits[:, c], targets[:, c]) for c in range(3)]
  aps = [fx.ap_definition(logits[:, c], targets[:, c]) for c in range(3)]
  for c in range(3):
    assert metrics.roc_auc(logits[:, c], targets[:, c]) == pytest.approx(
        aucs[c])
    assert metrics.average_precision(logits[:, c], targets[:, c]) == (
        pytest.approx(aps[c]))
  got = metrics.multilabel_metrics(logits, targets)
  assert got['auc'] == pytest.approx(np.mean(aucs))
  assert got['mAP'] == pytest.approx(np.mean(aps))
  assert got['d_prime'] == pytest.approx(
      math.sqrt(2) * fx.phi_inverse(np.mean(aucs)), abs=1e-9)
  # Table 4: AUC 0.968 <-> d' 2.62, AUC 0.974 <-> d' 2.75.
  assert metrics.d_prime(0.968) == pytest.approx(2.619, abs=1e-3)
  assert metrics.d_prime(0.974) == pytest.approx(2.748, abs=1e-3)


# ---------------------------------------------------------------- tfds names


class TinyNsynth(tfds.core.GeneratorBasedBuilder):
  """A stand-in for a tensorflow-datasets audio dataset: float audio, a
  nested label, and a 'valid' split as NSynth names it."""

  VERSION = tfds.core.Version('1.0.0')
  RATE = 16000

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'audio': tfds.features.Audio(shape=(None,), dtype=np.float32,
                                     sample_rate=self.RATE),
        'instrument': {'family': tfds.features.ClassLabel(
            names=['bass', 'flute', 'organ'])},
        'pitch': tfds.features.ClassLabel(num_classes=128),
    }))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(6), 'valid': self._generate_examples(2),
            'test': self._generate_examples(3)}

  def _generate_examples(self, count):
    for i in range(count):
      yield i, {'audio': np.full(100 * (i + 1), 0.5, np.float32),
                'instrument': {'family': i % 3}, 'pitch': 60 + i}


class TinyNsynthAt8k(TinyNsynth):
  RATE = 8000


def test_tfds_dataset_with_nested_label_and_odd_split_names(tmp_path):
  task = tasks.load_task('tiny_nsynth:instrument/family', str(tmp_path))
  assert task.name == 'tiny_nsynth_instrument_family'
  assert task.class_names == ['bass', 'flute', 'organ']
  sizes = {k: len(list(v)) for k, v in task.splits.items()}
  assert sizes == {'train': 6, 'eval': 2, 'test': 3}
  test = sorted((e['audio'].shape[0], int(e['label']), sorted(e))
                for e in task.splits['test'])
  assert test == [(100, 0, ['audio', 'label']), (200, 1, ['audio', 'label']),
                  (300, 2, ['audio', 'label'])]
  pitch = tasks.load_task('tiny_nsynth:pitch', str(tmp_path))
  assert pitch.num_classes == 128
  assert sorted(int(e['label']) for e in pitch.splits['train']) == list(
      range(60, 66))
  with pytest.raises(ValueError, match='sampled at 8000 Hz'):
    tasks.load_task('tiny_nsynth_at8k', str(tmp_path))
  with pytest.raises(ValueError, match="no label feature 'label'"):
    tasks.load_task('tiny_nsynth', str(tmp_path))


def test_two_runs_preparing_one_new_folder_at_once_both_work(tmp_path,
                                                            monkeypatch):
  """The second waits for the first's records instead of writing its own
  (on main it crashed with FileExistsError)."""
  import threading
  files, names = fx.make_split_dataset(str(tmp_path / 'shared'),
                                       counts=(2, 1, 1))
  decode = folder_dataset.AudioFolder._decode
  both_started = threading.Barrier(2, timeout=60)
  calls = []

  def counted_decode(self, path):
    calls.append(path)
    return decode(self, path)

  real_make = folder_dataset.AudioFolder.__init__

  made = []

  def init(self, **kwargs):
    real_make(self, **kwargs)
    made.append(self)
    if len(made) <= 2:  # Both runs' first builders exist before either
      both_started.wait()  # prepares.

  monkeypatch.setattr(folder_dataset.AudioFolder, '_decode', counted_decode)
  monkeypatch.setattr(folder_dataset.AudioFolder, '__init__', init)
  results, errors = [], []

  def run():
    try:
      builder = folder_dataset.load_folder(str(tmp_path / 'shared'),
                                           data_dir=str(tmp_path / 'tfds'))
      results.append(sorted(
          (ex['path'].numpy().decode(), int(ex['label']))
          for split in ('train', 'validation', 'test')
          for ex in builder.as_dataset(split=split)))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=run) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(120)
  assert not errors, errors
  expected = sorted((os.path.relpath(p, tmp_path / 'shared'), l)
                    for split in files.values() for p, l in split)
  assert results == [expected, expected]
  assert len(calls) == len(expected)  # Decoded once, by one of the two.


def test_task_keys_are_valid_for_keras_and_must_differ(monkeypatch):
  fake = lambda name, data_dir: tasks.Task(name, ['a', 'b'], {})
  monkeypatch.setattr(tasks, 'load_task', fake)
  loaded = tasks.load_tasks(['kw bad', 'música-2', 'ok_1'], None)
  assert [t.key for t in loaded] == ['kw_bad', 'm_sica_2', 'ok_1']
  assert [t.name for t in loaded] == ['kw bad', 'música-2', 'ok_1']
  with pytest.raises(ValueError, match=r"share a Keras output name in "
                     r"\['kw_bad', 'kw_bad'\]"):
    tasks.load_tasks(['kw bad', 'kw_bad'], None)


def test_classes_missing_from_a_split_are_named(tmp_path, caplog):
  root = tmp_path / 'uneven'
  fx.make_split_dataset(str(root), counts=(2, 1, 1))
  fx.write_wav(str(root / 'test' / 'only_test' / '0.wav'), fx.tone(900., .2))
  fx.write_wav(str(root / 'train' / 'only_train' / '0.wav'),
               fx.tone(1300., .2))
  names, _ = folder_dataset.scan(str(root))
  assert names == ['high', 'low', 'only_test', 'only_train']
  warnings = [r.getMessage() for r in caplog.records
              if r.levelname == 'WARNING']
  assert any("['only_test'] have no train file" in w for w in warnings)
  assert any("['only_test', 'only_train'] have no validation file" in w
             for w in warnings)
  assert any("['only_train'] have no test file" in w for w in warnings)
  assert len(warnings) == 3
  assert not any("'high'" in w or "'low'" in w for w in warnings)


def test_a_single_class_is_refused(tmp_path):
  for i in range(4):
    fx.write_wav(str(tmp_path / 'one' / 'dog' / f'{i}.wav'), fx.tone(300., .1))
  with pytest.raises(ValueError, match=r"1 class folder\(s\) \['dog'\]; a "
                     'classifier needs at least 2'):
    folder_dataset.scan(str(tmp_path / 'one'))
  fx.make_split_dataset(str(tmp_path / 'split'), {'cat': 500.},
                        counts=(2, 1, 1))
  with pytest.raises(ValueError, match=r"\['cat'\]; a classifier needs"):
    folder_dataset.load_folder(str(tmp_path / 'split'),
                               data_dir=str(tmp_path / 'tfds'))
