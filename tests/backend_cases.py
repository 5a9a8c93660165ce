"""The cases that every Keras backend must compute alike.

`tests/data/backends/make_reference.py` computes them on the TensorFlow
backend into `reference.npz`; `tests/test_backends.py` computes them again on
the backend the tests run on (TensorFlow in `make test`, JAX in
`make test-jax`, PyTorch in `make test-torch`) and compares. Each case is a
layer or model, built from its constructor and given fixed weights (the
reference's, so that random initializers, whose streams differ between
backends, play no part), and its input.

Nothing here imports TensorFlow.
"""

import keras
import numpy as np

from leaf_audio import frontend
from leaf_audio import models
from leaf_audio import pooling
from leaf_audio import postprocessing

# 4 clips of 0.25 s at 16 kHz: Gaussian noise with a tone, in [-1, 1].
WAVEFORM_SHAPE = (4, 4000)


def waveform():
  rng = np.random.default_rng(0)
  t = np.arange(WAVEFORM_SHAPE[1]) / 16000.
  tone = 0.3 * np.sin(2. * np.pi * 440. * t * np.arange(1, 5)[:, None])
  return (tone + 0.05 * rng.standard_normal(WAVEFORM_SHAPE)).astype('float32')


def energies():
  """Positive [batch, frames, channels] inputs for PCEN and the poolings."""
  rng = np.random.default_rng(1)
  return rng.uniform(0.01, 2., (2, 50, 8)).astype('float32')


def features():
  """[batch, frames, bins, 1] inputs for the encoders."""
  rng = np.random.default_rng(2)
  return rng.standard_normal((2, 25, 16, 1)).astype('float32')


def _small_leaf(**kwargs):
  return frontend.Leaf(n_filters=8, **kwargs)


# name -> (builder, input maker). Frontends at their defaults, and with
# their options on.
CASES = {
    'leaf': (frontend.Leaf, waveform),
    'leaf_fast': (lambda: frontend.Leaf(implementation='fast'), waveform),
    # Pre-emphasis leaves some channels with energies of 1e-4 of the
    # largest, which the backends' direct convolutions agree on to 1e-6 of
    # the largest; a log, or a normalization by each channel's spread,
    # would magnify that to 3e-5-4e-4 of the output, so they are tested
    # apart ('leaf_log', 'mean_var_norm').
    'leaf_options': (lambda: _small_leaf(preemp=True, learn_pooling=False),
                     waveform),
    'leaf_log': (lambda: _small_leaf(compression_fn='log'), waveform),
    'tfbanks': (frontend.TimeDomainFilterbanks, waveform),
    'sincnet': (frontend.SincNet, waveform),
    'sincnet_plus': (frontend.SincNetPlus, waveform),
    'mel': (frontend.MelFilterbanks, waveform),
    'wavegram': (frontend.WaveGram, waveform),
    'pcen': (lambda: postprocessing.PCENLayer(
        alpha=0.9, smooth_coef=0.1, trainable=True, learn_smooth_coef=True,
        per_channel_smooth_coef=True), energies),
    'gaussian_lowpass': (lambda: pooling.GaussianLowpass(
        kernel_size=9, strides=2, kernel_initializer=(
            keras.initializers.Constant(0.3))), energies),
    'learnable_pooling': (lambda: pooling.LearnablePooling1D(
        kernel_size=9, strides=2, padding='valid', use_bias=False),
                          energies),
    'channelwise_pooling': (lambda: pooling.ChannelWiseLearnablePooling1D(
        kernel_size=9, strides=2), energies),
    'max_pooling': (lambda: pooling.MaxPooling1D(kernel_size=3, strides=2),
                    energies),
    'mean_var_norm': (postprocessing.MeanVarianceNormalization, energies),
    'convnet': (lambda: models.ConvNet(filters=(8, 16)), features),
    'pann': (lambda: models.PANN(depth=2), features),
    'classifier': (lambda: models.AudioClassifier(
        {'a': 3, 'b': 2}, frontend=_small_leaf(),
        encoder=models.ConvNet(filters=(8, 16))), waveform),
}

# A few steps of `Model.fit` (SGD, no shuffling, no dropout): their losses.
FIT_EPOCHS = 3


def fit_model():
  """A tiny LEAF classifier, compiled for `fit_losses`."""
  model = models.AudioClassifier(
      4, frontend=_small_leaf(),
      encoder=models.ConvNet(filters=(8, 16), dropout=0.))
  model.compile(optimizer=keras.optimizers.SGD(0.002),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  return model


def fit_labels():
  return np.array([0, 1, 2, 3], 'int32')


def fit_losses(model):
  history = model.fit(waveform(), fit_labels(), batch_size=2,
                      epochs=FIT_EPOCHS, shuffle=False, verbose=0)
  return np.array(history.history['loss'], 'float32')


def build(name):
  """The layer of case `name`, built on its input; and that input."""
  make_layer, make_input = CASES[name]
  layer = make_layer()
  x = make_input()
  layer(x)
  return layer, x


def moved_weights(weights):
  """The weights moved off their initial values, deterministically, so that
  the cases check more than the initialization."""
  rng = np.random.default_rng(3)
  return [(w * (1. + 0.05 * rng.standard_normal(w.shape))).astype(w.dtype)
          for w in weights]


def call(layer, x, training=False):
  """`layer(x)` as NumPy (dicts of outputs concatenated by name)."""
  outputs = layer(x, training=training)
  if isinstance(outputs, dict):
    return np.concatenate([keras.ops.convert_to_numpy(outputs[k])
                           for k in sorted(outputs)], axis=-1)
  return keras.ops.convert_to_numpy(outputs)
