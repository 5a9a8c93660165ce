"""benchmarks/harness.py: the machine line and the worker processes the
benchmark scripts share (no TensorFlow: small scripts as workers)."""

import os
import re
import sys
import textwrap

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'benchmarks'))
import harness  # pylint: disable=g-import-not-at-top,wrong-import-position


def _script(tmp_path, body):
  path = tmp_path / 'worker.py'
  path.write_text(textwrap.dedent(body))
  return str(path)


def test_run_worker_passes_the_setting_and_parses_the_last_line(tmp_path):
  script = _script(tmp_path, """
      import json, sys
      print('a log line first')
      print(json.dumps({'argv': sys.argv[1:], 'ms': [1.5, 2]}))
      """)
  got = harness.run_worker(script, ['--batches', '32', '--frontends', 'Mel',
                                    'LEAF fast'], 'batch 32')
  assert got == {'argv': ['--worker', '--batches', '32', '--frontends', 'Mel',
                          'LEAF fast'], 'ms': [1.5, 2]}


def test_a_failed_worker_is_named_with_its_error(tmp_path):
  script = _script(tmp_path, """
      import sys
      sys.stderr.write('x' * 5000 + 'ResourceExhaustedError: out of memory')
      sys.exit(3)
      """)
  with pytest.raises(RuntimeError) as error:
    harness.run_worker(script, [], 'batch 1 x 10 s')
  message = str(error.value)
  assert message.startswith('The benchmark of batch 1 x 10 s failed (exit '
                            'status 3):\n')
  assert message.endswith('ResourceExhaustedError: out of memory')
  assert len(message.split('\n', 1)[1]) == 3000  # the end of stderr


def test_machine_line_names_the_cpu_cores_library_and_load():
  line = harness.machine_line('Keras', '3.9.9')
  match = re.fullmatch(r'Machine: (.+), (\d+) CPU cores visible, Keras 3\.9\.9,'
                       r' load average (\d+\.\d) at start\.', line)
  assert match, line
  assert int(match.group(2)) == os.cpu_count()
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      names = re.findall(r'^model name\s*:\s*(.+?)\s*$', f.read(), flags=re.M)
    if names:
      assert match.group(1) == names[0]
  assert match.group(1)
