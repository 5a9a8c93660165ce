"""`FilterbankEnergies`: a frontend's filtering, activation and pooling.

The one place that decides how these three layers are computed: fused
(`engines`) where their types have a fused form, layer by layer elsewhere;
in the fast mode, banded while the weights fit the plan and exactly (one
`tf.cond`) when they have left it; and compiled with XLA for small inputs.

The fused computations are TensorFlow's (FFTs, custom gradients, XLA): they
are imported only on the TensorFlow backend. On JAX and PyTorch the layers
run one after the other (the original's direct convolution, with
`keras.ops`), which gives the same outputs.
"""

import warnings

import keras

from leaf_audio import convolution
from leaf_audio import pooling as pooling_lib
from leaf_audio import utils

# Inputs of at most this many samples (batch x time) are compiled with XLA
# in the fast mode (see `FilterbankEnergies`).
XLA_MAX_SAMPLES = 2**16

IMPLEMENTATIONS = ('conv', 'fast')
# The fast mode's tolerances, by name (`plan.TOLERANCES`, which needs
# TensorFlow; kept equal by a test).
FAST_TOLERANCES = ('accuracy', 'speed')

# Activations that act on each value alone, which `engines.SincEnergies`
# applies to the filter outputs in its own layout.
ELEMENTWISE_ACTIVATIONS = (keras.layers.LeakyReLU, keras.layers.ReLU)


def check_implementation(implementation):
  """Raises a ValueError unless `implementation` is 'conv' or 'fast'."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"implementation must be 'conv' (exact) or 'fast' "
                     f"(banded), got {implementation!r}.")


def _on_tensorflow():
  return keras.backend.backend() == 'tensorflow'


def fallback_branch(compute):
  """`compute` as one call op, for the untaken side of a `tf.cond`.

  TensorFlow lowers a `tf.cond` in a function to switch and merge ops, and
  its executor still visits every op of the branch not taken (to pass on
  their dead inputs): about 1 us each. The exact fallback is a few hundred
  ops that run only when the weights have left the fast plan, so it is kept
  out of line, a single call op that costs nothing when not taken (batch 1 x
  1 s, forward: 1.07 -> 0.95 ms on 2 CPU cores). Under XLA, which compiles
  both branches anyway, it stays inline.

  Args:
    compute: a function of no arguments returning tensors.

  Returns:
    A function of no arguments, for `tf.cond`'s `false_fn`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from leaf_audio.filterbank.fft_ops import in_xla_context  # pylint: disable=g-import-not-at-top
  if in_xla_context():
    return compute
  return tf.function(compute, autograph=False,
                     experimental_attributes={'_noinline': True})


def fused_engine(conv, activation, pooling, implementation='conv',
                 fast_tolerance='speed'):
  """The fused computation of these layers, or None if they have none.

  The test of what can be fused, by type (subclasses included) and by the
  settings the fused computations assume:
  - a `GaborConv1D` (stride 1, 'same', no bias), `SquaredModulus` and
    `GaussianLowpass` ('same'): `engines.GaborEnergies`;
  - a `keras.layers.Conv1D` (stride 1, 'same', no bias, no activation, not
    an `FFTConv1D`, which adds its spectral loss in its own call),
    `SquaredModulus` and `LearnablePooling1D`: `engines.ConvEnergies`;
  - a `SincConv1D` (stride 1, 'same', no bias), a `keras.layers.LeakyReLU`
    or `keras.layers.ReLU`, and a `keras.layers.MaxPooling1D` or
    `GaussianLowpass` ('same'): `engines.SincEnergies`.

  The engines are TensorFlow computations: on another Keras backend there
  is none (and the fast mode says once that it computes exactly there).

  Args:
    conv, activation, pooling: the three layers.
    implementation: 'conv' or 'fast'.
    fast_tolerance: the fast mode's tolerance (`plan.TOLERANCES`).

  Returns:
    An engine, or None.
  """
  sinc = (isinstance(conv, convolution.SincConv1D) and
          isinstance(activation, ELEMENTWISE_ACTIVATIONS) and
          isinstance(pooling, (keras.layers.MaxPooling1D,
                               pooling_lib.GaussianLowpass)) and
          conv.strides == 1 and conv.padding == 'same' and
          not conv.use_bias and pooling.padding == 'same')
  if not (sinc or isinstance(activation, convolution.SquaredModulus)):
    return None
  if not _on_tensorflow():
    if implementation == 'fast':
      warnings.warn(
          f"implementation='fast' needs the TensorFlow backend (its banded "
          f"computation is written with TensorFlow); on "
          f"{keras.backend.backend()!r} the filterbank is computed exactly, "
          "layer by layer, with the same outputs.", stacklevel=4)
    return None
  from leaf_audio.filterbank import engines  # pylint: disable=g-import-not-at-top
  if sinc:
    return engines.SincEnergies(conv, activation, pooling)
  if (isinstance(conv, convolution.GaborConv1D) and
      isinstance(pooling, pooling_lib.GaussianLowpass) and
      conv.strides == 1 and conv.padding == 'same' and not conv.use_bias and
      pooling.padding == 'same'):
    return engines.GaborEnergies(conv, pooling, implementation,
                                 fast_tolerance)
  if (isinstance(conv, keras.layers.Conv1D) and
      not isinstance(conv, convolution.FFTConv1D) and
      isinstance(pooling, pooling_lib.LearnablePooling1D) and
      tuple(conv.strides) == (1,) and tuple(conv.dilation_rate) == (1,) and
      conv.padding == 'same' and conv.groups == 1 and not conv.use_bias and
      conv.activation is keras.activations.linear and conv.filters % 2 == 0):
    return engines.ConvEnergies(conv, pooling)
  return None


def _identity(x):
  return x


@utils.register
class FilterbankEnergies(keras.layers.Layer):
  """Filtering, activation and pooling of waveforms, fused where possible.

  `pooling(activation(conv(x)))` for waveforms x: with LEAF's layers,
  P_n[k] = sum_t g_n[t - c_k] |(x * phi_n)[t]|^2 (Eq. 3-5 of the paper).
  The layers are this layer's sublayers and keep their weights and layout;
  `fused_engine` decides whether they are computed together without the
  direct convolution (exactly, by FFT: `implementation='conv'`) or, for
  Gabor filters in the fast mode, banded (`implementation='fast'`, within
  0.5% of the exact output, 0.1% with `fast_tolerance='accuracy'`). Otherwise they run one after the other.

  In the fast mode, a traced function follows the plan made for the weights
  at its tracing, checks at every call that the weights still fit it, and
  computes exactly (one `tf.cond`) when they have left it, until it is
  traced again (`plans_fit_weights`; `callbacks.RefreshFastPlans` retraces
  `Model.fit`'s functions). Eagerly, a new plan is made when needed. Inputs
  of a static shape of at most `xla_max_samples` samples in all are compiled
  with XLA in a traced function (TensorFlow's cost per op dominates there),
  which costs about a second at the first call for each shape.

  Args:
    conv: the filtering layer: [batch, time, 1] -> [batch, time, channels].
    activation: the layer (or function) applied to its output.
    pooling: the pooling layer.
    implementation: 'conv' (exact) or 'fast' (banded Gabor filters).
    xla_max_samples: the largest input (batch x time samples) compiled with
      XLA in the fast mode; 0 turns the compilation off.
    fast_tolerance: what the fast mode's plans keep (`plan.TOLERANCES`):
      'speed' (default; LEAF's output within 0.06% of the exact one at its
      initialization, 0.43% at worst at weights moved from it, on the
      parity fixture's clips) or 'accuracy' (within 0.083% there; heavily
      truncated filters, like LEAF's initial 60 Hz one, are computed at the
      full rate: batch 32 forward, 1.3-1.4x the time of 'speed' at 1 s and
      at 10 s).
    name: layer name.

  Call arguments:
    waveform: [batch, time] float32.
    postprocess: optional function of the energies, applied to them here
      (so that it is compiled with them, and computed in the exact
      fallback).

  Returns:
    postprocess([batch, frames, n] pooled energies).
  """

  def __init__(self, conv, activation, pooling, implementation='conv',
               xla_max_samples=XLA_MAX_SAMPLES, fast_tolerance='speed',
               name='filterbank_energies', **kwargs):
    super().__init__(name=name, **kwargs)
    check_implementation(implementation)
    if fast_tolerance not in FAST_TOLERANCES:
      raise ValueError(f'fast_tolerance must be one of {FAST_TOLERANCES} '
                       "('speed': the default; 'accuracy': within 0.1% of "
                       f'the exact computation), got {fast_tolerance!r}.')
    if (not isinstance(xla_max_samples, int) or
        isinstance(xla_max_samples, bool) or xla_max_samples < 0):
      raise ValueError(f'xla_max_samples must be a number of samples >= 0 '
                       f'(0 turns XLA off), got {xla_max_samples!r}.')
    self.implementation = implementation
    self.xla_max_samples = xla_max_samples
    self.fast_tolerance = fast_tolerance
    self.conv = conv
    self.activation = activation
    self.pooling = pooling
    self._engine = fused_engine(conv, activation, pooling, implementation,
                                fast_tolerance)

  @property
  def fused(self):
    """Whether the layers are computed together (by an engine)."""
    return self._engine is not None

  @property
  def banded(self):
    """Whether the fast mode's banded computation is used."""
    return self._engine is not None and self._engine.banded

  @property
  def engine(self):
    """The fused computation (`engines.GaborEnergies`, `ConvEnergies` or
    `SincEnergies`), or None."""
    return self._engine

  def build(self, input_shape):
    shape = (input_shape[0], input_shape[1], 1)
    for layer in (self.conv, self.activation, self.pooling):
      if not isinstance(layer, keras.layers.Layer):
        continue  # a function: shapes unchanged
      if not layer.built:
        layer.build(shape)
      if layer is not self.pooling:
        shape = layer.compute_output_shape(shape)

  def call(self, waveform, postprocess=None):
    postprocess = postprocess or _identity
    engine = self._engine
    if engine is None:
      return postprocess(self.layer_by_layer(waveform))
    if not engine.banded:
      return postprocess(engine.exact(waveform))
    # Engines exist on the TensorFlow backend only (`fused_engine`).
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from leaf_audio.filterbank.fft_ops import in_xla_context  # pylint: disable=g-import-not-at-top
    if tf.executing_eagerly():  # the plan is made again if needed
      return postprocess(engine.banded_energies(waveform))
    if in_xla_context():
      return postprocess(self._banded_or_exact(waveform))
    if self._compiles(waveform):
      # A new function at every trace, so that it follows the current plan.
      # The plan check is computed inside, the choice made outside (a
      # tf.cond in a nested XLA function cannot be differentiated).
      banded, fits = tf.function(
          lambda w: (postprocess(engine.banded_energies(w)),
                     engine.plan_fits(w)),
          jit_compile=True, autograph=False)(waveform)
      return tf.cond(fits, lambda: banded, fallback_branch(
          lambda: postprocess(engine.exact(waveform))))
    return postprocess(self._banded_or_exact(waveform))

  def _banded_or_exact(self, waveform):
    """The fast mode's energies in a traced function: the banded ones while
    the weights fit the plan, else the exact ones.

    The banded energies are computed outside the `tf.cond`, which only
    chooses them or the exact ones, and the exact branch's gradient is
    computed within its own branch, by computing the exact energies again
    there. So neither branch keeps intermediates for the backward pass, and
    the `tf.cond`'s gradient is little more than a choice. With the banded
    computation inside a branch, as before, TensorFlow passed each of its
    intermediates out of the branch wrapped in an optional and built the
    gradients of both branches op by op. Measured on 2 CPU cores, fast
    LEAF at batch 32 x 1 s, tracing and first call: forward 8.7-9.7 ->
    2.7-3.1 s, forward+backward 11.5 -> 8.0 s; forward+backward at batch 32
    x 10 s 1125 -> 994 ms, at 32 x 1 s within 5% (same process, 15 rounds).
    Under XLA the gradient of ops inside a branch cannot be compiled at all
    (TensorFlow passes the shapes they need out of the forward branch, and
    XLA needs them as constants: "ConcatOffset must be a compile-time
    constant"). When the weights have left the plan, the banded energies
    are computed and not used (the exact ones cost far more).
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    engine = self._engine
    weights = engine.weights()
    banded = engine.banded_energies(waveform)

    @tf.custom_gradient
    def exact(waveform, kernel, windows):
      def grad(upstream):
        with tf.GradientTape() as tape:
          tape.watch([waveform, kernel, windows])
          again = engine.exact(waveform, (kernel, windows))
        return tape.gradient(again, [waveform, kernel, windows],
                             output_gradients=upstream)

      return engine.exact(waveform, (kernel, windows)), grad

    return tf.cond(engine.plan_fits(waveform), lambda: banded,
                   fallback_branch(lambda: exact(waveform, *weights)))

  def layer_by_layer(self, waveform):
    """The three layers one after the other, as the original computes them:
    [batch, time] -> [batch, frames, n]."""
    outputs = self.conv(waveform[:, :, None])
    outputs = self.activation(outputs)
    return self.pooling(outputs)

  def _compiles(self, waveform):
    """Whether this call is compiled with XLA: the banded computation of a
    small input of a static shape, in a function being traced (not already
    compiled). There about 300 small ops each cost more than their work, and
    one XLA computation is 1.4x faster (batch 1 x 1 s: 2.6x mel's time down
    to 1.8x, on 2 CPU cores); at batch 1 x 10 s XLA is 10% slower, and at
    batch 32 it took more time and memory."""
    from leaf_audio.filterbank.fft_ops import in_xla_context  # pylint: disable=g-import-not-at-top
    return (waveform.shape.is_fully_defined() and
            waveform.shape.num_elements() <= self.xla_max_samples and
            not in_xla_context())

  def plans_fit_weights(self):
    """Whether the fast mode's plans still fit the weights (a Python bool,
    True unless the banded computation is in use and the weights have left
    a plan a traced function follows)."""
    return self._engine is None or self._engine.plans_fit_weights()

  def get_config(self):
    config = super().get_config()
    config.update({
        'conv': keras.saving.serialize_keras_object(self.conv),
        'activation': keras.saving.serialize_keras_object(self.activation),
        'pooling': keras.saving.serialize_keras_object(self.pooling),
        'implementation': self.implementation,
        'xla_max_samples': self.xla_max_samples,
        'fast_tolerance': self.fast_tolerance,
    })
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    for key in ('conv', 'activation', 'pooling'):
      config[key] = keras.saving.deserialize_keras_object(config[key])
    return cls(**config)
