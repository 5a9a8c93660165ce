"""Linear probes on frozen embeddings: what `example.ssl_demo` measures.

A model with `frontend` and `pooled` (a `cola.ColaModel`) maps each 1 s
window of a task's clips to the encoder's max-pooled output, once, in
inference mode; a softmax regression on the standardized train embeddings
is the probe, and its test accuracy averages the logits over each clip's
windows, as `example.main` evaluates.
"""

from typing import Dict, List, Sequence

import keras
import numpy as np
import tensorflow as tf

from . import data


def embedding_fn(model, batch_size: int = 64):
  """A traced function: windows [n <= batch_size, samples] -> pooled encoder
  outputs [n, d], in inference mode. Batches are padded to `batch_size`, so
  it is traced once for every split and task."""
  @tf.function(input_signature=[tf.TensorSpec([batch_size, data.WINDOW],
                                              tf.float32)])
  def embed(windows):
    return model.pooled(model.frontend(windows, training=False))

  def call(windows):
    count = int(windows.shape[0])
    padded = data.pad_batch(tf.convert_to_tensor(windows), batch_size)
    return embed(padded).numpy()[:count]

  call.batch_size = batch_size
  return call


def embeddings(embed, split: tf.data.Dataset):
  """Pooled encoder outputs of every 1 s window of a split's clips.

  Args:
    embed: an `embedding_fn`.
    split: dataset of {'audio', 'label'} clips.

  Returns:
    (embeddings [windows, d], clip index [windows], label [windows]).
  """
  stream = data.window_stream(split, data.DEFAULT_TRANSFORMS).batch(
      embed.batch_size)
  values, clips, labels = [], [], []
  for windows, clip, label in stream:
    values.append(embed(windows))
    clips.append(clip.numpy())
    labels.append(label.numpy())
  return (np.concatenate(values), np.concatenate(clips),
          np.concatenate(labels))


def fit_probe(train_x, train_y, num_classes: int, seed: int,
              steps: int) -> keras.Model:
  """Softmax regression on standardized embeddings, full-batch Adam."""
  keras.utils.set_random_seed(seed)
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  head = keras.Sequential([
      keras.layers.Input((train_x.shape[1],)),
      keras.layers.Normalization(mean=mean, variance=std**2),
      keras.layers.Dense(num_classes)])
  head.compile(optimizer=keras.optimizers.Adam(1e-2),
               loss=keras.losses.SparseCategoricalCrossentropy(
                   from_logits=True))
  # One epoch of `steps` full batches: Keras' cost per epoch (callbacks,
  # iterators) would exceed the step's on these few hundred examples.
  batches = tf.data.Dataset.from_tensors((train_x, train_y)).repeat()
  head.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0)
  return head


def clip_accuracy(head, x, clips, labels) -> float:
  """Accuracy with the logits averaged over each clip's windows."""
  logits = head.predict(x, verbose=0)
  order = np.unique(clips)
  mean_logits = np.stack([logits[clips == c].mean(0) for c in order])
  truth = np.array([labels[clips == c][0] for c in order])
  return float(np.mean(mean_logits.argmax(1) == truth))


def probe(model, tasks, seeds: Sequence[int], steps: int) -> List[Dict]:
  """Test accuracy per task of linear probes on `model`'s embeddings, one
  dict per head seed."""
  results = [{} for _ in seeds]
  embed = embedding_fn(model)
  for task in tasks:
    train_x, _, train_y = embeddings(embed, task.splits['train'])
    test = embeddings(embed, task.splits['test'])
    for result, seed in zip(results, seeds):
      head = fit_probe(train_x, train_y, task.num_classes, seed, steps)
      result[task.name] = clip_accuracy(head, *test)
  return results
