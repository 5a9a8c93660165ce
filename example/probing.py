"""Linear probes on frozen embeddings: what `example.ssl_demo` measures.

A model with `frontend` and `pooled` (a `cola.ColaModel`) maps each 1 s
window of a task's clips to the encoder's max-pooled output, once, in
inference mode; a softmax regression on the standardized train embeddings,
L2-regularized with the weight that does best on the validation clips, is
the probe, and its test accuracy averages the logits over each clip's
windows, as `example.main` evaluates. `summarize` gives the mean, spread and
range of such accuracies over runs.
"""

from typing import Dict, List, Optional, Sequence

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
              steps: int, l2: float = 0.) -> keras.Model:
  """Softmax regression on standardized embeddings, full-batch Adam.

  Minimizes mean_i CE(softmax(W z_i + b), y_i) + l2 |W|^2 over the train
  embeddings z (standardized with their own mean and std), by `steps` Adam
  steps at 1e-2 on the whole batch, in one traced loop.

  Returns:
    the head: embeddings [n, d] -> logits [n, num_classes].
  """
  keras.utils.set_random_seed(seed)
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  head = keras.Sequential([
      keras.layers.Input((train_x.shape[1],)),
      keras.layers.Normalization(mean=mean, variance=std**2),
      keras.layers.Dense(num_classes, kernel_regularizer=(
          keras.regularizers.L2(l2) if l2 else None))])
  optimizer = keras.optimizers.Adam(1e-2)
  optimizer.build(head.trainable_variables)
  x = tf.constant(train_x, tf.float32)
  y = tf.constant(train_y, tf.int64)

  # One traced loop: Keras' fit costs more per step than the step itself on
  # these few hundred examples.
  @tf.function
  def train():
    for _ in tf.range(steps):
      with tf.GradientTape() as tape:
        logits = head(x, training=True)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        loss += tf.add_n([loss * 0.] + list(head.losses))
      grads = tape.gradient(loss, head.trainable_variables)
      optimizer.apply_gradients(zip(grads, head.trainable_variables))

  train()
  return head


def clip_accuracy(head, x, clips, labels) -> float:
  """Accuracy with the logits averaged over each clip's windows."""
  logits = head.predict(x, verbose=0)
  order = np.unique(clips)
  mean_logits = np.stack([logits[clips == c].mean(0) for c in order])
  truth = np.array([labels[clips == c][0] for c in order])
  return float(np.mean(mean_logits.argmax(1) == truth))


L2_GRID = (0., 1e-3, 1e-2, 1e-1)


def probe(model, tasks, seeds: Sequence[int], steps: int,
          l2_grid: Sequence[float] = L2_GRID) -> List[Dict]:
  """Test accuracy per task of linear probes on `model`'s embeddings, one
  dict per head seed.

  For each task, the L2 weight of the probe is chosen among `l2_grid` by
  clip accuracy on the task's validation clips (its 'eval' split, held out
  of the train clips; ties go to the stronger weight), with the first
  seed; each seed's probe then trains with it on the train clips and is
  tested on the test clips. Each dict also holds '<task>/l2', the weight
  chosen, and '<task>/validation', its validation accuracy.
  """
  results = [{} for _ in seeds]
  embed = embedding_fn(model)
  for task in tasks:
    train_x, _, train_y = embeddings(embed, task.splits['train'])
    validation = embeddings(embed, task.splits['eval'])
    test = embeddings(embed, task.splits['test'])
    scores = [(clip_accuracy(fit_probe(train_x, train_y, task.num_classes,
                                       seeds[0], steps, l2), *validation), l2)
              for l2 in l2_grid]
    best_score, best_l2 = max(scores)
    for result, seed in zip(results, seeds):
      head = fit_probe(train_x, train_y, task.num_classes, seed, steps,
                       best_l2)
      result[task.name] = clip_accuracy(head, *test)
      result[f'{task.name}/l2'] = best_l2
      result[f'{task.name}/validation'] = best_score
  return results


def summarize(runs: List[List[Dict]], task: str) -> Optional[Dict]:
  """Mean, standard deviation (n - 1) and range over runs of one task's
  accuracy, each run the mean over its head seeds; None without runs."""
  values = [float(np.mean([r[task] for r in heads])) for heads in runs
            if heads and all(task in r for r in heads)]
  if not values:
    return None
  return {'mean': float(np.mean(values)),
          'std': float(np.std(values, ddof=1)) if len(values) > 1 else 0.,
          'min': min(values), 'max': max(values), 'runs': len(values)}
