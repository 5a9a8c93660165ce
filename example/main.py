"""Command line: `python -m example.main --gin_config=configs/leaf.gin`.

Both flags repeat. Config files are found relative to the current folder or
to the repository root (so `include 'configs/common.gin'` works anywhere).
A bad config file or binding stops the program before any data is read,
with gin's message.
"""

import os
import sys
from typing import Sequence

from absl import app
from absl import flags
import gin

from example import train

flags.DEFINE_multi_string('gin_config', [], 'Gin config file(s), in order.')
flags.DEFINE_multi_string('gin_bindings', [],
                          'Gin binding(s), applied after the config files, '
                          "e.g. \"train.workdir = '/tmp/run'\".")
FLAGS = flags.FLAGS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_config(config_files: Sequence[str], bindings: Sequence[str]) -> None:
  """Parses gin files then bindings; exits with gin's message on error."""
  gin.add_config_file_search_path(REPO_ROOT)
  try:
    gin.parse_config_files_and_bindings(config_files, bindings)
  except Exception as e:  # pylint: disable=broad-except
    sys.exit(f'Invalid gin configuration: {e}')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  parse_config(FLAGS.gin_config, FLAGS.gin_bindings)
  train.train()


if __name__ == '__main__':
  app.run(main)
