"""What a workdir is for: one run, by one process at a time.

A workdir records what made it in `run.json`: the operative gin
configuration (every parameter the run's configurables were called with,
defaults included) and each dataset's identity (its classes and what its
splits hold). A run that finds a `run.json` compares it with its own and
stops, listing the differences, instead of resuming another run's state,
best weights and export. Changing only the parameters in `RESUMABLE` (more
epochs, another data_dir or strategy, a moved workdir) resumes.

A run holds the workdir's lock (`lock`) from start to end: a second run on
a busy workdir stops at once, naming the process that holds it.
"""

import contextlib
import json
import os
import re
from typing import Dict, Iterator, List, Optional, Sequence

from absl import logging

from . import callbacks
from . import locks

RECORD = 'run.json'
LOCK = 'lock'
# Parameters a run may change and still resume the workdir's state.
RESUMABLE = ('train.num_epochs', 'train.workdir', 'train.data_dir',
             'train.strategy', 'train.recompute_batchnorm',
             'pretrain.num_epochs', 'pretrain.workdir', 'pretrain.data_dir',
             'pretrain.strategy')


class WorkdirMismatchError(ValueError):
  """The workdir was made by a different configuration or dataset."""


class WorkdirBusyError(RuntimeError):
  """Another process is running in the workdir."""


@contextlib.contextmanager
def lock(workdir: str, program: str = 'train') -> Iterator[None]:
  """Holds `workdir`'s lock for the `with` block; fails at once if busy.

  `program` ('train' or 'pretrain') names the run in the lock and the
  gin parameter to change in the message.

  Raises:
    WorkdirBusyError: another process holds it; the message names it.
  """
  path = os.path.join(workdir, LOCK)
  try:
    with locks.hold(path, f'{program}ing in {workdir}'):
      yield
  except locks.LockedError:
    raise WorkdirBusyError(
        f'workdir {workdir} is in use by '
        f'{locks.describe(locks.holder(path))}; wait for that run to end '
        f'(or stop it), or pick another {program}.workdir') from None


_BINDING = re.compile(r'^([A-Za-z_][\w.]*(?:/[\w.]+)*)\s*=\s*(.*)$')


def parse_config(text: str) -> Dict[str, str]:
  """Binding -> value text of a gin config string (imports and comments
  dropped, values spread over several lines joined)."""
  bindings, last = {}, None
  for line in text.splitlines():
    stripped = line.strip()
    if not stripped or stripped.startswith('#'):
      continue
    match = _BINDING.match(line)
    if match and not line[0].isspace():
      last = match.group(1)
      bindings[last] = match.group(2).strip()
    elif line.startswith(('import ', 'from ', 'include ')):
      last = None
    elif last is not None:
      bindings[last] += ' ' + stripped
  return {k: ' '.join(v.split()) for k, v in bindings.items()}


def make_record(config: str, datasets: Sequence[Dict]) -> Dict:
  """What `run.json` holds for a run of operative config `config`."""
  return {'config': parse_config(config), 'datasets': list(datasets)}


def differences(saved: Dict, current: Dict) -> List[str]:
  """Human-readable differences between two records (resumable ones left
  out), one line each."""
  lines = []
  old, new = saved.get('config', {}), current.get('config', {})
  for key in sorted(set(old) | set(new)):
    if key in RESUMABLE or old.get(key) == new.get(key):
      continue
    lines.append(f'{key}: {old.get(key, "(unset)")} in the workdir, '
                 f'{new.get(key, "(unset)")} now')
  old_sets, new_sets = saved.get('datasets', []), current.get('datasets', [])
  if len(old_sets) != len(new_sets):
    lines.append(f'datasets: {[d.get("name") for d in old_sets]} in the '
                 f'workdir, {[d.get("name") for d in new_sets]} now')
  for before, after in zip(old_sets, new_sets):
    for key in sorted(set(before) | set(after)):
      if before.get(key) != after.get(key):
        lines.append(f'dataset {after.get("name", before.get("name"))} '
                     f'{key}: {before.get(key)} in the workdir, '
                     f'{after.get(key)} now')
  return lines


def check_or_record(workdir: str, record: Dict,
                    program: str = 'train') -> None:
  """Checks the run against the workdir's record, or records it.

  Call it before resuming anything. A workdir holding a run's outputs but no
  record (made before records existed) is adopted with a warning. `program`
  ('train' or 'pretrain') names the gin parameter to change in the message.

  Raises:
    WorkdirMismatchError: the workdir was made by another configuration or
      dataset; the message lists the differences and says how to go on.
  """
  path = os.path.join(workdir, RECORD)
  saved = None
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
  if saved is not None:
    found = differences(saved, record)
    if found:
      listing = '\n  '.join(found)
      raise WorkdirMismatchError(
          f'workdir {workdir} was made by a different run; resuming would '
          f'mix the two:\n  {listing}\nTo start afresh, pick another '
          f'{program}.workdir (or delete {workdir}); to resume, run with the '
          f'configuration in {path} (its operative_config.gin too).')
  elif any(os.path.exists(os.path.join(workdir, name))
           for name in ('state', 'best.json', 'metrics.json',
                        'pretrained.keras')):
    logging.warning('Workdir %s has no %s (made by an older version): '
                    'adopting it unchecked.', workdir, RECORD)
  callbacks.write_json(path, record)


def read_record(workdir: str) -> Optional[Dict]:
  """The workdir's record, or None."""
  path = os.path.join(workdir, RECORD)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)
