"""Command line: `leaf-audio-train --gin_config=leaf` (installed), or
`python -m example.main --gin_config=configs/leaf.gin` in the repository.

Both flags repeat. A config is a path or a bundled config's name, and an
include inside a config is found relative to the including file (see
`config_files`), from any folder. A bad or missing config file or binding
stops the program before any data is read, with a message naming it.
"""

import os
import sys
from typing import Sequence

# TensorFlow's C++ INFO lines (see console.py): set before it is imported.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

from . import config_files
from . import console
from . import train
# pylint: enable=g-import-not-at-top,wrong-import-position

flags.DEFINE_multi_string('gin_config', [], 'Gin config file(s), in order.')
flags.DEFINE_multi_string('gin_bindings', [],
                          'Gin binding(s), applied after the config files, '
                          "e.g. \"train.workdir = '/tmp/run'\".")
FLAGS = flags.FLAGS


def parse_config(files: Sequence[str], bindings: Sequence[str]) -> None:
  """Parses gin files (paths or bundled names) then bindings; exits with
  the parser's message (naming the file) on error."""
  try:
    config_files.parse(files, bindings)
  except Exception as e:  # pylint: disable=broad-except
    sys.exit(f'Invalid gin configuration: {e}')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  console.quiet_logs()
  parse_config(FLAGS.gin_config, FLAGS.gin_bindings)
  results = train.train()
  print(f'\nTest metrics against chance:\n{console.results_table(results)}')


def run() -> None:
  """Entry point of the `leaf-audio-train` console script."""
  app.run(main)


if __name__ == '__main__':
  run()
