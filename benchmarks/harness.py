"""What the benchmark scripts share: the frontends they compare, the line
naming the machine they ran on, and one setting measured in a fresh Python
process.

A script measures each setting in a worker process of its own (the script
itself, run again with `--worker` and the setting's arguments), so that a
setting's times do not depend on what was measured before it in the same
process; the worker prints its results as JSON on its last line of output.
"""

import json
import os
import platform
import subprocess
import sys
from typing import Any, Sequence

from leaf_audio import frontend

# The frontends every benchmark compares, by the name of their table row:
# each value builds a fresh layer.
FRONTENDS = {
    'Mel': frontend.MelFilterbanks,
    'LEAF conv (default)': lambda: frontend.Leaf(implementation='conv'),
    'LEAF fast': lambda: frontend.Leaf(implementation='fast'),
    'SincNet': frontend.SincNet,
    'SincNet+': frontend.SincNetPlus,
    'TD-fbanks': frontend.TimeDomainFilterbanks,
}


def cpu_name() -> str:
  """The processor's model name, from /proc/cpuinfo where there is one."""
  try:
    with open('/proc/cpuinfo') as cpuinfo:
      for line in cpuinfo:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine_line(library: str, version: str) -> str:
  """'Machine: <cpu>, <n> CPU cores visible, <library> <version>, load
  average <1-minute load> at start.'"""
  return (f'Machine: {cpu_name()}, {os.cpu_count()} CPU cores visible, '
          f'{library} {version}, load average {os.getloadavg()[0]:.1f} at '
          'start.')


def run_worker(script: str, args: Sequence[str], setting: str) -> Any:
  """Runs `python <script> --worker <args>` in a fresh process.

  Args:
    script: path of the benchmark script.
    args: the setting's command-line arguments.
    setting: the setting in words, for the error message.

  Returns:
    the last line the worker printed, parsed as JSON.

  Raises:
    RuntimeError: the worker failed; the message names `setting` and ends
      with the end of the worker's standard error.
  """
  command = [sys.executable, os.path.abspath(script), '--worker', *args]
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    raise RuntimeError(f'The benchmark of {setting} failed (exit status '
                       f'{done.returncode}):\n{done.stderr[-3000:]}')
  return json.loads(done.stdout.strip().splitlines()[-1])
