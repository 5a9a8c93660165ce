"""Training speed of each frontend in the recipe, as ratios to mel.

    .venv/bin/python benchmarks/benchmark_training.py
    .venv/bin/python benchmarks/benchmark_training.py --encoders convnet \
        --rounds 5

Prints one Markdown table: for each encoder (the paper's EfficientNetB0, and
the demo's small ConvNet of configs/demo.gin) and each frontend, the
examples per second of the training step (`Model.train_on_batch` on a batch
of 32 one-second clips held in memory, Adam, one linear head of 10
classes), the wall time of one epoch of `Model.fit` over the bundled
corpus's keyword training clips (the first 192 of its 200 clips of 1 s,
decoded once into memory: whole batches of 32, as the recipe's training
pipeline drops the remainder), the process's CPU time per training step (user +
system, all threads: a shared machine inflates it less than the wall time),
and their ratios to mel-filterbanks in the same run.

Two reference rows show where a learnable frontend's extra step time goes
(`--frontends 'Mel, learned gain' 'LEAF fast, frozen'`): mel's features
times one trainable scalar, whose gradient makes the step differentiate the
encoder with respect to its input, which any learnable frontend's step does
and mel's does not; and fast LEAF with `trainable = False`, its forward pass
in the step without any gradient of its own. A learnable frontend's step
time over mel's is then (gain row - mel) + (frozen row - mel) + the
frontend's own backward pass.

How it measures: each encoder runs in a process of its own, every frontend
built, compiled and warmed up (two steps and one epoch) first; then the
frontends are timed in interleaved rounds (each does `--steps` steps, then
one epoch, per round), and each entry is the median over the rounds, so that
a machine shared with other work slows them alike.
"""

import argparse
import glob
import json
import os
import statistics
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import soundfile  # pylint: disable=g-import-not-at-top

from leaf_audio import frontend  # pylint: disable=g-import-not-at-top
from leaf_audio import models  # pylint: disable=g-import-not-at-top

# benchmarks/harness.py: this script's folder is first on sys.path.
import harness  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYWORDS = os.path.join(REPO, 'data', 'demo_corpus', 'keywords', 'train')
BATCH = 32
CLASSES = 10


class _LearnedGain(keras.layers.Layer):
  """Mel-filterbanks times a trainable scalar (initially 1)."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.mel = frontend.MelFilterbanks()

  def build(self, input_shape):
    self.mel.build(input_shape)
    self.gain = self.add_weight(shape=(), initializer='ones', name='gain')

  def call(self, inputs):
    return self.mel(inputs) * self.gain

  def compute_output_shape(self, input_shape):
    return self.mel.compute_output_shape(input_shape)


def _frozen_fast_leaf():
  layer = frontend.Leaf(implementation='fast')
  layer.trainable = False
  return layer


FRONTENDS = {**harness.FRONTENDS,
             'Mel, learned gain': _LearnedGain,
             'LEAF fast, frozen': _frozen_fast_leaf}


def _demo_convnet():
  """configs/demo.gin's encoder: four blocks of 32-128 filters, no batch
  normalization, dropout 0.1."""
  return models.ConvNet(filters=(32, 64, 128, 128), normalization_layer=None,
                        dropout=0.1)


ENCODERS = {
    'efficientnet': ('EfficientNetB0', models.EfficientNetEncoder),
    'convnet': ('ConvNet (demo)', _demo_convnet),
}


def keyword_clips():
  """The bundled keyword training clips: float32 [clips, 16000], labels."""
  folders = sorted(os.path.join(KEYWORDS, d) for d in os.listdir(KEYWORDS))
  clips, labels = [], []
  for label, folder in enumerate(folders):
    for path in sorted(glob.glob(os.path.join(folder, '*.wav'))):
      audio, _ = soundfile.read(path, dtype='float32')
      clips.append(np.pad(audio, (0, max(16000 - len(audio), 0)))[:16000])
      labels.append(label)
  return np.stack(clips), np.array(labels, 'int32')


def _model(frontend_name, encoder_name):
  model = models.AudioClassifier(CLASSES,
                                 frontend=FRONTENDS[frontend_name](),
                                 encoder=ENCODERS[encoder_name][1]())
  model.compile(optimizer=keras.optimizers.Adam(1e-4),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  return model


def measure(encoder_name, names, rounds, steps):
  """{frontend: (examples per second of a step, epoch seconds, CPU seconds
  per step)}."""
  clips, labels = keyword_clips()
  # Whole batches only, as example/data.py batches the training stream: a
  # last, smaller batch makes `fit` trace its step for a batch of unknown
  # size, which the fast mode computes about twice as slowly (an epoch of
  # 200 clips took 10.4 s with fast LEAF against 5.3 s for 192, mel 5.2 s).
  whole = len(clips) - len(clips) % BATCH
  clips, labels = clips[:whole], labels[:whole]
  x, y = clips[:BATCH], labels[:BATCH]
  fitted = {}
  for name in names:
    model = _model(name, encoder_name)
    for _ in range(2):
      model.train_on_batch(x, y)
    model.fit(clips, labels, batch_size=BATCH, epochs=1, verbose=0)
    fitted[name] = model
  rates = {name: [] for name in names}
  epochs = {name: [] for name in names}
  cpu = {name: [] for name in names}
  for _ in range(rounds):
    for name in names:
      model = fitted[name]
      start, start_cpu = time.perf_counter(), time.process_time()
      for _ in range(steps):
        model.train_on_batch(x, y)
      rates[name].append(steps * BATCH / (time.perf_counter() - start))
      cpu[name].append((time.process_time() - start_cpu) / steps)
      start = time.perf_counter()
      model.fit(clips, labels, batch_size=BATCH, epochs=1, verbose=0)
      epochs[name].append(time.perf_counter() - start)
  return {name: (statistics.median(rates[name]),
                 statistics.median(epochs[name]),
                 statistics.median(cpu[name])) for name in names}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--encoders', nargs='+', default=list(ENCODERS),
                      choices=list(ENCODERS))
  parser.add_argument('--frontends', nargs='+',
                      default=list(harness.FRONTENDS),
                      choices=list(FRONTENDS))
  parser.add_argument('--rounds', type=int, default=5,
                      help='interleaved timing rounds (median reported)')
  parser.add_argument('--steps', type=int, default=5,
                      help='training steps timed per round')
  parser.add_argument('--worker', action='store_true',
                      help=argparse.SUPPRESS)  # one encoder, JSON out
  args = parser.parse_args()
  names = ['Mel'] + [n for n in args.frontends if n != 'Mel']
  if args.worker:
    print(json.dumps(measure(args.encoders[0], names, args.rounds,
                             args.steps)))
    return
  print(harness.machine_line('Keras', keras.__version__) + '\n')
  print('| encoder | frontend | step examples/s | epoch s | step CPU s '
        '| step time / mel | epoch / mel | step CPU / mel |')
  print('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |')
  for encoder in args.encoders:
    results = harness.run_worker(
        __file__, ['--encoders', encoder, '--rounds', str(args.rounds),
                   '--steps', str(args.steps), '--frontends', *names],
        encoder)
    mel_rate, mel_epoch, mel_cpu = results['Mel']
    for name in names:
      rate, epoch, step_cpu = results[name]
      print(f'| {ENCODERS[encoder][0]} | {name} | {rate:.1f} | {epoch:.2f} | '
            f'{step_cpu:.2f} | {mel_rate / rate:.2f}x | '
            f'{epoch / mel_epoch:.2f}x | {step_cpu / mel_cpu:.2f}x |',
            flush=True)
  print(f'\nLoad average {os.getloadavg()[0]:.1f} at the end.')


if __name__ == '__main__':
  main()
