"""The demo's configs and its summary table (no training)."""

import json
import os

import gin
import pytest

from example import demo
from example import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ['keywords', 'speaker', 'instrument']


@pytest.mark.parametrize('frontend, config', demo.FRONTENDS)
def test_config_trains_a_small_convnet_on_the_three_corpus_tasks(frontend,
                                                                  config):
  gin.clear_config()
  try:
    main.parse_config([config], [])
    datasets = gin.query_parameter('train.datasets')
    selected = {key: gin.query_parameter(key).selector for key in (
        'AudioClassifier.frontend', 'AudioClassifier.encoder')}
  finally:
    gin.clear_config()
  assert datasets == [f'data/demo_corpus/{task}' for task in TASKS]
  for folder in datasets:
    for split in ('train', 'test'):
      assert os.path.isdir(os.path.join(REPO, folder, split))
  assert selected == {
      'AudioClassifier.frontend': {'LEAF': 'Leaf',
                                   'mel': 'MelFilterbanks'}[frontend],
      'AudioClassifier.encoder': 'ConvNet'}
  workdir, num_epochs = demo.run_settings(config)
  assert workdir == os.path.join(REPO, 'runs', 'demo',
                                 {'LEAF': 'leaf', 'mel': 'mel'}[frontend])
  assert num_epochs >= 1


def _fake_run(workdir, metrics, epochs_done, exported=True):
  os.makedirs(os.path.join(workdir, 'state'))
  with open(os.path.join(workdir, 'metrics.json'), 'w') as f:
    json.dump(metrics, f)
  with open(os.path.join(workdir, 'state', 'training_metadata.json'),
            'w') as f:
    json.dump({'epoch': epochs_done}, f)
  if exported:
    os.makedirs(os.path.join(workdir, 'export'))
    open(os.path.join(workdir, 'export', 'saved_model.pb'), 'w').close()


def _metrics(accuracy, num_classes):
  return {'accuracy': accuracy, 'loss': 1.0, 'examples': 40,
          'num_classes': num_classes}


def test_summary_reads_each_run_and_compares_with_chance(tmp_path):
  leaf, mel = str(tmp_path / 'leaf'), str(tmp_path / 'mel')
  _fake_run(leaf, {'keywords': _metrics(0.5, 10),
                   'instrument': _metrics(0.25, 8)}, 3)
  _fake_run(mel, {'speaker': _metrics(0.75, 4)}, 3)
  rows = demo.summary_rows([('LEAF', leaf), ('mel', mel)])
  assert [(r.frontend, r.task) for r in rows] == [
      ('LEAF', 'keywords'), ('LEAF', 'instrument'), ('mel', 'speaker')]
  assert [r.chance for r in rows] == pytest.approx([0.1, 0.125, 0.25])
  assert [r.ratio for r in rows] == pytest.approx([5.0, 2.0, 3.0])

  table = demo.format_table(rows, {'mel': 125.0})
  assert table.splitlines() == [
      '| frontend | task | test accuracy | chance | x chance |',
      '|----------|------|--------------:|-------:|---------:|',
      '| LEAF | keywords | 50.0 % | 10.0 % | 5.0 |',
      '| LEAF | instrument | 25.0 % | 12.5 % | 2.0 |',
      '| mel | speaker | 75.0 % | 25.0 % | 3.0 |',
      '',
      'LEAF: reused a finished run',
      'mel: trained in 2.1 min (wall time)',
  ]


def test_only_complete_runs_are_reused(tmp_path):
  metrics = {'keywords': _metrics(0.5, 10)}
  _fake_run(str(tmp_path / 'done'), metrics, 4)
  _fake_run(str(tmp_path / 'short'), metrics, 2)
  _fake_run(str(tmp_path / 'unexported'), metrics, 4, exported=False)
  assert demo.is_finished(str(tmp_path / 'done'), 4)
  assert not demo.is_finished(str(tmp_path / 'short'), 4)
  assert not demo.is_finished(str(tmp_path / 'unexported'), 4)
  assert not demo.is_finished(str(tmp_path / 'missing'), 4)
