"""Finds gin config files by name or path and parses them with their includes.

The bundled configs (`leaf`, `mel`, `common`, ...) ship with the program: in
the repository they are in `configs/`, in an installed package in the
package's own `configs/` folder. A config is named on the command line

  - by path (absolute, or relative to the current folder): `my/run.gin`;
  - by a bundled config's name, with or without `.gin`: `leaf`, `leaf.gin`;
  - by its path in the repository: `configs/leaf.gin` (from any folder).

An `include '...'` inside a config is resolved relative to the folder of the
file that includes it first, then as above, so configs include each other
from any working folder. Gin itself resolves includes against the working
folder only, so the includes are expanded here: each file is handed to gin
in the pieces between its include lines, padded with blank lines so that
gin's error messages give the file's own line numbers.
"""

import io
import os
import re
from typing import List, Optional, Sequence

import gin

CONFIG_SUFFIX = '.gin'
# An include statement on a line of its own, as gin writes them.
_INCLUDE = re.compile(r'''^\s*include\s+(['"])(?P<name>[^'"]+)\1\s*(#.*)?$''')


class ConfigNotFoundError(FileNotFoundError):
  """A gin config named on the command line or in an include is not found."""


def configs_dir() -> str:
  """The folder of the bundled configs (installed package or repository)."""
  here = os.path.dirname(os.path.abspath(__file__))
  installed = os.path.join(here, 'configs')
  if os.path.isdir(installed):
    return installed
  return os.path.join(os.path.dirname(here), 'configs')


def bundled_configs() -> List[str]:
  """Names of the bundled configs, e.g. ['common', 'demo', 'leaf', ...]."""
  folder = configs_dir()
  if not os.path.isdir(folder):
    return []
  return sorted(name[:-len(CONFIG_SUFFIX)] for name in os.listdir(folder)
                if name.endswith(CONFIG_SUFFIX))


def _candidates(name: str, including_dir: Optional[str]) -> List[str]:
  """Paths `name` may refer to, in the order they are tried."""
  expanded = os.path.expanduser(name)
  if os.path.isabs(expanded):
    return [expanded]
  folder = configs_dir()
  paths = []
  if including_dir is not None:
    paths.append(os.path.join(including_dir, expanded))
  paths.append(os.path.abspath(expanded))
  paths.append(os.path.join(folder, expanded))
  if not expanded.endswith(CONFIG_SUFFIX):
    paths.append(os.path.join(folder, expanded + CONFIG_SUFFIX))
  # 'configs/leaf.gin', the repository's own spelling.
  paths.append(os.path.join(os.path.dirname(folder), expanded))
  return paths


def find_config(name: str, including_file: Optional[str] = None) -> str:
  """The absolute path of the config `name` (see the module docstring).

  Args:
    name: a path or a bundled config's name.
    including_file: the config whose include names it, if any: its folder is
      searched first.

  Returns:
    the absolute path of an existing file.

  Raises:
    ConfigNotFoundError: no such file; the message names it and where it
      was looked for.
  """
  if not isinstance(name, str) or not name:
    raise ConfigNotFoundError(
        f'expected a gin config path or name, got {name!r}')
  including_dir = (os.path.dirname(os.path.abspath(including_file))
                   if including_file else None)
  paths = _candidates(name, including_dir)
  for path in paths:
    if os.path.isfile(path):
      return os.path.abspath(path)
  where = f' (included from {including_file})' if including_file else ''
  searched = ', '.join(dict.fromkeys(paths))
  raise ConfigNotFoundError(
      f'gin config {name!r}{where} not found; looked for {searched}. '
      f'Pass a path to a .gin file or one of the bundled configs: '
      f'{", ".join(bundled_configs())}')


def _parse_file(path: str, stack: Sequence[str]) -> None:
  """Parses one config file into gin, expanding its includes in place."""
  if path in stack:
    cycle = ' -> '.join(list(stack) + [path])
    raise ValueError(f'gin configs include each other in a cycle: {cycle}')
  with open(path, encoding='utf-8') as f:
    lines = f.read().split('\n')
  start = 0

  def flush(end):
    if any(line.strip() for line in lines[start:end]):
      # Blank lines in front keep gin's line numbers those of the file.
      piece = io.StringIO('\n' * start + '\n'.join(lines[start:end]))
      piece.name = path
      gin.parse_config(piece)

  for number, line in enumerate(lines):
    match = _INCLUDE.match(line)
    if match is None:
      continue
    flush(number)
    start = number + 1
    included = find_config(match.group('name'), including_file=path)
    _parse_file(included, list(stack) + [path])
  flush(len(lines))


def parse(config_files: Sequence[str], bindings: Sequence[str],
          finalize: bool = True) -> List[str]:
  """Parses config files (names or paths) in order, then bindings.

  Args:
    config_files: gin config paths or bundled config names.
    bindings: gin binding strings applied after the files, in order.
    finalize: lock the configuration afterwards (gin.finalize).

  Returns:
    the absolute paths of the files given (not of their includes).

  Raises:
    ConfigNotFoundError: a file or an include is not found.
    Any error of gin's parser, with the file and line.
  """
  paths = [find_config(name) for name in config_files]
  for path in paths:
    _parse_file(path, [])
  gin.parse_config(list(bindings))
  if finalize:
    gin.finalize()
  return paths
