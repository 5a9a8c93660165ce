"""The training program of the paper (Section 4), configured with gin.

A frontend, an encoder and one linear head per task (`AudioClassifier`),
trained with Adam on random 1 s crops streamed from tensorflow-datasets or
local folders, evaluated on full-length test clips (1 s windows, logits
averaged), and exported as a SavedModel. Everything lands in `workdir`:

    state/            last epoch's weights and optimizer state (resuming;
                      keras.callbacks.BackupAndRestore's files)
    best.weights.h5   weights of the epoch of best val_score (the mean over
                      tasks of the validation metric), best.json
    tensorboard/      keras.callbacks.TensorBoard: epoch scalars (learning
                      rate included) and the frontend's filters, train/ and
                      validation/
    metrics.json      test metrics per task
    export/           SavedModel (serving_default) and labels.json
    operative_config.gin
    run.json          what made the workdir: operative config, datasets
    lock              held by the run using the workdir
"""

import math
import os
from typing import Dict, Optional, Sequence

from absl import logging
import gin
import keras
import tensorflow as tf

from . import callbacks
from . import data
from . import evaluation
from . import export
from . import pretrained
from . import tasks as tasks_lib
from . import workdir as workdir_lib
from leaf_audio import callbacks as leaf_callbacks

STRATEGIES = ('default', 'mirrored', 'multi_worker_mirrored', 'tpu')
# Learning rate schedules a config can give train.learning_rate, e.g.
# `train.learning_rate = @keras.optimizers.schedules.CosineDecay()` with
# `CosineDecay.initial_learning_rate = 1e-3` and `CosineDecay.decay_steps`.
for _schedule in (keras.optimizers.schedules.CosineDecay,
                  keras.optimizers.schedules.ExponentialDecay,
                  keras.optimizers.schedules.PiecewiseConstantDecay):
  gin.external_configurable(_schedule, module='keras.optimizers.schedules')


def make_strategy(name: str) -> tf.distribute.Strategy:
  """The tf.distribute strategy called `name` (one of STRATEGIES)."""
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'mirrored':
    return tf.distribute.MirroredStrategy()
  if name == 'multi_worker_mirrored':
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == 'tpu':
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f'unknown strategy {name!r}; expected one of {STRATEGIES}')


def worker_workdir(workdir: str, distribution: tf.distribute.Strategy) -> str:
  """Where this worker writes: `workdir` for the chief, else a subfolder.

  In a multi-worker run every worker runs the callbacks; only the chief
  (task 'chief', or 'worker' 0 when there is no chief) writes to `workdir`,
  the others to `workdir/workers/<type>_<id>` so that no two write the same
  file.
  """
  resolver = getattr(distribution, 'cluster_resolver', None)
  task_type = getattr(resolver, 'task_type', None)
  task_id = getattr(resolver, 'task_id', None) or 0
  if task_type in (None, 'chief'):
    return workdir
  if task_type == 'worker' and task_id == 0 and (
      'chief' not in resolver.cluster_spec().as_dict()):
    return workdir
  return os.path.join(workdir, 'workers', f'{task_type}_{task_id}')


def _pipeline_transforms():
  """The waveform transforms `data.prepare` is configured with."""
  return tuple(gin.get_bindings(data.prepare).get(
      'transform_fns', data.DEFAULT_TRANSFORMS))


def _losses_and_metrics(task_names: Sequence[str], multilabel: bool):
  """Per-task loss and (sample-weighted) validation metric."""
  if multilabel:
    loss = lambda: keras.losses.BinaryCrossentropy(from_logits=True)
    metric = lambda: keras.metrics.AUC(multi_label=True, from_logits=True,
                                       name='auc')
  else:
    loss = lambda: keras.losses.CategoricalCrossentropy(from_logits=True)
    metric = lambda: keras.metrics.CategoricalAccuracy(name='accuracy')
  return ({t: loss() for t in task_names}, {t: [metric()] for t in task_names})


def build_model(num_classes: Dict[str, int], learning_rate,
                multilabel: bool, init_from: Optional[str] = None,
                freeze: Optional[str] = None) -> keras.Model:
  """The gin-configured `AudioClassifier`, built and compiled with Adam.

  Args:
    num_classes: task name -> number of classes (one head each).
    learning_rate: Adam's learning rate, a float or a
      `keras.optimizers.schedules.LearningRateSchedule`.
    multilabel: sigmoid instead of softmax cross-entropy.
    init_from: pre-training workdir the frontend and encoder come from
      (`example.pretrained`); None for the gin-configured ones.
    freeze: None, 'frontend' or 'encoder' (`example.pretrained`).

  Returns:
    the compiled model, mapping waveforms [batch, samples] to task -> logits.
  """
  model = pretrained.classifier(num_classes, init_from, freeze)
  model(tf.zeros([1, data.WINDOW]))
  losses, metrics = _losses_and_metrics(list(num_classes), multilabel)
  model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=losses,
                weighted_metrics=metrics)
  # Adam's slots now, not in the first traced step: a step that creates
  # variables is traced twice by tf.function (once more to run without
  # creating them), which cost about a third of a short run's time.
  model.optimizer.build(model.trainable_variables)
  return model


def _build_for_fit_from(model: keras.Model, batch) -> None:
  """Makes `model.fit` build its compiled loss and metrics from `batch`.

  Under a distribution strategy, Keras 3.15's `fit` first reduces the
  first distributed batch with `strategy.reduce`, only to learn its shapes.
  MultiWorkerMirroredStrategy cannot reduce a nest such as (waveforms,
  targets, weights) ("Attempt to convert a value (PerReplica ...) to a
  Tensor"), and the batch taken is lost to training. This builds from a
  batch of the undistributed stream instead, taking nothing from `fit`'s.
  """
  strategy = model.distribute_strategy

  def build(iterator=None, data_batch=None):
    del iterator, data_batch  # Only the shapes are needed: from `batch`.
    with strategy.scope():
      model._symbolic_build(data_batch=batch)  # pylint: disable=protected-access

  model._maybe_symbolic_build = build  # pylint: disable=protected-access
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    # Keras 3.15 reduces each step's logs across workers with
    # strategy.reduce('MEAN', value, axis=0), which fails on the scalars a
    # step returns ("Invalid reduction dimension 0 for input with 0
    # dimensions"); as vectors of one value they reduce to the same scalars.
    for name in ('train_step', 'test_step'):
      step = getattr(model, name)
      setattr(model, name, lambda data, step=step: tf.nest.map_structure(
          lambda v: tf.reshape(v, [1]), step(data)))


def _steps_per_epoch(train_splits: Sequence[tf.data.Dataset],
                     batch_size: int) -> int:
  """One pass over every task's train split, in batches."""
  sizes = [int(s.cardinality()) for s in train_splits]
  if min(sizes) < 0:
    raise ValueError('the train split size is unknown; set '
                     'train.steps_per_epoch')
  return max(1, math.ceil(sum(sizes) / batch_size))


def count_validation(dataset: tf.data.Dataset) -> Dict[str, float]:
  """One pass over validation batches (x, targets, weights): what they hold.

  Returns:
    {'batches': number of batches, 'rows': rows in all (padding included),
    'real': rows of weight > 0 over all tasks, and per task name
    'real/<task>': rows of weight > 0 on that task's head}.
  """
  def add(totals, batch):
    x, _, weights = batch
    counts = {'batches': tf.constant(1., tf.float64),
              'rows': tf.cast(tf.shape(x)[0], tf.float64)}
    real = tf.zeros([tf.shape(x)[0]], tf.bool)
    for name, w in weights.items():
      counts[f'real/{name}'] = tf.reduce_sum(tf.cast(w > 0, tf.float64))
      real = real | (w > 0)
    counts['real'] = tf.reduce_sum(tf.cast(real, tf.float64))
    return {k: totals[k] + v for k, v in counts.items()}

  _, _, w_spec = dataset.element_spec
  zero = tf.constant(0., tf.float64)
  totals = {'batches': zero, 'rows': zero, 'real': zero}
  totals.update({f'real/{name}': zero for name in w_spec})
  return {k: float(v) for k, v in dataset.reduce(totals, add).items()}


def with_counted_batches(dataset: tf.data.Dataset,
                         count: Optional[int] = None) -> tf.data.Dataset:
  """`dataset` with its number of batches counted (one pass) and declared.

  Keras then ends each validation pass after the last batch instead of
  running a step into the end of the data. Such a step is aborted part-way,
  and with TensorFlow 2.21's grappler (which turns the sum of several task
  losses into AccumulateNV2, backed by a per-step temporary variable) it can
  leave that variable behind, so that the next training step fails with
  ALREADY_EXISTS (seen with multi-task LEAF at the start of epoch 2).

  Args:
    dataset: a finite dataset.
    count: its number of batches when already known (no pass then).
  """
  if count is None:
    count = int(dataset.reduce(0, lambda count, _: count + 1))
  return dataset.apply(tf.data.experimental.assert_cardinality(count))


def _validate(num_epochs, steps_per_epoch, learning_rate, batch_size,
              strategy):
  """Checks the scalar arguments before anything is read or built."""
  if strategy not in STRATEGIES:
    raise ValueError(f'train.strategy must be one of {STRATEGIES}, got '
                     f'{strategy!r}')
  for name, value in (('num_epochs', num_epochs), ('batch_size', batch_size)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f'train.{name} must be a positive int, got {value!r}')
  if steps_per_epoch is not None and (not isinstance(steps_per_epoch, int)
                                      or steps_per_epoch < 1):
    raise ValueError('train.steps_per_epoch must be None or a positive int, '
                     f'got {steps_per_epoch!r}')
  if not isinstance(learning_rate,
                    keras.optimizers.schedules.LearningRateSchedule) and not (
                        isinstance(learning_rate, (int, float))
                        and learning_rate > 0):
    raise ValueError('train.learning_rate must be a number > 0 or a '
                     'keras.optimizers.schedules.LearningRateSchedule, got '
                     f'{learning_rate!r}')


@gin.configurable(denylist=['verbose'])
def train(workdir: str = '/tmp/leaf_audio',
          dataset: str = 'speech_commands',
          num_epochs: int = 10,
          steps_per_epoch: Optional[int] = None,
          learning_rate=1e-4,
          batch_size: int = 64,
          datasets: Optional[Sequence[str]] = None,
          multilabel: bool = False,
          strategy: str = 'default',
          data_dir: Optional[str] = None,
          recompute_batchnorm: int = 50,
          init_from: Optional[str] = None,
          freeze: Optional[str] = None,
          verbose='auto') -> Dict[str, Dict]:
  """Trains, evaluates and exports a classifier; resumes an interrupted run.

  Re-running with the same `workdir` continues after the last completed
  epoch (a finished run only re-evaluates and re-exports). The workdir
  records the operative config and the datasets' identity (`run.json`): a
  run that differs in anything but `workdir_lib.RESUMABLE` stops with the
  differences listed; a run on a workdir another process is using stops at
  once (`workdir_lib.WorkdirBusyError`).

  Args:
    workdir: where the checkpoints, logs, metrics and export go.
    dataset: a tensorflow-datasets name (optionally ':label/path', e.g.
      'nsynth:pitch') or a local folder of labelled clips.
    num_epochs: number of epochs.
    steps_per_epoch: batches per epoch; None for one pass over the train
      split(s).
    learning_rate: Adam's learning rate, a number or a schedule of the
      optimizer's step (`keras.optimizers.schedules`: CosineDecay,
      ExponentialDecay, PiecewiseConstantDecay are configurable).
    batch_size: global batch size (split across replicas).
    datasets: several datasets for multi-task training (one head each);
      overrides `dataset`.
    multilabel: sigmoid cross-entropy and mAP / AUC / d' metrics.
    strategy: tf.distribute strategy, one of STRATEGIES.
    data_dir: tensorflow-datasets data directory (None: its default).
    recompute_batchnorm: before each validation, batch normalization
      statistics are recomputed over this many training batches (at most one
      epoch's steps), with the model in evaluation mode (dropout off; see
      `callbacks.recompute_batchnorm`); 0 keeps Keras' moving averages.
    init_from: a pre-training workdir (`example.pretrain`) whose frontend and
      encoder (architecture and weights) the classifier starts from.
    freeze: None, 'frontend' or 'encoder' (a linear probe): what stays fixed.
    verbose: Keras `fit` verbosity (progress bars by default).

  Returns:
    the test metrics written to `workdir/metrics.json`.
  """
  _validate(num_epochs, steps_per_epoch, learning_rate, batch_size, strategy)
  if not isinstance(recompute_batchnorm, int) or recompute_batchnorm < 0:
    raise ValueError('train.recompute_batchnorm must be an int >= 0 (0: off), '
                     f'got {recompute_batchnorm!r}')
  pretrained.check(init_from, freeze)
  distribution = make_strategy(strategy)
  logging.info('Strategy %s: %d replica(s).', strategy,
               distribution.num_replicas_in_sync)
  workdir = worker_workdir(workdir, distribution)
  os.makedirs(workdir, exist_ok=True)
  with workdir_lib.lock(workdir):
    tasks = tasks_lib.load_tasks(list(datasets or [dataset]), data_dir)
    num_classes = {t.key: t.num_classes for t in tasks}
    logging.info('Tasks (name: classes): %s', num_classes)
    streams = data.prepare([t.splits for t in tasks], num_classes,
                           batch_size=batch_size)
    steps_per_epoch = steps_per_epoch or _steps_per_epoch(
        [t.splits['train'] for t in tasks], batch_size)

    with distribution.scope():
      model = build_model(num_classes, learning_rate, multilabel, init_from,
                          freeze)
    # Everything configurable has been called: the operative config is whole.
    operative_config = gin.operative_config_str()
    workdir_lib.check_or_record(workdir, workdir_lib.make_record(
        operative_config, [t.identity for t in tasks]))
    if strategy != 'default':
      _build_for_fit_from(model, next(iter(streams['train'])))
    backup = callbacks.Backup(os.path.join(workdir, 'state'))
    metric_name = 'auc' if multilabel else 'accuracy'
    # Keras prefixes metric names with the output name only when there are
    # several outputs.
    monitor = ([f'val_{metric_name}'] if len(tasks) == 1 else
               [f'val_{name}_{metric_name}' for name in num_classes])
    best = callbacks.BestWeights(workdir, 'val_score')
    if backup.epochs_done() < num_epochs:
      counts = count_validation(streams['eval'])
      # In this order: the logs are corrected and completed (val_score)
      # before the best weights, the logs and the backup are saved.
      model.fit(streams['train'],
                validation_data=with_counted_batches(streams['eval'],
                                                     int(counts['batches'])),
                epochs=num_epochs, steps_per_epoch=steps_per_epoch,
                verbose=verbose, shuffle=False,
                callbacks=[callbacks.RealExampleLoss(counts,
                                                     list(num_classes)),
                           leaf_callbacks.RefreshFastPlans(),
                           callbacks.RecomputeBatchNorm(
                               streams['train'],
                               min(recompute_batchnorm, steps_per_epoch)),
                           callbacks.MeanOverTasks(monitor, 'val_score'),
                           best,
                           callbacks.FilterTensorBoard(
                               os.path.join(workdir, 'tensorboard')),
                           backup])
    else:  # Finished: the last epoch's weights, for want of best ones.
      backup.set_model(model)
      backup.on_train_begin()
    callbacks.write_text(os.path.join(workdir, 'operative_config.gin'),
                         gin.operative_config_str())

    if os.path.exists(best.weights_path):
      model.load_weights(best.weights_path)
    transform_fns = _pipeline_transforms()
    results = evaluation.evaluate(model, tasks, transform_fns, batch_size,
                                  multilabel)
    callbacks.write_json(os.path.join(workdir, 'metrics.json'), results)
    logging.info('Test metrics: %s', results)
    export.export(model, os.path.join(workdir, 'export'),
                  data.serving_transforms(transform_fns),
                  {t.name: t.class_names for t in tasks},
                  {t.key: t.name for t in tasks})
    return results
