"""COLA pre-training speed per frontend, as ratios to mel-filterbanks.

    .venv/bin/python benchmarks/benchmark_pretrain.py   # ~9 min at load 5
    .venv/bin/python benchmarks/benchmark_pretrain.py --segment_seconds 0.96 \
        --steps 5 --rounds 5 --encoder paper

Prints a Markdown table: for LEAF (exact, `implementation='conv'`), fast LEAF
(`implementation='fast'`), both from random filters (configs/ssl/
leaf_random.gin: its wide filters give the banded computation wide bands),
SincNet and mel-filterbanks, the median time of one COLA
training step (both views through frontend and encoder, the loss, Adam's
update) and steps per second, and each as a ratio to mel's median.

How it measures: each frontend's model is built from configs/ssl/<leaf|mel>
.gin with the demo's encoder (configs/ssl/demo.gin: a 4-block ConvNet) or the
paper's (--encoder paper: EfficientNetB0), compiled as `example.pretrain`
compiles it, and trained with `train_on_batch` on fixed batches of Gaussian
noise times 0.1 (no input pipeline: the step alone). The defaults are the
ssl demo's step (32 clips x 2 views x 0.5 s, configs/ssl/demo.gin) and 3
rounds of 3 steps: on two CPU cores shared with other work (load 5-6) it
ran for 9 minutes, most of them building and tracing the six models (fast
LEAF, which plans its banded computation as it traces, 1.5-2.5 minutes
each; the others under a minute). After two warm-up steps,
the frontends are timed in interleaved rounds (every frontend `--steps`
steps per round), so that a machine shared with other work slows all of
them alike; each entry is the median over the rounds of the mean step time
within a round. The CPU columns give the process's CPU time per step
(user + system, all threads), which a shared machine inflates less than the
wall time.
"""

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import gin  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from example import cola  # pylint: disable=g-import-not-at-top
from example import main as main_lib  # pylint: disable=g-import-not-at-top
from example import pretraining  # pylint: disable=g-import-not-at-top,unused-import (pretrain.* bindings)

# Every row binds its implementation: configs/ssl/demo.gin (--encoder demo)
# binds Leaf.implementation = 'fast', so a row without a binding would time
# the fast mode under the exact mode's name.
EXACT = ["Leaf.implementation = 'conv'"]
FAST = ["Leaf.implementation = 'fast'"]
FRONTENDS = (('LEAF', 'leaf', EXACT),
             ('fast LEAF', 'leaf', FAST),
             ('LEAF, random init', 'leaf_random', EXACT),
             ('fast LEAF, random init', 'leaf_random', FAST),
             ('SincNet', 'sincnet', []),
             ('mel', 'mel', []))


def build(config, bindings, encoder, segment, learning_rate=3e-4):
  gin.clear_config()
  configs = [os.path.join(REPO, 'configs', 'ssl', f'{config}.gin')]
  if encoder == 'demo':
    configs.append(os.path.join(REPO, 'configs', 'ssl', 'demo.gin'))
  try:
    main_lib.parse_config(configs, bindings)
    model = cola.from_gin()
  finally:
    gin.clear_config()
  model((np.zeros([1, segment], 'float32'),) * 2)
  model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                loss=cola.cola_loss, metrics=[cola.pair_accuracy])
  return model


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--encoder', choices=('demo', 'paper'), default='demo')
  parser.add_argument('--segment_seconds', type=float, default=0.5)
  parser.add_argument('--frontends', nargs='+',
                      default=[name for name, _, _ in FRONTENDS],
                      choices=[name for name, _, _ in FRONTENDS],
                      help='names from the table (mel is always timed)')
  args = parser.parse_args()
  segment = int(round(args.segment_seconds * 16000))
  rng = np.random.default_rng(0)
  views = tuple(0.1 * rng.standard_normal((args.batch, segment)).astype(
      'float32') for _ in range(2))
  targets = np.zeros([args.batch], 'float32')
  models = {}
  for name, config, bindings in FRONTENDS:
    if name not in args.frontends and name != 'mel':
      continue
    start = time.perf_counter()
    models[name] = build(config, bindings, args.encoder, segment)
    for _ in range(2):
      models[name].train_on_batch(views, targets)
    print(f'{name}: built and warmed up in {time.perf_counter() - start:.0f} '
          's', file=sys.stderr, flush=True)
  times = {name: [] for name in models}
  cpu_times = {name: [] for name in models}
  for round_ in range(args.rounds):
    for name, model in models.items():
      start, cpu_start = time.perf_counter(), time.process_time()
      for _ in range(args.steps):
        model.train_on_batch(views, targets)
      times[name].append((time.perf_counter() - start) / args.steps)
      cpu_times[name].append((time.process_time() - cpu_start) / args.steps)
    print(f'round {round_ + 1}: ' + ', '.join(
        f'{name} {times[name][-1]:.2f} s ({cpu_times[name][-1]:.2f} CPU s)'
        for name in models), file=sys.stderr, flush=True)
  mel = statistics.median(times['mel'])
  mel_cpu = statistics.median(cpu_times['mel'])
  print(f'COLA training step, batch {args.batch} x 2 views x '
        f'{args.segment_seconds} s, {args.encoder} encoder, median of '
        f'{args.rounds} rounds of {args.steps} steps:\n')
  print('| frontend | step (s) | steps / s | x mel | CPU s / step | '
        'CPU x mel |')
  print('|---|---:|---:|---:|---:|---:|')
  for name, values in times.items():
    median = statistics.median(values)
    cpu = statistics.median(cpu_times[name])
    print(f'| {name} | {median:.3f} | {1 / median:.2f} | '
          f'{median / mel:.2f} | {cpu:.2f} | {cpu / mel_cpu:.2f} |')


if __name__ == '__main__':
  main()
