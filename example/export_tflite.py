"""Exports a trained classifier, or a frontend alone, to TensorFlow Lite.

    leaf-audio-export-tflite --workdir=/tmp/run            # installed
    python -m example.export_tflite --workdir=/tmp/run     # repository
    python -m example.export_tflite --frontend=Leaf --output_dir=/tmp/leaf

Every model uses TensorFlow Lite builtin operations only (no Flex delegate),
LEAF included (`leaf_audio.tflite.BuiltinOpsFrontend`), so that the LiteRT
interpreter (`pip install 'leaf-audio[tflite]'`) and the phone runtimes run it.

From a training workdir (its operative_config.gin, best.weights.h5 and
export/labels.json) it writes to `--output_dir` (default workdir/tflite):

  classifier.tflite        waveform [1, seconds * 16000] -> logits per task,
                           computed as the SavedModel export computes them
                           (1 s windows, loudness normalization, logits
                           averaged); one output per task, in labels.json's
                           order
  frontend.tflite          waveform [1, 16000] -> features [1, frames, bins]
  *_float16.tflite         the same with float16 weights (--quantizations)
  labels.json, report.json (sizes, errors against Keras, accuracies)

LEAF's filtering is a direct convolution (`--implementation=conv`, exact)
or is computed on the fast mode's grid (`--implementation=fast`: about 6x
faster in LiteRT, within about 1e-3 of the exact features and 1e-2 of the
exact logits).

With `--check_dir` (a folder of labelled clips: <task>/test/<class>/*.wav,
test/<class>/*.wav or <class>/*.wav) every model is run with the LiteRT
interpreter on those clips and compared with Keras' exact computation: the
float32 models must agree within `--tolerance` (relative L2 error per clip;
by default 1e-4, or 2e-2 with --implementation=fast), and each model's
accuracy is reported.
"""

import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

# TensorFlow's C++ INFO lines (see console.py): set before it is imported.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from . import audio_io
from . import console
from . import data
from . import evaluation
from . import train as train_lib  # Registers the program's configurables.
from leaf_audio import frontend as frontend_lib
from leaf_audio import models
from leaf_audio import tflite
# pylint: enable=g-import-not-at-top,wrong-import-position

del train_lib  # Imported for its gin registrations only.

FRONTENDS = ('Leaf', 'MelFilterbanks', 'TimeDomainFilterbanks', 'SincNet',
             'SincNetPlus')

console.define_workdir_flag('Training workdir to export from.')
flags.DEFINE_enum('frontend', None, FRONTENDS,
                  'Export this frontend alone, at its default weights '
                  '(without --workdir).')
flags.DEFINE_string('output_dir', None,
                    'Where the .tflite files go (default: workdir/tflite).')
flags.DEFINE_float('seconds', 1.0, "The classifier's input length.")
flags.DEFINE_list('quantizations', ['float16'],
                  'Variants written besides float32: float16, dynamic_int8.')
flags.DEFINE_string('check_dir', None,
                    'Labelled clips to compare LiteRT with Keras on.')
flags.DEFINE_enum('implementation', 'conv', list(tflite.IMPLEMENTATIONS),
                  "LEAF's filtering: 'conv' (direct convolution, exact) or "
                  "'fast' (the fast mode's grid, ~6x faster in LiteRT).")
flags.DEFINE_float('tolerance', None,
                   'Largest relative L2 error of the float32 models '
                   '(default: 1e-4, or 2e-2 with --implementation=fast).')
FLAGS = flags.FLAGS


def interpreter(model: bytes):
  """A LiteRT interpreter of `model` (TensorFlow's own if LiteRT is absent).
  """
  try:
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  except ImportError:
    Interpreter = tf.lite.Interpreter  # pylint: disable=invalid-name
  result = Interpreter(model_content=model)
  result.allocate_tensors()
  return result


def run_tflite(model_interpreter, waveform: np.ndarray) -> List[np.ndarray]:
  """Outputs of one call on a [1, samples] waveform, in the model's order.
  """
  model_interpreter.set_tensor(
      model_interpreter.get_input_details()[0]['index'],
      waveform.astype(np.float32))
  model_interpreter.invoke()
  return [model_interpreter.get_tensor(d['index'])
          for d in model_interpreter.get_output_details()]


def op_names(model: bytes) -> List[str]:
  """The operator names of a .tflite model (e.g. CONV_2D), sorted."""
  details = interpreter(model)._get_ops_details()  # pylint: disable=protected-access
  # 'DELEGATE' is XNNPACK's node standing for ops also listed on their own.
  return sorted({d['op_name'] for d in details} - {'DELEGATE'})


def load_trained(workdir: str) -> Tuple[keras.Model, Dict[str, List[str]],
                                         Tuple]:
  """The trained classifier of a workdir (LEAF in its exact 'conv' mode),
  its class names and its serving transforms (loudness normalization)."""
  paths = {name: os.path.join(workdir, name) for name in (
      'operative_config.gin', 'best.weights.h5',
      os.path.join('export', 'labels.json'))}
  for name, path in paths.items():
    if not os.path.exists(path):
      raise FileNotFoundError(
          f'{path} not found: --workdir must be a finished training run '
          f'(it needs {", ".join(paths)})')
  gin.clear_config()
  gin.parse_config_file(paths['operative_config.gin'])
  # The reference is LEAF's exact computation, which the .tflite models
  # compute too (the 'fast' mode a run may train with is within 1% of it).
  gin.parse_config("Leaf.implementation = 'conv'")
  with open(paths[os.path.join('export', 'labels.json')]) as f:
    class_names = json.load(f)
  model = models.AudioClassifier(
      num_outputs={task: len(names) for task, names in class_names.items()})
  model(tf.zeros([1, data.WINDOW]))
  model.load_weights(paths['best.weights.h5'])
  transforms = data.serving_transforms(tuple(
      gin.get_bindings(data.prepare).get('transform_fns',
                                         data.DEFAULT_TRANSFORMS)))
  return model, class_names, transforms


def builtin_classifier(model: models.AudioClassifier,
                       implementation: str = 'conv') -> keras.Model:
  """The classifier with its frontend computed by builtin ops only (same
  weights: the encoder is shared, the heads' weights copied); LEAF's
  filtering by `implementation` ('conv' or 'fast', see
  `tflite.BuiltinOpsFrontend`)."""
  frontend = model.frontend
  converted = models.AudioClassifier(
      num_outputs=model.num_outputs,
      frontend=(tflite.BuiltinOpsFrontend(frontend, implementation)
                if frontend is not None else None),
      encoder=model.encoder)
  converted(tf.zeros([1, data.WINDOW]))
  for name, head in converted.heads.items():
    head.set_weights(model.heads[name].get_weights())
  return converted


def clip_function(model: keras.Model, transforms: Sequence, tasks: List[str]):
  """waveform [1, samples] -> list of logits [1, classes], in `tasks` order.
  """
  clip_logits = evaluation.clip_logits_fn(model, transforms)

  def logits(waveform):
    outputs = clip_logits(waveform)
    return [outputs[task] for task in tasks]

  return logits


def labelled_clips(check_dir: str, task: str, class_names: List[str],
                   samples: int) -> List[Tuple[np.ndarray, int]]:
  """(waveform [1, samples], label) of a task's clips under `check_dir`:
  the first of <task>/test, test, . whose subfolders are the task's classes.
  Clips are cut or zero-padded to `samples`, at 16 kHz."""
  for folder in (os.path.join(check_dir, task, 'test'),
                 os.path.join(check_dir, 'test'), check_dir):
    if os.path.isdir(folder) and set(class_names) <= set(os.listdir(folder)):
      break
  else:
    raise FileNotFoundError(
        f'no folder of the classes of task {task!r} ({class_names}) under '
        f'{check_dir} (looked for {task}/test/<class>, test/<class>, '
        '<class>)')
  clips = []
  for label, name in enumerate(class_names):
    class_dir = os.path.join(folder, name)
    for file in sorted(os.listdir(class_dir)):
      if os.path.splitext(file)[1].lower() not in audio_io.AUDIO_EXTENSIONS:
        continue
      waveform, rate = audio_io.read_audio(os.path.join(class_dir, file))
      if rate != data.SAMPLE_RATE:
        waveform = audio_io.resample(waveform, rate, data.SAMPLE_RATE)
      waveform = np.pad(waveform[:samples],
                        (0, max(0, samples - len(waveform))))
      clips.append((waveform[None].astype(np.float32), label))
  return clips


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
  """||got - want||_2 / ||want||_2."""
  want = np.asarray(want, np.float64)
  return float(np.linalg.norm(np.asarray(got, np.float64) - want) /
               max(np.linalg.norm(want), 1e-30))


def _write(path: str, content: bytes) -> None:
  """Writes `content` aside, then moves it into place."""
  tmp = f'{path}.tmp'
  with open(tmp, 'wb') as f:
    f.write(content)
  os.replace(tmp, path)


def export_models(output_dir: str, models_to_write: Dict[str, Tuple],
                  quantizations: Sequence[str]) -> Dict[str, Dict]:
  """Converts and writes each model and its quantized variants.

  Args:
    output_dir: destination folder.
    models_to_write: name -> (function, input shape).
    quantizations: variants besides float32.

  Returns:
    file name -> {'bytes', 'ops', 'model' (the flatbuffer), 'base', 'fn'}.
  """
  os.makedirs(output_dir, exist_ok=True)
  written = {}
  for name, (fn, shape) in models_to_write.items():
    for quantization in [None] + list(quantizations):
      file = f'{name}.tflite' if quantization is None else (
          f'{name}_{quantization}.tflite')
      model = tflite.to_tflite(fn, shape, quantization)
      _write(os.path.join(output_dir, file), model)
      written[file] = {'bytes': len(model), 'ops': op_names(model),
                       'model': model, 'base': name, 'fn': fn,
                       'quantization': quantization}
      logging.info('Wrote %s (%d bytes).', file, len(model))
  return written


def check(written: Dict[str, Dict], reference: Dict[str, object],
          clips: Dict[str, List[Tuple[np.ndarray, int]]],
          tasks: List[str], tolerance: float) -> Dict[str, Dict]:
  """Runs every written model on the clips with LiteRT and compares it with
  `reference[base]` (the Keras computation); scores classifiers per task.

  Returns:
    file -> {'max_relative_error', 'accuracy' (task -> value, classifiers)}.

  Raises:
    AssertionError: a float32 model is off by more than `tolerance`.
  """
  report = {}
  for file, entry in written.items():
    runner = interpreter(entry['model'])
    errors, correct = [], {}
    for task, task_clips in clips.items():
      index = tasks.index(task) if entry['base'] == 'classifier' else 0
      for waveform, label in task_clips:
        got = run_tflite(runner, waveform)[index]
        errors.append(relative_error(
            got, reference[entry['base']](waveform)[index]))
        correct.setdefault(task, []).append(int(np.argmax(got)) == label)
    report[file] = {'max_relative_error': max(errors) if errors else None}
    if entry['base'] == 'classifier':
      report[file]['accuracy'] = {t: float(np.mean(v))
                                  for t, v in correct.items()}
    if entry['quantization'] is None and errors and max(errors) > tolerance:
      raise AssertionError(
          f'{file}: LiteRT differs from Keras by {max(errors):.3g} (relative '
          f'L2), more than --tolerance={tolerance}')
  return report


def keras_accuracy(reference, clips: Dict[str, List[Tuple[np.ndarray, int]]],
                   tasks: List[str]) -> Dict[str, float]:
  """Each task's accuracy of the Keras classifier on the clips."""
  return {task: float(np.mean([
      int(np.argmax(reference(w)[tasks.index(task)])) == label
      for w, label in task_clips])) for task, task_clips in clips.items()}


# --tolerance's default for each --implementation.
TOLERANCES = {'conv': 1e-4, 'fast': 2e-2}


def export(workdir: Optional[str], frontend_name: Optional[str],
           output_dir: Optional[str], seconds: float = 1.0,
           quantizations: Sequence[str] = ('float16',),
           check_dir: Optional[str] = None,
           tolerance: Optional[float] = None,
           implementation: str = 'conv') -> Dict:
  """Writes the .tflite models (see the module docstring); returns the
  report also written to output_dir/report.json."""
  if implementation not in tflite.IMPLEMENTATIONS:
    raise ValueError(f'implementation must be one of '
                     f'{tflite.IMPLEMENTATIONS}, got {implementation!r}')
  if tolerance is None:
    tolerance = TOLERANCES[implementation]
  if (workdir is None) == (frontend_name is None):
    raise ValueError('pass either --workdir (a trained classifier) or '
                     f'--frontend (one of {FRONTENDS}), not both or neither')
  for quantization in quantizations:
    if quantization not in tflite.QUANTIZATIONS:
      raise ValueError(f'unknown quantization {quantization!r}; expected '
                       f'some of {tflite.QUANTIZATIONS[1:]}')
  window = [1, data.WINDOW]
  reference = {}
  if workdir is not None:
    output_dir = output_dir or os.path.join(workdir, 'tflite')
    model, class_names, transforms = load_trained(workdir)
    tasks = list(class_names)
    frontend = model.frontend
    clip_samples = int(round(seconds * data.SAMPLE_RATE))
    if clip_samples < 1:
      raise ValueError(f'--seconds must be positive, got {seconds}')
    to_write = {'classifier': (clip_function(
        builtin_classifier(model, implementation), transforms, tasks),
                               [1, clip_samples])}
    keras_clip = tf.function(clip_function(model, transforms, tasks))
    reference['classifier'] = lambda w: [
        v.numpy() for v in keras_clip(tf.constant(w))]
  else:
    output_dir = output_dir or f'{frontend_name.lower()}_tflite'
    class_names, tasks, clip_samples = {}, [], data.WINDOW
    frontend = getattr(frontend_lib, frontend_name)()
    frontend(tf.zeros(window))
    to_write = {}
  if frontend is not None:
    to_write['frontend'] = (
        tflite.BuiltinOpsFrontend(frontend, implementation), window)
    keras_frontend = tf.function(lambda w: frontend(w))
    reference['frontend'] = lambda w: [
        keras_frontend(tf.constant(w[:, :data.WINDOW])).numpy()]
  written = export_models(output_dir, to_write, quantizations)
  report = {file: {'bytes': e['bytes'], 'ops': e['ops']}
            for file, e in written.items()}
  if check_dir is not None:
    clips = {task: labelled_clips(check_dir, task, class_names[task],
                                  clip_samples) for task in tasks}
    if not tasks:  # A frontend alone: every audio file under check_dir.
      clips = {'clips': _unlabelled_clips(check_dir, clip_samples)}
    frontend_clips = {
        t: [(w[:, :data.WINDOW], l) for w, l in c] for t, c in clips.items()}
    for file, result in check(
        {f: e for f, e in written.items() if e['base'] == 'classifier'},
        reference, clips, tasks, tolerance).items():
      report[file].update(result)
    if tasks:
      report['keras'] = {'accuracy': keras_accuracy(
          reference['classifier'], clips, tasks)}
    for file, result in check(
        {f: e for f, e in written.items() if e['base'] == 'frontend'},
        reference, frontend_clips, [], tolerance).items():
      report[file].update(result)
  if class_names:
    _write(os.path.join(output_dir, 'labels.json'),
           json.dumps(class_names, indent=2).encode())
  _write(os.path.join(output_dir, 'report.json'),
         json.dumps(report, indent=2).encode())
  return report


def _unlabelled_clips(check_dir: str, samples: int):
  """(waveform [1, samples], -1) of every audio file under `check_dir`."""
  clips = []
  for parent, _, files in sorted(os.walk(check_dir)):
    for file in sorted(files):
      if os.path.splitext(file)[1].lower() in audio_io.AUDIO_EXTENSIONS:
        waveform, rate = audio_io.read_audio(os.path.join(parent, file))
        if rate != data.SAMPLE_RATE:
          waveform = audio_io.resample(waveform, rate, data.SAMPLE_RATE)
        waveform = np.pad(waveform[:samples],
                          (0, max(0, samples - len(waveform))))
        clips.append((waveform[None].astype(np.float32), -1))
  return clips


def format_report(report: Dict) -> str:
  """One line per model: size, largest error against Keras, accuracies."""
  lines = []
  for file, entry in report.items():
    if file == 'keras':
      lines.append(f'{"Keras (reference)":34s} accuracy {entry["accuracy"]}')
      continue
    error = entry.get('max_relative_error')
    line = f'{file:34s} {entry["bytes"] / 1024:9.1f} KiB'
    if error is not None:
      line += f'  max relative error {error:.2e}'
    if 'accuracy' in entry:
      line += f'  accuracy {entry["accuracy"]}'
    lines.append(line)
  return '\n'.join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  console.quiet_logs()
  try:
    report = export(FLAGS.workdir, FLAGS.frontend, FLAGS.output_dir,
                    FLAGS.seconds, FLAGS.quantizations, FLAGS.check_dir,
                    FLAGS.tolerance, FLAGS.implementation)
  except (ValueError, FileNotFoundError, AssertionError) as e:
    sys.exit(f'export_tflite: {e}')
  print(format_report(report))


def run() -> None:
  """Entry point of the `leaf-audio-export-tflite` console script."""
  app.run(main)


if __name__ == '__main__':
  run()
