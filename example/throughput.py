"""Examples per second of the input pipeline alone and of the training step.

    python -m example.throughput --gin_config=configs/leaf.gin \\
        --gin_bindings="train.dataset = 'data/demo_corpus/keywords'"

Reads the same gin configuration as `example.main`. The pipeline is timed
by pulling training batches and discarding them; the training step by
fitting on one batch held in memory, so that it waits on no input. The
pipeline is not the bottleneck when its rate is well above the step's.
"""

import inspect
import time
from typing import Dict, Sequence

from absl import app
from absl import flags
import gin
import tensorflow as tf

from . import data
from . import main as main_lib
from . import tasks as tasks_lib
from . import train as train_lib

flags.DEFINE_integer('batches', 30, 'Batches timed for each measurement.')
FLAGS = flags.FLAGS


def _train_arguments() -> Dict:
  """train()'s arguments as gin configures them (defaults otherwise)."""
  defaults = {name: p.default for name, p in inspect.signature(
      train_lib.train).parameters.items()}
  return {**defaults, **gin.get_bindings(train_lib.train)}


def _rate(step, batches: int, batch_size: int) -> float:
  """Examples per second of calling `step()` once per batch, after warm-up."""
  for _ in range(3):
    step()
  start = time.perf_counter()
  for _ in range(batches):
    step()
  return batches * batch_size / (time.perf_counter() - start)


def measure(batches: int) -> Dict[str, float]:
  """Times the configured pipeline and training step.

  Args:
    batches: batches timed for each of the two measurements.

  Returns:
    {'pipeline_examples_per_s', 'train_step_examples_per_s'}.
  """
  args = _train_arguments()
  tasks = tasks_lib.load_tasks(list(args['datasets'] or [args['dataset']]),
                               args['data_dir'])
  num_classes = {t.key: t.num_classes for t in tasks}
  batch_size = args['batch_size']
  stream = data.prepare([t.splits for t in tasks], num_classes,
                        batch_size=batch_size)['train']
  batch_iterator = iter(stream)
  pipeline = _rate(lambda: next(batch_iterator), batches, batch_size)

  model = train_lib.build_model(num_classes, args['learning_rate'],
                                args['multilabel'])
  x, y, w = next(iter(stream))
  step = lambda: model.train_on_batch(x, y, sample_weight=w)
  return {'pipeline_examples_per_s': pipeline,
          'train_step_examples_per_s': _rate(step, batches, batch_size)}


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  main_lib.parse_config(main_lib.FLAGS.gin_config, main_lib.FLAGS.gin_bindings)
  rates = measure(FLAGS.batches)
  print(f"input pipeline: {rates['pipeline_examples_per_s']:.1f} examples/s; "
        f"training step: {rates['train_step_examples_per_s']:.1f} examples/s "
        f"({rates['pipeline_examples_per_s'] / rates['train_step_examples_per_s']:.1f}x)")


if __name__ == '__main__':
  app.run(main)
