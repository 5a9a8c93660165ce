"""Callbacks of the training programs: Keras' own, made to lose nothing.

    Backup           keras.callbacks.BackupAndRestore: the last epoch's state
                     (weights, optimizer), resumed after a kill
    MeanOverTasks    adds `val_score`, the mean of every task's validation
                     metric, to the epoch's logs
    BestWeights      keras.callbacks.ModelCheckpoint on `val_score`: the best
                     epoch's weights, and best.json, kept across a resume
    FilterTensorBoard  keras.callbacks.TensorBoard (epoch scalars, the
                     learning rate) plus an image of the frontend's filters
    RealExampleLoss  validation losses over real examples only
    RecomputeBatchNorm  batch normalization statistics of the final weights

Keras' savers write straight to their files with h5py: a kill mid-write
tears the file, and h5py writing to a full disk can crash the process
(segmentation fault). Here every file is built in memory, written aside and
renamed into place, and files that belong together (weights and the JSON
that describes them) are replaced together (`replace_together`), so that a
run killed at any instant (even by SIGKILL) leaves either the previous or
the new state, never a torn or mixed one.
"""

import io
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from absl import logging
import keras
from keras.src.saving import saving_lib
import numpy as np
import tensorflow as tf

from leaf_audio import callbacks as leaf_callbacks
from leaf_audio import convolution


def _write_aside(path: str, content: bytes) -> str:
  """Writes `content` to `path`.tmp, flushed to disk; returns that path.

  Raises:
    OSError: the write failed (a full disk: errno ENOSPC); the message names
      `path`, which still holds its previous content, and the half-written
      file is removed.
  """
  tmp = f'{path}.tmp'
  try:
    with open(tmp, 'wb') as f:
      f.write(content)
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise OSError(e.errno, f'could not write {path} ({e.strerror}); its '
                  'previous version, if any, is unchanged. Free some space '
                  '(or fix the error) and run again: the run resumes from '
                  'its last saved state', path) from e
  return tmp


def write_bytes(path: str, content: bytes) -> None:
  """Writes a file atomically: aside, flushed to disk, then renamed.

  Raises:
    OSError: as `_write_aside`.
  """
  os.replace(_write_aside(path, content), path)


def write_text(path: str, text: str) -> None:
  """Writes a text file atomically (see `write_bytes`)."""
  write_bytes(path, text.encode())


def write_json(path: str, content: Dict) -> None:
  """Writes JSON atomically (see `write_bytes`)."""
  write_text(path, json.dumps(content, indent=2))


def read_json(path: str) -> Optional[Dict]:
  """The JSON content of `path`, or None when there is no such file."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _journal(directory: str, group: str) -> str:
  return os.path.join(directory, f'.{group}.replacing.json')


def replace_together(directory: str, group: str,
                     contents: Dict[str, bytes]) -> None:
  """Replaces several files of `directory` as one: all old or all new.

  Each file is written aside (`<name>.tmp`); once all are complete, a
  journal naming them is written (atomically), the files are renamed into
  place and the journal is removed. A kill before the journal exists leaves
  the old files; after, `recover` (called before reading them) finishes the
  renames.

  Args:
    directory: where the files are (created if missing).
    group: the files' name in the journal (`.<group>.replacing.json`).
    contents: file name -> content.

  Raises:
    OSError: as `_write_aside`; the old files are unchanged.
  """
  os.makedirs(directory, exist_ok=True)
  written = []
  try:
    for name, content in contents.items():
      written.append(_write_aside(os.path.join(directory, name), content))
  except OSError:
    for tmp in written:
      os.remove(tmp)
    raise
  write_json(_journal(directory, group), {'files': list(contents)})
  recover(directory, group)


def recover(directory: str, group: str) -> None:
  """Finishes (or discards) a `replace_together` that a kill interrupted."""
  journal = read_json(_journal(directory, group))
  if journal is None:
    return
  for name in journal['files']:
    path = os.path.join(directory, name)
    if os.path.exists(f'{path}.tmp'):
      os.replace(f'{path}.tmp', path)
  os.remove(_journal(directory, group))


def weights_h5(model: keras.Model) -> bytes:
  """What `model.save_weights` writes (the model's and its optimizer's
  variables, in Keras' .weights.h5 layout), as bytes.

  The file is built in memory: h5py writing straight to a disk that fills
  up reports the error but keeps writing and can crash the process
  (segmentation fault), whereas a plain write of these bytes raises an
  ordinary OSError.
  """
  buffer = io.BytesIO()
  store = saving_lib.H5IOStore(buffer, mode='w')
  saving_lib._save_state(  # pylint: disable=protected-access
      model, weights_store=store, assets_store=None, inner_path='',
      visited_saveables=set())
  store.close()
  return buffer.getvalue()


class Backup(keras.callbacks.BackupAndRestore):
  """`keras.callbacks.BackupAndRestore`, saving atomically.

  Keras' callback saves `latest.weights.h5` (the model's and optimizer's
  variables) and `training_metadata.json` ({'epoch': epochs done, 'batch'})
  in `backup_dir` at every epoch's end; at the start of `fit` it loads them
  and makes `fit` continue after the saved epoch. Here both files are
  replaced together (`replace_together`), the metadata also holds the
  optimizer's step count ('iterations'), and the backup stays when training
  ends (Keras deletes it by default): a finished run's workdir says how many
  epochs it did, so that running it again only re-evaluates.

  Only whole epochs are backed up: Keras 3.15 records the batch of a
  mid-epoch backup (`save_freq=<steps>`) but resumes at the start of that
  epoch, so a run resumed from one would take more steps than a run never
  killed.

  Args:
    backup_dir: the folder of the backup (the workdir's `state/`).
  """

  GROUP = 'backup'

  def __init__(self, backup_dir: str):
    super().__init__(backup_dir, save_freq='epoch', delete_checkpoint=False)
    self.weights_path = self._weights_path
    self._names = (os.path.basename(self._weights_path),
                   os.path.basename(self._training_metadata_path))

  def state(self) -> Optional[Dict]:
    """The saved training metadata ({'epoch', 'batch', 'iterations'}), or
    None before the first epoch's end."""
    recover(self.backup_dir, self.GROUP)
    self._adopt_former_layout()
    return read_json(self._training_metadata_path)

  def _adopt_former_layout(self) -> None:
    """Renames a backup of the former layout (`state.json` naming an
    `epoch_<n>.weights.h5`) to Keras' names, so that its run resumes."""
    former = read_json(os.path.join(self.backup_dir, 'state.json'))
    if (former is None or 'weights' not in former or
        os.path.exists(self._training_metadata_path)):
      return
    old_weights = os.path.join(self.backup_dir, former['weights'])
    with open(old_weights, 'rb') as f:
      content = f.read()
    weights, metadata = self._names
    replace_together(self.backup_dir, self.GROUP, {
        weights: content,
        metadata: json.dumps({'epoch': former['epoch'], 'batch': 0,
                              'iterations': former['iterations']}).encode()})
    os.remove(os.path.join(self.backup_dir, 'state.json'))
    os.remove(old_weights)

  def epochs_done(self) -> int:
    """How many epochs the backup holds (0 when there is none)."""
    state = self.state()
    return state['epoch'] if state else 0

  def _load_model(self):
    state = self.state()
    super()._load_model()
    if state:
      logging.info('Resuming after epoch %d (optimizer step %d) from %s.',
                   state['epoch'], state.get('iterations', -1),
                   self.backup_dir)

  def _save_model(self):
    weights, metadata = self._names
    replace_together(self.backup_dir, self.GROUP, {
        weights: weights_h5(self.model),
        metadata: json.dumps({
            'epoch': self._current_epoch, 'batch': self._last_batch_seen,
            'iterations': int(self.model.optimizer.iterations.numpy())
        }).encode()})


class MeanOverTasks(keras.callbacks.Callback):
  """Adds the mean of several epoch logs (each task's validation metric) to
  the logs as `name`, for the callbacks after it (`BestWeights`, the
  TensorBoard) to read.

  Args:
    monitor: the logs to average, e.g. ['val_a_accuracy', 'val_b_accuracy'].
    name: the key of their mean.
  """

  def __init__(self, monitor: Sequence[str], name: str = 'val_score'):
    super().__init__()
    self.monitor = list(monitor)
    self.name = name

  def on_epoch_end(self, epoch: int, logs=None) -> None:
    missing = [k for k in self.monitor if k not in logs]
    if missing:
      raise KeyError(f'validation logs lack {missing}; got {sorted(logs)}')
    logs[self.name] = float(np.mean([logs[k] for k in self.monitor]))


class BestWeights(keras.callbacks.ModelCheckpoint):
  """`keras.callbacks.ModelCheckpoint` of the best epoch, kept across runs.

  Saves `best.weights.h5` whenever `monitor` (higher is better) beats its
  best value so far, with `best.json` ({'epoch', 'score', 'monitor'}); both
  are replaced together (`replace_together`). A resumed run starts from
  the score in `best.json` (`initial_value_threshold`), so that its first
  epoch replaces the best weights only if it beats every epoch before.

  Args:
    directory: where the two files go (the workdir).
    monitor: the epoch log to maximize (`MeanOverTasks` adds `val_score`).
  """

  GROUP = 'best'
  INFO = 'best.json'

  def __init__(self, directory: str, monitor: str = 'val_score'):
    self.directory = directory
    recover(directory, self.GROUP)
    best = read_json(os.path.join(directory, self.INFO))
    super().__init__(
        os.path.join(directory, 'best.weights.h5'), monitor=monitor,
        mode='max', save_best_only=True, save_weights_only=True,
        initial_value_threshold=best['score'] if best else None)
    self.weights_path = self.filepath

  def _save_model(self, epoch, batch, logs):
    if self.monitor not in (logs or {}):
      raise KeyError(f'the epoch logs lack {self.monitor!r} (add '
                     f'MeanOverTasks before this callback); got '
                     f'{sorted(logs or {})}')
    if not self._should_save_model(epoch, batch, logs, self.filepath):
      return
    score = float(logs[self.monitor])
    replace_together(self.directory, self.GROUP, {
        os.path.basename(self.filepath): weights_h5(self.model),
        self.INFO: json.dumps({'epoch': epoch + 1, 'score': score,
                               'monitor': self.monitor}).encode()})
    logging.info('Epoch %d: %s %.4f (best so far), saved.', epoch + 1,
                 self.monitor, score)


FILTERS_TAG = 'frontend_filters'
_FLOOR_DB = 60.


def filter_gains(layer: keras.layers.Layer,
                 min_fft: int = 512) -> Optional[np.ndarray]:
  """Gain of each channel's filter at frequencies 0 to sample_rate / 2.

  The filters are the learnable frontend's convolution (`impulse_responses`
  of Gabor / sinc / normalized filters, or a plain kernel), [W, 1, F]. With
  FFT size n (the smallest power of 2 >= max(W, min_fft)), H_f = rfft(h_f, n)
  and, where channel c is the squared modulus of the filter pair (2c, 2c+1)
  (LEAF, TD-filterbanks), its gain to a sinusoid of frequency k sr / n is
      g_c[k] = sqrt(|H_2c[k]|^2 + |H_2c+1[k]|^2),
  else (sinc filters, one per channel) g_c[k] = |H_c[k]|.

  Returns:
    [channels, n // 2 + 1] float64 gains, or None when the layer has no
    such convolution (MelFilterbanks, WaveGram).
  """
  conv = getattr(layer, '_complex_conv', None)
  if conv is None:
    return None
  kernel = (conv.impulse_responses() if hasattr(conv, 'impulse_responses')
            else conv.kernel)
  filters = np.asarray(keras.ops.convert_to_numpy(kernel), np.float64)[:, 0]
  n = max(min_fft, 1 << (filters.shape[0] - 1).bit_length())
  power = np.abs(np.fft.rfft(filters, n, axis=0)) ** 2
  if isinstance(getattr(layer, '_activation', None),
                convolution.SquaredModulus):
    power = power[:, 0::2] + power[:, 1::2]
  return np.sqrt(power).T


def filters_image(model: keras.Model) -> Optional[np.ndarray]:
  """A heat map of the filters' gains of the model's learnable frontend.

  One row per channel, channel 0 at the bottom; one column per frequency,
  0 Hz at the left to sample_rate / 2 at the right (`filter_gains`). The
  gray level is the gain in dB relative to the channel's peak,
  255 * (1 + max(20 log10(g / max g), -60) / 60): white at the peak, black
  60 dB below and lower.

  Returns:
    [channels, n // 2 + 1] uint8, or None when the model has no learnable
    frontend with filters.
  """
  for layer in leaf_callbacks.leaf_layers(model):
    gains = filter_gains(layer)
    if gains is not None:
      break
  else:
    return None
  peak = np.maximum(gains.max(axis=1, keepdims=True), 1e-30)
  db = 20. * np.log10(np.maximum(gains / peak, 1e-30))
  level = 255. * (1. + np.maximum(db, -_FLOOR_DB) / _FLOOR_DB)
  return np.round(level[::-1]).astype(np.uint8)


class FilterTensorBoard(keras.callbacks.TensorBoard):
  """`keras.callbacks.TensorBoard`, plus the frontend's filters each epoch.

  Keras writes every epoch's logs as scalars, in `log_dir/train` (with the
  optimizer's learning rate, `epoch_learning_rate`, the rate of the next
  step, a schedule's included) and `log_dir/validation` (the `val_` logs,
  prefix dropped), tagged `epoch_<name>`, at step = epoch index (from 0).
  This adds, in `train`, the image `frontend_filters` (`filters_image`) at
  the same step, and flushes both writers at every epoch's end, so that
  nothing logged is lost to a kill.

  Args:
    log_dir: the TensorBoard folder (the workdir's `tensorboard/`).
  """

  def __init__(self, log_dir: str):
    super().__init__(log_dir, write_graph=False)

  def on_epoch_end(self, epoch: int, logs=None) -> None:
    super().on_epoch_end(epoch, logs)
    image = filters_image(self.model)
    if image is not None:
      with self._train_writer.as_default():
        tf.summary.image(
            FILTERS_TAG, image[None, :, :, None], step=epoch,
            description='Gain of each filter of the frontend: one row per '
            'channel (0 at the bottom), frequency from 0 Hz (left) to half '
            'the sample rate (right); white at the channel\'s peak, black '
            f'{_FLOOR_DB:.0f} dB below.')
    for writer in self._writers.values():
      writer.flush()


class RealExampleLoss(keras.callbacks.Callback):
  """Makes the validation losses the mean over real examples only.

  Validation batches are padded to the full batch size with rows of weight
  0. Keras reduces each batch's loss as sum_i(w_i * l_i) / batch_size and
  averages batches weighted by their size, so its `val_loss` is
  sum(w * l) / rows, padding rows included (0.41 instead of 1.10 at chance
  on 3 classes). This callback, placed first, rescales it to
  sum(w * l) / real rows, and each task's `val_<task>_loss` to the mean over
  that task's own rows, before any other callback reads the logs; so too
  the logs of the validation's end (`loss`, `<task>_loss`), which the
  TensorBoard logs as `evaluation_loss_vs_iterations`.
  """

  def __init__(self, counts: Dict[str, float], task_names: Sequence[str]):
    """Args: `counts` from `train.count_validation`; the task names."""
    super().__init__()
    self._scales = {'val_loss': counts['rows'] / max(counts['real'], 1.)}
    if len(task_names) > 1:
      for name in task_names:
        self._scales[f'val_{name}_loss'] = counts['rows'] / max(
            counts[f'real/{name}'], 1.)

  def on_epoch_end(self, epoch: int, logs=None) -> None:
    self._rescale(logs, self._scales)

  def on_test_end(self, logs=None) -> None:
    self._rescale(logs, {key.removeprefix('val_'): scale
                         for key, scale in self._scales.items()})

  @staticmethod
  def _rescale(logs, scales) -> None:
    for key, scale in scales.items():
      if logs is not None and key in logs:
        logs[key] = float(logs[key]) * scale


def batchnorm_layers(model: keras.Model) -> List[keras.layers.Layer]:
  """Every BatchNormalization layer of `model`, nested ones included."""
  return [layer for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
          if isinstance(layer, keras.layers.BatchNormalization)]


def _batch_statistics_call(layer: keras.layers.BatchNormalization):
  """`layer.call` made to normalize by (and accumulate) batch statistics
  whatever `training` it is given."""
  call = type(layer).call.__get__(layer)

  def batch_statistics_call(inputs, training=None, mask=None):
    del training  # Always the batch's own statistics.
    return call(inputs, training=True, mask=mask)

  return batch_statistics_call


def recompute_batchnorm(model: keras.Model, batches: Iterable) -> int:
  """Sets every trainable batch normalization's moving statistics to those
  of the network as it is evaluated, averaged over `batches` (the weights
  stay as they are).

  Two things make Keras' moving statistics unlike what evaluation feeds each
  batch normalization:
  - moving averages with momentum 0.99 trail the weights by about 100 steps
    and start from mean 0, variance 1: after a few hundred steps of a small
    dataset they still mix statistics of early weights (0.99^180 = 16% of
    the initial values after 12 epochs of 15 steps);
  - they are measured in training mode, with dropout, stochastic depth and
    SpecAugment on. Dropout keeps means but adds variance (the "variance
    shift" of Li et al., 2019), so every normalization after a dropout
    divides evaluation's activations by a variance they no longer have.
  Here the model runs in evaluation mode (dropout and augmentation off)
  while each batch normalization normalizes by its batch's statistics and
  accumulates them with momentum k / (k + 1) at batch k of n, which makes
  each moving statistic the plain average over the n batches:
  mu = (1/n) sum_k mean_k, var = (1/n) sum_k var_k (biased batch
  variances, as in training). Layers with `trainable = False` (a frozen
  encoder) keep their statistics and normalize with them.

  Args:
    model: the model, built.
    batches: (inputs, ...) tuples, as the training stream yields them.

  Returns:
    the number of batches used (0 when the model has no trainable batch
    normalization).
  """
  layers = [layer for layer in batchnorm_layers(model) if layer.trainable]
  if not layers:
    return 0
  momenta = [layer.momentum for layer in layers]
  count = 0
  try:
    for layer in layers:
      layer.call = _batch_statistics_call(layer)
    for count, batch in enumerate(batches, 1):
      for layer in layers:
        layer.momentum = (count - 1.) / count
      model(batch[0], training=False)
  finally:
    for layer, momentum in zip(layers, momenta):
      layer.momentum = momentum
      del layer.call  # Back to the class's own.
  return count


def batchnorm_input_statistics(
    model: keras.Model, batches: Iterable) -> List[Tuple[np.ndarray,
                                                         np.ndarray]]:
  """What each batch normalization receives when the model is evaluated.

  The model runs in evaluation mode over `batches` (every normalization by
  its moving statistics, dropout and augmentation off), and for each
  BatchNormalization layer (in `batchnorm_layers` order) the exact mean and
  (biased) variance per channel of its inputs over every example and
  position of every batch are accumulated in float64:
      mu = sum x / N,   var = sum x^2 / N - mu^2.
  These are the statistics that evaluation on those inputs would ideally
  normalize by; `moving_mean` / `moving_variance` can be compared with
  them (`recompute_batchnorm` approximates them by averaging batch
  statistics of the same network). The model's weights and statistics are
  not changed.

  Args:
    model: the model, built.
    batches: (inputs, ...) tuples.

  Returns:
    [(mean [channels], variance [channels]) float64] per layer.

  Raises:
    ValueError: `batches` is empty.
  """
  layers = batchnorm_layers(model)
  sums = [[0., 0., 0] for _ in layers]

  def recording_call(index, layer):
    call = type(layer).call.__get__(layer)

    def record(inputs, training=None, mask=None):
      del training  # Evaluation mode: the moving statistics.
      x = np.asarray(keras.ops.convert_to_numpy(inputs), np.float64)
      axis = layer.axis % x.ndim
      x = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
      sums[index][0] = sums[index][0] + x.sum(0)
      sums[index][1] = sums[index][1] + (x * x).sum(0)
      sums[index][2] += x.shape[0]
      return call(inputs, training=False, mask=mask)

    return record

  count = 0
  try:
    for index, layer in enumerate(layers):
      layer.call = recording_call(index, layer)
    for count, batch in enumerate(batches, 1):
      model(batch[0], training=False)
  finally:
    for layer in layers:
      del layer.call  # Back to the class's own.
  if not count:
    raise ValueError('batchnorm_input_statistics needs at least one batch')
  statistics = []
  for total, squares, n in sums:
    mean = total / n
    statistics.append((mean, np.maximum(squares / n - mean * mean, 0.)))
  return statistics


class RecomputeBatchNorm(keras.callbacks.Callback):
  """Recomputes batch normalization statistics before each validation.

  At the end of each epoch's training steps, before Keras validates, the
  moving statistics are set to the average over `batches` training batches
  of the network in evaluation mode (see `recompute_batchnorm`); validation, the best checkpoint, the saved
  state and the test then all use statistics of the epoch's final weights.
  Training itself is unchanged (it uses each batch's own statistics).
  """

  def __init__(self, dataset, batches: int):
    """Args: `dataset` yields training batches; `batches` how many to use."""
    super().__init__()
    self._dataset = dataset
    self._batches = batches

  def on_test_begin(self, logs=None) -> None:
    used = recompute_batchnorm(self.model, self._dataset.take(self._batches))
    if used:
      logging.info('Batch normalization statistics recomputed over %d '
                   'training batches.', used)
