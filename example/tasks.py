"""Resolves a dataset argument to a task: its splits, classes and name.

A dataset argument is either the path of a local folder of labelled clips
(see `folder_dataset`) or a tensorflow-datasets name, optionally followed by
`:` and the path of the label feature, e.g. 'speech_commands', 'crema_d',
'nsynth:pitch', 'nsynth:instrument/family'. Whatever a dataset calls its
splits, a task exposes 'train', 'eval' (for checkpoint selection) and 'test'.
"""

import dataclasses
import os
import re
from typing import Dict, List, Optional, Sequence

import tensorflow as tf
import tensorflow_datasets as tfds

from . import folder_dataset

EVAL_SPLIT_NAMES = ('validation', 'valid', 'dev', 'eval')
HOLDOUT_PERCENT = 10  # Share of train carved out for a split a dataset lacks.


@dataclasses.dataclass
class Task:
  """One classification task.

  Attributes:
    name: the task's own name (a folder's name, or the tfds name), used in
      metrics.json, labels.json and the export's outputs.
    class_names: label names, index = class id.
    splits: 'train', 'eval', 'test' -> dataset of {'audio': [samples] int or
      float at 16 kHz, 'label': int scalar, or int vector when multi-label}.
    identity: what the data is (JSON-able): its source, classes and split
      contents, recorded in a workdir so that a run on other data is told.
  """
  name: str
  class_names: List[str]
  splits: Dict[str, tf.data.Dataset]
  identity: Dict = dataclasses.field(default_factory=dict)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def key(self) -> str:
    """The name made valid for Keras (its head and output key): every run
    of characters other than [A-Za-z0-9_] becomes '_' ('kw bad' -> 'kw_bad')."""
    return _sanitize(self.name)


def _sanitize(name: str) -> str:
  """A task name usable as an output key: [A-Za-z0-9_] only."""
  return re.sub(r'[^A-Za-z0-9_]+', '_', name).strip('_') or 'task'


def _split_specs(available: Sequence[str]) -> Dict[str, str]:
  """tfds split expressions for train / eval / test from the split names.

  A missing eval or test split is carved out of the end of train.
  """
  if 'train' not in available:
    raise ValueError(f'dataset has no train split (splits: {available})')
  specs = {'eval': next((s for s in EVAL_SPLIT_NAMES if s in available), None),
           'test': 'test' if 'test' in available else None}
  missing = [k for k, v in specs.items() if v is None]
  kept = 100 - HOLDOUT_PERCENT * len(missing)
  specs['train'] = f'train[:{kept}%]' if missing else 'train'
  for i, key in enumerate(missing):
    start = kept + HOLDOUT_PERCENT * i
    specs[key] = f'train[{start}%:{start + HOLDOUT_PERCENT}%]'
  return specs


def _select_label(label_path: Optional[str]):
  """Maps a tfds example to {'audio', 'label'} taking the label at a path."""

  def select(example):
    label = example
    for key in (label_path or 'label').split('/'):
      label = label[key]
    return {'audio': example['audio'], 'label': label}

  return select


def _feature_at(features, label_path: Optional[str]):
  for key in (label_path or 'label').split('/'):
    if key not in features:
      raise ValueError(f'no label feature {label_path or "label"!r}; '
                       f'features: {list(features.keys())}')
    features = features[key]
  return features


def _class_names(feature) -> List[str]:
  """Names of a ClassLabel, or of a Sequence of ClassLabel (multi-label)."""
  if isinstance(feature, tfds.features.Sequence):
    feature = feature.feature
  if not isinstance(feature, tfds.features.ClassLabel):
    raise ValueError(f'label feature {feature!r} is not a ClassLabel')
  return list(feature.names)


def load_task(dataset: str, data_dir: Optional[str] = None) -> Task:
  """Loads a task from a local folder or a tensorflow-datasets name.

  Args:
    dataset: folder path, or tfds name with an optional ':label/path'.
    data_dir: tensorflow-datasets data directory (None: its default).

  Returns:
    the task, its splits streaming from the prepared records.
  """
  if os.path.isdir(dataset):
    builder = folder_dataset.load_folder(dataset, data_dir=data_dir)
    name, label_path = folder_dataset.task_name(dataset), None
    specs = {'train': 'train', 'eval': 'validation', 'test': 'test'}
    identity = {'folder': name, **builder.identity()}
  else:
    if dataset.startswith(('.', '/', '~')) or os.sep in dataset.split(':')[0]:
      raise ValueError(f'dataset folder {dataset} does not exist')
    tfds_name, _, label_path = dataset.partition(':')
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    builder.download_and_prepare()
    name = _sanitize(tfds_name.split('/')[0] +
                     (f'_{label_path}' if label_path else ''))
    specs = _split_specs(list(builder.info.splits.keys()))
    identity = {'tfds': builder.info.full_name, 'label': label_path or 'label',
                'splits': {s: int(i.num_examples)
                           for s, i in sorted(builder.info.splits.items())}}
  features = builder.info.features
  sample_rate = getattr(features['audio'], 'sample_rate', None)
  if sample_rate not in (None, folder_dataset.SAMPLE_RATE):
    raise ValueError(f'{dataset} is sampled at {sample_rate} Hz; the models '
                     f'expect {folder_dataset.SAMPLE_RATE} Hz audio')
  class_names = _class_names(_feature_at(features, label_path))
  if len(class_names) < 2:
    raise ValueError(f'{dataset} has {len(class_names)} class(es) '
                     f'{class_names}; a classifier needs at least 2')
  select = _select_label(label_path or None)
  splits = {key: builder.as_dataset(split=spec, shuffle_files=key == 'train')
                .map(select) for key, spec in specs.items()}
  identity = {'name': name, **identity, 'classes': class_names}
  return Task(name=name, class_names=class_names, splits=splits,
              identity=identity)


def load_tasks(datasets: Sequence[str], data_dir: Optional[str]) -> List[Task]:
  """Loads several tasks; their names, and their Keras keys, must differ.

  Raises:
    ValueError: two datasets give the same task name or key.
  """
  tasks = [load_task(d, data_dir) for d in datasets]
  names = [t.name for t in tasks]
  if len(set(names)) != len(names):
    raise ValueError(f'task names must differ, got {names} for {datasets}; '
                     'rename a folder')
  keys = [t.key for t in tasks]
  if len(set(keys)) != len(keys):
    raise ValueError(f'tasks {names} would share a Keras output name in '
                     f'{keys} (only [A-Za-z0-9_] are kept); rename a folder')
  return tasks
