"""Starting a classifier from a pre-training workdir, and freezing parts.

`train.init_from` names a workdir of `example.pretrain` (or its
`pretrained.keras`): the classifier then takes that frontend and encoder,
architecture and weights, whatever the gin config says about them, so that a
probe repeats none of the pre-training's bindings. `train.freeze` then keeps
some of it fixed:

    None         everything is trained (fine-tuning)
    'frontend'   the frontend is frozen, the encoder and heads are trained
    'encoder'    frontend and encoder are frozen: a linear probe, only the
                 heads (linear layers on the pooled encoder output) train

Frozen layers are not trainable, and `AudioClassifier` runs them in
inference mode (`models.run_training`): batch normalization with its moving
statistics, no dropout, no SpecAugment, so that a probe reads fixed
features; their weights stay bit-identical. Without `init_from`, `freeze` applies to the gin-configured
(randomly initialized) layers: `freeze = 'encoder'` then probes an untrained
network, the floor a pre-training should beat.
"""

import os
from typing import Dict, Optional

import keras

from . import cola  # pylint: disable=unused-import (registers ColaModel for loading)
from leaf_audio import models

PRETRAINED_FILE = 'pretrained.keras'
FREEZE_OPTIONS = (None, 'frontend', 'encoder')


def check(init_from: Optional[str], freeze: Optional[str]) -> None:
  """Validates `train.init_from` and `train.freeze` before any work.

  Raises:
    ValueError: freeze is not one of FREEZE_OPTIONS, or init_from names no
      pre-training workdir or .keras file.
  """
  if freeze not in FREEZE_OPTIONS:
    raise ValueError(f'train.freeze must be one of {FREEZE_OPTIONS}, got '
                     f'{freeze!r}')
  if init_from is not None:
    pretrained_path(init_from)


def pretrained_path(init_from: str) -> str:
  """The .keras file of a pre-training workdir (or `init_from` itself)."""
  path = init_from
  if os.path.isdir(path):
    path = os.path.join(path, PRETRAINED_FILE)
  if not (path.endswith('.keras') and os.path.isfile(path)):
    raise ValueError(
        f'train.init_from = {init_from!r} is neither a pre-training workdir '
        f'holding {PRETRAINED_FILE} nor a .keras file; run '
        '`python -m example.pretrain` with pretrain.workdir there first')
  return path


def load(init_from: str) -> keras.Model:
  """The pre-trained model of `init_from` (a `cola.ColaModel`, or any saved
  model with `frontend` and `encoder` attributes, e.g. an AudioClassifier).
  """
  model = keras.saving.load_model(pretrained_path(init_from), compile=False)
  if not hasattr(model, 'frontend') or model.frontend is None:
    raise ValueError(f'{init_from} holds a {type(model).__name__} without a '
                     'frontend; expected the output of example.pretrain')
  return model


def classifier(num_classes: Dict[str, int], init_from: Optional[str] = None,
               freeze: Optional[str] = None) -> models.AudioClassifier:
  """An `AudioClassifier` with one head per task, its frontend and encoder
  from `init_from` (else from gin), the `freeze` part not trainable.

  Args:
    num_classes: task name -> number of classes.
    init_from: a pre-training workdir or .keras file, or None.
    freeze: one of FREEZE_OPTIONS.

  Returns:
    the classifier, not built.
  """
  check(init_from, freeze)
  if init_from is None:
    model = models.AudioClassifier(num_outputs=num_classes)
  else:
    source = load(init_from)
    model = models.AudioClassifier(num_outputs=num_classes,
                                   frontend=source.frontend,
                                   encoder=source.encoder)
  if freeze in ('frontend', 'encoder') and model.frontend is not None:
    model.frontend.trainable = False
  if freeze == 'encoder' and model.encoder is not None:
    model.encoder.trainable = False
  return model

