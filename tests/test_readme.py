"""The README's usage example runs and says what it computes."""

import importlib
import os
import re
import shlex
import sys

from absl import flags
import gin
import numpy as np

from example import config_files

README = os.path.join(os.path.dirname(__file__), '..', 'README.md')


def test_usage_example_runs():
  with open(README, encoding='utf-8') as f:
    blocks = re.findall(r'```python\n(.*?)```', f.read(), flags=re.S)
  assert blocks, 'README has no python example'
  namespace = {}
  exec(blocks[0], namespace)  # pylint: disable=exec-used
  assert namespace['features'].shape == (8, 100, 40)
  assert namespace['custom_leaf'](namespace['waveforms']).shape == (8, 50, 64)
  assert np.isfinite(np.asarray(namespace['features'])).all()


# ------------------------------------------------ every shell command in it

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The programs' entry modules in the repository (`python -m example.X`) and
# when installed (the console scripts of setup.py).
PROGRAM_MODULES = ('example.main', 'example.throughput',
                   'example.export_tflite', 'example.demo',
                   'example.pretrain', 'example.inspect')


def _shell_commands():
  """Every command of the README's sh blocks, as argv lists."""
  with open(README, encoding='utf-8') as f:
    blocks = re.findall(r'```sh\n(.*?)```', f.read(), flags=re.S)
  commands = []
  for block in blocks:
    for line in block.replace('\\\n', ' ').splitlines():
      argv = shlex.split(line, comments=True)
      if argv:
        commands.append(argv)
  return commands


def _console_scripts():
  """Console script name -> repository module, from setup.py."""
  with open(os.path.join(REPO, 'setup.py'), encoding='utf-8') as f:
    text = f.read()
  return {name: f'example.{module}' for name, module in re.findall(
      r"f?'([a-z-]+)=\{PROGRAM\}\.([a-z_]+):run'", text)}


def _check_program(module_name, args, cwd):
  """The module exists, knows every flag given, and its gin configs and
  bindings parse from `cwd`."""
  module = importlib.import_module(module_name)
  defined = set()
  for name in ('example.main', module_name):
    defined |= {f.name for f in flags.FLAGS.get_flags_for_module(
        sys.modules[name])} if name in sys.modules else set()
  given = [a[2:].split('=', 1) for a in args if a.startswith('--')]
  for flag in given:
    # A flag two programs share is defined by the first imported (see
    # example.inspect's --workdir).
    assert flag[0] in defined or flag[0] in flags.FLAGS, (module_name, flag)
  configs = [v for k, v in given if k == 'gin_config']
  bindings = [v for k, v in given if k == 'gin_bindings']
  if configs:
    old = os.getcwd()
    os.chdir(cwd)
    try:
      gin.clear_config()
      config_files.parse(configs, bindings, finalize=False)
    finally:
      gin.clear_config()
      os.chdir(old)
  return module


def test_every_shell_command_runs(tmp_path):
  scripts = _console_scripts()
  assert set(scripts) == {'leaf-audio-train', 'leaf-audio-export-tflite',
                          'leaf-audio-pretrain', 'leaf-audio-inspect'}
  with open(os.path.join(REPO, 'Makefile'), encoding='utf-8') as f:
    targets = set(re.findall(r'^([a-z][a-z-]*):', f.read(), flags=re.M))
  with open(os.path.join(REPO, 'setup.py'), encoding='utf-8') as f:
    extras = set(re.findall(r"^\s+'([a-z]+)': \[", f.read(), flags=re.M))
  checked = []
  for argv in _shell_commands():
    if argv[0] == 'make':
      assert set(argv[1:]) <= targets, argv
    elif argv[:2] == ['pip', 'install']:
      for target in argv[2:]:
        if target != '-e':
          spec = re.fullmatch(r'\.(?:\[([a-z,]+)\])?', target)
          assert spec, argv
          assert set((spec.group(1) or 'dev').split(',')) <= extras, argv
    elif argv[0] in scripts:
      # Installed: from any folder, configs found by name.
      _check_program(scripts[argv[0]], argv[1:], str(tmp_path))
    elif argv[0].endswith('python') and argv[1] == '-m':
      assert argv[2] in PROGRAM_MODULES, argv
      _check_program(argv[2], argv[3:], REPO)
    elif argv[0].endswith('python'):
      script = os.path.join(REPO, argv[1])
      with open(script, encoding='utf-8') as f:
        source = f.read()
      for arg in argv[2:]:
        if arg.startswith('--'):
          assert f"'{arg.split('=')[0]}'" in source, (argv, arg)
    else:
      raise AssertionError(f'README command not checked: {argv}')
    checked.append(argv[0])
  assert 'leaf-audio-train' in checked and 'leaf-audio-export-tflite' in (
      checked)
