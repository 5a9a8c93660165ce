"""TensorFlow Lite: every frontend, LEAF included, converts with builtin ops
only and runs in the LiteRT interpreter within 1e-4 (relative L2) of Keras on
the demo corpus' test clips; the export program does the same for a trained
classifier from its workdir."""

import json
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

import example_fixtures as fx
from example import audio_io
from example import export_tflite
from example import main
from example import train
from leaf_audio import frontend
from leaf_audio import tflite

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, 'data', 'demo_corpus')


def _test_clips(count=3):
  """The first test clip of `count` keyword classes, [1, 16000] each."""
  clips = []
  root = os.path.join(CORPUS, 'keywords', 'test')
  for name in sorted(os.listdir(root))[:count]:
    first = sorted(os.listdir(os.path.join(root, name)))[0]
    waveform, rate = audio_io.read_audio(os.path.join(root, name, first))
    assert rate == 16000
    clips.append(np.pad(waveform[:16000],
                        (0, max(0, 16000 - len(waveform))))[None])
  return clips


def _moved(layer, seed=0):
  """Moves every weight of a built layer away from its initialization by up
  to 10% (then the converted model must read the weights, not defaults)."""
  rng = np.random.default_rng(seed)
  layer.set_weights([w * rng.uniform(0.9, 1.1, w.shape).astype(w.dtype)
                     for w in layer.get_weights()])
  return layer


FRONTENDS = {
    'leaf': lambda: frontend.Leaf(),
    'leaf_preemp_mvn_log': lambda: frontend.Leaf(
        preemp=True, mean_var_norm=True, compression_fn='log', n_filters=24),
    'tfbanks': lambda: frontend.TimeDomainFilterbanks(),
    'sincnet_plus': lambda: frontend.SincNetPlus(),
    'mel': lambda: frontend.MelFilterbanks(),
}


@pytest.mark.parametrize('name', sorted(FRONTENDS))
def test_frontend_converts_with_builtins_and_matches_keras(name):
  layer = FRONTENDS[name]()
  layer(tf.zeros([1, 16000]))
  _moved(layer)
  model = tflite.to_tflite(tflite.BuiltinOpsFrontend(layer), (1, 16000))
  ops = export_tflite.op_names(model)
  assert not [op for op in ops if 'FLEX' in op or 'CUSTOM' in op], ops
  if name.startswith('leaf'):
    # Direct convolution and real arithmetic: no FFT, no complex numbers.
    assert 'CONV_2D' in ops and 'RFFT2D' not in ops and 'REAL' not in ops
  runner = export_tflite.interpreter(model)
  for clip in _test_clips():
    want = layer(clip).numpy()
    got = export_tflite.run_tflite(runner, clip)[0]
    assert got.shape == want.shape
    assert export_tflite.relative_error(got, want) < 1e-4


def test_leaf_fast_on_the_grid_converts_and_stays_within_the_fast_error():
  """implementation='fast': builtins only, no FFT, and within the fast
  mode's error of the exact features (measured 4e-4 to 9e-4 at moved
  weights), in LiteRT and in Keras at clip lengths the grid does not divide
  (the edge frames' windows cross the clip's ends)."""
  layer = frontend.Leaf()
  layer(tf.zeros([1, 16000]))
  _moved(layer)
  fast = tflite.BuiltinOpsFrontend(layer, implementation='fast')
  assert fast.get_config()['implementation'] == 'fast'
  model = tflite.to_tflite(fast, (1, 16000))
  ops = export_tflite.op_names(model)
  assert not [op for op in ops if 'FLEX' in op or 'CUSTOM' in op], ops
  assert 'CONV_2D' in ops and 'RFFT2D' not in ops
  runner = export_tflite.interpreter(model)
  clips = _test_clips()
  for clip in clips:
    want = layer(clip).numpy()
    got = export_tflite.run_tflite(runner, clip)[0]
    assert got.shape == want.shape
    assert export_tflite.relative_error(got, want) < 2e-3
  # Not the exact computation in disguise: the grid's own error shows.
  assert export_tflite.relative_error(got, want) > 1e-5
  for samples in (15990, 3001, 401):
    batch = np.concatenate([clip[:, :samples] for clip in clips])
    want = layer(batch).numpy()
    got = fast(batch).numpy()
    assert got.shape == want.shape
    assert export_tflite.relative_error(got, want) < 3e-3, samples
  # The Leaf's fast_tolerance sets the plan: with 'accuracy', LEAF's initial
  # 60 Hz channel is computed at every sample (a grid step of 1).
  accurate = frontend.Leaf(fast_tolerance='accuracy')
  accurate(clips[0])
  accurate.set_weights(layer.get_weights())
  batch = np.concatenate(clips)
  assert export_tflite.relative_error(
      tflite.BuiltinOpsFrontend(accurate, implementation='fast')(
          batch).numpy(), accurate(batch).numpy()) < 2e-3


def test_fast_builtin_frontend_refuses_what_it_cannot_compute():
  with pytest.raises(ValueError, match="'conv' or 'fast'"):
    tflite.BuiltinOpsFrontend(frontend.Leaf(), implementation='exact')
  with pytest.raises(ValueError, match='for LEAF'):
    tflite.BuiltinOpsFrontend(frontend.MelFilterbanks(), implementation='fast')
  with pytest.raises(ValueError, match='GaborConv1D'):
    tflite.BuiltinOpsFrontend(frontend.TimeDomainFilterbanks(),
                              implementation='fast')
  layer = tflite.BuiltinOpsFrontend(frontend.Leaf(), implementation='fast')
  with pytest.raises(ValueError, match='static clip length'):
    tf.function(layer, input_signature=[
        tf.TensorSpec((1, None), tf.float32)]).get_concrete_function()


def test_the_trained_leaf_itself_needs_flex_ops():
  # Why BuiltinOpsFrontend exists: Leaf's FFT computation does not convert.
  layer = frontend.Leaf()
  layer(tf.zeros([1, 16000]))
  with pytest.raises(Exception, match='IFFT'):
    tflite.to_tflite(layer, (1, 16000))


@pytest.mark.parametrize('frames', [1, 7, 100, 137])
def test_builtin_ema_is_the_recursion(frames):
  rng = np.random.default_rng(frames)
  x = rng.uniform(0, 2, (2, frames, 5)).astype(np.float32)
  s = np.array([0.0, 0.04, 0.3, 0.9, 1.0], np.float32)
  got = tflite._ema_builtin(tf.constant(x), tf.constant(s)).numpy()  # pylint: disable=protected-access
  want = np.empty_like(x, dtype=np.float64)
  state = x[:, 0].astype(np.float64)
  for t in range(frames):
    state = s * x[:, t] + (1 - s) * state
    want[:, t] = state
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_export_program_on_a_trained_workdir(tmp_path):
  files, names = fx.make_split_dataset(str(tmp_path / 'tones'),
                                       counts=(4, 1, 3))
  workdir = str(tmp_path / 'run')
  gin.clear_config()
  main.parse_config(['leaf'], [
      f"train.workdir = '{workdir}'",
      f"train.dataset = '{tmp_path / 'tones'}'",
      f"train.data_dir = '{tmp_path / 'tfds'}'",
      'AudioClassifier.encoder = @ConvNet()', 'ConvNet.filters = [8, 8]',
      'train.num_epochs = 1', 'train.steps_per_epoch = 2',
      'train.batch_size = 4', 'Leaf.n_filters = 16',
      # The export computes exactly whichever mode trained; this one trains
      # exactly too, as the fast mode's traces take longer than the test.
      "Leaf.implementation = 'conv'"])
  train.train(verbose=0)
  report = export_tflite.export(workdir, None, None, seconds=2.0,
                                check_dir=str(tmp_path / 'tones'))
  out = os.path.join(workdir, 'tflite')
  assert sorted(os.listdir(out)) == [
      'classifier.tflite', 'classifier_float16.tflite', 'frontend.tflite',
      'frontend_float16.tflite', 'labels.json', 'report.json']
  with open(os.path.join(out, 'labels.json')) as f:
    assert json.load(f) == {'tones': names}
  for file in ('classifier.tflite', 'frontend.tflite'):
    assert report[file]['max_relative_error'] < 1e-4
    assert report[file.replace('.', '_float16.')]['bytes'] < (
        0.7 * report[file]['bytes'])
  # The float32 model's accuracy is Keras' on the same clips.
  assert report['classifier.tflite']['accuracy'] == report['keras'][
      'accuracy']
  # A 2 s input: the SavedModel export's logits on the same clip.
  serve = tf.saved_model.load(os.path.join(workdir, 'export')).signatures[
      'serving_default']
  clip = np.pad(audio_io.read_audio(files['test'][0][0])[0], (0, 32000))
  clip = clip[None, :32000].astype(np.float32)
  want = serve(waveform=tf.constant(clip))['tones'].numpy()
  with open(os.path.join(out, 'classifier.tflite'), 'rb') as f:
    got = export_tflite.run_tflite(export_tflite.interpreter(f.read()),
                                   clip)[0]
  assert export_tflite.relative_error(got, want) < 1e-4
  # LEAF on the fast mode's grid, checked against Keras' exact computation
  # within --implementation=fast's default tolerance (2e-2).
  fast_dir = str(tmp_path / 'fast')
  report = export_tflite.export(workdir, None, fast_dir, seconds=2.0,
                                quantizations=(),
                                check_dir=str(tmp_path / 'tones'),
                                implementation='fast')
  # (Measured: features 1.5e-3, the classifier's logits 3e-3 to 9e-3.)
  assert 1e-6 < report['frontend.tflite']['max_relative_error'] < 3e-3
  assert 1e-6 < report['classifier.tflite']['max_relative_error'] < 2e-2
  with pytest.raises(ValueError, match='implementation'):
    export_tflite.export(workdir, None, fast_dir, implementation='banded')
  with pytest.raises(ValueError, match='for LEAF'):
    export_tflite.export(None, 'MelFilterbanks', fast_dir,
                         implementation='fast')
  with pytest.raises(FileNotFoundError, match='best.weights.h5'):
    export_tflite.export(str(tmp_path), None, None)
  # A frontend alone, checked on every clip under a folder.
  mel_dir = str(tmp_path / 'mel')
  report = export_tflite.export(None, 'MelFilterbanks', mel_dir,
                                quantizations=(),
                                check_dir=str(tmp_path / 'tones' / 'test'))
  assert sorted(os.listdir(mel_dir)) == ['frontend.tflite', 'report.json']
  assert report['frontend.tflite']['max_relative_error'] < 1e-4
  with pytest.raises(ValueError, match='either --workdir'):
    export_tflite.export(workdir, 'Leaf', None)
