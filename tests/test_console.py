"""What the training program prints: the closing table against chance, the
log filter, and no retracing warning when evaluating several tasks."""

import logging
import math
import os

import numpy as np
import tensorflow as tf

from example import console
from example import evaluation
from leaf_audio import frontend
from leaf_audio import models


def test_results_table_against_chance():
  table = console.results_table({
      'keywords': {'accuracy': 0.62, 'loss': 1.2, 'examples': 50,
                   'num_classes': 10},
      'instrument': {'accuracy': 0.25, 'loss': 2.5, 'examples': 40,
                     'num_classes': 8}})
  rows = [r.split('|')[1:-1] for r in table.splitlines()[2:]]
  assert [c.strip() for c in rows[0]] == [
      'keywords', '50', '10', '62.0 %', '10.0 %', '6.20x', '1.200',
      f'{math.log(10):.3f}']
  assert [c.strip() for c in rows[1]][3:6] == ['25.0 %', '12.5 %', '2.00x']
  multilabel = console.results_table({'tags': {
      'mAP': 0.41, 'auc': 0.8, 'd_prime': 1.19, 'examples': 7,
      'num_classes': 5}})
  assert '| tags | 7 | 5 | 0.410 | 0.800 | 1.19 |' in multilabel


def test_log_filter_keeps_program_info_and_all_warnings():
  keep = console._ProgramInfoOnly()  # pylint: disable=protected-access

  def record(level, path):
    return logging.LogRecord('absl', level, path, 1, 'm', (), None)

  program = os.path.join(os.path.dirname(console.__file__), 'train.py')
  other = os.path.join(os.path.dirname(tf.__file__), 'x', 'reader.py')
  assert keep.filter(record(logging.INFO, program))
  assert not keep.filter(record(logging.INFO, other))
  assert keep.filter(record(logging.WARNING, other))


def test_evaluating_several_tasks_traces_once_each(caplog):
  tasks = {'a': 2, 'b': 3, 'c': 2}
  model = models.AudioClassifier(
      num_outputs=tasks,
      frontend=frontend.MelFilterbanks(n_filters=8),
      encoder=models.ConvNet(filters=[4]))
  model(tf.zeros([1, 16000]))
  rng = np.random.default_rng(0)
  caplog.set_level(logging.WARNING)
  for name, classes in tasks.items():
    # 5 clips of 1-2 windows in batches of 4: the last batch is smaller.
    clips = [rng.uniform(-.5, .5, n).astype(np.float32)
             for n in (16000, 24000, 16000, 9000, 30000)]
    split = tf.data.Dataset.from_generator(
        lambda clips=clips: ({'audio': c, 'label': i % classes}
                             for i, c in enumerate(clips)),
        output_signature={'audio': tf.TensorSpec([None], tf.float32),
                          'label': tf.TensorSpec([], tf.int64)})
    logits, targets = evaluation.task_logits(model, split, classes, name, (),
                                             batch_size=4)
    assert logits.shape == targets.shape == (5, classes)
  assert not [r for r in caplog.records if 'retracing' in r.getMessage()]
