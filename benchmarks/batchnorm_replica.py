"""The small-data batch normalization study, quickly: the recipe on log-mel
computed once.

    python tools/make_corpus.py --out /tmp/kw50 --tasks keywords \
        --train-per-class 50 --test-per-class 10   # needs espeak-ng, flite
    .venv/bin/python benchmarks/batchnorm_replica.py \
        --dataset /tmp/kw50/keywords --encoder convnet --epochs 24
    .venv/bin/python benchmarks/batchnorm_replica.py \
        --dataset /tmp/kw50/keywords --no-batchnorm --epochs 24

`benchmarks/batchnorm_small_data.py` runs the training program itself
(minutes per epoch on two loaded cores); this replica trains the same
classifier on the same inputs several times faster, for clips of exactly
1 s (as `tools/make_corpus.py` writes them): there the recipe's random 1 s
crop is the whole clip, the mel frontend has no weights and no
augmentation, so its features (loudness-normalized clip, `MelFilterbanks`)
can be computed once. The rest is the recipe's: `AudioClassifier` with the
chosen encoder (ConvNet [32, 64, 128] with dropout 0.1, PANN of depth 3, or
EfficientNetB0), one linear head, Adam at 1e-3, batch 32, shuffled
batches dropping the remainder, one pass over the training clips per epoch,
the folder's validation split (10 % of each class's training clips).

Every `--every` epochs it prints one JSON line: for the weights of that
moment, accuracy in evaluation mode on the training clips, validation and
test, with Keras' moving statistics (`ma_*`) and with statistics
recomputed by `callbacks.recompute_batchnorm` as the training program does
(`train`, `val`, `test`); training itself keeps Keras' statistics (it
normalizes by each batch's own, so they change nothing in it).
Two checks of the recomputed statistics: `stats_gap`, how far they are
from the exact mean and variance of each normalization's inputs over the
training clips in the network they define
(`callbacks.batchnorm_input_statistics`; per layer the mean over channels
of |mean difference| / std and of |log variance ratio|, the largest over
layers), and `batch_stats_*`, the accuracy of the network as trained (each
normalization by its batch's own statistics over shuffled batches of 32
clips of the split, dropout off): if validation were low only for want of
the right statistics, it would be higher there. `--spec-augment` adds `postprocessing.SpecAugment` (its defaults) to the
training features. One seed per run: the validation split has 50 clips
(2 points each), the test 100.
"""

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))


def _features(root):
  """{split: (log-mel [clips, 100, 40], labels [clips])} of the folder."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  from example import data, folder_dataset  # pylint: disable=g-import-not-at-top
  from leaf_audio import frontend  # pylint: disable=g-import-not-at-top
  names, assigned = folder_dataset.scan(root)
  mel = frontend.MelFilterbanks()
  features = {}
  for split, items in assigned.items():
    clips = [sf.read(path, dtype='float32')[0] for path, _ in items]
    if any(c.ndim != 1 or len(c) != data.WINDOW for c in clips):
      raise ValueError(f'{root}: the replica needs mono clips of exactly '
                       f'{data.WINDOW} samples; run '
                       'benchmarks/batchnorm_small_data.py instead')
    waves = data.loudness_normalization(np.stack(clips)).numpy()
    features[split] = (
        np.concatenate([mel(waves[i:i + 64]).numpy()
                        for i in range(0, len(waves), 64)]),
        np.array([names.index(name) for _, name in items]))
  return features, len(names)


def _set(layers, statistics):
  """Makes `statistics` ([(mean, variance)] per layer) the moving ones."""
  for layer, (mean, variance) in zip(layers, statistics):
    layer.moving_mean.assign(mean.astype('float32'))
    layer.moving_variance.assign(variance.astype('float32'))


def _batches(x, size=32):
  """(x[i:i + size],) tuples."""
  return [(x[i:i + size],) for i in range(0, len(x), size)]


def _stats_gap(layers, statistics, exact):
  """[largest mean |mean difference| / std, largest mean |log variance
  ratio|] over layers, between `statistics` and `exact`."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  means, variances = [], []
  for layer, (m, v), (mean, variance) in zip(layers, statistics, exact):
    means.append(np.mean(np.abs(m - mean) / np.sqrt(variance + layer.epsilon)))
    variances.append(np.mean(np.abs(np.log(
        (v + layer.epsilon) / (variance + layer.epsilon)))))
  return [round(float(max(means)), 4), round(float(max(variances)), 4)]


def _batch_statistics_accuracy(model, layers, x, y, size=32):
  """Accuracy with every normalization by its batch's own statistics
  (shuffled batches of `size`), dropout off; statistics left as found."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from example import callbacks  # pylint: disable=g-import-not-at-top
  kept = [(l.moving_mean.numpy(), l.moving_variance.numpy()) for l in layers]
  order = np.random.default_rng(0).permutation(len(x))
  predicted = np.zeros(len(x), np.int64)
  for layer in layers:
    layer.call = callbacks._batch_statistics_call(layer)  # pylint: disable=protected-access
  try:
    for i in range(0, len(x), size):
      rows = order[i:i + size]
      predicted[rows] = model(x[rows], training=False).numpy().argmax(1)
  finally:
    for layer in layers:
      del layer.call
    _set(layers, kept)
  return round(float((predicted == y).mean()), 3)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', default='data/demo_corpus/keywords')
  parser.add_argument('--encoder', choices=('convnet', 'pann',
                                            'efficientnet'),
                      default='convnet')
  parser.add_argument('--no-batchnorm', action='store_true',
                      help='ConvNet without normalization (the control)')
  parser.add_argument('--spec-augment', action='store_true')
  parser.add_argument('--epochs', type=int, default=12)
  parser.add_argument('--every', type=int, default=6)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  if args.no_batchnorm and args.encoder != 'convnet':
    parser.error('--no-batchnorm applies to --encoder convnet only')

  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from example import callbacks  # pylint: disable=g-import-not-at-top
  from leaf_audio import models, postprocessing  # pylint: disable=g-import-not-at-top

  keras.utils.set_random_seed(args.seed)
  features, num_classes = _features(args.dataset)
  if args.encoder == 'convnet':
    encoder = models.ConvNet(
        [32, 64, 128], dropout=0.1, normalization_layer=(
            None if args.no_batchnorm else keras.layers.BatchNormalization))
  elif args.encoder == 'pann':
    encoder = models.PANN(depth=3)
  else:
    encoder = models.EfficientNetEncoder()
  inputs = keras.Input(features['train'][0].shape[1:])
  x = inputs
  if args.spec_augment:
    x = postprocessing.SpecAugment()(x)
  model = keras.Model(inputs, models.AudioClassifier(
      num_classes, frontend=None, encoder=encoder)(x))
  model.compile(keras.optimizers.Adam(1e-3),
                keras.losses.CategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'])
  x_train, y_train = features['train']
  steps = math.ceil(len(x_train) / 32)
  stream = (tf.data.Dataset.from_tensor_slices(
      (x_train, tf.one_hot(y_train, num_classes)))
            .shuffle(1024, seed=args.seed).repeat()
            .batch(32, drop_remainder=True))

  def accuracy(split):
    x, y = features[split]
    logits = np.concatenate([model(x[i:i + 150], training=False).numpy()
                             for i in range(0, len(x), 150)])
    return round(float((logits.argmax(1) == y).mean()), 3)

  def accuracies(prefix=''):
    return {f'{prefix}{name}': accuracy(split) for name, split in (
        ('train', 'train'), ('val', 'validation'), ('test', 'test'))}

  start = time.time()
  layers = callbacks.batchnorm_layers(model)
  for epoch in range(0, args.epochs, args.every):
    history = model.fit(stream, epochs=min(epoch + args.every, args.epochs),
                        initial_epoch=epoch, steps_per_epoch=steps,
                        verbose=0)
    row = {'epoch': min(epoch + args.every, args.epochs),
           'fit_accuracy': round(history.history['accuracy'][-1], 3)}
    kept = [(l.moving_mean.numpy(), l.moving_variance.numpy())
            for l in layers]
    if layers:
      row.update(accuracies('ma_'))
    callbacks.recompute_batchnorm(model, stream.take(min(50, steps)))
    row.update(accuracies())
    if layers:
      recomputed = [(l.moving_mean.numpy(), l.moving_variance.numpy())
                    for l in layers]
      row['stats_gap'] = _stats_gap(layers, recomputed,
                                    callbacks.batchnorm_input_statistics(
                                        model, _batches(x_train)))
      for name, split in (('train', 'train'), ('val', 'validation'),
                          ('test', 'test')):
        row[f'batch_stats_{name}'] = _batch_statistics_accuracy(
            model, layers, *features[split])
    row['seconds'] = round(time.time() - start)
    _set(layers, kept)
    print(json.dumps({'encoder': args.encoder + (
        '_no_bn' if args.no_batchnorm else '') + (
            '+specaugment' if args.spec_augment else ''), **row}),
          flush=True)


if __name__ == '__main__':
  main()
