"""The self-supervised demo: COLA pre-training and linear probes on the
bundled corpus (`python -m example.ssl_demo`, `make ssl-demo`).

For each frontend (LEAF initialized on the mel scale, LEAF initialized at
random, SincNet, mel-filterbanks), in its own child processes:

1. `example.pretrain` on configs/ssl/<frontend>.gin + configs/ssl/demo.gin:
   COLA on the training clips of data/demo_corpus's three tasks, without
   their labels (the test clips stay unseen);
2. `example.main` with `train.init_from` = that workdir and
   `train.freeze = 'encoder'`: a linear probe (one head per task) on the
   frozen, pre-trained frontend and encoder, `--runs` times;
3. the same probe on an untrained frontend and encoder (`train.init_from =
   None`): the floor, `--runs` times.

It writes runs/ssl_demo/results.json (every run's test accuracy) and
runs/ssl_demo/summary.md: mean test accuracy per task over the runs, with
the range, next to the supervised accuracy of `make demo` when its runs are
there. Finished runs are reused and interrupted ones resume, so a second
invocation only completes what is missing; `--bindings` adds gin bindings to
every run (e.g. a tiny size for a check).
"""

import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags
import numpy as np

from example import callbacks
from example import main as main_lib

REPO_ROOT = main_lib.REPO_ROOT
# key -> (name in the table, pre-training config).
FRONTENDS = {
    'leaf': ('LEAF (mel init)', 'configs/ssl/leaf.gin'),
    'leaf_random': ('LEAF (random init)', 'configs/ssl/leaf_random.gin'),
    'sincnet': ('SincNet', 'configs/ssl/sincnet.gin'),
    'mel': ('mel', 'configs/ssl/mel.gin'),
}
DEMO_CONFIG = 'configs/ssl/demo.gin'
# Supervised runs of `make demo` (configs/demo.gin, configs/demo_mel.gin).
SUPERVISED = {'leaf': 'runs/demo/leaf', 'mel': 'runs/demo/mel'}

flags.DEFINE_string('workdir', 'runs/ssl_demo', 'Where every run goes.')
flags.DEFINE_list('frontends', list(FRONTENDS), 'Frontends, in order.')
flags.DEFINE_integer('runs', 1, 'Probes (and floors) per frontend.')
flags.DEFINE_multi_string('bindings', [], 'Gin bindings added to every run.')
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


def _pretrained(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, 'operative_config.gin'))


def pretrain(key: str, workdir: str, extra: Sequence[str]) -> Optional[float]:
  """Pre-trains one frontend unless done; its wall time (None: reused)."""
  if _pretrained(workdir):
    return None
  return _child('example.pretrain', [FRONTENDS[key][1], DEMO_CONFIG],
                [f"pretrain.workdir = '{workdir}'"] + list(extra),
                os.path.join(workdir, 'log.txt'))


def probe(key: str, workdir: str, init_from: Optional[str],
          extra: Sequence[str]) -> Dict[str, float]:
  """A frozen-encoder probe (of `init_from`, or of an untrained network)."""
  metrics_path = os.path.join(workdir, 'metrics.json')
  if not os.path.exists(metrics_path):
    origin = 'None' if init_from is None else f"'{init_from}'"
    _child('example.main', [FRONTENDS[key][1], DEMO_CONFIG],
           [f"train.workdir = '{workdir}'", f'train.init_from = {origin}'] +
           list(extra), os.path.join(workdir, 'log.txt'))
  metrics = callbacks.read_json(metrics_path)
  return {task: m['accuracy'] for task, m in metrics.items()}


def _cell(values: List[float]) -> str:
  if not values:
    return ''
  mean = 100 * float(np.mean(values))
  if len(values) == 1:
    return f'{mean:.1f}'
  return f'{mean:.1f} ({100 * min(values):.0f}-{100 * max(values):.0f})'


def format_table(results: Dict, tasks: Sequence[str]) -> str:
  """Markdown: one row per frontend and kind (probe, floor, supervised)."""
  lines = ['| frontend | probe of | ' + ' | '.join(tasks) + ' |',
           '|---|---|' + '---:|' * len(tasks)]
  kinds = (('probe', 'COLA pre-trained'), ('floor', 'untrained (floor)'),
           ('supervised', 'supervised (make demo)'))
  for key, result in results.items():
    for kind, label in kinds:
      runs = result.get(kind) or []
      if runs:
        cells = [_cell([r[t] for r in runs if t in r]) for t in tasks]
        lines.append(f'| {FRONTENDS[key][0]} | {label} | ' +
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
  results = {}
  for key in FLAGS.frontends:
    pre_dir = os.path.join(root, key, 'pretrain')
    seconds = pretrain(key, pre_dir, FLAGS.bindings)
    print(f'{key}: pre-trained in {pre_dir}' +
          ('' if seconds is None else f' ({seconds / 60:.1f} min)'),
          flush=True)
    result = {'pretrain_seconds': seconds, 'probe': [], 'floor': []}
    for run in range(FLAGS.runs):
      result['probe'].append(probe(
          key, os.path.join(root, key, f'probe_{run}'), pre_dir,
          FLAGS.bindings))
      result['floor'].append(probe(
          key, os.path.join(root, key, f'floor_{run}'), None, FLAGS.bindings))
      print(f'{key} run {run}: probe {result["probe"][-1]}, floor '
            f'{result["floor"][-1]}', flush=True)
    supervised = os.path.join(REPO_ROOT, SUPERVISED.get(key, '-'),
                              'metrics.json')
    if os.path.exists(supervised):
      metrics = callbacks.read_json(supervised)
      result['supervised'] = [{t: m['accuracy'] for t, m in metrics.items()}]
    results[key] = result
  tasks = list(dict.fromkeys(
      t for r in results.values() for runs in (r['probe'], r['floor'])
      for run in runs for t in run))
  table = format_table(results, tasks)
  with open(os.path.join(root, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(root, 'summary.md'), 'w') as f:
    f.write(table)
  print(f'\nTest accuracy (%), mean (min-max) over {FLAGS.runs} run(s):\n\n'
        f'{table}')


if __name__ == '__main__':
  app.run(main)
