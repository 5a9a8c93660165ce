"""Full-length evaluation: 1 s windows, logits averaged over each clip.

As in the paper (Section 4), each test clip is cut into consecutive
non-overlapping 1 s windows (the last one zero-padded), every window goes
through the per-window transforms and the model, and the clip's logits are
the mean of its windows' logits.
"""

from typing import Callable, Dict, Sequence

import keras
import numpy as np
import tensorflow as tf

from . import data
from . import metrics
from . import tasks as tasks_lib


def clip_logits_fn(model: keras.Model, transform_fns: Sequence[Callable],
                   window: int = data.WINDOW) -> Callable:
  """Returns f(waveforms) -> averaged logits, the export's computation.

  Args:
    model: maps windows [n, window] to a dict task -> logits [n, classes].
    transform_fns: applied to every window, in order (no crop).
    window: window length in samples.

  Returns:
    a function of float waveforms [batch, samples] (same length each) giving
    task -> logits [batch, classes], each the mean over the clip's windows.
  """

  def clip_logits(waveforms: tf.Tensor) -> Dict[str, tf.Tensor]:
    frames = data.split_windows(waveforms, window)  # [batch, n, window]
    batch, count = tf.shape(frames)[0], tf.shape(frames)[1]
    flat = tf.reshape(frames, [-1, window])
    for fn in transform_fns:
      flat = fn(flat)
    outputs = model(flat, training=False)
    return {name: tf.reduce_mean(
        tf.reshape(logits, [batch, count, logits.shape[-1]]), axis=1)
            for name, logits in outputs.items()}

  return clip_logits


def task_logits(model: keras.Model, split: tf.data.Dataset, num_classes: int,
                task: str, transform_fns: Sequence[Callable],
                batch_size: int, training: bool = False):
  """Clip-level logits of one task's split, windows batched across clips.

  Args:
    model: maps windows [n, window] to a dict task -> logits.
    split: dataset of {'audio': [samples], 'label': int or int vector}.
    num_classes: the task's number of classes.
    task: the task's name (its output key).
    transform_fns: the pipeline's transforms (the crop is skipped).
    batch_size: windows per model call.
    training: run the model in training mode (batch statistics, dropout),
      to diagnose what evaluation mode changes; this updates batch
      normalization's moving statistics.

  Returns:
    (logits float [clips, classes], targets float [clips, classes] one- or
    multi-hot), clips in the split's order.
  """
  encoded = split.map(lambda ex: {
      'audio': ex['audio'], 'label': data.encode_label(ex['label'],
                                                       num_classes)})
  stream = data.window_stream(encoded, transform_fns).batch(batch_size)
  # One trace for every batch size (the last batch is smaller), so that
  # evaluating a few tasks does not trigger TensorFlow's retracing warning.
  predict = tf.function(lambda x: model(x, training=training)[task],
                        input_signature=[tf.TensorSpec([None, data.WINDOW],
                                                       tf.float32)],
                        autograph=False)
  logits, index, targets = [], [], []
  for frames, clip, label in stream:
    logits.append(predict(frames).numpy())
    index.append(clip.numpy())
    targets.append(label.numpy())
  if not logits:
    raise ValueError(f'task {task}: the test split is empty')
  logits, index = np.concatenate(logits), np.concatenate(index)
  targets = np.concatenate(targets)
  clips = index.max() + 1
  sums = np.zeros((clips, num_classes), np.float64)
  np.add.at(sums, index, logits)
  counts = np.bincount(index, minlength=clips)[:, None]
  clip_targets = np.zeros((clips, num_classes), np.float32)
  clip_targets[index] = targets
  return sums / counts, clip_targets


def evaluate(model: keras.Model, tasks: Sequence[tasks_lib.Task],
             transform_fns: Sequence[Callable], batch_size: int,
             multilabel: bool, split: str = 'test',
             training: bool = False) -> Dict[str, Dict]:
  """Evaluates every task on full-length clips of a split.

  Args:
    model: the trained classifier.
    tasks: the tasks; their keys are the model's output keys.
    transform_fns: the pipeline's transforms (the crop is skipped).
    batch_size: windows per model call.
    multilabel: report mAP / AUC / d' instead of accuracy.
    split: which split ('test', 'eval' or 'train').
    training: see `task_logits`.

  Returns:
    task name -> {'accuracy', 'loss', 'examples', 'num_classes'}, or with
    `multilabel` {'mAP', 'auc', 'd_prime', 'examples', 'num_classes'}.
  """
  results = {}
  for task in tasks:
    logits, targets = task_logits(model, task.splits[split], task.num_classes,
                                  task.key, transform_fns, batch_size,
                                  training)
    if multilabel:
      scores = metrics.multilabel_metrics(logits, targets)
    else:
      scores = metrics.classification_metrics(logits, targets.argmax(axis=1))
    results[task.name] = {**scores, 'examples': int(len(logits)),
                          'num_classes': task.num_classes}
  return results
