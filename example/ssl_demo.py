"""The self-supervised demo: COLA pre-training and linear probes on the
bundled corpus (`python -m example.ssl_demo`, `make ssl-demo`).

For each frontend (LEAF initialized on the mel scale, LEAF initialized at
random, SincNet, mel-filterbanks):

1. `example.pretrain` (a child process) on configs/ssl/<frontend>.gin +
   configs/ssl/demo.gin: COLA on the training clips of data/demo_corpus's
   three tasks, without their labels (the test clips stay unseen);
2. a linear probe per task on the frozen, pre-trained frontend and encoder:
   the encoder's max-pooled output (the embedding `AudioClassifier`'s heads
   read) of every 1 s window of the task's train and test clips, computed
   once in inference mode; a softmax regression on the train embeddings
   (standardized with the train statistics), `--probe_seeds` times from
   different head initializations; test accuracy with the logits averaged
   over each clip's windows, as `example.main` evaluates;
3. the same probe on an untrained frontend and encoder (the floor), built
   from the same config with `--floor_runs` random initializations.

Probing embeddings computed once, rather than running `example.main` with
`train.init_from` and `train.freeze = 'encoder'` (the same linear heads on
the same frozen layers), lets the heads train for many steps in seconds on
two CPU cores; `example.main`'s probe costs a frontend and encoder forward
pass per step, plus evaluation and export, for every probe.

It writes runs/ssl_demo/results.json (every run's test accuracy) and
runs/ssl_demo/summary.md: mean test accuracy per task with the range over
the runs. Finished pre-trainings are reused and interrupted ones resume.
"""

import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags
import gin
import keras
import numpy as np
import tensorflow as tf

from . import callbacks
from . import cola
from . import data
from . import main as main_lib
from . import pretrained
from . import pretraining  # pylint: disable=unused-import (pretrain.* bindings)
from . import probing
from . import tasks as tasks_lib

REPO_ROOT = main_lib.REPO_ROOT
# key -> (name in the table, pre-training config).
FRONTENDS = {
    'leaf': ('LEAF (mel init)', 'configs/ssl/leaf.gin'),
    'leaf_random': ('LEAF (random init)', 'configs/ssl/leaf_random.gin'),
    'sincnet': ('SincNet', 'configs/ssl/sincnet.gin'),
    'mel': ('mel', 'configs/ssl/mel.gin'),
}
DEMO_CONFIG = 'configs/ssl/demo.gin'

flags.DEFINE_string('workdir', 'runs/ssl_demo', 'Where every run goes.')
flags.DEFINE_list('frontends', list(FRONTENDS), 'Frontends, in order.')
flags.DEFINE_integer('floor_runs', 3, 'Untrained networks probed per '
                     'frontend.')
flags.DEFINE_integer('probe_seeds', 3, 'Head initializations per probe.')
flags.DEFINE_integer('probe_steps', 500, 'Full-batch Adam steps of a probe.')
flags.DEFINE_multi_string('bindings', [], 'Gin bindings added to every '
                          'pre-training (e.g. a tiny size for a check).')
flags.DEFINE_bool('skip_pretraining', False, 'Probe each workdir\'s '
                  'pretrained.keras as it stands (after its last completed '
                  'epoch), without pre-training further.')
FLAGS = flags.FLAGS


def _child(module: str, configs: Sequence[str], bindings: Sequence[str],
           log_path: str) -> float:
  """Runs `python -m module` with the configs and bindings; its wall time.

  Raises:
    RuntimeError: the run failed (its log is named).
  """
  env = dict(os.environ)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  command = [sys.executable, '-m', module]
  command += [f'--gin_config={c}' for c in configs]
  command += [f'--gin_bindings={b}' for b in bindings]
  start = time.monotonic()
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, 'a') as log:
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=log,
                          stderr=subprocess.STDOUT)
  if done.returncode:
    raise RuntimeError(f'{" ".join(command)} failed; see {log_path}')
  return time.monotonic() - start


def pretrain(key: str, workdir: str, extra: Sequence[str]) -> Optional[float]:
  """Pre-trains one frontend unless done; its wall time (None: reused)."""
  if os.path.exists(os.path.join(workdir, 'operative_config.gin')):
    return None
  return _child('example.pretrain', [FRONTENDS[key][1], DEMO_CONFIG],
                [f"pretrain.workdir = '{workdir}'"] + list(extra),
                os.path.join(workdir, 'log.txt'))


def _parse(key: str) -> None:
  gin.clear_config()
  main_lib.parse_config([FRONTENDS[key][1], DEMO_CONFIG], [])


def untrained(key: str, seed: int) -> cola.ColaModel:
  """The frontend and encoder of `key`'s config, freshly initialized."""
  _parse(key)
  try:
    keras.utils.set_random_seed(seed)
    model = cola.from_gin()
  finally:
    gin.clear_config()
  model((tf.zeros([1, data.WINDOW]),) * 2)
  return model


def _cell(values: List[float]) -> str:
  if not values:
    return ''
  mean = 100 * float(np.mean(values))
  if len(values) == 1:
    return f'{mean:.1f}'
  return f'{mean:.1f} ({100 * min(values):.0f}-{100 * max(values):.0f})'


def format_table(results: Dict, tasks: Sequence[str]) -> str:
  """Markdown: one row per frontend and kind (probe, floor, supervised)."""
  lines = ['| frontend | probe of | COLA steps | ' + ' | '.join(tasks) +
           ' |', '|---|---|---:|' + '---:|' * len(tasks)]
  kinds = (('probe', 'COLA pre-trained'), ('floor', 'untrained (floor)'))
  for key, result in results.items():
    for kind, label in kinds:
      runs = result.get(kind) or []
      if runs:
        cells = [_cell([r[t] for r in runs if t in r]) for t in tasks]
        steps = result.get('pretrain_steps', '') if kind == 'probe' else 0
        lines.append(f'| {FRONTENDS[key][0]} | {label} | {steps} | ' +
                     ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  unknown = [k for k in FLAGS.frontends if k not in FRONTENDS]
  if unknown:
    raise app.UsageError(f'unknown --frontends {unknown}; expected some of '
                         f'{list(FRONTENDS)}')
  root = os.path.join(REPO_ROOT, FLAGS.workdir)
  _parse(FLAGS.frontends[0])
  try:
    datasets = gin.query_parameter('pretrain.datasets')
    data_dir = gin.query_parameter('pretrain.data_dir')
  finally:
    gin.clear_config()
  tasks = tasks_lib.load_tasks(datasets, os.path.join(REPO_ROOT, data_dir))
  seeds = list(range(FLAGS.probe_seeds))
  results_path = os.path.join(root, 'results.json')
  results = {}
  if os.path.exists(results_path):
    with open(results_path) as f:
      results = json.load(f)
  for key in FLAGS.frontends:
    pre_dir = os.path.join(root, key, 'pretrain')
    seconds = None
    if not FLAGS.skip_pretraining:
      seconds = pretrain(key, pre_dir, FLAGS.bindings)
    state = callbacks.Backup(os.path.join(pre_dir, 'state')).state()
    print(f'{key}: pre-trained in {pre_dir}, {state["epoch"]} epoch(s), '
          f'{state["iterations"]} steps' +
          ('' if seconds is None else f' ({seconds / 60:.1f} min)'),
          flush=True)
    result = {'pretrain_seconds': seconds,
              'pretrain_epochs': state['epoch'],
              'pretrain_steps': state['iterations'],
              'probe': probing.probe(pretrained.load(pre_dir), tasks, seeds,
                             FLAGS.probe_steps),
              'floor': []}
    print(f'{key} probe: {result["probe"]}', flush=True)
    for run in range(FLAGS.floor_runs):
      result['floor'] += probing.probe(untrained(key, 1000 + run), tasks,
                                        seeds[:1],
                               FLAGS.probe_steps)
      print(f'{key} floor {run}: {result["floor"][-1]}', flush=True)
    # Merged with what the file holds now (another invocation may be
    # probing other frontends into the same workdir).
    if os.path.exists(results_path):
      with open(results_path) as f:
        results = {**json.load(f), **results}
    results[key] = result
    with open(results_path + '.tmp', 'w') as f:
      json.dump(results, f, indent=2)
    os.replace(results_path + '.tmp', results_path)
  task_names = [t.name for t in tasks]
  table = format_table(results, task_names)
  with open(os.path.join(root, 'summary.md'), 'w') as f:
    f.write(table)
  print(f'\nTest accuracy (%), mean (min-max): probes over {len(seeds)} head '
        f'seed(s) of one pre-training, floors over {FLAGS.floor_runs} '
        f'untrained network(s):\n\n{table}')


if __name__ == '__main__':
  app.run(main)
