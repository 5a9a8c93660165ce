"""Keras callbacks for training the frontends."""

from absl import logging
import keras

from leaf_audio import frontend


def leaf_layers(model):
  """The learnable frontends (`Leaf` and its baselines) in `model`, itself
  included."""
  # Keras 3 has no public recursive listing of sublayers; `_flatten_layers`
  # is what `Layer.weights` itself walks.
  return [layer for layer in model._flatten_layers(include_self=True)  # pylint: disable=protected-access
          if isinstance(layer, frontend.LearnableFrontend)]


class RefreshFastPlans(keras.callbacks.Callback):
  """Traces `Model.fit`'s functions again when fast LEAF plans go stale.

  `Leaf(implementation='fast')` fixes the layout of its banded computation
  (a `filterbank.plan.BandedPlan`) from the weights when a function is traced,
  and falls back to the exact computation, at its cost, once training moves
  the weights out of that layout. Every `check_every` steps and at the end
  of every epoch, this callback asks each fast Leaf in the model whether
  that happened (`Leaf.fast_plans_outdated`, about a millisecond); if so, it
  makes new train, test and predict functions, which trace (and plan) again
  on their next call. It does nothing for models without a fast Leaf.

  Args:
    check_every: steps between checks (besides every epoch's end).

  Attributes:
    refreshes: how many times the functions were made again.

  Example:
    >>> model.fit(dataset, epochs=10, callbacks=[RefreshFastPlans()])
  """

  def __init__(self, check_every=100):
    super().__init__()
    if int(check_every) < 1:
      raise ValueError(f'check_every must be a positive number of steps, got '
                       f'{check_every}.')
    self.check_every = int(check_every)
    self.refreshes = 0
    self._layers = None
    self._steps = 0

  def on_train_begin(self, logs=None):
    self._layers = leaf_layers(self.model)
    self._steps = 0

  def on_train_batch_end(self, batch, logs=None):
    self._steps += 1
    if self._steps % self.check_every == 0:
      self._refresh_if_outdated()

  def on_epoch_end(self, epoch, logs=None):
    self._refresh_if_outdated()

  def _refresh_if_outdated(self):
    if not self._layers or not any(
        layer.fast_plans_outdated() for layer in self._layers):
      return
    self.model.make_train_function(force=True)
    # The others are made again when next needed (evaluate and predict make
    # theirs when they have none).
    self.model.test_function = None
    self.model.predict_function = None
    self.refreshes += 1
    logging.info('Fast LEAF: the weights left the plan; the train, test and '
                 'predict functions trace again (%d times so far).',
                 self.refreshes)
