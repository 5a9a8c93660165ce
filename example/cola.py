"""COLA: contrastive learning of audio representations (Saeed, Grangier &
Zeghidour, ICASSP 2021), the objective of Yadav & Zeghidour (2022).

Two random segments of one clip are a positive pair; within a batch, the
other clips' segments are the negatives. Both segments go through the same
frontend and encoder, then

    e = tanh(LayerNorm(P h))            P: [512, d] linear, no bias
    S[i, j] = e_a[i]^T W e_p[j]         W: [512, 512] bilinear similarity
    loss = mean_i -log softmax_j(S[i, :])[i]

where h is the encoder's output max-pooled over time and frequency (the
embedding an `AudioClassifier` head reads). The pair-identification accuracy
is the share of rows i with argmax_j S[i, j] = i.
"""

import gin
import keras
from keras import ops
import tensorflow as tf

from leaf_audio import models
from leaf_audio import postprocessing

SEGMENT_SECONDS = 0.96

# For configs/ssl/sincnet_random.gin, which assembles SincNet from `Leaf`'s
# arguments with gin.
gin.external_configurable(keras.layers.LeakyReLU, module='keras.layers')
gin.external_configurable(keras.layers.LayerNormalization,
                          module='keras.layers')


def sample_pair(samples: tf.Tensor, segment: int, seed: tf.Tensor):
  """Two crops of `segment` samples at distinct offsets of one clip.

  Offsets are drawn uniformly among the clip's L - segment + 1 possible
  starts, the second among the starts other than the first, so that the two
  crops differ whenever the clip is longer than `segment`. A shorter clip is
  zero-padded at the end to `segment` samples (both crops are then that
  clip).

  Args:
    samples: float waveform [L].
    segment: crop length in samples.
    seed: int32 [2], the stateless random seed of the draw.

  Returns:
    float [2, segment]: (anchor, positive).
  """
  samples = tf.pad(samples, [[0, tf.maximum(segment - tf.size(samples), 0)]])
  starts = tf.size(samples) - segment + 1
  first = tf.random.stateless_uniform([], seed, 0, starts, tf.int32)
  # Uniform over the other starts: draw among starts - 1, skip `first`.
  other = tf.random.stateless_uniform(
      [], seed + 1, 0, tf.maximum(starts - 1, 1), tf.int32)
  second = tf.where(starts > 1, other + tf.cast(other >= first, tf.int32),
                    first)
  return tf.ensure_shape(
      tf.stack([samples[first:first + segment],
                samples[second:second + segment]]), [2, segment])


def cola_loss(y_true, y_pred):
  """Softmax cross-entropy of each row of the similarity matrix against its
  diagonal: y_pred S [batch, batch] -> [batch]. `y_true` is not read (the
  positive of row i is column i)."""
  del y_true
  labels = ops.arange(ops.shape(y_pred)[0])
  return keras.losses.sparse_categorical_crossentropy(labels, y_pred,
                                                      from_logits=True)


def pair_accuracy(y_true, y_pred):
  """1 where row i of S [batch, batch] is largest at column i, else 0."""
  del y_true
  labels = ops.arange(ops.shape(y_pred)[0])
  return ops.cast(ops.equal(ops.argmax(y_pred, axis=-1), labels), 'float32')


@keras.saving.register_keras_serializable(package='leaf_audio_example')
@gin.configurable(allowlist=['embedding_dim', 'spec_augment'])
class ColaModel(keras.Model):
  """Frontend -> encoder -> max pooling -> projection -> bilinear similarity.

  Args:
    frontend: waveforms [batch, T] -> features [batch, time, freq].
    encoder: [batch, time, freq, 1] -> [batch, time', freq', d] (None: the
      features are pooled directly).
    embedding_dim: size of the projection (512 in COLA).
    spec_augment: whether the positive view's features get SpecAugment
      (`leaf_audio.postprocessing.SpecAugment`, with its gin bindings) in
      training; the anchor never does.
    **kwargs: base model arguments.

  Call arguments:
    inputs: (anchor, positive), float waveforms [batch, T] each.
    training: training mode (SpecAugment, dropout).

  Returns:
    the similarity logits S [batch, batch]; row i's positive is column i.
  """

  def __init__(self, frontend, encoder=None, embedding_dim=512,
               spec_augment=False, **kwargs):
    super().__init__(**kwargs)
    if frontend is None:
      raise ValueError('ColaModel needs a frontend layer (waveforms -> '
                       '[batch, time, freq]).')
    if not isinstance(embedding_dim, int) or embedding_dim < 1:
      raise ValueError(f'embedding_dim must be a positive int, got '
                       f'{embedding_dim!r}.')
    self.frontend = frontend
    self.encoder = encoder
    self.embedding_dim = embedding_dim
    self.spec_augment = bool(spec_augment)
    self._augment = (postprocessing.SpecAugment() if spec_augment else None)
    self.projection = keras.layers.Dense(embedding_dim, use_bias=False,
                                         name='projection')
    self.norm = keras.layers.LayerNormalization(name='projection_norm')

  def build(self, input_shape):
    anchor_shape = tuple(input_shape[0])
    features = self.frontend.compute_output_shape(anchor_shape)
    features = tuple(features) + (1,)
    if not self.frontend.built:
      self.frontend.build(anchor_shape)
    if self.encoder is not None:
      if not self.encoder.built:
        self.encoder.build(features)
      features = self.encoder.compute_output_shape(features)
    if self._augment is not None and not self._augment.built:
      self._augment.build((None, None, None))
    self.projection.build((None, features[-1]))
    self.norm.build((None, self.embedding_dim))
    self.bilinear = self.add_weight(
        name='bilinear', shape=(self.embedding_dim, self.embedding_dim),
        initializer='glorot_uniform')

  def pooled(self, features, training=False):
    """Encoder output max-pooled as in `AudioClassifier`: [batch, d]
    (`models.pooled_embedding`)."""
    return models.pooled_embedding(features, self.encoder, training)

  def embed(self, features, training=False):
    """e = tanh(LayerNorm(P h)) of frontend features: [batch, embedding]."""
    return ops.tanh(self.norm(self.projection(
        self.pooled(features, training))))

  def call(self, inputs, training=False):
    anchor, positive = inputs
    anchor_features = self.frontend(anchor, training=training)
    positive_features = self.frontend(positive, training=training)
    if self._augment is not None:
      positive_features = self._augment(positive_features, training=training)
    anchors = self.embed(anchor_features, training)
    positives = self.embed(positive_features, training)
    return ops.matmul(ops.matmul(anchors, self.bilinear),
                      ops.transpose(positives))

  def get_config(self):
    return {
        **super().get_config(),
        'frontend': keras.saving.serialize_keras_object(self.frontend),
        'encoder': keras.saving.serialize_keras_object(self.encoder),
        'embedding_dim': self.embedding_dim,
        'spec_augment': self.spec_augment,
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    for key in ('frontend', 'encoder'):
      config[key] = keras.saving.deserialize_keras_object(config[key])
    return cls(**config)


def from_gin() -> ColaModel:
  """A COLA model around the gin-configured frontend and encoder, those an
  `AudioClassifier` gets from the same config (so the pre-training configs
  are the training configs)."""
  classifier = models.AudioClassifier(num_outputs=1)
  return ColaModel(frontend=classifier.frontend, encoder=classifier.encoder)
