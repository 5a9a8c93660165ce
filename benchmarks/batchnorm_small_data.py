"""Does the evaluation see what the model learned? Batch normalization on
small data.

    python tools/make_corpus.py --out /tmp/kw50 --tasks keywords \
        --train-per-class 50 --test-per-class 10   # needs espeak-ng, flite
    .venv/bin/python benchmarks/batchnorm_small_data.py \
        --dataset /tmp/kw50/keywords --recompute 0
    .venv/bin/python benchmarks/batchnorm_small_data.py \
        --dataset /tmp/kw50/keywords --recompute 50
    .venv/bin/python benchmarks/batchnorm_small_data.py --encoder pann

Trains the standard recipe (`configs/mel.gin`, Adam at 1e-3, batch 32, 12
epochs by default) on a small labelled folder (by default the bundled
`data/demo_corpus/keywords`: 10 classes, 180 training clips, 20 validation,
50 test; the folder made above: 450, 50, 100), with
`train.recompute_batchnorm` set to `--recompute` (0: Keras' moving
averages), then scores the best checkpoint's weights on full-length clips
(1 s windows, logits averaged), with three kinds of batch normalization
statistics for the same weights:

- as saved by the run (`train`, `eval`, `test`: evaluation mode on the
  training clips, validation, test; `train_trainmode`: the training clips in
  training mode, each batch of windows normalized by its own statistics,
  dropout on);
- `*_trainmode_stats`: averaged over 50 training batches run in training
  mode (dropout on: the previous `train.recompute_batchnorm`);
- `*_recomputed`: `callbacks.recompute_batchnorm` over 50 training batches
  (evaluation mode, what the training program does now);
- `stats_gap`: how far the saved statistics are from the exact mean and
  variance of each normalization's inputs over every window of the
  training clips, in the network they define
  (`callbacks.batchnorm_input_statistics`): per layer the mean over
  channels of |mean difference| / std and of |log variance ratio|, the
  largest over layers (0 for statistics that are exactly those of the
  network as evaluated).

With `--no-batchnorm` (ConvNet only) the encoder has no normalization: the
control for how much of the gap between the training clips and validation
is generalization.

Prints one JSON line. Each run is a single seed: a few points move from run
to run.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

ENCODERS = {
    'convnet': ['AudioClassifier.encoder = @ConvNet()',
                'ConvNet.filters = [32, 64, 128]'],
    'pann': ['AudioClassifier.encoder = @PANN()', 'PANN.depth = 3'],
    'efficientnet': ['AudioClassifier.encoder = @EfficientNetEncoder()'],
}


def _training_mode_statistics(model, batches):
  """The previous recomputation: batch statistics averaged over `batches`
  with the whole model in training mode (dropout on)."""
  from example import callbacks  # pylint: disable=g-import-not-at-top
  layers = callbacks.batchnorm_layers(model)
  momenta = [layer.momentum for layer in layers]
  for count, batch in enumerate(batches, 1):
    for layer in layers:
      layer.momentum = (count - 1.) / count
    model(batch[0], training=True)
  for layer, momentum in zip(layers, momenta):
    layer.momentum = momentum


def _stats_gap(model, tasks, transforms):
  """`stats_gap` (see the module docstring) of the model's statistics."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from example import callbacks, data  # pylint: disable=g-import-not-at-top
  windows = data.window_stream(tasks[0].splits['train'], transforms).batch(32)
  exact = callbacks.batchnorm_input_statistics(model, windows)
  means, variances = [], []
  for layer, (mean, variance) in zip(callbacks.batchnorm_layers(model),
                                     exact):
    std = np.sqrt(variance + layer.epsilon)
    means.append(np.mean(np.abs(layer.moving_mean.numpy() - mean) / std))
    variances.append(np.mean(np.abs(np.log(
        (layer.moving_variance.numpy() + layer.epsilon) /
        (variance + layer.epsilon)))))
  return [round(float(max(means)), 4), round(float(max(variances)), 4)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', default='data/demo_corpus/keywords')
  parser.add_argument('--encoder', choices=sorted(ENCODERS),
                      default='convnet')
  parser.add_argument('--recompute', type=int, default=50,
                      help='train.recompute_batchnorm (0: off)')
  parser.add_argument('--epochs', type=int, default=12)
  parser.add_argument('--workdir', default=None)
  parser.add_argument('--no-batchnorm', action='store_true',
                      help='ConvNet without normalization (the control)')
  args = parser.parse_args()
  if args.no_batchnorm and args.encoder != 'convnet':
    parser.error('--no-batchnorm applies to --encoder convnet only')

  import gin  # pylint: disable=g-import-not-at-top
  from example import callbacks, data, evaluation, main as cli, train  # pylint: disable=g-import-not-at-top
  from example import tasks as tasks_lib  # pylint: disable=g-import-not-at-top

  workdir = args.workdir or tempfile.mkdtemp(prefix='bn_small_')
  bindings = [f"train.dataset = '{args.dataset}'",
              f"train.workdir = '{workdir}'",
              f"train.data_dir = '{os.path.join(workdir, 'tfds')}'",
              f'train.num_epochs = {args.epochs}',
              'train.learning_rate = 1e-3', 'train.batch_size = 32',
              f'train.recompute_batchnorm = {args.recompute}'
              ] + ENCODERS[args.encoder] + (
                  ['ConvBlock.normalization_layer = None']
                  if args.no_batchnorm else [])
  cli.parse_config(['configs/mel.gin'], bindings)
  start = time.time()
  results = train.train(verbose=0)
  seconds = time.time() - start

  tasks = tasks_lib.load_tasks([args.dataset], os.path.join(workdir, 'tfds'))
  num_classes = {t.key: t.num_classes for t in tasks}
  model = train.build_model(num_classes, 1e-3, False)
  model.load_weights(os.path.join(workdir, 'best.weights.h5'))
  transforms = train._pipeline_transforms()  # pylint: disable=protected-access
  score = lambda split, **kw: list(evaluation.evaluate(
      model, tasks, transforms, 32, False, split=split, **kw).values()
                                   )[0]['accuracy']
  row = {'encoder': args.encoder + ('_no_bn' if args.no_batchnorm else ''),
         'recompute_batchnorm': args.recompute,
         'epochs': args.epochs, 'seconds': round(seconds),
         'test_reported': list(results.values())[0]['accuracy']}
  for split in ('train', 'eval', 'test'):
    row[f'{split}_eval'] = score(split)
  streams = data.prepare([t.splits for t in tasks], num_classes,
                         batch_size=32, transform_fns=transforms)
  saved = model.get_weights()
  _training_mode_statistics(model, streams['train'].take(50))
  for split in ('train', 'eval', 'test'):
    row[f'{split}_trainmode_stats'] = score(split)
  model.set_weights(saved)
  callbacks.recompute_batchnorm(model, streams['train'].take(50))
  for split in ('train', 'eval', 'test'):
    row[f'{split}_recomputed'] = score(split)
  model.set_weights(saved)
  if callbacks.batchnorm_layers(model):
    row['stats_gap'] = _stats_gap(model, tasks, transforms)
  row['train_trainmode'] = score('train', training=True)
  print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                    for k, v in row.items()}))


if __name__ == '__main__':
  main()
