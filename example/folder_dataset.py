"""A tensorflow-datasets builder for a local folder of labelled clips.

Layouts accepted (class folders hold .wav or .flac files, at any depth):

    root/<class>/*.wav                       split here deterministically
    root/{train,validation,test}/<class>/*   split folders, any of the three

Splits missing from the layout are carved out of `train`, per class, by a
deterministic hash of each file's path, so that the same folder always gives
the same splits. The builder decodes every clip once, resamples it to 16 kHz
(or refuses it), and writes int16 records that stream through the same
tf.data code as any tensorflow-datasets audio dataset.
"""

import hashlib
import os
import re
from typing import Dict, List, Sequence, Tuple

from absl import logging
from etils import epath
import gin
import numpy as np
import tensorflow_datasets as tfds

from . import audio_io
from . import locks

SPLITS = ('train', 'validation', 'test')
SAMPLE_RATE = 16000


def _audio_files(folder: str) -> List[str]:
  """Sorted paths of the audio files under `folder` (recursively)."""
  found = []
  for parent, _, names in os.walk(folder):
    found += [os.path.join(parent, n) for n in names
              if os.path.splitext(n)[1].lower() in audio_io.AUDIO_EXTENSIONS]
  return sorted(found)


def _class_folders(folder: str) -> Dict[str, List[str]]:
  """Class name -> audio files, for each subfolder of `folder`.

  Raises:
    ValueError: a class folder holds no audio file.
  """
  classes = {}
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if os.path.isdir(path) and not name.startswith('.'):
      files = _audio_files(path)
      if not files:
        raise ValueError(f'class folder {path} holds no audio file '
                         f'(expected {" or ".join(audio_io.AUDIO_EXTENSIONS)})')
      classes[name] = files
  return classes


def _holdout_size(count: int, fraction: float) -> int:
  """How many of a class's `count` files go to one held-out split."""
  return 0 if count < 3 or fraction <= 0 else max(1, round(count * fraction))


def _stable_order(files: Sequence[str], root: str) -> List[str]:
  """Files ordered by a hash of their path relative to `root`."""
  key = lambda f: hashlib.sha1(os.path.relpath(f, root).encode()).hexdigest()
  return sorted(files, key=key)


def scan(root: str, validation_fraction: float = 0.1,
         test_fraction: float = 0.1) -> Tuple[List[str], Dict[str, list]]:
  """Finds the classes and assigns each audio file to a split.

  Args:
    root: the dataset folder (either layout in the module docstring).
    validation_fraction: share of each class's train files held out as
      validation when there is no validation/ folder.
    test_fraction: the same for test when there is no test/ folder.

  Returns:
    (sorted class names, {split: [(path, class name), ...]} for the three
    splits).

  Raises:
    ValueError: the folder does not exist, holds no class folder or no audio,
      or fewer than 2 classes, mixes split folders with class folders, or a
      class folder is empty. A class missing from a split is a warning.
  """
  if not os.path.isdir(root):
    raise ValueError(f'dataset folder {root} does not exist')
  subfolders = {n for n in os.listdir(root)
                if os.path.isdir(os.path.join(root, n)) and n[0] != '.'}
  present = subfolders & set(SPLITS)
  if present:
    if subfolders - set(SPLITS):
      raise ValueError(
          f'{root} mixes split folders {sorted(present)} with other folders '
          f'{sorted(subfolders - set(SPLITS))}; expected only {SPLITS}')
    if 'train' not in present:
      raise ValueError(f'{root} has split folders but no train/ folder')
    by_split = {s: _class_folders(os.path.join(root, s)) for s in present}
  else:
    by_split = {'train': _class_folders(root)}
  if not by_split['train']:
    raise ValueError(f'{root} holds no class folder with audio files; '
                     'expected <root>/<class>/*.wav or '
                     '<root>/{train,validation,test}/<class>/*.wav')

  assigned = {s: [] for s in SPLITS}
  for split, classes in by_split.items():
    for name, files in classes.items():
      assigned[split] += [(f, name) for f in files]
  missing = [s for s in ('test', 'validation') if s not in by_split]
  if missing:
    fractions = {'validation': validation_fraction, 'test': test_fraction}
    assigned['train'] = []
    for name, files in by_split['train'].items():
      files = _stable_order(files, root)
      for split in missing:
        size = _holdout_size(len(files), fractions[split])
        assigned[split] += [(f, name) for f in files[:size]]
        files = files[size:]
      assigned['train'] += [(f, name) for f in sorted(files)]
  for split in SPLITS:
    if not assigned[split]:
      raise ValueError(f'{root}: the {split} split is empty; add a {split}/ '
                       'folder or at least 3 files per class')
  names = sorted(set().union(*(c.keys() for c in by_split.values())))
  if len(names) < 2:
    raise ValueError(f'{root} holds {len(names)} class folder(s) {names}; a '
                     'classifier needs at least 2 (one subfolder per class)')
  _warn_missing_classes(root, names, assigned)
  return names, assigned


def _warn_missing_classes(root: str, names: Sequence[str],
                          assigned: Dict[str, list]) -> Dict[str, List[str]]:
  """Warns about each split that lacks some classes, naming them.

  A class absent from train can never be predicted; one absent from
  validation or test is not measured there.

  Returns:
    split -> the classes it lacks (splits lacking none left out).
  """
  missing = {}
  for split in SPLITS:
    present = {name for _, name in assigned[split]}
    lacking = [n for n in names if n not in present]
    if lacking:
      missing[split] = lacking
      consequence = ('the model never sees them in training' if
                     split == 'train' else f'they are not measured in {split}')
      logging.warning('%s: class(es) %s have no %s file: %s (classes of '
                      'fewer than 3 files stay in train when splits are '
                      'carved out).', root, lacking, split, consequence)
  return missing


def _fingerprint(assigned: Dict[str, list], options: str) -> str:
  """Hash of the file list, sizes, times and options: the cache key."""
  digest = hashlib.sha1(options.encode())
  for split in SPLITS:
    for path, name in assigned[split]:
      stat = os.stat(path)
      digest.update(f'{split}|{name}|{path}|{stat.st_size}|'
                    f'{stat.st_mtime_ns}\n'.encode())
  return digest.hexdigest()[:12]


def task_name(root: str) -> str:
  """A folder dataset's task name: its folder name."""
  return os.path.basename(os.path.normpath(os.path.abspath(root)))


class AudioFolder(tfds.core.GeneratorBasedBuilder):
  """Builds a tensorflow-datasets dataset from a local folder of clips.

  Each prepared copy is a builder config named after the folder and a
  fingerprint of its files, so editing the folder prepares it anew.
  """

  VERSION = tfds.core.Version('1.0.0')

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This file. tfds' own lookup needs `importlib_resources`, which
    tensorflow-datasets 4.9 uses on every Python but only declares below
    3.9; this builder has no checksums file to find anyway."""
    return epath.Path(__file__)

  def __init__(self, *, root: str, resample: bool = True,
               validation_fraction: float = 0.1, test_fraction: float = 0.1,
               **kwargs):
    """Scans `root` (see `scan`); other kwargs go to the tfds builder."""
    self._root = os.path.abspath(root)
    self._resample = resample
    self._class_names, self._assigned = scan(self._root, validation_fraction,
                                             test_fraction)
    slug = re.sub(r'[^a-z0-9]+', '_', task_name(root).lower()).strip('_')
    # The decoder's name: clips prepared by another decoder are prepared anew.
    key = _fingerprint(self._assigned, f'{resample}/soundfile+soxr')
    config = tfds.core.BuilderConfig(name=f'{slug or "folder"}_{key}',
                                     description=f'audio clips of {root}')
    super().__init__(config=config, **kwargs)

  def identity(self) -> Dict:
    """What the dataset is, independent of where it lies: its classes and
    a digest of each split's files (relative paths, classes, sizes)."""
    digest = hashlib.sha1()
    files = {}
    for split in SPLITS:
      files[split] = len(self._assigned[split])
      for path, name in self._assigned[split]:
        digest.update(f'{split}|{name}|{os.path.relpath(path, self._root)}|'
                      f'{os.path.getsize(path)}\n'.encode())
    return {'classes': list(self._class_names), 'files': files,
            'digest': digest.hexdigest()[:16],
            'resample': self._resample}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'audio': tfds.features.Audio(shape=(None,), dtype=np.int16,
                                         sample_rate=SAMPLE_RATE),
            'label': tfds.features.ClassLabel(names=self._class_names),
            'path': tfds.features.Text(),
        }),
        supervised_keys=('audio', 'label'),
        metadata=tfds.core.MetadataDict(root=self._root, skipped={},
                                       rescaled={}),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in SPLITS}

  def _decode(self, path: str) -> Tuple[np.ndarray, float]:
    """One file as int16 samples at 16 kHz, and its peak before scaling.

    Float clips louder than [-1, 1] are scaled into range (`fit_range`), not
    clipped; the returned peak says so (> 1).

    Raises:
      audio_io.UnreadableAudioError: not decodable, truncated, NaN or Inf.
      ValueError: another sample rate while resampling is off.
    """
    samples, rate = audio_io.read_audio(path)
    if samples.size == 0:
      raise audio_io.UnreadableAudioError('no samples')
    if rate != SAMPLE_RATE and not self._resample:
      raise ValueError(f'{path} is sampled at {rate} Hz, expected '
                       f'{SAMPLE_RATE} Hz; convert it, or let the folder '
                       'be resampled (load_folder.resample = True)')
    samples, peak = audio_io.fit_range(samples)
    if rate != SAMPLE_RATE:
      samples = audio_io.resample(samples, rate, SAMPLE_RATE)
    # The resampler may overshoot full scale by a hair.
    return np.round(np.clip(samples, -1., 1.) * 32767.).astype(np.int16), peak

  def _generate_examples(self, split: str):
    """Yields (key, example) for the split, skipping unreadable files and
    scaling float clips beyond [-1, 1] into range, each with a warning."""
    skipped, rescaled = [], []
    for path, name in self._assigned[split]:
      try:
        audio, peak = self._decode(path)
      except audio_io.UnreadableAudioError as e:
        logging.warning('Skipping unreadable audio file %s: %s', path, e)
        skipped.append(path)
        continue
      if peak > 1.:
        logging.warning('Audio file %s: float samples reach %.4g, beyond '
                        '[-1, 1]; the clip is scaled by 1/%.4g.', path, peak,
                        peak)
        rescaled.append(path)
      relative = os.path.relpath(path, self._root)
      yield relative, {'audio': audio, 'label': name, 'path': relative}
    self.info.metadata['skipped'][split] = skipped
    self.info.metadata['rescaled'][split] = rescaled
    if skipped or rescaled:
      logging.warning('%s split of %s: skipped %d unreadable file(s) and '
                      'rescaled %d of %d.', split, self._root, len(skipped),
                      len(rescaled), len(self._assigned[split]))


@gin.configurable(denylist=['root', 'data_dir'])
def load_folder(root: str, data_dir: str, resample: bool = True,
                validation_fraction: float = 0.1,
                test_fraction: float = 0.1) -> AudioFolder:
  """Prepares (once, then reuses) a folder dataset and returns its builder.

  Args:
    root: the dataset folder.
    data_dir: where tensorflow-datasets keeps the prepared records.
    resample: resample clips at other rates to 16 kHz; False refuses them.
    validation_fraction: held-out share when there is no validation/ folder.
    test_fraction: held-out share when there is no test/ folder.

  Returns:
    the prepared builder; `as_dataset(split=...)` streams its examples,
    `info.metadata['skipped']` lists the unreadable files (not decodable,
    truncated, NaN or Inf samples) per split and `info.metadata['rescaled']`
    the float clips scaled into [-1, 1].
  """
  make = lambda: AudioFolder(root=root, resample=resample,
                             validation_fraction=validation_fraction,
                             test_fraction=test_fraction, data_dir=data_dir)
  builder = make()
  # Another process may be preparing the same folder into the same data_dir:
  # wait for it, then look again (its records are then reused).
  with locks.hold(f'{builder.data_dir}.lock',
                  f'preparing {builder.info.full_name}', wait=True):
    builder = make()
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP))
  summary = folder_summary(builder)
  if summary:
    logging.warning('%s: %s', root, summary)
  return builder


def folder_summary(builder: AudioFolder) -> str:
  """What preparing the folder skipped or repaired, e.g. '2 unreadable
  file(s) skipped: [...]; 1 float clip(s) beyond [-1, 1] rescaled: [...]',
  or '' when every file was read as it is."""
  parts = []
  for key, what in (('skipped', 'unreadable file(s) skipped'),
                    ('rescaled', 'float clip(s) beyond [-1, 1] rescaled')):
    files = [p for v in builder.info.metadata.get(key, {}).values() for p in v]
    if files:
      parts.append(f'{len(files)} {what}: {files}')
  return '; '.join(parts)
