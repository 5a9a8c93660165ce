"""The self-supervised demo: COLA pre-training and linear probes on the
bundled corpus (`python -m example.ssl_demo`, `make ssl-demo`).

For each of `--seeds` seeds and, within it, each frontend (LEAF initialized
on the mel scale, LEAF initialized at random, SincNet, mel-filterbanks):

1. `example.pretrain` (a child process) on configs/ssl/<frontend>.gin +
   configs/ssl/demo.gin, with `pretrain.seed` (and, for random LEAF, the
   filters' `RandomGaborInit.seed`) set to the seed: COLA on the training
   clips of data/demo_corpus's three tasks, without their labels (the test
   clips stay unseen). Every frontend runs the same number of steps (the
   config's pretrain.num_epochs x pretrain.steps_per_epoch);
2. a linear probe per task on the frozen, pre-trained frontend and encoder:
   the encoder's max-pooled output (the embedding `AudioClassifier`'s heads
   read) of every 1 s window of the task's train, validation and test clips,
   computed once in inference mode (no dropout); a softmax regression on the
   train embeddings (standardized with the train statistics), its L2 weight
   chosen on the validation clips (`probing.probe`), `--probe_seeds` head
   initializations; test accuracy with the logits averaged over each clip's
   windows, as `example.main` evaluates;
3. the same probe on the same frontend and encoder untrained (the floor),
   one per seed (seeds 1000 + i).

Probing embeddings computed once, rather than running `example.main` with
`train.init_from` and `train.freeze = 'encoder'` (the same linear heads on
the same frozen layers), lets the heads train for many steps in seconds on
two CPU cores; `example.main`'s probe costs a frontend and encoder forward
pass per step, plus evaluation and export, for every probe.

It writes runs/ssl_demo/<frontend>/seed<s>/results.json as each probe ends
(the run's test accuracies, steps, wall and CPU time; invocations with
different --frontends or --seeds can run in parallel),
runs/ssl_demo/results.json (all of them) and runs/ssl_demo/summary.md, over
every frontend and seed probed so far: per task, the mean over seeds
(each seed's value the mean over its head seeds) with the standard
deviation and range, for the probes and the floors, and the supervised
accuracy of `make demo` where runs/demo holds it. Finished pre-trainings
are reused and interrupted ones resume; a seed's probes and floor are
reused while its pre-training (operative config, steps) and the probe flags
stay the same.
"""

import hashlib
import json
import os
import resource
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
from . import console
from . import data
from . import demo
from . import main as main_lib
from . import pretrained
from . import pretraining  # pylint: disable=unused-import (pretrain.* bindings)
from . import probing
from . import tasks as tasks_lib

REPO_ROOT = demo.REPO_ROOT
# key -> (name in the table, pre-training config, bindings of seed s).
FRONTENDS = {
    'leaf': ('LEAF (mel init)', 'configs/ssl/leaf.gin', lambda s: []),
    # Random filters drawn again for every seed.
    'leaf_random': ('LEAF (random init)', 'configs/ssl/leaf_random.gin',
                    lambda s: [f'RandomGaborInit.seed = {s}']),
    'sincnet': ('SincNet', 'configs/ssl/sincnet.gin', lambda s: []),
    'mel': ('mel', 'configs/ssl/mel.gin', lambda s: []),
}
DEMO_CONFIG = 'configs/ssl/demo.gin'
RESULTS_FILE = 'results.json'
# Seeds of the untrained networks (floors): apart from the pre-trainings'.
FLOOR_SEED = 1000

DEFAULT_WORKDIR = 'runs/ssl_demo'
# Shared with the other programs that take --workdir (absl refuses a second
# definition in one process), hence no default here.
console.define_workdir_flag(f'Where every run goes (default '
                            f'{DEFAULT_WORKDIR}, under the repository).')
flags.DEFINE_list('frontends', list(FRONTENDS), 'Frontends, in order.')
flags.DEFINE_list('seeds', ['0', '1'], 'Seeds of the pre-trainings (and of '
                  'the untrained floors, 1000 + seed) of each frontend; '
                  'invocations with different seeds can run in parallel.')
flags.DEFINE_integer('probe_seeds', 2, 'Head initializations per probe.')
flags.DEFINE_integer('probe_steps', 500, 'Full-batch Adam steps of a probe.')
flags.DEFINE_multi_string('bindings', [], 'Gin bindings added to every '
                          'pre-training and floor (e.g. a tiny size for a '
                          'check).')
flags.DEFINE_bool('skip_pretraining', False, 'Probe each workdir\'s '
                  'pretrained.keras as it stands (after its last completed '
                  'epoch), without pre-training further.')
FLAGS = flags.FLAGS


def _child(module: str, configs: Sequence[str], bindings: Sequence[str],
           log_path: str) -> Dict[str, float]:
  """Runs `python -m module` with the configs and bindings; its wall and
  CPU seconds (user + system of the child).

  Raises:
    RuntimeError: the run failed (its log is named).
  """
  env = dict(os.environ)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  command = [sys.executable, '-m', module]
  command += [f'--gin_config={c}' for c in configs]
  command += [f'--gin_bindings={b}' for b in bindings]
  start = time.monotonic()
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, 'a') as log:
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=log,
                          stderr=subprocess.STDOUT)
  if done.returncode:
    raise RuntimeError(f'{" ".join(command)} failed; see {log_path}')
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  return {'wall_seconds': time.monotonic() - start,
          'cpu_seconds': (after.ru_utime - before.ru_utime +
                          after.ru_stime - before.ru_stime)}


def bindings(key: str, seed: int, extra: Sequence[str] = ()) -> List[str]:
  """The gin bindings of `key`'s run of seed `seed`."""
  return FRONTENDS[key][2](seed) + list(extra)


def _state(workdir: str) -> Optional[Dict]:
  return callbacks.Backup(os.path.join(workdir, 'state')).state()


def pretrain(key: str, seed: int, workdir: str, num_epochs: int,
             extra: Sequence[str]) -> Optional[Dict[str, float]]:
  """Pre-trains one frontend with one seed unless its `num_epochs` are
  done; its wall and CPU seconds (None: reused as it was)."""
  state = _state(workdir)
  if state is not None and state['epoch'] >= num_epochs and os.path.exists(
      os.path.join(workdir, 'operative_config.gin')):
    return None
  return _child('example.pretrain', [FRONTENDS[key][1], DEMO_CONFIG],
                [f"pretrain.workdir = '{workdir}'", f'pretrain.seed = {seed}']
                + bindings(key, seed, extra),
                os.path.join(workdir, 'log.txt'))


def probe_settings(pre_dir: str) -> Dict:
  """What a seed's probes and floor depend on besides their seeds: a digest
  of the pre-training's operative config (None before it is written) and
  the probe flags."""
  path = os.path.join(pre_dir, 'operative_config.gin')
  digest = None
  if os.path.exists(path):
    with open(path, 'rb') as f:
      digest = hashlib.sha1(f.read()).hexdigest()[:16]
  return {'operative_config': digest, 'probe_seeds': FLAGS.probe_seeds,
          'probe_steps': FLAGS.probe_steps, 'bindings': list(FLAGS.bindings)}


def _parse(key: str, extra: Sequence[str] = ()) -> None:
  gin.clear_config()
  main_lib.parse_config([FRONTENDS[key][1], DEMO_CONFIG], list(extra))


def untrained(key: str, seed: int, extra: Sequence[str] = ()
              ) -> cola.ColaModel:
  """The frontend and encoder of `key`'s config, freshly initialized with
  `seed` (random LEAF filters drawn with it too)."""
  _parse(key, bindings(key, seed, extra))
  try:
    keras.utils.set_random_seed(seed)
    model = cola.from_gin()
  finally:
    gin.clear_config()
  model((tf.zeros([1, data.WINDOW]),) * 2)
  return model


def _cell(stats: Optional[Dict]) -> str:
  if stats is None:
    return ''
  if stats['runs'] == 1:
    return f'{100 * stats["mean"]:.1f}'
  return (f'{100 * stats["mean"]:.1f} ± {100 * stats["std"]:.1f} '
          f'({100 * stats["min"]:.0f}-{100 * stats["max"]:.0f})')


def supervised(tasks: Sequence[str]) -> Dict[str, Dict[str, float]]:
  """Test accuracy of `make demo`'s runs (frontend -> task -> accuracy),
  those runs/demo holds."""
  found = {}
  for name, config in demo.FRONTENDS:
    workdir, _ = demo.run_settings(os.path.join(REPO_ROOT, config))
    path = os.path.join(workdir, 'metrics.json')
    if os.path.exists(path):
      with open(path) as f:
        metrics = json.load(f)
      found[name] = {t: metrics[t]['accuracy'] for t in tasks if t in metrics}
  return found


def format_table(results: Dict, tasks: Sequence[str],
                 reference: Optional[Dict] = None) -> str:
  """Markdown: per frontend, the probes of its pre-trainings and of its
  untrained networks (floor), then `make demo`'s supervised accuracy."""
  lines = ['| frontend | probe of | runs | COLA steps | ' + ' | '.join(tasks) +
           ' |', '|---|---|---:|---:|' + '---:|' * len(tasks)]
  for key, result in results.items():
    pre = result.get('pretrained', [])
    steps = sorted({r['steps'] for r in pre})
    kinds = (('COLA pre-trained', [r['probe'] for r in pre],
              '/'.join(str(s) for s in steps)),
             ('untrained (floor)', result.get('floor', []), '0'))
    for label, runs, steps_text in kinds:
      if runs:
        cells = [_cell(probing.summarize(runs, t)) for t in tasks]
        lines.append(f'| {FRONTENDS[key][0]} | {label} | {len(runs)} | '
                     f'{steps_text} | ' + ' | '.join(cells) + ' |')
  for name, accuracy in (reference or {}).items():
    cells = [f'{100 * accuracy[t]:.1f}' if t in accuracy else ''
             for t in tasks]
    lines.append(f'| {name} | supervised (`make demo`) | 1 | | ' +
                 ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def _load_results(path: str) -> Dict:
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return {}


def collect(root: str) -> Dict:
  """Every frontend's results under `root`, from each seed's results file:
  key -> {'pretrained': [run, ...], 'floor': [probe, ...]} (seed order)."""
  results = {}
  for key in FRONTENDS:
    folder = os.path.join(root, key)
    names = sorted((n for n in (os.listdir(folder) if os.path.isdir(folder)
                                else []) if n.startswith('seed')),
                   key=lambda n: int(n[4:]) if n[4:].isdigit() else -1)
    found = {'pretrained': [], 'floor': []}
    for name in names:
      seed_result = _load_results(os.path.join(folder, name, RESULTS_FILE))
      if 'pretrained' in seed_result:
        found['pretrained'].append(seed_result['pretrained'])
      if 'floor' in seed_result:
        found['floor'].append(seed_result['floor'])
    if found['pretrained'] or found['floor']:
      results[key] = found
  return results


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  unknown = [k for k in FLAGS.frontends if k not in FRONTENDS]
  if unknown:
    raise app.UsageError(f'unknown --frontends {unknown}; expected some of '
                         f'{list(FRONTENDS)}')
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError:
    raise app.UsageError(f'--seeds must be ints, got {FLAGS.seeds}') from None
  if not seeds or min(seeds) < 0 or FLAGS.probe_seeds < 1:
    raise app.UsageError('--seeds must be ints >= 0 and --probe_seeds >= 1')
  root = os.path.join(REPO_ROOT, FLAGS.workdir or DEFAULT_WORKDIR)
  _parse(FLAGS.frontends[0], FLAGS.bindings)
  try:
    datasets = gin.query_parameter('pretrain.datasets')
    data_dir = gin.query_parameter('pretrain.data_dir')
    num_epochs = gin.query_parameter('pretrain.num_epochs')
  finally:
    gin.clear_config()
  tasks = tasks_lib.load_tasks(datasets, os.path.join(REPO_ROOT, data_dir))
  head_seeds = list(range(FLAGS.probe_seeds))
  # Seed-major: every frontend's first seed before any second one, so that a
  # run stopped early has compared all the frontends.
  for seed in seeds:
    for key in FLAGS.frontends:
      seed_dir = os.path.join(root, key, f'seed{seed}')
      pre_dir = os.path.join(seed_dir, 'pretrain')
      cost = None
      if not FLAGS.skip_pretraining:
        cost = pretrain(key, seed, pre_dir, num_epochs, FLAGS.bindings)
      state = _state(pre_dir)
      print(f'{key} seed {seed}: pre-trained in {pre_dir}, '
            f'{state["epoch"]} epoch(s), {state["iterations"]} steps' +
            ('' if cost is None else
             f' ({cost["wall_seconds"] / 60:.1f} min, '
             f'{cost["cpu_seconds"] / 60:.1f} CPU min)'), flush=True)
      # Probes are reused when nothing they depend on changed: the
      # pre-training (its operative config and steps) and the probe flags.
      settings = probe_settings(pre_dir)
      previous = _load_results(os.path.join(seed_dir, RESULTS_FILE))
      same = previous.get('settings') == settings
      run = previous.get('pretrained')
      if same and run and run['steps'] == state['iterations']:
        print(f'{key} seed {seed} probe: reused', flush=True)
      else:
        start = time.process_time()
        run = {'seed': seed, 'epochs': state['epoch'],
               'steps': state['iterations'], 'cost': cost,
               'probe': probing.probe(pretrained.load(pre_dir), tasks,
                                      head_seeds, FLAGS.probe_steps)}
        run['probe_cpu_seconds'] = time.process_time() - start
        print(f'{key} seed {seed} probe: {run["probe"]}', flush=True)
        # Saved at once: a run stopped later keeps what it measured.
        callbacks.write_json(os.path.join(seed_dir, RESULTS_FILE),
                             {'pretrained': run, 'settings': settings})
      floor = previous.get('floor')
      if same and floor:
        print(f'{key} floor {FLOOR_SEED + seed}: reused', flush=True)
      else:
        floor = probing.probe(
            untrained(key, FLOOR_SEED + seed, FLAGS.bindings), tasks,
            head_seeds, FLAGS.probe_steps)
        print(f'{key} floor {FLOOR_SEED + seed}: {floor}', flush=True)
      callbacks.write_json(os.path.join(seed_dir, RESULTS_FILE),
                           {'pretrained': run, 'floor': floor,
                            'settings': settings})
  results = collect(root)
  callbacks.write_json(os.path.join(root, RESULTS_FILE), results)
  steps = {r['steps'] for result in results.values()
           for r in result.get('pretrained', [])}
  if len(steps) > 1:
    print(f'WARNING: the pre-trainings ran different numbers of steps '
          f'({sorted(steps)}): the table compares unequal runs.', flush=True)
  task_names = [t.name for t in tasks]
  table = format_table(results, task_names, supervised(task_names))
  callbacks.write_text(os.path.join(root, 'summary.md'), table)
  print(f'\nTest accuracy (%): mean ± standard deviation (min-max) over '
        f'runs (pre-trainings or untrained networks, seeds), each run the '
        f'mean of {len(head_seeds)} probe head seed(s):\n\n{table}')


if __name__ == '__main__':
  app.run(main)
