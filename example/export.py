"""Exports a trained classifier as a TF SavedModel serving raw waveforms.

`serving_default` takes `waveform`, float32 [batch, samples] of 16 kHz audio
in [-1, 1] of any length (or one clip [samples], or [batch, samples, 1]), and returns task name -> logits [batch, classes]
computed exactly as the evaluation does (1 s windows, per-window
normalization, logits averaged over windows). `labels.json` in the export
folder maps each task to its class names. The export folder is a link to
its current version, swapped atomically when it is written again.
"""

import json
import os
import re
import shutil
import time
from typing import Callable, Dict, List, Optional, Sequence

import keras
import tensorflow as tf

from . import data
from . import evaluation


def _version_pattern(base: str):
  """Names this module gives the siblings of an export folder `base`."""
  return re.compile(re.escape(base) + r'\.(v\d+|link-\d+|tmp)')


def replace_folder(folder: str, write: Callable[[str], None]) -> None:
  """Replaces `folder` by what `write(path)` writes, atomically.

  `folder` is a symbolic link to a versioned sibling, `<name>.v<ns>`: the
  new version is written beside it, then the link is swapped by a rename,
  so that a process killed at any point leaves `folder` naming either the
  old or the new version, complete. Versions no longer linked are removed
  afterwards. A plain folder left by older versions of this program is
  moved aside first (the only moment without `folder`).

  Args:
    folder: the path readers use.
    write: writes the new content into the folder path it is given.
  """
  parent, base = os.path.split(os.path.abspath(folder))
  version = os.path.join(parent, f'{base}.v{time.time_ns()}')
  try:
    write(version)
  except BaseException:
    shutil.rmtree(version, ignore_errors=True)
    raise
  link = os.path.join(parent, f'{base}.link-{os.getpid()}')
  if os.path.lexists(link):
    os.remove(link)
  os.symlink(os.path.basename(version), link)
  if os.path.isdir(folder) and not os.path.islink(folder):
    os.replace(folder, os.path.join(parent, f'{base}.v0'))
  os.replace(link, folder)
  pattern = _version_pattern(base)
  for name in os.listdir(parent):
    if pattern.fullmatch(name) and name != os.path.basename(version):
      path = os.path.join(parent, name)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
      elif os.path.lexists(path) and name.startswith(f'{base}.link-'):
        os.remove(path)


def _as_batch(waveform: tf.Tensor) -> tf.Tensor:
  """float [batch, samples] from [batch, samples], [samples] (one clip) or
  [batch, samples, 1]; anything else, or clips of 0 samples, is an error
  that says what was expected."""
  shape = tf.shape(waveform)
  rank = tf.size(shape)
  padded = tf.concat([shape, tf.ones([3], tf.int32)], 0)
  fits = tf.logical_or(tf.logical_or(tf.equal(rank, 1), tf.equal(rank, 2)),
                       tf.logical_and(tf.equal(rank, 3),
                                      tf.equal(padded[2], 1)))
  expected = ('waveform must be float32 [batch, samples] of 16 kHz audio '
              '(or one clip [samples], or [batch, samples, 1]); got shape')
  with tf.control_dependencies([tf.debugging.Assert(fits, [expected, shape])]):
    one_clip = tf.equal(rank, 1)
    batch = tf.where(one_clip, 1, padded[0])
    samples = tf.where(one_clip, padded[0], padded[1])
  has_samples = tf.logical_or(tf.equal(batch, 0), samples > 0)
  empty = ('waveform has clips of 0 samples, which have no logits; pass at '
           'least one sample per clip; got shape')
  with tf.control_dependencies([tf.debugging.Assert(has_samples,
                                                    [empty, shape])]):
    return tf.reshape(waveform, tf.stack([batch, samples]))


def export(model: keras.Model, export_dir: str,
           transform_fns: Sequence[Callable],
           class_names: Dict[str, List[str]],
           output_names: Optional[Dict[str, str]] = None) -> None:
  """Writes the SavedModel and its labels.json, replacing `export_dir`
  atomically (see `replace_folder`).

  The signature accepts [batch, samples], one clip [samples] (giving logits
  [1, classes]) or [batch, samples, 1]; an empty batch gives logits
  [0, classes]; other shapes and clips of 0 samples raise an
  InvalidArgumentError that says what was expected.

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
  sizes = {key: int(out.shape[-1]) for key, out in
           model(tf.zeros([1, data.WINDOW]), training=False).items()}

  def serve(waveform):
    waveform = _as_batch(waveform)
    logits = tf.cond(
        tf.shape(waveform)[0] > 0, lambda: clip_logits(waveform),
        lambda: {key: tf.zeros([0, size]) for key, size in sizes.items()})
    return {output_names.get(key, key): value
            for key, value in logits.items()}

  archive.add_endpoint(
      name='serving_default', fn=serve,
      input_signature=[tf.TensorSpec(None, tf.float32, name='waveform')])

  def write(path):
    archive.write_out(path, verbose=False)
    with open(os.path.join(path, 'labels.json'), 'w') as f:
      json.dump(class_names, f, indent=2)

  replace_folder(export_dir, write)
