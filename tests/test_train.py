"""The training program end to end: one short run per config, multi-task,
multi-label, resuming after SIGKILL, export reload, distribution.

Every run uses a tiny on-disk dataset of tones and a tiny encoder binding;
the test metrics are recomputed from the reloaded export with NumPy.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
import wave

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

import example_fixtures as fx
from example import data
from example import main
from example import train
from leaf_audio import frontend
from leaf_audio import models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['AudioClassifier.encoder = @ConvNet()', 'ConvNet.filters = [8, 8]',
        'train.num_epochs = 1', 'train.steps_per_epoch = 2',
        'train.batch_size = 4']
FRONTENDS = {'mel': 'MelFilterbanks', 'tfbanks': 'TimeDomainFilterbanks',
             'sincnet': 'SincNet', 'sincnet_plus': 'SincNetPlus',
             'leaf': 'Leaf', 'leaf_custom': 'Leaf'}


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """Two tone classes in train/validation/test folders, and a tfds dir."""
  base = tmp_path_factory.mktemp('corpus')
  files, names = fx.make_split_dataset(str(base / 'tones'), counts=(4, 1, 2))
  return {'root': str(base / 'tones'), 'files': files, 'names': names,
          'data_dir': str(base / 'tfds')}


def _bindings(workdir, dataset, data_dir, extra=()):
  return [f"train.workdir = '{workdir}'", f"train.dataset = '{dataset}'",
          f"train.data_dir = '{data_dir}'"] + TINY + list(extra)


def _run(config, bindings):
  gin.clear_config()
  main.parse_config([os.path.join(REPO, 'configs', f'{config}.gin')],
                    bindings)
  return train.train(verbose=0)


def _read_clip(path):
  with wave.open(path) as f:
    ints = np.frombuffer(f.readframes(f.getnframes()), '<i2')
  return ints.astype(np.float32) / 32767.


def _export_logits(workdir, paths):
  """Logits of each clip, one clip per call, from the reloaded export."""
  serve = tf.saved_model.load(os.path.join(workdir, 'export')).signatures[
      'serving_default']
  outputs = [serve(waveform=tf.constant(_read_clip(p)[None]))
             for p in paths]
  return {k: np.concatenate([o[k].numpy() for o in outputs])
          for k in outputs[0]}


def _check_against_export(workdir, task, test_files):
  """metrics.json of a task equals NumPy metrics of the export's logits."""
  with open(os.path.join(workdir, 'metrics.json')) as f:
    saved = json.load(f)[task]
  logits = _export_logits(workdir, [p for p, _ in test_files])[task]
  labels = np.array([l for _, l in test_files])
  shifted = logits - logits.max(1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
  assert saved['examples'] == len(test_files)
  assert saved['accuracy'] == pytest.approx(
      np.mean(logits.argmax(1) == labels), abs=1e-9)
  assert saved['loss'] == pytest.approx(
      -log_probs[np.arange(len(labels)), labels].mean(), rel=1e-4, abs=1e-5)


# Bindings of each config's run besides TINY.
EXTRA = {
    # 'leaf' runs the recipe's fast LEAF as shipped; leaf_custom computes
    # exactly, as its log compression, SpecAugment and PANN are what it adds
    # (the fast mode's traces cost it 45 s instead of 13 s).
    'leaf_custom': ['AudioClassifier.encoder = @PANN()', 'PANN.depth = 1',
                    "Leaf.implementation = 'conv'"],
    # The recipe's batches (32 x 1 s) are too large for the fast mode's XLA
    # compilation; TINY's (4 x 1 s) are not, unless told so.
    'leaf': ['Leaf.xla_max_samples = 0'],
    'sincnet': ['prepare.mixup_alpha = 0.4'],
    # One pass over the 8 training clips in batches of 4.
    'tfbanks': ['train.steps_per_epoch = None']}


@pytest.fixture(scope='module')
def trained(corpus, tmp_path_factory):
  """config -> (workdir, results) of its run on the corpus, each config
  trained once for all the tests that read its run."""
  runs = {}

  def run(config):
    if config not in runs:
      workdir = str(tmp_path_factory.mktemp(config) / 'run')
      runs[config] = workdir, _run(config, _bindings(
          workdir, corpus['root'], corpus['data_dir'], EXTRA.get(config, [])))
    return runs[config]

  return run


@pytest.mark.parametrize('config', sorted(FRONTENDS))
def test_each_config_trains_evaluates_and_exports(config, corpus, trained):
  workdir, results = trained(config)
  assert list(results) == ['tones']
  assert set(results['tones']) == {'accuracy', 'loss', 'examples',
                                   'num_classes'}
  assert results['tones']['num_classes'] == 2
  with open(os.path.join(workdir, 'metrics.json')) as f:
    assert json.load(f) == results
  with open(os.path.join(workdir, 'operative_config.gin')) as f:
    assert f'AudioClassifier.frontend = @{FRONTENDS[config]}()' in f.read()
  with open(os.path.join(workdir, 'export', 'labels.json')) as f:
    assert json.load(f) == {'tones': corpus['names']}
  _check_against_export(workdir, 'tones', corpus['files']['test'])
  assert os.listdir(os.path.join(workdir, 'tensorboard', 'validation'))
  with open(os.path.join(workdir, 'state', 'training_metadata.json')) as f:
    assert json.load(f)['iterations'] == 2


def test_export_handles_any_length_like_the_evaluation(trained):
  """The export's windowing equals averaging the model over 1 s windows."""
  workdir, _ = trained('mel')
  serve = tf.saved_model.load(os.path.join(workdir, 'export')).signatures[
      'serving_default']
  model = models.AudioClassifier({'tones': 2}, frontend=frontend.MelFilterbanks(),
                                 encoder=models.ConvNet(filters=[8, 8]))
  model(tf.zeros([1, 16000]))
  model.load_weights(os.path.join(workdir, 'best.weights.h5'))
  clip = fx.tone(400., 2.3, seed=9).astype(np.float32)
  windows = np.pad(clip, (0, 48000 - len(clip))).reshape(3, 16000)
  normalized = data.loudness_normalization(tf.constant(windows))
  expected = model(normalized, training=False)['tones'].numpy().mean(0)
  got = serve(waveform=tf.constant(np.stack([clip, clip])))['tones'].numpy()
  np.testing.assert_allclose(got, [expected, expected], rtol=1e-4, atol=1e-5)


def test_only_the_chief_worker_writes_to_workdir():
  cluster = lambda spec: types.SimpleNamespace(as_dict=lambda: spec)
  strategy = lambda task_type, task_id, spec: types.SimpleNamespace(
      cluster_resolver=types.SimpleNamespace(
          task_type=task_type, task_id=task_id,
          cluster_spec=lambda: cluster(spec)))
  workers = {'worker': ['a:1', 'b:1']}
  with_chief = {'chief': ['c:1'], **workers}
  assert train.worker_workdir('/w', tf.distribute.get_strategy()) == '/w'
  assert train.worker_workdir('/w', strategy('worker', 0, workers)) == '/w'
  assert train.worker_workdir('/w', strategy('worker', 1, workers)) == (
      '/w/workers/worker_1')
  assert train.worker_workdir('/w', strategy('chief', 0, with_chief)) == '/w'
  assert train.worker_workdir('/w', strategy('worker', 0, with_chief)) == (
      '/w/workers/worker_0')


def test_multitask_has_one_head_per_task(corpus, tmp_path):
  music = tmp_path / 'music'
  for i, (name, hz) in enumerate((('bass', 100.), ('flute', 1500.),
                                  ('violin', 700.))):
    for j in range(5):
      fx.write_wav(str(music / name / f'{j}.wav'),
                   fx.tone(hz, 1.2, seed=10 * i + j))
  workdir = str(tmp_path / 'run')
  datasets = [corpus['root'], str(music)]
  results = _run('mel', _bindings(
      workdir, 'unused', corpus['data_dir'],
      [f'train.datasets = {datasets!r}', 'add_noise.snr_db = 20.0',
       'train.num_epochs = 2']))
  assert {k: (v['num_classes'], v['examples']) for k, v in results.items()} == {
      'tones': (2, 4), 'music': (3, 3)}  # 5 files: 1 test, 1 validation.
  with open(os.path.join(workdir, 'export', 'labels.json')) as f:
    assert json.load(f) == {'tones': ['high', 'low'],
                            'music': ['bass', 'flute', 'violin']}
  serve = tf.saved_model.load(os.path.join(workdir, 'export')).signatures[
      'serving_default']
  out = serve(waveform=tf.zeros([2, 5000]))
  assert {k: v.shape for k, v in out.items()} == {'tones': (2, 2),
                                                  'music': (2, 3)}
  # The best epoch is that of the best mean of the tasks' logged validation
  # accuracies (the first one on a tie).
  logged = _scalars(os.path.join(workdir, 'tensorboard', 'validation'))
  means = np.mean([[v for _, v in logged[f'epoch_{task}_accuracy']]
                   for task in ('tones', 'music')], axis=0)
  assert [v for _, v in logged['epoch_score']] == pytest.approx(means)
  with open(os.path.join(workdir, 'best.json')) as f:
    best = json.load(f)
  assert (best['epoch'], best['score']) == (
      int(np.argmax(means)) + 1, pytest.approx(means.max()))


def test_multitask_loss_counts_each_example_on_its_own_head():
  model = models.AudioClassifier({'a': 3, 'b': 2},
                                 frontend=frontend.MelFilterbanks(),
                                 encoder=models.ConvNet(filters=[4]))
  model(tf.zeros([1, 16000]))
  losses, metrics = train._losses_and_metrics(['a', 'b'], multilabel=False)
  model.compile(loss=losses, weighted_metrics=metrics)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 16000)).astype(np.float32)
  task = np.array([0, 0, 1, 0, 1, 1])
  label = np.array([2, 0, 1, 1, 0, 1])
  y = {'a': np.eye(3)[label] * (task == 0)[:, None],
       'b': np.eye(2)[np.minimum(label, 1)] * (task == 1)[:, None]}
  w = {'a': (task == 0).astype(np.float32), 'b': (task == 1).astype(np.float32)}
  got = model.evaluate(x, y, sample_weight=w, batch_size=6, verbose=0,
                       return_dict=True)
  logits = model.predict(x, verbose=0)
  total, correct = 0., {'a': [], 'b': []}
  for i in range(6):
    head = 'ab'[task[i]]
    z = logits[head][i]
    total += -(z[y[head][i].argmax()] - np.log(np.exp(z).sum()))
    correct[head].append(z.argmax() == y[head][i].argmax())
  assert got['loss'] == pytest.approx(total / 6, rel=1e-4)
  assert got['a_accuracy'] == pytest.approx(np.mean(correct['a']))
  assert got['b_accuracy'] == pytest.approx(np.mean(correct['b']))


def test_fit_traces_the_train_step_once():
  # Keras creates Adam's slots in the first traced step unless the optimizer
  # is built beforehand, and tf.function then traces the step a second time
  # to run it without creating variables: about half of a short run.
  gin.clear_config()
  main.parse_config([os.path.join(REPO, 'configs', 'mel.gin')],
                    ['AudioClassifier.encoder = @ConvNet()',
                     'ConvNet.filters = [4]'])
  model = train.build_model({'a': 2}, 1e-3, multilabel=False)
  gin.clear_config()
  traces = []
  step = model.train_step
  model.train_step = lambda data: (traces.append(1), step(data))[1]
  x = np.random.default_rng(0).normal(size=(8, 16000)).astype(np.float32)
  y = {'a': np.eye(2)[[0, 1] * 4]}
  model.fit(x, y, batch_size=4, epochs=2, verbose=0)
  assert len(traces) == 1
  assert model.optimizer.iterations.numpy() == 4


def test_validation_batches_are_counted_so_no_step_runs_past_the_end():
  windows = tf.data.Dataset.range(5).flat_map(
      lambda n: tf.data.Dataset.range(n)).batch(4)
  assert windows.cardinality() == tf.data.UNKNOWN_CARDINALITY
  counted = train.with_counted_batches(windows)
  assert counted.cardinality() == 3  # 10 elements in batches of 4.
  assert [b.tolist() for b in counted.as_numpy_iterator()] == [
      b.tolist() for b in windows.as_numpy_iterator()]


def test_multilabel_reports_map_auc_and_d_prime(corpus, tmp_path):
  workdir = str(tmp_path / 'run')
  results = _run('mel', _bindings(workdir, corpus['root'], corpus['data_dir'],
                                  ['train.multilabel = True']))
  saved = results['tones']
  assert set(saved) == {'mAP', 'auc', 'd_prime', 'examples', 'num_classes'}
  test = corpus['files']['test']
  logits = _export_logits(workdir, [p for p, _ in test])['tones']
  targets = np.eye(2)[[l for _, l in test]]
  aucs = [fx.auc_pairs(logits[:, c], targets[:, c]) for c in range(2)]
  aps = [fx.ap_definition(logits[:, c], targets[:, c]) for c in range(2)]
  assert saved['auc'] == pytest.approx(np.mean(aucs))
  assert saved['mAP'] == pytest.approx(np.mean(aps))
  auc = min(max(np.mean(aucs), 1e-9), 1 - 1e-9)
  assert saved['d_prime'] == pytest.approx(
      np.sqrt(2) * fx.phi_inverse(auc), abs=1e-6)


def test_bad_gin_stops_before_reading_data(tmp_path):
  config = os.path.join(REPO, 'configs', 'mel.gin')
  for bindings, message in ((['train.epochs_typo = 3'], 'epochs_typo'),
                            (['AudioClassifier.frontend = @NoSuchFrontend()'],
                             'NoSuchFrontend')):
    gin.clear_config()
    with pytest.raises(SystemExit, match=message):
      main.parse_config([config], bindings)
  bad = tmp_path / 'bad.gin'
  bad.write_text("include 'configs/common.gin'\ntrain.batch_size = = 3\n")
  gin.clear_config()
  with pytest.raises(SystemExit, match='Invalid gin configuration'):
    main.parse_config([str(bad)], [])


def _cli(workdir, corpus, extra):
  args = [sys.executable, '-m', 'example.main',
          f'--gin_config={os.path.join(REPO, "configs", "mel.gin")}']
  args += [f'--gin_bindings={b}' for b in _bindings(workdir, corpus['root'],
                                                   corpus['data_dir'], extra)]
  return args


def test_resume_after_sigkill_mid_epoch(corpus, tmp_path):
  workdir = tmp_path / 'run'
  # Epoch 2 (30 steps, about 1.5 s, and the statistics recomputed after
  # it) runs for far longer than the 50 ms poll below.
  extra = ['train.num_epochs = 2', 'train.steps_per_epoch = 30']
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  process = subprocess.Popen(_cli(workdir, corpus, extra), cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  state_path = workdir / 'state' / 'training_metadata.json'
  deadline = time.time() + 600  # A loaded machine took over 120 s.
  while (not state_path.exists() and process.poll() is None and
         time.time() < deadline):
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed = json.loads(state_path.read_text())
  assert killed['epoch'] < 2 and not (workdir / 'metrics.json').exists()
  assert killed['iterations'] == 30 * killed['epoch']

  done = subprocess.run(_cli(workdir, corpus, extra), cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert f'Resuming after epoch {killed["epoch"]}' in done.stderr
  final = json.loads(state_path.read_text())
  # Only the partial epoch was lost: every epoch's steps were taken once.
  assert final['epoch'] == 2 and final['iterations'] == 60
  assert (workdir / 'metrics.json').exists()


def test_mirrored_strategy_on_two_cpu_devices(corpus, tmp_path):
  script = textwrap.dedent(f"""
      import json, sys
      import tensorflow as tf
      from absl import logging
      logging.set_verbosity(logging.INFO)
      cpu = tf.config.list_physical_devices('CPU')[0]
      tf.config.set_logical_device_configuration(
          cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
      from example import main, train
      main.parse_config([{os.path.join(REPO, 'configs', 'mel.gin')!r}],
                        {_bindings(tmp_path / 'run', corpus['root'],
                                   corpus['data_dir'],
                                   ["train.strategy = 'mirrored'"])!r})
      print('RESULTS', json.dumps(train.train(verbose=0)))
  """)
  done = subprocess.run([sys.executable, '-c', script], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'Strategy mirrored: 2 replica(s).' in done.stderr
  results = json.loads(done.stdout.split('RESULTS ')[1])
  assert results['tones']['examples'] == 4
  _check_against_export(str(tmp_path / 'run'), 'tones',
                        corpus['files']['test'])


def _scalars(log_dir):
  """{tag: [(step, value)]} of the epoch scalars under `log_dir`."""
  found = {}
  for name in sorted(os.listdir(log_dir)):
    for event in tf.compat.v1.train.summary_iterator(
        os.path.join(log_dir, name)):
      for value in event.summary.value:
        array = tf.make_ndarray(value.tensor)
        if array.ndim == 0:  # Not an image.
          found.setdefault(value.tag, []).append((event.step, float(array)))
  return found


def _windows(path):
  """A clip's 1 s windows (last one zero-padded), loudness-normalized."""
  clip = _read_clip(path)
  count = max(1, -(-len(clip) // 16000))
  windows = np.pad(clip, (0, count * 16000 - len(clip))).reshape(count, 16000)
  return data.loudness_normalization(tf.constant(windows)).numpy()


def test_val_loss_is_the_mean_over_real_windows_only(tmp_path):
  """Validation windows (6) do not fill the batches of 4: two padding rows
  of weight 0. val_loss must be the NumPy cross-entropy over the 6 real
  windows, as metrics.json's loss is over the real test clips."""
  root = str(tmp_path / 'three')
  files, names = fx.make_split_dataset(
      root, {'a': 300., 'b': 900., 'c': 2700.}, counts=(2, 1, 1),
      lengths=(0.6, 1.7, 2.4))
  workdir = str(tmp_path / 'run')
  # With a scheduled learning rate, which TensorBoard logs.
  _run('mel', _bindings(workdir, root, str(tmp_path / 'tfds'), [
      'train.learning_rate = @keras.optimizers.schedules.ExponentialDecay()',
      'ExponentialDecay.initial_learning_rate = 1e-3',
      'ExponentialDecay.decay_steps = 4', 'ExponentialDecay.decay_rate = 0.1']))
  rates = _scalars(os.path.join(workdir, 'tensorboard', 'train'))
  assert rates['epoch_learning_rate'] == [
      (0, pytest.approx(1e-3 * 0.1 ** (2 / 4), rel=1e-6))]
  model = models.AudioClassifier({'three': 3},
                                 frontend=frontend.MelFilterbanks(),
                                 encoder=models.ConvNet(filters=[8, 8]))
  model(tf.zeros([1, 16000]))
  model.load_weights(os.path.join(workdir, 'best.weights.h5'))
  nll = []
  for path, label in files['validation']:
    logits = model(_windows(path), training=False)['three'].numpy()
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    nll += list(-log_probs[:, label])
  assert len(nll) == 6
  logged = _scalars(os.path.join(workdir, 'tensorboard', 'validation'))
  assert logged['epoch_loss'] == [(0, pytest.approx(np.mean(nll), rel=1e-4))]
  assert logged['evaluation_loss_vs_iterations'] == [
      (2, pytest.approx(np.mean(nll), rel=1e-4))]
  _check_against_export(workdir, 'three', files['test'])


def test_a_folder_name_keras_refuses_keeps_its_name_in_the_outputs(tmp_path):
  """'kw bad' is not a valid Keras scope name (main crashed at the first
  step); the head is 'kw_bad' inside the model, 'kw bad' everywhere a user
  looks."""
  root = str(tmp_path / 'kw bad')
  files, names = fx.make_split_dataset(root, counts=(2, 1, 1))
  workdir = str(tmp_path / 'run')
  results = _run('mel', _bindings(workdir, root, str(tmp_path / 'tfds')))
  assert list(results) == ['kw bad']
  with open(os.path.join(workdir, 'export', 'labels.json')) as f:
    assert json.load(f) == {'kw bad': names}
  _check_against_export(workdir, 'kw bad', files['test'])


def _mock_metadata(data_dir, name, splits, size):
  """Writes a named dataset's metadata with split sizes into `data_dir`, so
  that tfds.testing.mock_data serves those splits (its code-only mode knows
  no split; NSynth's own metadata writer needs apache_beam)."""
  from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(name, data_dir=data_dir)
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=s, shard_lengths=[size], num_bytes=0)
      for s in splits]))
  os.makedirs(builder.data_dir, exist_ok=True)
  with open(os.path.join(builder.data_dir, 'dataset_info.json'), 'w') as f:
    f.write(json_format.MessageToJson(builder.info.as_proto))
  builder.info.features.save_config(builder.data_dir)


@pytest.mark.parametrize('dataset,splits,key,classes', [
    ('speech_commands', ('train', 'validation', 'test'), 'speech_commands',
     12),
    ('nsynth:instrument/family', ('train', 'valid', 'test'),
     'nsynth_instrument_family', 11)])
def test_named_tfds_dataset_end_to_end(dataset, splits, key, classes,
                                       tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from example import tasks  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path / 'tfds')
  _mock_metadata(data_dir, dataset.split(':')[0], splits, 4)
  workdir = str(tmp_path / 'run')
  with tfds.testing.mock_data(num_examples=4, data_dir=data_dir):
    results = _run('mel', _bindings(workdir, dataset, data_dir))
    test = list(tasks.load_task(dataset, data_dir).splits['test'])
  assert {k: (v['num_classes'], v['examples']) for k, v in results.items()
          } == {key: (classes, 4)}
  with open(os.path.join(workdir, 'export', 'labels.json')) as f:
    assert len(json.load(f)[key]) == classes
  serve = tf.saved_model.load(os.path.join(workdir, 'export')).signatures[
      'serving_default']
  logits = np.concatenate([
      serve(waveform=data.to_float(e['audio'])[None])[key].numpy()
      for e in test])
  labels = np.array([int(e['label']) for e in test])
  shifted = logits - logits.max(1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
  assert results[key]['accuracy'] == pytest.approx(
      np.mean(logits.argmax(1) == labels), abs=1e-9)
  assert results[key]['loss'] == pytest.approx(
      -log_probs[np.arange(4), labels].mean(), rel=1e-4, abs=1e-5)


_WORKER = """
import json, os, sys
WRITES = []

def audit(event, args):
  if event == 'open' and isinstance(args[0], (str, bytes, os.PathLike)):
    mode, flags = args[1], args[2]
    if (mode and set(str(mode)) & set('wax+')) or (
        mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
      WRITES.append(os.fsdecode(args[0]))
  elif event in ('os.rename', 'os.symlink'):
    WRITES.append(os.fsdecode(args[1]))
  elif event in ('os.remove', 'os.mkdir', 'shutil.rmtree'):
    WRITES.append(os.fsdecode(args[0]))

import keras
from example import main, train
keras.config.disable_traceback_filtering()
keras.utils.set_random_seed(0)
main.parse_config([{config!r}], {bindings!r})
sys.addaudithook(audit)
results = train.train(verbose=0)
print('RESULTS', json.dumps(results))
print('WRITES', json.dumps([os.path.abspath(p) for p in WRITES]))
"""


def _free_ports(count):
  import socket  # pylint: disable=g-import-not-at-top
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('localhost', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _weights(path):
  import h5py  # pylint: disable=g-import-not-at-top
  found = {}
  with h5py.File(path) as f:
    f.visititems(lambda name, item: found.__setitem__(name, item[()]) if
                 isinstance(item, h5py.Dataset) else None)
  return found


def test_two_multi_worker_mirrored_workers_match_one_process(tmp_path):
  """Two local workers (TF_CONFIG on localhost ports), 3 steps of global
  batch 4, against one process with the same global batch. The data stream
  is deterministic (1 s clips, so the crop is the clip; a shuffle buffer of
  1) and the ConvNet has neither batch normalization (whose statistics are
  per replica) nor dropout, so the two runs take the same steps."""
  from example import folder_dataset  # pylint: disable=g-import-not-at-top
  root, data_dir = str(tmp_path / 'tones'), str(tmp_path / 'tfds')
  files, _ = fx.make_split_dataset(root, counts=(4, 1, 2), lengths=(1.0,))
  folder_dataset.load_folder(root, data_dir)  # Prepared once, beforehand.
  extra = ['ConvBlock.normalization_layer = None', 'ConvBlock.dropout = 0.0',
           'prepare.shuffle_buffer = 1', 'train.steps_per_epoch = 3']
  config = os.path.join(REPO, 'configs', 'mel.gin')
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  env.pop('TF_CONFIG', None)
  ports = _free_ports(2)
  cluster = {'worker': [f'localhost:{p}' for p in ports]}
  processes = []
  for name, strategy, index in (('one', 'default', None),
                                ('multi', 'multi_worker_mirrored', 0),
                                ('multi', 'multi_worker_mirrored', 1)):
    bindings = _bindings(tmp_path / name, root, data_dir,
                         extra + [f"train.strategy = '{strategy}'"])
    worker_env = dict(env)
    if index is not None:
      worker_env['TF_CONFIG'] = json.dumps(
          {'cluster': cluster, 'task': {'type': 'worker', 'index': index}})
    processes.append(subprocess.Popen(
        [sys.executable, '-c', _WORKER.format(config=config,
                                              bindings=bindings)],
        cwd=REPO, env=worker_env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
  outputs = []
  for process in processes:
    out, err = process.communicate(timeout=400)
    assert process.returncode == 0, err[-8000:]
    outputs.append(dict(line.split(' ', 1) for line in out.splitlines()
                        if line.startswith(('RESULTS', 'WRITES'))))
  single, chief, other = [json.loads(o['RESULTS']) for o in outputs]
  assert chief == other  # Both workers end with the same model.
  assert chief['tones']['examples'] == 4
  assert chief['tones']['accuracy'] == single['tones']['accuracy']
  assert chief['tones']['loss'] == pytest.approx(single['tones']['loss'],
                                                 rel=1e-4)
  ours = _weights(str(tmp_path / 'multi' / 'state' / 'latest.weights.h5'))
  theirs = _weights(str(tmp_path / 'one' / 'state' / 'latest.weights.h5'))
  assert sorted(ours) == sorted(theirs)
  for name in ours:
    np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-4,
                               atol=1e-6, err_msg=name)
  # Only the chief writes to the workdir; worker 1 under workers/worker_1.
  workdir = str(tmp_path / 'multi')
  mine = os.path.join(workdir, 'workers', 'worker_1')
  outside = [p for p in json.loads(outputs[2]['WRITES'])
             if p.startswith(workdir + os.sep) and not p.startswith(mine)
             and p != os.path.join(workdir, 'workers')]
  assert not outside
  assert os.path.exists(os.path.join(mine, 'export', 'saved_model.pb'))
  assert json.load(open(os.path.join(workdir, 'metrics.json'))) == chief
  assert sorted(os.listdir(os.path.join(workdir, 'workers'))) == ['worker_1']
  _check_against_export(workdir, 'tones', files['test'])


def test_recompute_batchnorm_averages_evaluation_mode_statistics():
  """Each batch normalization gets the mean of its batch statistics in the
  network as evaluated: dropout off, earlier normalizations by their
  batch's own statistics, frozen ones untouched. Checked against NumPy
  (with dropout on, as in training, the second normalization's means came
  out up to 0.14 from their true 0)."""
  from example import callbacks  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(2)
  first, second = keras.layers.Dense(6), keras.layers.Dense(3)
  frozen = keras.layers.BatchNormalization()
  model = keras.Sequential([
      keras.Input((5,)), first, keras.layers.BatchNormalization(),
      keras.layers.Dropout(0.5), second,
      keras.layers.BatchNormalization(momentum=0.99), frozen])
  frozen.trainable = False
  rng = np.random.default_rng(0)
  batches = [(rng.normal(2., 3., (8, 5)).astype(np.float32), None)
             for _ in range(4)]
  (k1, b1), (k2, b2) = [[w.numpy() for w in d.weights] for d in (first,
                                                                second)]
  eps = 1e-3  # BatchNormalization's epsilon.
  hidden, outputs = [], []
  for x, _ in batches:
    h = x @ k1 + b1
    hidden.append(h)
    outputs.append((h - h.mean(0)) / np.sqrt(h.var(0) + eps) @ k2 + b2)
  assert callbacks.recompute_batchnorm(model, batches) == 4
  norms = callbacks.batchnorm_layers(model)
  for norm, values in zip(norms, (hidden, outputs)):
    np.testing.assert_allclose(norm.moving_mean.numpy(),
                               np.mean([v.mean(0) for v in values], 0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(),
                               np.mean([v.var(0) for v in values], 0),
                               rtol=1e-4)
  assert norms[1].momentum == 0.99  # Restored.
  np.testing.assert_array_equal(frozen.moving_mean.numpy(), np.zeros(3))
  np.testing.assert_array_equal(frozen.moving_variance.numpy(), np.ones(3))
  # Evaluation mode uses them again, and dropout stays off there.
  x = batches[0][0]
  hidden_norm = (hidden[0] - norms[0].moving_mean.numpy()) / np.sqrt(
      norms[0].moving_variance.numpy() + eps)
  expected = (hidden_norm @ k2 + b2 - norms[1].moving_mean.numpy()) / np.sqrt(
      norms[1].moving_variance.numpy() + eps) / np.sqrt(1 + eps)
  np.testing.assert_allclose(model(x, training=False).numpy(), expected,
                             rtol=1e-4, atol=1e-4)
  assert callbacks.recompute_batchnorm(keras.Sequential([first]),
                                       batches) == 0


def test_batchnorm_input_statistics_are_those_of_evaluation_mode():
  """The exact mean and variance of each normalization's inputs over all
  batches, with the model evaluated (earlier normalizations by their moving
  statistics, dropout off), against NumPy; the model is left unchanged. On
  batches of different means the population variance exceeds the mean of
  the batch variances (what `recompute_batchnorm` averages)."""
  from example import callbacks  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(3)
  first, second = keras.layers.Dense(6), keras.layers.Dense(3)
  norm1, norm2 = keras.layers.BatchNormalization(), (
      keras.layers.BatchNormalization(axis=1))
  model = keras.Sequential([keras.Input((5,)), first, norm1,
                            keras.layers.Dropout(0.5), second, norm2])
  rng = np.random.default_rng(1)
  norm1.moving_mean.assign(rng.normal(size=6).astype(np.float32))
  norm1.moving_variance.assign(rng.uniform(.5, 2., 6).astype(np.float32))
  batches = [(rng.normal(shift, 3., (8, 5)).astype(np.float32), None)
             for shift in (-2., 0., 4.)]
  before = [w.numpy() for w in model.weights]
  (k1, b1), (k2, b2) = [[w.numpy() for w in d.weights] for d in (first,
                                                                second)]
  eps = 1e-3
  x = np.concatenate([b[0] for b in batches]).astype(np.float64)
  hidden = x @ k1 + b1
  normalized = (hidden - norm1.moving_mean.numpy()) / np.sqrt(
      norm1.moving_variance.numpy() + eps)
  outputs = normalized @ k2 + b2
  stats = callbacks.batchnorm_input_statistics(model, batches)
  assert len(stats) == 2
  for (mean, var), values in zip(stats, (hidden, outputs)):
    np.testing.assert_allclose(mean, values.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(var, values.var(0), rtol=1e-4)
  batch_var = np.mean([h.var(0) for h in np.split(hidden, 3)], 0)
  assert np.all(stats[0][1] > 1.05 * batch_var)
  for w, b in zip(model.weights, before):
    np.testing.assert_array_equal(w.numpy(), b)
  with pytest.raises(ValueError, match='at least one batch'):
    callbacks.batchnorm_input_statistics(model, [])
