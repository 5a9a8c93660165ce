"""What the training program prints: trimmed logs and the closing table.

`quiet_logs` keeps the log to what helps a person follow a run: warnings and
errors from anywhere, INFO lines only from this program and leaf_audio
(tensorflow-datasets' per-split "Constructing tf.data.Dataset" lines and
TensorFlow's saver lines go), each TensorFlow warning once (not also in
absl's format), and no tensorflow-datasets progress bars. The program's
entry modules also set TF_CPP_MIN_LOG_LEVEL=2 (unless set) before TensorFlow
is imported, which silences its C++ INFO lines after start-up (TensorFlow
2.21 prints its first few, about CUDA, whatever the setting).

`results_table` formats the test metrics against chance, one row per task:
accuracy against 1 / classes (a uniform guess) and the cross-entropy against
ln(classes) (the loss of predicting the uniform distribution); for
multi-label runs, AUC against 0.5 and d' against 0.
"""

import logging
import math
import os
from typing import Dict, Iterable

from absl import flags
from absl import logging as absl_logging

import leaf_audio

_PROGRAM_DIRS = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (__file__, leaf_audio.__file__))


class _ProgramInfoOnly(logging.Filter):
  """Passes warnings and errors, and INFO records of this program only."""

  def __init__(self, program_dirs: Iterable[str] = _PROGRAM_DIRS):
    super().__init__()
    self._dirs = tuple(program_dirs)

  def filter(self, record: logging.LogRecord) -> bool:
    return (record.levelno >= logging.WARNING or
            os.path.abspath(record.pathname).startswith(self._dirs))


def quiet_logs() -> None:
  """Trims the process' log output as the module docstring says."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _ProgramInfoOnly) for f in handler.filters):
    handler.addFilter(_ProgramInfoOnly())
  # TensorFlow's logger prints its records itself and passes them on to the
  # root logger, where absl prints them again.
  tf.get_logger().propagate = False
  tf.get_logger().setLevel(logging.WARNING)
  tfds.disable_progress_bar()


def results_table(results: Dict[str, Dict]) -> str:
  """The test metrics of each task against chance, as a Markdown table.

  Args:
    results: task -> metrics, as `train.train` returns them: 'accuracy',
      'loss', 'examples', 'num_classes', or (multi-label) 'mAP', 'auc',
      'd_prime', 'examples', 'num_classes'.

  Returns:
    the table, one row per task.
  """
  multilabel = any('auc' in m for m in results.values())
  if multilabel:
    lines = ['| task | clips | classes | mAP | AUC (chance 0.5) | '
             "d' (chance 0) |", '| --- | ---: | ---: | ---: | ---: | ---: |']
    for task, m in results.items():
      lines.append(f'| {task} | {m["examples"]} | {m["num_classes"]} | '
                   f'{m["mAP"]:.3f} | {m["auc"]:.3f} | {m["d_prime"]:.2f} |')
    return '\n'.join(lines)
  lines = ['| task | clips | classes | accuracy | chance | x chance | loss | '
           'chance loss |',
           '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for task, m in results.items():
    chance = 1. / m['num_classes']
    lines.append(
        f'| {task} | {m["examples"]} | {m["num_classes"]} | '
        f'{100 * m["accuracy"]:.1f} % | {100 * chance:.1f} % | '
        f'{m["accuracy"] / chance:.2f}x | {m["loss"]:.3f} | '
        f'{math.log(m["num_classes"]):.3f} |')
  return '\n'.join(lines)


def define_workdir_flag(help_text: str) -> None:
  """Defines `--workdir` (a string, no default), which several programs of
  this package take, unless one already did: absl refuses a second
  definition in one process, and the tests import them all."""
  if 'workdir' not in flags.FLAGS:
    flags.DEFINE_string('workdir', None, help_text)
