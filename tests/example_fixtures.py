"""Tiny on-disk audio datasets for the training program's tests.

WAV files are written with the standard library's `wave` module, so that
the project's own reader is checked against an independent writer.
"""

import math
import os
import wave

import numpy as np

RATE = 16000


def write_wav(path, samples, rate=RATE, width=2, channels=1):
  """Writes float samples ([n] or [n, channels], in [-1, 1]) as PCM WAV.

  Returns:
    the integer samples written, [n * channels] interleaved.
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  scale = {1: 127, 2: 32767, 3: 2 ** 23 - 1, 4: 2 ** 31 - 1}[width]
  ints = np.round(np.clip(samples, -1, 1) * scale).astype(np.int64).ravel()
  if width == 1:
    raw = (ints + 128).astype(np.uint8).tobytes()
  elif width == 3:
    raw = b''.join(int(v).to_bytes(3, 'little', signed=True) for v in ints)
  else:
    raw = ints.astype(f'<i{width}').tobytes()
  with wave.open(path, 'wb') as f:
    f.setnchannels(channels)
    f.setsampwidth(width)
    f.setframerate(rate)
    f.writeframes(raw)
  return ints


def tone(frequency, seconds, rate=RATE, amplitude=0.3, noise=0.02, seed=0):
  """A sine at `frequency` Hz with random phase plus white noise."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(round(seconds * rate))) / rate
  phase = rng.uniform(0, 2 * np.pi)
  return (amplitude * np.sin(2 * np.pi * frequency * t + phase) +
          noise * rng.normal(size=t.shape))


def make_split_dataset(root, classes=None, counts=(6, 2, 2),
                       lengths=(0.6, 1.0, 1.7, 2.4)):
  """Writes root/{train,validation,test}/<class>/<i>.wav tone clips.

  Each class is a tone at its own frequency; clip lengths cycle through
  `lengths` seconds so that evaluation sees clips of 1 to 3 windows.

  Returns:
    {split: [(path, class index), ...]} in sorted path order, and the sorted
    class names.
  """
  classes = classes or {'high': 2500., 'low': 400.}
  names = sorted(classes)
  files = {}
  seed = 0
  for split, count in zip(('train', 'validation', 'test'), counts):
    files[split] = []
    for label, name in enumerate(names):
      for i in range(count):
        seed += 1
        path = os.path.join(root, split, name, f'{i:03d}.wav')
        write_wav(path, tone(classes[name], lengths[seed % len(lengths)],
                             seed=seed))
        files[split].append((path, label))
    files[split].sort()
  return files, names


# References for the metrics, by definition.


def phi_inverse(p):
  """Inverse standard normal CDF by bisection on math.erf."""
  low, high = -10., 10.
  for _ in range(200):
    mid = (low + high) / 2
    if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
      low = mid
    else:
      high = mid
  return (low + high) / 2


def auc_pairs(scores, targets):
  """ROC AUC as the share of (positive, negative) pairs ranked right."""
  pos, neg = scores[targets == 1], scores[targets == 0]
  wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
  return wins.mean()


def ap_definition(scores, targets):
  """Mean over positives of the precision at their score."""
  pos = scores[targets == 1]
  return np.mean([np.sum(targets[scores >= s]) / np.sum(scores >= s)
                  for s in pos])
