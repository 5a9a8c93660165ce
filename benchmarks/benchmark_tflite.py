"""Size and per-clip latency of the TensorFlow Lite models, LEAF against mel.

    python benchmarks/benchmark_tflite.py [--rounds 21] [--threads 1]

For the LEAF and mel frontends alone and for the demo's classifiers around
them (configs/demo.gin and configs/demo_mel.gin: frontend, 4-block ConvNet,
three heads; their weights do not change the cost), converted with builtin
ops only (`leaf_audio.tflite`; LEAF both by its direct convolution and
`implementation='fast'`, its pooled energies on the fast mode's grid) in
float32, float16 and dynamic-range int8:
the .tflite size and the median time of one LiteRT `invoke` on a 1 s clip
at 16 kHz (batch 1), as a ratio to the mel model of the same kind and
quantization, with Keras' time for the same computation (a traced
`tf.function`, same process) for reference. Each round times every model
once, in turn, so that a load varying over the run weighs on all alike.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gin  # pylint: disable=g-import-not-at-top
import numpy as np
import tensorflow as tf

from example import config_files
from example import export_tflite
from example import train
from leaf_audio import tflite

QUANTIZATIONS = (None, 'float16', 'dynamic_int8')


def build(config):
  """The classifier a demo config builds (3 tasks), untrained."""
  gin.clear_config()
  config_files.parse([config], [], finalize=False)
  model = train.build_model({'keywords': 10, 'speaker': 10, 'instrument': 8},
                            1e-3, False)
  gin.clear_config()
  return model


def interleaved_medians(fns, rounds):
  """Median wall time in ms of each of `fns` over `rounds` rounds, after 3
  warm-ups; each round calls every function once, in turn, so that a
  varying load on the machine weighs on all of them alike."""
  for _ in range(3):
    for fn in fns:
      fn()
  times = [[] for _ in fns]
  for _ in range(rounds):
    for fn, spent in zip(fns, times):
      start = time.perf_counter()
      fn()
      spent.append(1e3 * (time.perf_counter() - start))
  return [statistics.median(t) for t in times]


def runners(name, fn, clip, threads):
  """[(name, quantization, size, invoke)] of one model, a row per
  quantization, and its Keras function (a traced tf.function)."""
  keras_fn = tf.function(fn)
  rows = []
  for quantization in QUANTIZATIONS:
    model = tflite.to_tflite(fn, clip.shape, quantization)
    try:
      from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
    except ImportError:
      Interpreter = tf.lite.Interpreter  # pylint: disable=invalid-name
    runner = Interpreter(model_content=model, num_threads=threads)
    runner.allocate_tensors()
    runner.set_tensor(runner.get_input_details()[0]['index'], clip)
    rows.append((name, quantization or 'float32', len(model), runner.invoke))
  return rows, lambda: keras_fn(clip)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rounds', type=int, default=21)
  parser.add_argument('--threads', type=int, default=1)
  args = parser.parse_args()
  clip = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 16000)).astype(
      np.float32)
  leaf, mel = build('demo'), build('demo_mel')
  models, keras_fns = [], []
  for label, model, implementation in (('LEAF', leaf, 'conv'),
                                       ('LEAF fast', leaf, 'fast'),
                                       ('mel', mel, 'conv')):
    converted = export_tflite.builtin_classifier(model, implementation)
    for kind, fn in (('frontend', tflite.BuiltinOpsFrontend(
        model.frontend, implementation)),
                     ('classifier',
                      lambda w, m=converted: list(m(w).values()))):
      found, keras_fn = runners(f'{label} {kind}', fn, clip, args.threads)
      models += found
      keras_fns += [keras_fn] * len(found)
  unique = list(dict.fromkeys(keras_fns))
  timed = interleaved_medians([m[3] for m in models] + unique, args.rounds)
  keras_ms = dict(zip(unique, timed[len(models):]))
  rows = [(name, quantization, size, ms, keras_ms[keras_fn])
          for (name, quantization, size, _), ms, keras_fn in zip(
              models, timed, keras_fns)]
  mel_ms = {(n.split()[-1], q): ms for n, q, _, ms, _ in rows
            if n.startswith('mel')}
  print(f'LiteRT {args.threads} thread(s), batch 1 x 1 s, median of '
        f'{args.rounds} interleaved rounds; Keras: traced tf.function, same '
        f'process; load average {os.getloadavg()[0]:.1f} at the end.')
  print('| model | weights | size KiB | LiteRT ms | / mel | Keras ms |')
  print('| --- | --- | ---: | ---: | ---: | ---: |')
  for name, quantization, size, ms, keras_ms in rows:
    ratio = ms / mel_ms[(name.split()[-1], quantization)]
    print(f'| {name} | {quantization} | {size / 1024:.1f} | {ms:.2f} | '
          f'{ratio:.1f}x | {keras_ms:.2f} |')


if __name__ == '__main__':
  main()
