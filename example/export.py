"""Exports a trained classifier as a TF SavedModel serving raw waveforms.

`serving_default` takes `waveform`, float32 [batch, samples] of 16 kHz audio
in [-1, 1] of any length, and returns task name -> logits [batch, classes]
computed exactly as the evaluation does (1 s windows, per-window
normalization, logits averaged over windows). `labels.json` in the export
folder maps each task to its class names.
"""

import json
import os
import shutil
from typing import Callable, Dict, List, Optional, Sequence

import keras
import tensorflow as tf

from example import evaluation


def export(model: keras.Model, export_dir: str,
           transform_fns: Sequence[Callable],
           class_names: Dict[str, List[str]],
           output_names: Optional[Dict[str, str]] = None) -> None:
  """Writes the SavedModel and its labels.json.

  Args:
    model: the trained classifier (dict of logits per task).
    export_dir: output folder (replaced if it exists).
    transform_fns: per-window transforms applied before the model.
    class_names: task name -> class names, index = class id.
    output_names: the model's output key -> the task name the export calls
      it (e.g. 'kw_bad' -> 'kw bad'); None keeps the keys.
  """
  clip_logits = evaluation.clip_logits_fn(model, transform_fns)
  archive = keras.export.ExportArchive()
  archive.track(model)
  output_names = output_names or {}

  def serve(waveform):
    return {output_names.get(key, key): logits
            for key, logits in clip_logits(waveform).items()}

  archive.add_endpoint(
      name='serving_default', fn=serve,
      input_signature=[tf.TensorSpec([None, None], tf.float32,
                                     name='waveform')])
  tmp = f'{export_dir.rstrip(os.sep)}.tmp'
  for stale in (tmp, export_dir):
    if os.path.exists(stale):
      shutil.rmtree(stale)
  archive.write_out(tmp, verbose=False)
  with open(os.path.join(tmp, 'labels.json'), 'w') as f:
    json.dump(class_names, f, indent=2)
  os.replace(tmp, export_dir)
