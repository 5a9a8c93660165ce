"""Callbacks that make a run last: resumable state, best model, logs.

Every file is written under a temporary name and renamed into place, so a
run killed at any instant (even by SIGKILL) leaves either the previous or
the new state on disk, never a torn one.
"""

import io
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence

from absl import logging
import keras
from keras.src.saving import saving_lib
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2


def write_bytes(path: str, content: bytes) -> None:
  """Writes a file atomically: aside, flushed to disk, then renamed.

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
    os.replace(tmp, path)
  except OSError as e:
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise OSError(e.errno, f'could not write {path} ({e.strerror}); its '
                  'previous version, if any, is unchanged. Free some space '
                  '(or fix the error) and run again: the run resumes from '
                  'its last saved state', path) from e


def write_text(path: str, text: str) -> None:
  """Writes a text file atomically (see `write_bytes`)."""
  write_bytes(path, text.encode())


def write_json(path: str, content: Dict) -> None:
  """Writes JSON atomically (see `write_bytes`)."""
  write_text(path, json.dumps(content, indent=2))


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


def _save_weights(model: keras.Model, path: str) -> None:
  """Saves weights (with the optimizer's state) atomically to `path`."""
  write_bytes(path, weights_h5(model))


def read_json(path: str) -> Optional[Dict]:
  """The JSON content of `path`, or None when there is no such file."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


class TrainingState(keras.callbacks.Callback):
  """Saves the whole training state after every epoch, to resume from.

  The state is the model's and the optimizer's variables, in
  `epoch_<n>.weights.h5`, and `state.json` naming that file with the number
  of epochs done; `state.json` is replaced last, so it always names a
  complete file.
  """

  def __init__(self, directory: str):
    super().__init__()
    self._directory = directory
    self._state_path = os.path.join(directory, 'state.json')

  def restore(self, model: keras.Model) -> int:
    """Loads the last saved state into a built, compiled model.

    Returns:
      the number of epochs already done (0 when starting afresh).
    """
    state = read_json(self._state_path)
    if state is None:
      return 0
    if not model.optimizer.built:
      model.optimizer.build(model.trainable_variables)
    model.load_weights(os.path.join(self._directory, state['weights']))
    logging.info('Resuming after epoch %d (optimizer step %d) from %s.',
                 state['epoch'], state['iterations'], self._directory)
    return state['epoch']

  def on_epoch_end(self, epoch: int, logs=None) -> None:
    os.makedirs(self._directory, exist_ok=True)
    name = f'epoch_{epoch + 1:05d}.weights.h5'
    _save_weights(self.model, os.path.join(self._directory, name))
    write_json(self._state_path, {
        'epoch': epoch + 1, 'weights': name,
        'iterations': int(self.model.optimizer.iterations.numpy())})
    for old in os.listdir(self._directory):
      if old.startswith('epoch_') and old != name:
        os.remove(os.path.join(self._directory, old))


class BestCheckpoint(keras.callbacks.Callback):
  """Keeps the weights of the epoch with the best validation score.

  The score is the mean of `monitor` logs (e.g. every task's validation
  accuracy), higher is better; it is added to the logs as `val_score`. The
  best score so far lives in `best.json`, so it survives a restart.
  """

  def __init__(self, directory: str, monitor: Sequence[str]):
    super().__init__()
    self._directory = directory
    self._monitor = list(monitor)
    self.weights_path = os.path.join(directory, 'best.weights.h5')
    self._info_path = os.path.join(directory, 'best.json')
    best = read_json(self._info_path)
    self.best = best['score'] if best else -np.inf

  def on_epoch_end(self, epoch: int, logs=None) -> None:
    missing = [k for k in self._monitor if k not in logs]
    if missing:
      raise KeyError(f'validation logs lack {missing}; got {sorted(logs)}')
    score = float(np.mean([logs[k] for k in self._monitor]))
    logs['val_score'] = score
    if score > self.best:
      os.makedirs(self._directory, exist_ok=True)
      _save_weights(self.model, self.weights_path)
      write_json(self._info_path, {'epoch': epoch + 1, 'score': score,
                                    'monitor': self._monitor})
      logging.info('Epoch %d: validation score %.4f (best so far), saved.',
                   epoch + 1, score)
      self.best = score


class RealExampleLoss(keras.callbacks.Callback):
  """Makes the validation losses the mean over real examples only.

  Validation batches are padded to the full batch size with rows of weight
  0. Keras reduces each batch's loss as sum_i(w_i * l_i) / batch_size and
  averages batches weighted by their size, so its `val_loss` is
  sum(w * l) / rows, padding rows included (0.41 instead of 1.10 at chance
  on 3 classes). This callback, placed first, rescales it to
  sum(w * l) / real rows, and each task's `val_<task>_loss` to the mean over
  that task's own rows, before any other callback reads the logs.
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
    for key, scale in self._scales.items():
      if logs is not None and key in logs:
        logs[key] = float(logs[key]) * scale


def batchnorm_layers(model: keras.Model) -> List[keras.layers.Layer]:
  """Every BatchNormalization layer of `model`, nested ones included."""
  return [layer for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
          if isinstance(layer, keras.layers.BatchNormalization)]


def recompute_batchnorm(model: keras.Model, batches: Iterable) -> int:
  """Sets every batch normalization's moving statistics to the mean of its
  batch statistics over `batches` (the weights stay as they are).

  Moving averages with momentum 0.99 trail the weights by about 100 steps
  and start from mean 0, variance 1: after a few hundred steps of a small
  dataset they still mix statistics of early weights (0.99^180 = 16% of
  the initial values after 12 epochs of 15 steps), so that the evaluation
  normalizes with statistics the network no longer produces. Here batch k
  of n runs the model in training mode with momentum k / (k + 1), which
  makes each moving statistic the plain average of the n batches' means and
  (biased) variances: mu = (1/n) sum_k mean_k, var = (1/n) sum_k var_k.

  Args:
    model: the model, built.
    batches: (inputs, ...) tuples, as the training stream yields them.

  Returns:
    the number of batches used (0 when the model has no batch
    normalization).
  """
  layers = batchnorm_layers(model)
  if not layers:
    return 0
  momenta = [layer.momentum for layer in layers]
  count = 0
  try:
    for count, batch in enumerate(batches, 1):
      for layer in layers:
        layer.momentum = (count - 1.) / count
      model(batch[0], training=True)
  finally:
    for layer, momentum in zip(layers, momenta):
      layer.momentum = momentum
  return count


class RecomputeBatchNorm(keras.callbacks.Callback):
  """Recomputes batch normalization statistics before each validation.

  At the end of each epoch's training steps, before Keras validates, the
  moving statistics are set to the average over `batches` training batches
  (see `recompute_batchnorm`); validation, the best checkpoint, the saved
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


class ScalarSummaries(keras.callbacks.Callback):
  """Writes every epoch's logs as TensorBoard scalars (train/ and val/).

  Written with `tf.summary.write` and the scalars plugin's metadata, which
  needs no `tensorboard` package at training time.
  """

  def __init__(self, log_dir: str):
    super().__init__()
    self._writers = {
        kind: tf.summary.create_file_writer(os.path.join(log_dir, kind))
        for kind in ('train', 'validation')}
    self._metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name='scalars'))

  def on_epoch_end(self, epoch: int, logs=None) -> None:
    for key, value in (logs or {}).items():
      kind = 'validation' if key.startswith('val_') else 'train'
      with self._writers[kind].as_default():
        tf.summary.write(key.removeprefix('val_'), float(value),
                         step=epoch + 1, metadata=self._metadata)
    for writer in self._writers.values():
      writer.flush()
