"""Speed and memory of the frontends, as ratios to mel-filterbanks.

    .venv/bin/python benchmarks/benchmark_frontends.py
    .venv/bin/python benchmarks/benchmark_frontends.py --batches 32 \
        --seconds 1 --rounds 9
    .venv/bin/python benchmarks/benchmark_frontends.py --batches \
        --long-minutes 10   # only the long-clip table

Prints one Markdown table: for each frontend (and LEAF's implementation), at
batch sizes 1 and 32 and clip lengths 1 s and 10 s at 16 kHz, the median
time of a forward pass, of a forward+backward pass, their ratios to
`MelFilterbanks` at the same batch and length, and the peak memory of the
forward+backward pass.

How it measures:
- every call is a `tf.function` (traced and warmed up first), on 2 s / 20 s of
  Gaussian noise times 0.1 cut to the clip length;
- forward+backward is the gradient of `sum(features * w)` (w a fixed random
  tensor) with respect to the frontend's trainable weights; MelFilterbanks has
  none, so its backward is the gradient with respect to the waveform;
- the frontends are timed in interleaved rounds (every frontend once per
  round), and each entry is the median over the rounds, so that a machine
  shared with other work slows all of them alike; the ratio of two medians
  taken on the same rounds is what to compare across machines;
- each setting (batch size and clip length) runs in a process of its own,
  all frontends together: in one long process a setting's times depended on
  the settings before it (fast LEAF at batch 1 x 10 s: 1.7x mel's forward
  time on its own, 2.2x after the 1 s settings, mel's own time unchanged),
  which no user's program sees; `--in-process` runs them all in this one;
- peak memory is TensorFlow's CPU allocator's peak during a
  forward+backward call (the least over five calls: it varies with the
  order the ops run in), minus what was allocated before it (the inputs and
  weights), from `tf.config.experimental.get_memory_info`. Those statistics
  count only allocations of about 256 KB and more (measured: a 240 KB tensor
  is not counted, a 256 KB one is), so at small sizes (mel at batch 1 x 1 s
  peaks at 0.4 MB counted) they miss most of what is allocated; the ratio is
  printed only where mel's counted peak is at least `MIN_PEAK_FOR_RATIO`.
  TensorFlow keeps these statistics only with its BFC allocator on CPU,
  which this script turns on (`TF_CPU_ALLOCATOR_USE_BFC`) unless the
  environment says otherwise.

`--long-minutes M` adds a second table: one clip of M minutes at batch 1
(`LONG_FRONTENDS`), with the peak memory of the forward pass and of the
forward+backward pass (one call each) and their times (the median of
`--long-rounds` calls, 1 by default: a 10-minute clip takes seconds to a
minute per call on 2 cores).
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# TensorFlow keeps CPU allocator statistics (and lets them be reset) only
# with its BFC allocator; without it the peak-memory column cannot be read
# ("Cannot reset memory stats for device 'CPU:0'").
os.environ.setdefault('TF_CPU_ALLOCATOR_USE_BFC', 'true')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top


# benchmarks/harness.py: this script's folder is first on sys.path.
import harness  # pylint: disable=g-import-not-at-top

SAMPLE_RATE = 16000
# Mel's counted peak below which the memory ratio is not printed (see above).
MIN_PEAK_FOR_RATIO = 2**20

FRONTENDS = harness.FRONTENDS
# The frontends of the long-clip table (SincNet's direct convolution takes
# about 15 s per forward+backward minute of audio and 0.5 GB per minute).
LONG_FRONTENDS = ('Mel', 'LEAF conv (default)', 'LEAF fast', 'TD-fbanks')


def _make_steps(layer, waveform, seed=0):
  """The forward and forward+backward `tf.function`s of one frontend."""
  features = layer(waveform)
  weights = tf.constant(np.random.default_rng(seed).standard_normal(
      features.shape).astype(np.float32))
  variables = layer.trainable_variables

  @tf.function
  def forward():
    return tf.reduce_sum(layer(waveform))

  @tf.function
  def forward_backward():
    with tf.GradientTape() as tape:
      if not variables:
        tape.watch(waveform)
      loss = tf.reduce_sum(layer(waveform) * weights)
    grads = tape.gradient(loss, variables or [waveform])
    return [tf.reduce_sum(g) for g in grads]

  return forward, forward_backward


def _time(step):
  start = time.perf_counter()
  result = step()
  tf.nest.map_structure(lambda t: t.numpy(), result)
  return time.perf_counter() - start


def _peak_memory(step):
  """Bytes allocated at the peak of one call, beyond what was allocated."""
  tf.config.experimental.reset_memory_stats('CPU:0')
  before = tf.config.experimental.get_memory_info('CPU:0')['current']
  _time(step)
  return tf.config.experimental.get_memory_info('CPU:0')['peak'] - before


def measure(names, batch, seconds, rounds):
  """{name: (forward s, forward+backward s, peak bytes)} for one setting."""
  rng = np.random.default_rng(1)
  waveform = tf.constant(0.1 * rng.standard_normal(
      (batch, seconds * SAMPLE_RATE)).astype(np.float32))
  steps = {}
  for name in names:
    layer = FRONTENDS[name]()
    steps[name] = _make_steps(layer, waveform)
    for step in steps[name]:  # trace and warm up
      _time(step)
  # Mel at batch 32 x 10 s peaks at 253, 316 or 433 MB depending on the call
  # (the order its ops happen to run in): the least of five calls, the
  # memory the computation needs, is what is compared.
  memory = {name: min(_peak_memory(steps[name][1]) for _ in range(5))
            for name in names}
  times = {name: ([], []) for name in names}
  for _ in range(rounds):
    for name in names:
      for kind in (0, 1):
        times[name][kind].append(_time(steps[name][kind]))
  return {name: (statistics.median(times[name][0]),
                 statistics.median(times[name][1]), memory[name])
          for name in names}


def measure_long(names, minutes, rounds):
  """{name: (forward s, forward+backward s, forward peak bytes,
  forward+backward peak bytes)} for one clip of `minutes` at batch 1."""
  rng = np.random.default_rng(1)
  waveform = tf.constant(0.1 * rng.standard_normal(
      (1, int(minutes * 60 * SAMPLE_RATE))).astype(np.float32))
  results = {}
  for name in names:
    layer = FRONTENDS[name]()
    steps = _make_steps(layer, waveform)
    for step in steps:  # trace
      _time(step)
    peaks = [_peak_memory(step) for step in steps]
    times = [statistics.median(_time(step) for _ in range(rounds))
             for step in steps]
    results[name] = (*times, *peaks)
  return results


def _measure_in_subprocess(names, batch, seconds, rounds, long_minutes=0):
  """`measure` (or `measure_long` of `long_minutes`) in a fresh Python
  process (see the module docstring)."""
  args = ['--batches', str(batch), '--seconds', str(seconds), '--rounds',
          str(rounds), '--frontends', *names]
  if long_minutes:
    args += ['--long-minutes', str(long_minutes)]
  setting = (f'{long_minutes:g} min' if long_minutes else
             f'batch {batch} x {seconds} s')
  return harness.run_worker(__file__, args, setting)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batches', type=int, nargs='*', default=[1, 32])
  parser.add_argument('--seconds', type=int, nargs='*', default=[1, 10])
  parser.add_argument('--rounds', type=int, default=7,
                      help='interleaved timing rounds (median reported)')
  parser.add_argument('--frontends', nargs='+', default=list(FRONTENDS),
                      choices=list(FRONTENDS))
  parser.add_argument('--long-minutes', type=float, default=0,
                      help='also measure one clip of this many minutes at '
                      'batch 1 (0: not)')
  parser.add_argument('--long-rounds', type=int, default=1,
                      help='timed calls of the long clip (median reported)')
  parser.add_argument('--in-process', action='store_true',
                      help='measure every setting in this process')
  parser.add_argument('--worker', action='store_true',
                      help=argparse.SUPPRESS)  # one setting, JSON out
  args = parser.parse_args()
  names = ['Mel'] + [n for n in args.frontends if n != 'Mel']
  if args.worker:
    if args.long_minutes:
      print(json.dumps(measure_long(names, args.long_minutes, args.rounds)))
    else:
      print(json.dumps(measure(names, args.batches[0], args.seconds[0],
                               args.rounds)))
    return
  print(harness.machine_line('TensorFlow', tf.__version__) + '\n')
  if args.batches and args.seconds:
    print('| frontend | batch | clip | forward ms | fwd+bwd ms | forward / mel '
          '| fwd+bwd / mel | peak MB (fwd+bwd) | peak / mel |')
    print('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for seconds in args.seconds:
    for batch in args.batches:
      if args.in_process:
        results = measure(names, batch, seconds, args.rounds)
      else:
        results = _measure_in_subprocess(names, batch, seconds, args.rounds)
      mel_fwd, mel_fb, mel_mem = results['Mel']
      for name in names:
        fwd, fb, mem = results[name]
        memory_ratio = (f'{mem / mel_mem:.1f}x'
                        if mel_mem >= MIN_PEAK_FOR_RATIO else 'n/a')
        print(f'| {name} | {batch} | {seconds} s | {fwd * 1e3:.1f} | '
              f'{fb * 1e3:.1f} | {fwd / mel_fwd:.1f}x | {fb / mel_fb:.1f}x | '
              f'{mem / 2**20:.1f} | {memory_ratio} |', flush=True)
  if args.long_minutes:
    _print_long(names, args)
  print(f'\nLoad average {os.getloadavg()[0]:.1f} at the end.')


def _print_long(names, args):
  """The long-clip table (`--long-minutes`)."""
  names = [name for name in names if name in LONG_FRONTENDS]
  minutes = args.long_minutes
  if args.in_process:
    results = measure_long(names, minutes, args.long_rounds)
  else:
    results = _measure_in_subprocess(names, 1, 0, args.long_rounds, minutes)
  print(f'\n| frontend | batch | clip | forward ms | fwd+bwd ms | '
        'forward / mel | fwd+bwd / mel | peak MB (forward) | '
        'peak MB (fwd+bwd) | peak / mel (forward) | peak / mel (fwd+bwd) |')
  print('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | '
        '---: | ---: |')
  mel = results['Mel']
  for name in names:
    fwd, fb, fwd_mem, fb_mem = results[name]
    print(f'| {name} | 1 | {minutes:g} min | {fwd * 1e3:.0f} | '
          f'{fb * 1e3:.0f} | {fwd / mel[0]:.1f}x | {fb / mel[1]:.1f}x | '
          f'{fwd_mem / 2**20:.1f} | {fb_mem / 2**20:.1f} | '
          f'{fwd_mem / mel[2]:.1f}x | {fb_mem / mel[3]:.1f}x |', flush=True)


if __name__ == '__main__':
  main()
