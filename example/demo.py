"""The demo: multi-task LEAF and mel-filterbanks on the bundled corpus.

`python -m example.demo` (what `make demo` runs) trains `configs/demo.gin`
(LEAF) and then `configs/demo_mel.gin` (mel-filterbanks), each in its own
process of the training program, on the three tasks of `data/demo_corpus`.
It then prints one row per frontend and task: test accuracy, chance level
(1 / number of classes) and their ratio, and writes the same table to
`runs/demo/summary.md`.

A run whose workdir already holds its test metrics, its export and a state
with every epoch done is reused as it is; an interrupted run resumes where it
stopped. Delete `runs/demo` to train from scratch.
"""

import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Sequence, Tuple

from absl import app
import gin

from . import callbacks
from . import config_files
from . import main as main_lib

# The demo reads data/demo_corpus and writes runs/ in the repository.
REPO_ROOT = os.path.dirname(config_files.configs_dir())
# (frontend name, gin config), trained in this order.
FRONTENDS = (('LEAF', 'configs/demo.gin'), ('mel', 'configs/demo_mel.gin'))
SUMMARY_PATH = os.path.join('runs', 'demo', 'summary.md')


@dataclasses.dataclass
class Row:
  """One line of the summary: a task's test accuracy with one frontend."""
  frontend: str
  task: str
  accuracy: float
  num_classes: int

  @property
  def chance(self) -> float:
    """Accuracy of a uniform guess."""
    return 1.0 / self.num_classes

  @property
  def ratio(self) -> float:
    """Accuracy as a multiple of chance."""
    return self.accuracy / self.chance


def run_settings(config: str) -> Tuple[str, int]:
  """The workdir (absolute) and number of epochs a gin config trains with."""
  gin.clear_config()
  try:
    main_lib.parse_config([config], [])
    workdir = gin.query_parameter('train.workdir')
    num_epochs = gin.query_parameter('train.num_epochs')
  finally:
    gin.clear_config()
  return os.path.join(REPO_ROOT, workdir), num_epochs


def is_finished(workdir: str, num_epochs: int) -> bool:
  """Whether `workdir` holds a run trained for `num_epochs`, tested, exported.
  """
  state = callbacks.Backup(os.path.join(workdir, 'state')).state()
  return (state is not None and state['epoch'] >= num_epochs and
          os.path.exists(os.path.join(workdir, 'metrics.json')) and
          os.path.exists(os.path.join(workdir, 'export', 'saved_model.pb')))


def train(config: str) -> float:
  """Runs the training program on `config` in a child process.

  Returns:
    its wall time, in seconds.

  Raises:
    subprocess.CalledProcessError: the training program failed.
  """
  env = dict(os.environ)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  start = time.monotonic()
  subprocess.run([sys.executable, '-m', f'{__package__}.main',
                  f'--gin_config={config}'], cwd=REPO_ROOT, env=env,
                 check=True)
  return time.monotonic() - start


def summary_rows(runs: Sequence[Tuple[str, str]]) -> List[Row]:
  """Reads each run's metrics.json.

  Args:
    runs: (frontend name, workdir) pairs.

  Returns:
    one row per frontend and task, in the runs' and the files' order.
  """
  rows = []
  for frontend, workdir in runs:
    with open(os.path.join(workdir, 'metrics.json')) as f:
      metrics = json.load(f)
    rows += [Row(frontend, task, m['accuracy'], m['num_classes'])
             for task, m in metrics.items()]
  return rows


def format_table(rows: Sequence[Row], wall_times: Dict[str, float]) -> str:
  """A Markdown table of `rows`, then each frontend's training wall time.

  Args:
    rows: the summary rows.
    wall_times: frontend -> seconds this invocation spent training it; a
      frontend missing here was reused from an earlier invocation.

  Returns:
    the table, ending with a newline.
  """
  lines = ['| frontend | task | test accuracy | chance | x chance |',
           '|----------|------|--------------:|-------:|---------:|']
  lines += [f'| {r.frontend} | {r.task} | {100 * r.accuracy:.1f} % | '
            f'{100 * r.chance:.1f} % | {r.ratio:.1f} |' for r in rows]
  lines.append('')
  for frontend in dict.fromkeys(r.frontend for r in rows):
    seconds = wall_times.get(frontend)
    lines.append(f'{frontend}: ' + (
        'reused a finished run' if seconds is None else
        f'trained in {seconds / 60:.1f} min (wall time)'))
  return '\n'.join(lines) + '\n'


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  runs, wall_times = [], {}
  for frontend, config in FRONTENDS:
    workdir, num_epochs = run_settings(config)
    if is_finished(workdir, num_epochs):
      print(f'{frontend}: reusing the finished run in {workdir}', flush=True)
    else:
      print(f'{frontend}: training {config} into {workdir}', flush=True)
      wall_times[frontend] = train(config)
    runs.append((frontend, workdir))
  table = format_table(summary_rows(runs), wall_times)
  summary_path = os.path.join(REPO_ROOT, SUMMARY_PATH)
  os.makedirs(os.path.dirname(summary_path), exist_ok=True)
  with open(summary_path, 'w') as f:
    f.write(table)
  print(f'\nTest accuracy per task ({SUMMARY_PATH}):\n\n{table}')


if __name__ == '__main__':
  app.run(main)
