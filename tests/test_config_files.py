"""Gin configs by name or path, includes relative to the including file from
any folder, and errors that name the missing file and the bad line."""

import os

import gin
import pytest

from example import config_files
from example import main  # pylint: disable=unused-import (registrations)


def test_bundled_config_by_name_and_path_from_another_folder(tmp_path,
                                                             monkeypatch):
  monkeypatch.chdir(tmp_path)
  bundled = os.path.join(config_files.configs_dir(), 'leaf.gin')
  for name in ('leaf', 'leaf.gin', 'configs/leaf.gin', bundled):
    assert config_files.find_config(name) == bundled
  assert {'common', 'leaf', 'mel', 'multitask'} <= set(
      config_files.bundled_configs())


def test_includes_resolve_next_to_the_including_file(tmp_path, monkeypatch):
  (tmp_path / 'a' / 'b').mkdir(parents=True)
  (tmp_path / 'a' / 'base.gin').write_text(
      "include 'mel.gin'\ntrain.batch_size = 7\n")
  (tmp_path / 'a' / 'b' / 'run.gin').write_text(
      "include '../base.gin'\ntrain.num_epochs = 3\n")
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  monkeypatch.chdir(elsewhere)
  config_files.parse([str(tmp_path / 'a' / 'b' / 'run.gin')],
                     ['train.learning_rate = 0.5'], finalize=False)
  assert gin.query_parameter('train.batch_size') == 7
  assert gin.query_parameter('train.num_epochs') == 3
  assert gin.query_parameter('train.learning_rate') == 0.5
  # From mel.gin's own include of common.gin.
  assert gin.query_parameter('load_folder.resample') is True


def test_missing_and_cyclic_includes_are_named(tmp_path):
  (tmp_path / 'x.gin').write_text("train.batch_size = 3\ninclude 'gone.gin'\n")
  with pytest.raises(config_files.ConfigNotFoundError,
                     match=r"'gone.gin' \(included from .*x\.gin\) not found"):
    config_files.parse([str(tmp_path / 'x.gin')], [], finalize=False)
  with pytest.raises(config_files.ConfigNotFoundError,
                     match=r"'nope' not found.*bundled configs: .*leaf"):
    config_files.find_config('nope')
  (tmp_path / 'p.gin').write_text("include 'q.gin'\n")
  (tmp_path / 'q.gin').write_text("include 'p.gin'\n")
  gin.clear_config()
  with pytest.raises(ValueError, match='cycle'):
    config_files.parse([str(tmp_path / 'p.gin')], [], finalize=False)


def test_gin_errors_give_the_files_own_line(tmp_path):
  (tmp_path / 'bad.gin').write_text(
      "include 'mel.gin'\n# comment\ntrain.batch_size = = 3\n")
  with pytest.raises(Exception, match=r'bad\.gin", line 3|bad\.gin, line 3'):
    config_files.parse([str(tmp_path / 'bad.gin')], [], finalize=False)


@pytest.mark.parametrize('config', ['leaf', 'demo', 'multitask',
                                    'ssl/leaf', 'ssl/leaf_random'])
def test_recipes_train_leaf_in_the_fast_mode(config):
  """The recipes bind the fast mode; `Leaf()` in code stays exact (parity)."""
  # pylint: disable=g-import-not-at-top,unused-import (registrations)
  from example import pretraining
  from leaf_audio import frontend
  config_files.parse([config], [], finalize=False)
  assert gin.query_parameter('Leaf.implementation') == 'fast'
  gin.clear_config()
  assert frontend.Leaf().get_config()['implementation'] == 'conv'
