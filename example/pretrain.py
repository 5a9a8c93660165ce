"""Command line: `python -m example.pretrain --gin_config=configs/ssl/leaf.gin`.

Self-supervised (COLA) pre-training of a frontend and its encoder; see
`example.pretraining`. Flags as `example.main` (--gin_config and
--gin_bindings, both repeated), e.g.
`--gin_bindings="pretrain.workdir = '/tmp/cola'"`.
"""

from typing import Sequence

from absl import app

from . import main as main_lib
from . import pretraining

FLAGS = main_lib.FLAGS  # --gin_config and --gin_bindings.


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  main_lib.parse_config(FLAGS.gin_config, FLAGS.gin_bindings)
  pretraining.pretrain()


def run() -> None:
  """Entry point of the `leaf-audio-pretrain` console script."""
  app.run(main)


if __name__ == '__main__':
  run()
