"""The README's usage example runs and says what it computes."""

import ast
import importlib
import importlib.util
import os
import re
import shlex

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


def _module_level_statements(tree):
  """The statements run at import: outside function and class bodies."""
  pending = list(tree.body)
  while pending:
    node = pending.pop()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                         ast.ClassDef)):
      continue
    yield node
    for child in ast.iter_child_nodes(node):
      if isinstance(child, ast.stmt):
        pending.append(child)


def _defines_and_imports(module_name):
  """(flags the module defines when imported, the modules of its package
  that it imports), read from its source.

  absl records a flag under the module that called DEFINE_*, which for a
  shared flag (`console.define_workdir_flag`) is example.console, imported by
  programs that do not take --workdir: hence the source, not the registry.
  """
  package = module_name.rsplit('.', 1)[0]
  with open(importlib.util.find_spec(module_name).origin,
            encoding='utf-8') as f:
    tree = ast.parse(f.read())
  defined, imported = set(), set()
  for statement in _module_level_statements(tree):
    if isinstance(statement, ast.ImportFrom):
      base = (package if statement.level == 1 else statement.module or '')
      if statement.level == 1 and statement.module:
        base = f'{package}.{statement.module}'
      if base == package:
        imported |= {f'{package}.{a.name}' for a in statement.names}
      elif base.startswith(package + '.'):
        imported.add(base)
    elif isinstance(statement, ast.Import):
      imported |= {a.name for a in statement.names
                   if a.name.startswith(package + '.')}
    for node in ast.walk(statement):
      if not isinstance(node, ast.Call):
        continue
      called = getattr(node.func, 'attr', getattr(node.func, 'id', ''))
      if called == 'define_workdir_flag':
        defined.add('workdir')
      elif called.startswith('DEFINE') and node.args and isinstance(
          node.args[0], ast.Constant):
        defined.add(node.args[0].value)
  return defined, {m for m in imported
                   if importlib.util.find_spec(m) is not None}


def _program_flags(module_name):
  """The flags `python -m <module_name>` parses: those its module and the
  modules of its package it imports (transitively) define, and absl's own."""
  seen, pending, names = set(), [module_name], set()
  while pending:
    name = pending.pop()
    if name in seen:
      continue
    seen.add(name)
    defined, imported = _defines_and_imports(name)
    names |= defined
    pending += sorted(imported)
  for module, defined in flags.FLAGS.flags_by_module_dict().items():
    if module.startswith('absl.'):
      names |= {f.name for f in defined}
  return names


def _check_program(module_name, args, cwd):
  """The module exists, knows every flag given, and its gin configs and
  bindings parse from `cwd`."""
  module = importlib.import_module(module_name)
  defined = _program_flags(module_name)
  # The source scan finds what absl registered for the module, and names
  # only flags that exist.
  assert {f.name for f in flags.FLAGS.get_flags_for_module(module)} <= defined
  assert defined <= set(flags.FLAGS), (module_name, defined - set(flags.FLAGS))
  given = [a[2:].split('=', 1) for a in args if a.startswith('--')]
  for flag in given:
    assert flag[0] in defined, (module_name, flag)
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


def test_program_flags_are_those_of_the_program_and_its_imports():
  """--workdir is taken by example.inspect and example.export_tflite (which
  define it through example.console), not by example.main, which imports
  example.console too."""
  for module in ('example.main', 'example.inspect',
                 'example.export_tflite', 'example.pretrain'):
    importlib.import_module(module)
  assert 'workdir' not in _program_flags('example.main')
  assert 'workdir' not in _program_flags('example.pretrain')
  assert {'workdir', 'clip', 'gin_config'} <= _program_flags('example.inspect')
  assert {'workdir', 'check_dir'} <= _program_flags('example.export_tflite')
  assert 'check_dir' not in _program_flags('example.inspect')
  assert {'gin_config', 'gin_bindings', 'logtostderr'} <= _program_flags(
      'example.pretrain')
