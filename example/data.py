"""Waveform transforms and the tf.data pipelines that feed training.

The transforms follow the original `common.gin`:
`prepare.transform_fns = [@align, @loudness_normalization]`. Training applies
every transform to each clip (so `align` takes a random 1 s crop). Evaluation
instead cuts each full-length clip into consecutive 1 s windows (see
`split_windows`) and applies the other transforms to every window.
"""

from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import gin
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
SAMPLE_RATE = 16000
WINDOW = SAMPLE_RATE  # The 1 s training crop and evaluation window.


def db_to_linear(db):
  """Converts decibels to a linear amplitude gain."""
  return 10.0 ** (db / 20.0)


@gin.configurable
def loudness_normalization(samples: tf.Tensor, target_db: float = 15.0,
                           max_gain_db: float = 30.0) -> tf.Tensor:
  """Scales each waveform so that its standard deviation is `target_db`.

  The gain is db_to_linear(target_db) / std, capped at
  db_to_linear(max_gain_db) so that near-silence is not blown up.

  Args:
    samples: float waveforms [..., samples]; each row is scaled on its own.
    target_db: wanted standard deviation, in dB.
    max_gain_db: largest gain applied, in dB.

  Returns:
    the scaled waveforms, same shape.
  """
  std = tf.math.reduce_std(samples, axis=-1, keepdims=True) + 1e-9
  gain = tf.minimum(db_to_linear(max_gain_db), db_to_linear(target_db) / std)
  return gain * samples


@gin.configurable
def align(samples: tf.Tensor, seq_len: int = WINDOW) -> tf.Tensor:
  """Takes a random crop of `seq_len` samples, zero-padding shorter clips.

  Args:
    samples: one waveform [samples].
    seq_len: crop length.

  Returns:
    float waveform [seq_len]: a contiguous slice of the clip, or the clip
    followed by zeros when it is shorter than `seq_len`.
  """
  samples = tf.pad(samples, [[0, tf.maximum(seq_len - tf.size(samples), 0)]])
  start = tf.random.uniform([], 0, tf.size(samples) - seq_len + 1, tf.int32)
  return tf.ensure_shape(samples[start:start + seq_len], [seq_len])


@gin.configurable
def add_noise(samples: tf.Tensor, snr_db: Optional[float] = None) -> tf.Tensor:
  """Adds white Gaussian noise at a signal-to-noise ratio (Section 4.5).

  The noise variance is mean(samples^2) / 10^(snr_db / 10), per row.

  Args:
    samples: float waveforms [..., samples].
    snr_db: the SNR in dB; None adds no noise.

  Returns:
    the noisy waveforms, same shape.
  """
  if snr_db is None:
    return samples
  power = tf.reduce_mean(tf.square(samples), axis=-1, keepdims=True)
  std = tf.sqrt(power / 10.0 ** (snr_db / 10.0))
  return samples + std * tf.random.normal(tf.shape(samples))


DEFAULT_TRANSFORMS = (align, loudness_normalization)


def window_transforms(transform_fns: Sequence[Callable]) -> Tuple[Callable]:
  """The transforms that evaluation applies to each 1 s window (no crop)."""
  return tuple(fn for fn in transform_fns if fn is not align)


def serving_transforms(transform_fns: Sequence[Callable]) -> Tuple[Callable]:
  """The transforms an exported model applies: no crop, no added noise."""
  return tuple(fn for fn in window_transforms(transform_fns)
               if fn is not add_noise)


def to_float(audio: tf.Tensor) -> tf.Tensor:
  """Integer PCM to float32 in [-1, 1] (divided by the dtype's max)."""
  if audio.dtype.is_integer:
    return tf.cast(audio, tf.float32) / float(audio.dtype.max)
  return tf.cast(audio, tf.float32)


def split_windows(samples: tf.Tensor, window: int = WINDOW) -> tf.Tensor:
  """Cuts waveforms into consecutive non-overlapping windows.

  The last window is zero-padded; a clip gives ceil(samples / window)
  windows, and at least one.

  Args:
    samples: float waveforms [..., samples].
    window: window length.

  Returns:
    float windows [..., num_windows, window].
  """
  length = tf.shape(samples)[-1]
  num = tf.maximum(1, (length + window - 1) // window)
  rank = len(samples.shape)
  paddings = [[0, 0]] * (rank - 1) + [[0, num * window - length]]
  padded = tf.pad(samples, paddings)
  shape = tf.concat([tf.shape(samples)[:-1], [num, window]], axis=0)
  return tf.reshape(padded, shape)


def encode_label(label: tf.Tensor, num_classes: int) -> tf.Tensor:
  """One-hot (int label) or multi-hot (vector of ints) float32 [num_classes]."""
  hot = tf.one_hot(tf.cast(label, tf.int32), num_classes)
  return hot if len(label.shape) == 0 else tf.reduce_max(
      tf.concat([hot, tf.zeros([1, num_classes])], 0), axis=0)


def _targets(task_index: int, label: tf.Tensor,
             num_classes: Mapping[str, int]) -> Tuple[Dict, Dict]:
  """Per-task targets and weights for one example of task `task_index`.

  Its own head gets its encoded label and weight 1; every other head gets
  zeros and weight 0, so that its loss counts only on its own head.
  """
  targets, weights = {}, {}
  for i, (name, count) in enumerate(num_classes.items()):
    own = i == task_index
    targets[name] = encode_label(label, count) if own else tf.zeros([count])
    weights[name] = tf.constant(1.0 if own else 0.0)
  return targets, weights


def mixup(waveforms: tf.Tensor, targets: Dict[str, tf.Tensor],
          weights: Dict[str, tf.Tensor], alpha: float):
  """Mixes each example of a batch with a random other one (mixup).

  With lam ~ Beta(alpha, alpha) per example and j a permutation:
  x = lam x_i + (1 - lam) x_j; each head's weight is
  w = lam w_i + (1 - lam) w_j and its target the weight-normalized mix
  (lam w_i y_i + (1 - lam) w_j y_j) / w, which is plain mixup on one task
  and keeps every head's target a distribution in multi-task batches.

  Args:
    waveforms: float [batch, samples].
    targets: task -> float [batch, classes].
    weights: task -> float [batch].
    alpha: the Beta distribution's parameter.

  Returns:
    (waveforms, targets, weights) mixed, same shapes.
  """
  batch = tf.shape(waveforms)[0]
  gamma_a = tf.random.gamma([batch], alpha)
  gamma_b = tf.random.gamma([batch], alpha)
  lam = gamma_a / (gamma_a + gamma_b)
  perm = tf.random.shuffle(tf.range(batch))
  mix = lambda v, l: l * v + (1. - l) * tf.gather(v, perm)
  waveforms = mix(waveforms, lam[:, None])
  new_targets, new_weights = {}, {}
  for name in targets:
    w = weights[name]
    new_weights[name] = mix(w, lam)
    weighted = mix(targets[name] * w[:, None], lam[:, None])
    new_targets[name] = tf.math.divide_no_nan(weighted,
                                              new_weights[name][:, None])
  return waveforms, new_targets, new_weights


def _train_stream(split: tf.data.Dataset, task_index: int,
                  num_classes: Mapping[str, int],
                  transform_fns: Sequence[Callable], shuffle_buffer: int):
  """Endless shuffled stream of (crop [samples], targets, weights)."""

  def preprocess(example):
    audio = to_float(example['audio'])
    for fn in transform_fns:
      audio = fn(audio)
    return (audio,) + _targets(task_index, example['label'], num_classes)

  return (split.shuffle(shuffle_buffer).repeat()
          .map(preprocess, num_parallel_calls=AUTOTUNE))


def window_stream(split: tf.data.Dataset, transform_fns: Sequence[Callable],
                  window: int = WINDOW) -> tf.data.Dataset:
  """Every 1 s window of every clip, with its clip's index and label.

  Args:
    split: dataset of {'audio': [samples], 'label': ...}.
    transform_fns: applied to each window (the crop is skipped).
    window: window length.

  Returns:
    dataset of (window float32 [window], clip index int64, label).
  """

  def windows(index, example):
    frames = split_windows(to_float(example['audio']), window)
    for fn in window_transforms(transform_fns):
      frames = fn(frames)
    count = tf.shape(frames)[0]
    labels = tf.repeat(example['label'][None], count, axis=0)
    return tf.data.Dataset.from_tensor_slices(
        (frames, tf.fill([count], index), labels))

  return split.enumerate().flat_map(windows)


@gin.configurable(denylist=['splits', 'num_classes', 'batch_size'])
def prepare(splits: Sequence[Mapping[str, tf.data.Dataset]],
            num_classes: Mapping[str, int],
            batch_size: int = 64,
            transform_fns: Sequence[Callable] = DEFAULT_TRANSFORMS,
            shuffle_buffer: int = 1024,
            mixup_alpha: float = 0.0) -> Dict[str, tf.data.Dataset]:
  """Builds the training and validation streams of one or several tasks.

  Training batches mix examples drawn uniformly at random from the tasks
  (Section 4.2); validation goes over every 1 s window of every validation
  clip of every task once.

  Args:
    splits: per task (in the order of `num_classes`), a mapping with 'train'
      and 'eval' datasets of {'audio': [samples], 'label': ...}.
    num_classes: task name -> number of classes, one entry per task.
    batch_size: examples per batch (global batch under a distribution).
    transform_fns: waveform transforms, in order, as in `common.gin`.
    shuffle_buffer: clips held by each task's shuffle buffer.
    mixup_alpha: mixup's Beta parameter; 0 turns mixup off.

  Returns:
    {'train': endless dataset, 'eval': finite dataset}, each of batches
    (waveforms [batch, samples], targets {task: [batch, classes]},
    weights {task: [batch]}).
  """
  if len(splits) != len(num_classes):
    raise ValueError(f'{len(splits)} tasks of data for {len(num_classes)} '
                     'task names')
  streams = [_train_stream(s['train'], i, num_classes, transform_fns,
                           shuffle_buffer) for i, s in enumerate(splits)]
  train = streams[0] if len(streams) == 1 else (
      tf.data.Dataset.sample_from_datasets(streams))
  train = train.batch(batch_size, drop_remainder=True)
  if mixup_alpha > 0:
    train = train.map(lambda x, y, w: mixup(x, y, w, mixup_alpha),
                      num_parallel_calls=AUTOTUNE)

  evals = []
  for i, s in enumerate(splits):
    evals.append(window_stream(s['eval'], transform_fns).map(
        lambda frame, _, label, i=i: (frame,) + _targets(i, label,
                                                         num_classes)))
  validation = evals[0]
  for other in evals[1:]:
    validation = validation.concatenate(other)
  validation = validation.batch(batch_size).map(
      lambda x, y, w: pad_batch((x, y, w), batch_size))
  # Several workers split the batches, not the files: a prepared folder is
  # a single file per split, which file sharding cannot split.
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  return {'train': train.prefetch(AUTOTUNE).with_options(options),
          'eval': validation.prefetch(AUTOTUNE).with_options(options)}


def pad_batch(batch, batch_size: int):
  """Pads every tensor of a (possibly short) batch with zeros to batch_size.

  Padded examples have weight 0, so they change no weighted metric; full
  batches split evenly across replicas, which distributed validation needs.

  Args:
    batch: nested structure of tensors [n, ...], n <= batch_size.
    batch_size: wanted leading size.

  Returns:
    the same structure, every tensor [batch_size, ...].
  """

  def pad(tensor):
    extra = batch_size - tf.shape(tensor)[0]
    paddings = [[0, extra]] + [[0, 0]] * (len(tensor.shape) - 1)
    padded = tf.pad(tensor, paddings)
    return tf.ensure_shape(padded, [batch_size] + tensor.shape[1:])

  return tf.nest.map_structure(pad, batch)
