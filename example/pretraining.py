"""Self-supervised pre-training of a frontend and its encoder with COLA.

`pretrain` is the program that `python -m example.pretrain` runs. The frontend and encoder are the ones `AudioClassifier` gets from the same
gin config; `example.cola` holds the objective. Data: any `train.dataset`
form (a tensorflow-datasets name, a folder of labelled clips, whose labels
are ignored) or a plain folder of clips without class folders (10% of it,
chosen by a hash of each path, is held out for validation). Only the train
splits are pre-trained on; the validation splits measure the loss and the
pair-identification accuracy; test splits are never read. The workdir holds:

    state/                last epoch's weights and optimizer state (resuming)
    tensorboard/          epoch scalars (loss, pair_accuracy, learning rate)
                          and the frontend's filters, train/ and validation/
    pretrained.keras      the COLA model (frontend, encoder, projection),
                          replaced after every epoch; `train.init_from`
                          reads it
    operative_config.gin
    run.json              what made the workdir (`example.workdir`): a
                          resumed run with another configuration or data
                          stops, listing the differences
    lock                  held while a run is in progress: a second run on
                          the workdir stops at once
"""

import hashlib
import os
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from . import audio_io
from . import callbacks
from . import cola
from . import data
from . import folder_dataset
from . import pretrained
from . import tasks as tasks_lib
from . import train as train_lib
from . import workdir as workdir_lib
from leaf_audio import callbacks as leaf_callbacks

PRETRAINED_FILE = pretrained.PRETRAINED_FILE



def _is_plain_folder(path: str) -> bool:
  """A folder whose audio files sit at its top level, without class folders."""
  if not os.path.isdir(path):
    return False
  names = os.listdir(path)
  has_audio = any(os.path.splitext(n)[1].lower() in audio_io.AUDIO_EXTENSIONS
                  for n in names)
  has_dirs = any(os.path.isdir(os.path.join(path, n)) and n[0] != '.'
                 for n in names)
  return has_audio and not has_dirs


def _decode(path: str) -> np.ndarray:
  samples, rate = audio_io.read_audio(path)
  if rate != data.SAMPLE_RATE:
    samples = audio_io.resample(samples, rate, data.SAMPLE_RATE)
  return np.asarray(samples, np.float32)


def _plain_folder_files(root: str, validation_fraction: float
                        ) -> Dict[str, List[str]]:
  """'train' and 'eval' audio files of a plain folder (see
  `plain_folder_splits`)."""
  files = folder_dataset._stable_order(  # pylint: disable=protected-access
      folder_dataset._audio_files(root), root)  # pylint: disable=protected-access
  if not files:
    raise ValueError(f'{root} holds no audio file (expected '
                     f'{" or ".join(audio_io.AUDIO_EXTENSIONS)})')
  held = folder_dataset._holdout_size(  # pylint: disable=protected-access
      len(files), validation_fraction)
  return {'eval': sorted(files[:held]), 'train': sorted(files[held:])}


def plain_folder_identity(root: str, validation_fraction: float = 0.1
                          ) -> Dict:
  """What a plain folder holds, independent of where it lies: its name,
  the number of files per split and a digest of their relative paths and
  sizes (a workdir's record, `example.workdir`)."""
  chosen = _plain_folder_files(root, validation_fraction)
  digest = hashlib.sha1()
  for split in ('train', 'eval'):
    for path in chosen[split]:
      digest.update(f'{split}|{os.path.relpath(path, root)}|'
                    f'{os.path.getsize(path)}\n'.encode())
  return {'name': os.path.basename(os.path.normpath(root)),
          'files': {k: len(v) for k, v in chosen.items()},
          'digest': digest.hexdigest()[:16]}


def plain_folder_splits(root: str,
                        validation_fraction: float = 0.1
                        ) -> Dict[str, tf.data.Dataset]:
  """'train' and 'eval' streams of {'audio': float [samples]} of a folder.

  Files are decoded as they stream (resampled to 16 kHz when needed);
  unreadable ones are skipped with a warning. The validation files are the
  first `validation_fraction` of the files ordered by a hash of their names
  (the same every time), at least one, and none when there are fewer than 3.
  """
  chosen = _plain_folder_files(root, validation_fraction)

  def stream(paths):
    def generate():
      for path in paths:
        try:
          yield {'audio': _decode(path)}
        except audio_io.UnreadableAudioError as e:
          logging.warning('Skipping unreadable audio file %s: %s', path, e)
    spec = {'audio': tf.TensorSpec([None], tf.float32)}
    dataset = tf.data.Dataset.from_generator(generate, output_signature=spec)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(paths)))

  return {key: stream(paths) for key, paths in chosen.items()}


def load_splits(datasets: Sequence[str], data_dir: Optional[str]
                ) -> Tuple[List[Dict[str, tf.data.Dataset]], List[Dict]]:
  """Train and eval splits of each dataset, as {'audio': float [samples]},
  and each dataset's identity (what a workdir's record holds)."""
  splits, identities = [], []
  for dataset in datasets:
    if _is_plain_folder(dataset):
      splits.append(plain_folder_splits(dataset))
      identities.append(plain_folder_identity(dataset))
    else:
      task = tasks_lib.load_task(dataset, data_dir)
      splits.append({
          key: task.splits[key].map(
              lambda e: {'audio': data.to_float(e['audio'])})
          for key in ('train', 'eval')})
      identities.append(task.identity)
  return splits, identities


def _transforms():
  """The configured waveform transforms other than the crop (COLA crops)."""
  return data.window_transforms(tuple(gin.get_bindings(data.prepare).get(
      'transform_fns', data.DEFAULT_TRANSFORMS)))


def pair_stream(clips: tf.data.Dataset, segment: int, seed: Optional[int],
                transform_fns) -> tf.data.Dataset:
  """(anchor, positive) crops of each clip, with the transforms applied.

  Args:
    clips: dataset of {'audio': [samples]}.
    segment: crop length in samples.
    seed: None for random crops; an int for crops drawn from (seed, the
      pair's position in `clips`): the same crops at every pass over a
      finite dataset (validation), the same sequence of crops over a
      repeated one in every run (training with `pretrain.seed`).
    transform_fns: applied to each crop.

  Returns:
    dataset of ((anchor, positive), 0.): the target is unused by the loss.
  """
  def pair(index, example):
    if seed is None:
      pair_seed = tf.random.uniform([2], 0, 2**31 - 1, tf.int32)
    else:
      pair_seed = tf.stack([tf.constant(seed, tf.int32),
                            tf.cast(index, tf.int32)])
    crops = cola.sample_pair(data.to_float(example['audio']), segment,
                             pair_seed)
    for fn in transform_fns:
      crops = fn(crops)
    return (crops[0], crops[1]), tf.constant(0.)

  return clips.enumerate().map(pair, num_parallel_calls=data.AUTOTUNE)


def _concatenate(datasets: Sequence[tf.data.Dataset]) -> tf.data.Dataset:
  joined = datasets[0]
  for other in datasets[1:]:
    joined = joined.concatenate(other)
  return joined


def _count(dataset: tf.data.Dataset) -> int:
  count = int(dataset.cardinality())
  if count < 0:
    count = int(dataset.reduce(0, lambda n, _: n + 1))
  return count


class SavePretrained(keras.callbacks.Callback):
  """Writes the COLA model to `path` after every epoch, atomically."""

  def __init__(self, path: str):
    super().__init__()
    self._path = path

  def on_epoch_end(self, epoch, logs=None):
    save(self.model, self._path)


def save(model: keras.Model, path: str) -> None:
  """Saves `model` as a .keras file (temporary file, then rename)."""
  tmp = path[:-len('.keras')] + '.tmp.keras'
  model.save(tmp)
  os.replace(tmp, path)


@gin.configurable(denylist=['verbose'])
def pretrain(workdir: str = '/tmp/leaf_audio_cola',
             dataset: str = 'speech_commands',
             num_epochs: int = 10,
             steps_per_epoch: Optional[int] = None,
             learning_rate: float = 1e-4,
             batch_size: int = 64,
             datasets: Optional[Sequence[str]] = None,
             segment_seconds: float = cola.SEGMENT_SECONDS,
             shuffle_buffer: int = 1024,
             strategy: str = 'default',
             data_dir: Optional[str] = None,
             seed: Optional[int] = None,
             verbose='auto') -> Dict[str, float]:
  """Pre-trains the configured frontend and encoder with COLA; resumes.

  Re-running with the same `workdir` continues after the last completed
  epoch. As `train.train`, the workdir records the operative config and the
  datasets' identity (`run.json`): a run that differs in anything but
  `workdir_lib.RESUMABLE` (e.g. more epochs) stops with the differences
  listed (`workdir_lib.WorkdirMismatchError`), and a run on a workdir
  another process is using stops at once (`workdir_lib.WorkdirBusyError`).

  Args:
    workdir: where the state, logs and `pretrained.keras` go.
    dataset: a tensorflow-datasets name, a folder of labelled clips (labels
      ignored) or a plain folder of clips.
    num_epochs: number of epochs.
    steps_per_epoch: batches per epoch; None for one pass over the clips.
    learning_rate: Adam's learning rate.
    batch_size: clips per batch (global batch under a distribution); each
      clip's positive has batch_size - 1 negatives (per replica: the
      replica's batch).
    datasets: several datasets pooled into one unlabelled set; overrides
      `dataset`.
    segment_seconds: length of each of the two crops, in seconds.
    shuffle_buffer: clips held by the shuffle buffer.
    strategy: tf.distribute strategy, one of `train.STRATEGIES`.
    data_dir: tensorflow-datasets data directory (None: its default).
    seed: None, or an int seeding Python, NumPy and TensorFlow
      (`keras.utils.set_random_seed`) before the model is built (its
      initialization), the shuffling and the crops: a run with a seed
      repeats exactly (a resumed run draws its batches from the start of
      the sequence again).
    verbose: Keras `fit` verbosity.

  Returns:
    the last epoch's logs (loss, pair_accuracy, val_loss,
    val_pair_accuracy).
  """
  train_lib._validate(num_epochs, steps_per_epoch, learning_rate,  # pylint: disable=protected-access
                      batch_size, strategy)
  if batch_size < 2:
    raise ValueError(f'pretrain.batch_size must be >= 2 (a positive needs '
                     f'negatives), got {batch_size}')
  segment = int(round(segment_seconds * data.SAMPLE_RATE))
  if segment < 1:
    raise ValueError(f'pretrain.segment_seconds must be > 0, got '
                     f'{segment_seconds}')
  if seed is not None and (not isinstance(seed, int) or seed < 0):
    raise ValueError(f'pretrain.seed must be None or an int >= 0, got '
                     f'{seed!r}')
  distribution = train_lib.make_strategy(strategy)
  workdir = train_lib.worker_workdir(workdir, distribution)
  os.makedirs(workdir, exist_ok=True)
  with workdir_lib.lock(workdir, program='pretrain'):
    if seed is not None:
      keras.utils.set_random_seed(seed)
    splits, identities = load_splits(list(datasets or [dataset]), data_dir)
    transform_fns = _transforms()
    train_clips = _concatenate([s['train'] for s in splits])
    num_train = _count(train_clips)
    if num_train < batch_size:
      raise ValueError(f'{num_train} training clips for pretrain.batch_size '
                       f'{batch_size}; lower the batch size')
    # With a seed, the shuffling and every pair's crops (drawn from the
    # seed and the pair's position in the stream) are the same each run.
    train_stream = (pair_stream(
        train_clips.shuffle(shuffle_buffer, seed=seed).repeat(), segment,
        seed, transform_fns)
                    .batch(batch_size, drop_remainder=True)
                    .prefetch(data.AUTOTUNE))
    eval_clips = _concatenate([s['eval'] for s in splits])
    num_eval = _count(eval_clips)
    eval_batch = min(batch_size, num_eval)
    validation = None
    if eval_batch >= 2:
      validation = (pair_stream(eval_clips, segment, 0, transform_fns)
                    .batch(eval_batch, drop_remainder=True)
                    .cache().prefetch(data.AUTOTUNE))
    else:
      logging.warning('Fewer than 2 validation clips: no validation.')
    steps_per_epoch = steps_per_epoch or max(1, num_train // batch_size)
    logging.info('COLA: %d training clips, %d validation clips, %d steps of '
                 '%d per epoch, segments of %d samples.', num_train, num_eval,
                 steps_per_epoch, batch_size, segment)

    with distribution.scope():
      model = cola.from_gin()
      model((tf.zeros([1, segment]), tf.zeros([1, segment])))
      model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                    loss=cola.cola_loss, metrics=[cola.pair_accuracy])
      # Built here, Adam's slots are not created in the first traced step,
      # which tf.function would then trace a second time.
      model.optimizer.build(model.trainable_variables)
    # Everything configurable has been called: the operative config is whole.
    workdir_lib.check_or_record(workdir, workdir_lib.make_record(
        gin.operative_config_str(), identities), program='pretrain')
    backup = callbacks.Backup(os.path.join(workdir, 'state'))
    history = {}
    if backup.epochs_done() < num_epochs:
      history = model.fit(
          train_stream, validation_data=validation, epochs=num_epochs,
          steps_per_epoch=steps_per_epoch, verbose=verbose, shuffle=False,
          callbacks=[leaf_callbacks.RefreshFastPlans(),
                     SavePretrained(os.path.join(workdir, PRETRAINED_FILE)),
                     callbacks.FilterTensorBoard(
                         os.path.join(workdir, 'tensorboard')),
                     backup]).history
    else:  # Finished: the last epoch's weights.
      backup.set_model(model)
      backup.on_train_begin()
    if not os.path.exists(os.path.join(workdir, PRETRAINED_FILE)):
      save(model, os.path.join(workdir, PRETRAINED_FILE))
    callbacks.write_text(os.path.join(workdir, 'operative_config.gin'),
                         gin.operative_config_str())
    logs = {key: float(values[-1]) for key, values in history.items()}
  logging.info('COLA pre-training done: %s', logs)
  return logs

