"""The training callbacks: Keras' own, saving atomically, with the mean over
tasks, the learning rate and the frontend's filters in TensorBoard.

Tiny models on random data; every expected value is recomputed with NumPy
(the schedule's formula, the Gabor filters' spectra, the mean of the logged
metrics) or is the uninterrupted run's result.
"""

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from example import callbacks
from leaf_audio import frontend


def _events(log_dir):
  """[(tag, step, tensor proto)] of the event files under `log_dir`."""
  found = []
  for name in sorted(os.listdir(log_dir)):
    for event in tf.compat.v1.train.summary_iterator(
        os.path.join(log_dir, name)):
      for value in event.summary.value:
        found.append((value.tag, event.step, value.tensor))
  return found


def _leaf_model(n_filters=6):
  keras.utils.set_random_seed(0)
  return keras.Sequential([
      keras.Input((2000,)),
      frontend.Leaf(n_filters=n_filters, window_len=10.),
      keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])


def _data(rows=6, samples=2000):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(rows, samples)).astype(np.float32) * 0.1
  return x, np.eye(2, dtype=np.float32)[np.arange(rows) % 2]


def _gabor_image(kernel, window):
  """The heat map of Gabor filters (eta, sigma) of `window` taps, from their
  definition phi(t) = exp(i eta t) exp(-t^2 / (2 sigma^2)) / (sqrt(2 pi)
  sigma): a channel's gain to frequency k / n is that of the (real, imag)
  pair, sqrt((|Phi(k)|^2 + |Phi(-k)|^2) / 2), in dB from its peak, -60 dB
  black, 0 dB white, channel 0 at the bottom."""
  root = math.sqrt(2. * math.log(2.))
  eta = np.clip(kernel[:, 0], 0., math.pi)
  sigma = np.clip(kernel[:, 1], 4. * root / math.pi, window * root / math.pi)
  t = np.arange(-(window // 2), (window + 1) // 2)
  phi = (np.exp(1j * eta[:, None] * t) * np.exp(
      -t ** 2 / (2. * sigma[:, None] ** 2)) / (math.sqrt(2. * math.pi) *
                                                sigma[:, None]))
  n = 512
  spectrum = np.abs(np.fft.fft(phi, n, axis=1)) ** 2
  gains = np.sqrt((spectrum + spectrum[:, (-np.arange(n)) % n]) / 2.)
  gains = gains[:, :n // 2 + 1]
  db = 20. * np.log10(np.maximum(gains / gains.max(axis=1, keepdims=True),
                                 1e-30))
  return np.round(255. * (1. + np.maximum(db, -60.) / 60.))[::-1]


def test_tensorboard_logs_the_scheduled_learning_rate_and_the_filters(
    tmp_path):
  model = _leaf_model()
  rate = keras.optimizers.schedules.ExponentialDecay(
      1e-2, decay_steps=2, decay_rate=0.5)
  model.compile(keras.optimizers.Adam(rate),
                keras.losses.CategoricalCrossentropy(from_logits=True),
                run_eagerly=True)
  x, y = _data()
  model.fit(x, y, batch_size=2, epochs=2, verbose=0, shuffle=False,
            callbacks=[callbacks.FilterTensorBoard(str(tmp_path))])
  events = _events(str(tmp_path / 'train'))
  rates = {step: float(tf.make_ndarray(tensor))
           for tag, step, tensor in events if tag == 'epoch_learning_rate'}
  # 3 steps an epoch; logged at its end: the rate of step 3 (epoch + 1).
  assert rates == {
      e: pytest.approx(1e-2 * 0.5 ** (3 * (e + 1) / 2), rel=1e-6)
      for e in (0, 1)}
  images = {step: tf.make_ndarray(tensor) for tag, step, tensor in events
            if tag == callbacks.FILTERS_TAG}
  assert sorted(images) == [0, 1]
  width, height, png = images[1]
  assert (int(width), int(height)) == (257, 6)
  image = tf.io.decode_png(png).numpy()
  assert image.shape == (6, 257, 1) and image.dtype == np.uint8
  conv = model.layers[0]._complex_conv
  expected = _gabor_image(np.asarray(conv.kernel, np.float64),
                          conv.kernel_size)
  np.testing.assert_allclose(image[..., 0], expected, atol=1)


def test_no_filter_image_without_learnable_filters():
  model = keras.Sequential([keras.Input((2000,)), frontend.MelFilterbanks()])
  assert callbacks.filters_image(model) is None
  assert callbacks.filters_image(_leaf_model(4)).shape == (4, 257)


def test_best_weights_are_the_epoch_of_the_best_mean_over_tasks(tmp_path):
  """Task a peaks at epoch 1, task b at epoch 3; their mean at epoch 2."""
  logs = [{'val_a_accuracy': 0.9, 'val_b_accuracy': 0.1},
          {'val_a_accuracy': 0.7, 'val_b_accuracy': 0.6},
          {'val_a_accuracy': 0.2, 'val_b_accuracy': 0.8},
          {'val_a_accuracy': 0.5, 'val_b_accuracy': 0.6}]
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  model.compile('adam', 'mse')
  dense = model.layers[0]

  def run(epochs):
    mean = callbacks.MeanOverTasks(['val_a_accuracy', 'val_b_accuracy'])
    best = callbacks.BestWeights(str(tmp_path))
    for callback in (mean, best):
      callback.set_model(model)
    for epoch in epochs:
      dense.kernel.assign(np.full((3, 2), float(epoch), np.float32))
      epoch_logs = dict(logs[epoch])
      for callback in (mean, best):
        callback.on_epoch_begin(epoch)
        callback.on_epoch_end(epoch, epoch_logs)
      assert epoch_logs['val_score'] == pytest.approx(
          np.mean(list(logs[epoch].values())))
    return best

  def saved_kernel():
    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    fresh.load_weights(str(tmp_path / 'best.weights.h5'))
    return fresh.layers[0].kernel.numpy()

  means = [np.mean(list(l.values())) for l in logs]
  run([0, 1])
  # A resumed run: epoch 2 (mean 0.5) and 3 (0.55) do not beat epoch 1's
  # 0.65, which the new callback reads from best.json.
  best = run([2, 3])
  assert best.best == pytest.approx(max(means))
  info = json.loads((tmp_path / 'best.json').read_text())
  assert info == {'epoch': int(np.argmax(means)) + 1,
                  'score': pytest.approx(max(means)), 'monitor': 'val_score'}
  np.testing.assert_array_equal(saved_kernel(), 1.)
  assert sorted(os.listdir(tmp_path)) == ['best.json', 'best.weights.h5']


class _Stop(Exception):
  pass


class _KillAt(keras.callbacks.Callback):
  """Stops training at the start of an epoch (as a kill would)."""

  def __init__(self, epoch):
    super().__init__()
    self.epoch = epoch

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == self.epoch:
      raise _Stop()


def _dense_fit(backup_dir, epochs, extra=()):
  keras.utils.set_random_seed(1)
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                            keras.layers.Dense(1)])
  model.compile(keras.optimizers.Adam(0.05), 'mse', run_eagerly=True)
  x = np.linspace(-1., 1., 32, dtype=np.float32).reshape(8, 4)
  y = np.sin(3. * x.sum(1, keepdims=True))
  history = model.fit(x, y, batch_size=4, epochs=epochs, verbose=0,
                      shuffle=False,
                      callbacks=[callbacks.Backup(backup_dir), *extra])
  return model, history


def test_a_stopped_run_resumes_at_its_epoch_with_the_same_result(tmp_path):
  straight, _ = _dense_fit(str(tmp_path / 'straight'), 3)
  with pytest.raises(_Stop):
    _dense_fit(str(tmp_path / 'stopped'), 3, [_KillAt(1)])
  backup = callbacks.Backup(str(tmp_path / 'stopped'))
  assert backup.state() == {'epoch': 1, 'batch': 0, 'iterations': 2}
  resumed, history = _dense_fit(str(tmp_path / 'stopped'), 3)
  assert history.epoch == [1, 2]  # Epochs 2 and 3 only.
  assert int(resumed.optimizer.iterations) == 6
  for a, b in zip(straight.weights, resumed.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert backup.state()['epoch'] == 3  # Kept after training.


def test_a_kill_between_the_renames_is_finished_on_reading(tmp_path,
                                                           monkeypatch):
  """The weights were renamed into place, the metadata not yet: reading
  finishes the replacement (epoch 2); a kill before the journal was written
  keeps epoch 1, whole."""
  directory = str(tmp_path)
  model, _ = _dense_fit(directory, 1)
  backup = callbacks.Backup(directory)
  backup.set_model(model)
  epoch_1 = [w.numpy() for w in model.weights]
  model.layers[0].kernel.assign(model.layers[0].kernel + 1.)
  renames = []
  real_replace = os.replace

  def killed_at_third(src, dst):
    renames.append(os.path.basename(dst))
    if len(renames) == 3:  # The journal, the weights, then the metadata.
      raise _Stop()
    real_replace(src, dst)

  monkeypatch.setattr(os, 'replace', killed_at_third)
  with pytest.raises(_Stop):
    backup.on_epoch_end(1)
  monkeypatch.setattr(os, 'replace', real_replace)
  assert renames[:2] == ['.backup.replacing.json', 'latest.weights.h5']
  assert json.loads((tmp_path / 'training_metadata.json').read_text())[
      'epoch'] == 1
  assert callbacks.Backup(directory).state()['epoch'] == 2
  assert sorted(os.listdir(directory)) == ['latest.weights.h5',
                                           'training_metadata.json']

  # Killed while writing aside: the journal never existed.
  (tmp_path / 'latest.weights.h5.tmp').write_bytes(b'torn')
  model.layers[0].kernel.assign(model.layers[0].kernel - 1.)
  restored, _ = _dense_fit(str(tmp_path / 'other'), 1)
  reader = callbacks.Backup(directory)
  reader.set_model(restored)
  reader.on_train_begin()
  assert reader.epochs_done() == 2
  np.testing.assert_array_equal(restored.layers[0].kernel.numpy(),
                                epoch_1[0] + 1.)


def test_the_learning_rate_is_a_positive_number_or_a_schedule():
  from example import train  # pylint: disable=g-import-not-at-top
  train._validate(1, None, keras.optimizers.schedules.CosineDecay(1e-3, 10), 4,
                  'default')
  train._validate(1, None, 3e-4, 4, 'default')
  for bad in (0., -1e-3, '1e-3', None):
    with pytest.raises(ValueError, match=r'train.learning_rate must be a '
                       r'number > 0 or a keras.optimizers.schedules'):
      train._validate(1, None, bad, 4, 'default')


def test_a_backup_of_the_former_layout_is_adopted(tmp_path):
  """state.json naming epoch_<n>.weights.h5, as TrainingState wrote them."""
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
  model.compile(keras.optimizers.Adam(), 'mse')
  model.optimizer.build(model.trainable_variables)
  model.layers[0].kernel.assign(np.full((4, 3), 0.25, np.float32))
  (tmp_path / 'epoch_00002.weights.h5').write_bytes(
      callbacks.weights_h5(model))
  (tmp_path / 'state.json').write_text(json.dumps(
      {'epoch': 2, 'weights': 'epoch_00002.weights.h5', 'iterations': 6}))
  backup = callbacks.Backup(str(tmp_path))
  assert backup.state() == {'epoch': 2, 'batch': 0, 'iterations': 6}
  assert sorted(os.listdir(tmp_path)) == ['latest.weights.h5',
                                          'training_metadata.json']
  fresh = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
  fresh.compile(keras.optimizers.Adam(), 'mse')
  backup.set_model(fresh)
  backup.on_train_begin()
  np.testing.assert_array_equal(fresh.layers[0].kernel.numpy(), 0.25)
