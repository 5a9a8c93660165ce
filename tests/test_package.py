"""The package as a user installs it: a wheel built from the sources, installed
into a fresh virtual environment, runs the training program from a temporary
folder by its console script, with configs found by name and by include.

Installing TensorFlow into a fresh environment takes minutes, so the fresh
environment sees the site-packages of the interpreter running the tests
(a .pth file) and only the wheel itself is installed, without dependencies.
The editable install of the repository, if any, is not visible there: .pth
files of a folder listed in a .pth file are not read.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

import example_fixtures as fx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ('setup.py', 'README.md', 'leaf_audio', 'example', 'configs')


def _venv_python(venv):
  return os.path.join(venv, 'bin', 'python')


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """(wheel path, python of a fresh venv with only the wheel installed)."""
  base = tmp_path_factory.mktemp('package')
  src = base / 'src'
  src.mkdir()
  for name in SOURCES:
    origin = os.path.join(REPO, name)
    if os.path.isdir(origin):
      shutil.copytree(origin, src / name,
                      ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    else:
      shutil.copy(origin, src / name)
  dist = base / 'dist'
  subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--quiet', '--no-deps',
                  '--no-build-isolation', '--wheel-dir', str(dist), str(src)],
                 check=True, cwd=base, capture_output=True)
  (wheel,) = dist.glob('*.whl')
  venv = str(base / 'venv')
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', venv],
                 check=True)
  site = subprocess.run(
      [_venv_python(venv), '-c',
       'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
      check=True, capture_output=True, text=True).stdout.strip()
  shared = dict.fromkeys(sysconfig.get_paths()[k] for k in ('purelib',
                                                           'platlib'))
  with open(os.path.join(site, 'shared_site_packages.pth'), 'w') as f:
    f.write('\n'.join(shared) + '\n')
  subprocess.run([sys.executable, '-m', 'pip', '--python', _venv_python(venv),
                  'install', '--quiet', '--no-deps', '--no-index', str(wheel)],
                 check=True, capture_output=True)
  return str(wheel), venv


def test_wheel_holds_the_program_and_configs_under_a_namespaced_name(
    installed):
  wheel, _ = installed
  with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
  top = {n.split('/')[0] for n in names if '.dist-info/' not in n}
  assert top == {'leaf_audio', 'leaf_audio_example'}
  prefix = 'leaf_audio_example/configs/'
  configs = sorted(n[len(prefix):] for n in names if n.startswith(prefix))
  root = os.path.join(REPO, 'configs')
  assert configs == sorted(
      os.path.relpath(os.path.join(parent, f), root)
      for parent, _, files in os.walk(root) for f in files
      if f.endswith('.gin'))
  entry_points = next(n for n in names if n.endswith('entry_points.txt'))
  with zipfile.ZipFile(wheel) as z:
    text = z.read(entry_points).decode()
  assert 'leaf-audio-train = leaf_audio_example.main:run' in text
  assert ('leaf-audio-export-tflite = leaf_audio_example.export_tflite:run'
          in text)
  assert 'leaf-audio-pretrain = leaf_audio_example.pretrain:run' in text
  assert 'leaf-audio-inspect = leaf_audio_example.inspect:run' in text
  with zipfile.ZipFile(wheel) as z:
    metadata = z.read(next(n for n in names if n.endswith('METADATA'))).decode()
  assert 'Requires-Python: >=3.11' in metadata
  for requirement in ('importlib-resources', 'soundfile', 'soxr'):
    assert f'Requires-Dist: {requirement}' in metadata


def test_console_script_trains_from_another_folder(installed, tmp_path):
  _, venv = installed
  work = tmp_path / 'elsewhere'
  files, _ = fx.make_split_dataset(str(work / 'tones'), counts=(4, 1, 2))
  # A user's config next to the data, including a bundled one by name.
  (work / 'my.gin').write_text(
      "include 'mel.gin'\n"
      "AudioClassifier.encoder = @ConvNet()\nConvNet.filters = [8, 8]\n"
      "train.num_epochs = 1\ntrain.steps_per_epoch = 2\n"
      "train.batch_size = 4\n")
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env['TF_CPP_MIN_LOG_LEVEL'] = '2'
  # Where each name is found (find_spec runs no package code: no TensorFlow).
  where = subprocess.run(
      [_venv_python(venv), '-c', 'import importlib.util as u; '
       'print([getattr(u.find_spec(n), "origin", None) for n in '
       '("leaf_audio", "leaf_audio_example", "example")])'],
      cwd=work, env=env, capture_output=True, text=True, check=True)
  leaf, program, example = eval(where.stdout)  # pylint: disable=eval-used
  assert leaf.startswith(venv) and program.startswith(venv), where.stdout
  assert example is None
  done = subprocess.run(
      [os.path.join(venv, 'bin', 'leaf-audio-train'), '--gin_config=my.gin',
       "--gin_bindings=train.dataset = 'tones'",
       "--gin_bindings=train.workdir = 'run'",
       "--gin_bindings=train.data_dir = 'tfds'"],
      cwd=work, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  metrics = json.loads((work / 'run' / 'metrics.json').read_text())
  assert metrics['tones']['examples'] == len(files['test'])
  assert metrics['tones']['num_classes'] == 2
  assert 0. <= metrics['tones']['accuracy'] <= 1.
  assert (work / 'run' / 'export' / 'saved_model.pb').exists()
  # A missing config is named, by the same script.
  missing = subprocess.run(
      [os.path.join(venv, 'bin', 'leaf-audio-train'), '--gin_config=nope'],
      cwd=work, env=env, capture_output=True, text=True, timeout=120)
  assert missing.returncode != 0
  assert "gin config 'nope' not found" in missing.stderr
  assert 'leaf, leaf_custom, mel' in missing.stderr
