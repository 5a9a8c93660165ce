"""A workdir belongs to one run: its record, its lock, its atomic export."""

import json
import os
import subprocess
import sys
import time

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

import example_fixtures as fx
from example import data
from example import export
from example import locks
from example import main
from example import train
from example import workdir as workdir_lib
from leaf_audio import frontend
from leaf_audio import models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['AudioClassifier.encoder = @ConvNet()', 'ConvNet.filters = [8, 8]',
        'train.num_epochs = 1', 'train.steps_per_epoch = 2',
        'train.batch_size = 4']


def _run(workdir, root, data_dir, extra=(), config='mel'):
  gin.clear_config()
  main.parse_config([os.path.join(REPO, 'configs', f'{config}.gin')],
                    [f"train.workdir = '{workdir}'",
                     f"train.dataset = '{root}'",
                     f"train.data_dir = '{data_dir}'"] + TINY + list(extra))
  return train.train(verbose=0)


def test_a_workdir_resumes_only_the_run_that_made_it(tmp_path):
  root, data_dir = str(tmp_path / 'tones'), str(tmp_path / 'tfds')
  fx.make_split_dataset(root, counts=(2, 1, 1))
  workdir = str(tmp_path / 'run')
  _run(workdir, root, data_dir)
  record = workdir_lib.read_record(workdir)
  assert record['config']['ConvNet.filters'] == '[8, 8]'
  assert record['datasets'][0]['classes'] == ['high', 'low']
  state = os.path.join(workdir, 'state', 'training_metadata.json')
  before = open(state).read()

  with pytest.raises(workdir_lib.WorkdirMismatchError) as error:
    _run(workdir, root, data_dir, ['ConvNet.filters = [8, 16]',
                                   'train.learning_rate = 0.01'])
  message = str(error.value)
  assert 'ConvNet.filters: [8, 8] in the workdir, [8, 16] now' in message
  assert 'train.learning_rate: 0.0001 in the workdir, 0.01 now' in message
  assert 'pick another train.workdir' in message
  with pytest.raises(workdir_lib.WorkdirMismatchError,
                     match=r"AudioClassifier.frontend: @MelFilterbanks\(\) in "
                     r"the workdir, @TimeDomainFilterbanks\(\) now"):
    _run(workdir, root, data_dir, config='tfbanks')
  # A class added to the folder: main failed in load_weights ("expected 2
  # variables, but received 0").
  for split, count in (('train', 2), ('validation', 1), ('test', 1)):
    for i in range(count):
      fx.write_wav(os.path.join(root, split, 'mid', f'{i}.wav'),
                   fx.tone(1200., 0.5, seed=40 + i))
  with pytest.raises(workdir_lib.WorkdirMismatchError,
                     match=r"dataset tones classes: \['high', 'low'\] in the "
                     r"workdir, \['high', 'low', 'mid'\] now"):
    _run(workdir, root, data_dir)
  assert open(state).read() == before  # Nothing was touched.

  # More epochs on the same data and config resume.
  os.rename(os.path.join(root, 'train', 'mid'), str(tmp_path / 'aside1'))
  for split in ('validation', 'test'):
    os.rename(os.path.join(root, split, 'mid'), str(tmp_path / f'a{split}'))
  _run(workdir, root, data_dir, ['train.num_epochs = 2'])
  assert json.load(open(state))['iterations'] == 4


def test_a_busy_workdir_stops_a_second_run_at_once(tmp_path):
  root, data_dir = str(tmp_path / 'tones'), str(tmp_path / 'tfds')
  fx.make_split_dataset(root, counts=(2, 1, 1))
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  with locks.hold(os.path.join(workdir, 'lock'), 'a test'):
    start = time.time()
    with pytest.raises(workdir_lib.WorkdirBusyError,
                       match=rf'in use by pid {os.getpid()} on host .*'
                       'wait for that run to end'):
      _run(workdir, root, data_dir)
    assert time.time() - start < 5
    assert not os.path.exists(data_dir)  # Stopped before reading data.
  # A holder killed with SIGKILL leaves its file, not its lock.
  subprocess.run([sys.executable, '-c', (
      'import os, signal\nfrom example import locks\n'
      f'with locks.hold({os.path.join(workdir, "lock")!r}, "killed"):\n'
      '  os.kill(os.getpid(), signal.SIGKILL)')], cwd=REPO, check=False)
  assert locks.holder(os.path.join(workdir, 'lock'))['purpose'] == 'killed'
  assert _run(workdir, root, data_dir)['tones']['examples'] == 2


@pytest.fixture(scope='module')
def tiny_model():
  model = models.AudioClassifier({'tones': 2},
                                 frontend=frontend.MelFilterbanks(),
                                 encoder=models.ConvNet(filters=[4]))
  model(tf.zeros([1, 16000]))
  return model


def _export(model, path, names):
  export.export(model, path, (data.loudness_normalization,),
                {'tones': names})


def _serve(path):
  return tf.saved_model.load(path).signatures['serving_default']


def test_export_signature_takes_one_clip_channels_and_empty_batches(
    tiny_model, tmp_path):
  path = str(tmp_path / 'export')
  _export(tiny_model, path, ['a', 'b'])
  serve = _serve(path)
  clip = fx.tone(500., 1.4, seed=3).astype(np.float32)
  windows = np.pad(clip, (0, 32000 - len(clip))).reshape(2, 16000)
  expected = tiny_model(data.loudness_normalization(tf.constant(windows)),
                        training=False)['tones'].numpy().mean(0)
  for shaped in (clip, clip[None], clip[None, :, None]):
    got = serve(waveform=tf.constant(shaped))['tones'].numpy()
    np.testing.assert_allclose(got, [expected], rtol=1e-4, atol=1e-5)
  assert serve(waveform=tf.zeros([0, 16000]))['tones'].shape == (0, 2)
  assert serve(waveform=tf.zeros([0, 0]))['tones'].shape == (0, 2)
  with pytest.raises(tf.errors.InvalidArgumentError, match='0 samples'):
    serve(waveform=tf.zeros([2, 0]))
  for bad in ([2, 100, 2], [1, 2, 3, 4], []):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r'waveform must be float32 \[batch, samples\]'):
      serve(waveform=tf.zeros(bad))


def test_export_is_replaced_atomically(tiny_model, tmp_path, monkeypatch):
  path = str(tmp_path / 'export')
  _export(tiny_model, path, ['a', 'b'])
  labels = lambda: json.load(open(os.path.join(path, 'labels.json')))
  clip = tf.constant(fx.tone(500., 0.5)[None].astype(np.float32))
  first = _serve(path)(waveform=clip)['tones'].numpy()

  archive = type(keras.export.ExportArchive())  # The backend's class.
  write_out = archive.write_out

  def dies_half_way(self, filepath, **kwargs):
    os.makedirs(filepath)
    open(os.path.join(filepath, 'saved_model.pb'), 'w').write('torn')
    raise OSError('killed while writing')

  monkeypatch.setattr(archive, 'write_out', dies_half_way)
  with pytest.raises(OSError, match='killed while writing'):
    _export(tiny_model, path, ['c', 'd'])
  monkeypatch.setattr(archive, 'write_out', write_out)
  assert labels() == {'tones': ['a', 'b']}
  np.testing.assert_array_equal(_serve(path)(waveform=clip)['tones'], first)

  replace = os.replace

  def dies_before_the_swap(source, target):
    if target == path:
      raise KeyboardInterrupt('killed before the swap')
    replace(source, target)

  monkeypatch.setattr(export.os, 'replace', dies_before_the_swap)
  with pytest.raises(KeyboardInterrupt):
    _export(tiny_model, path, ['e', 'f'])
  monkeypatch.setattr(export.os, 'replace', replace)
  assert labels() == {'tones': ['a', 'b']}

  _export(tiny_model, path, ['g', 'h'])
  assert labels() == {'tones': ['g', 'h']}
  np.testing.assert_array_equal(_serve(path)(waveform=clip)['tones'], first)
  siblings = sorted(os.listdir(tmp_path))
  assert len(siblings) == 2 and siblings[0] == 'export', siblings
  assert os.readlink(path) == siblings[1]


def test_a_full_disk_during_a_save_raises_naming_the_file(tmp_path):
  """A file size limit makes writes fail for real (EFBIG, as ENOSPC on a
  full disk). On main, h5py kept writing and the process crashed
  (segmentation fault); now the save raises an OSError naming the file and
  the last saved state still loads."""
  script = f"""
import errno, json, os, resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # Fail writes, do not kill.
import numpy as np, tensorflow as tf
from example import callbacks, train
from leaf_audio import frontend, models

def model():
  m = models.AudioClassifier({{'t': 2}}, frontend=frontend.MelFilterbanks(),
                             encoder=models.ConvNet(filters=[32, 32]))
  m(tf.zeros([1, 16000]))
  m.compile(optimizer='adam', loss='categorical_crossentropy')
  m.optimizer.build(m.trainable_variables)
  return m

directory = {str(tmp_path / 'state')!r}
first = model()
state = callbacks.Backup(directory)
state.set_model(first)
state.on_epoch_end(0)
saved = os.path.join(directory, 'latest.weights.h5')
for v in first.trainable_variables:
  v.assign(v + 1.)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(saved) // 2, hard))
try:
  state.on_epoch_end(1)
  print('NO ERROR')
except OSError as e:
  print('ERROR', e.errno, e)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
print('FILES', sorted(os.listdir(directory)))
second = model()
restore = callbacks.Backup(directory)
restore.set_model(second)
restore.on_train_begin()
print('EPOCH', restore.epochs_done())
print('SAME', all(np.allclose(a.numpy() - 1., b.numpy(), atol=1e-5)
                  for a, b in zip(first.trainable_variables,
                                  second.trainable_variables)))
"""
  done = subprocess.run([sys.executable, '-c', script], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  lines = dict(line.split(' ', 1) for line in done.stdout.splitlines())
  assert lines['ERROR'].startswith('27 ')  # EFBIG, File too large.
  assert 'could not write ' + str(tmp_path / 'state' / 'latest.weights.h5'
                                  ) in lines['ERROR']
  assert lines['FILES'] == "['latest.weights.h5', 'training_metadata.json']"
  assert lines['EPOCH'] == '1' and lines['SAME'] == 'True'
