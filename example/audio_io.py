"""Reads audio files into mono float waveforms and resamples them.

Decoding goes through soundfile (libsndfile): WAV of every subtype (PCM 8 to
32-bit, float, mu-law, A-law, IMA/MS ADPCM, GSM), RF64, W64, AIFF, AU, CAF,
FLAC, OGG Vorbis/Opus, MP3 and the rest of what libsndfile reads. PCM samples
are scaled as libsndfile does (divided by 2^(bits - 1); unsigned 8-bit
centred on 128 first); channels are averaged to mono. Resampling goes through
soxr (libsoxr, 'HQ' quality: linear phase, passband to 91% of the lower
Nyquist frequency, stopband attenuation above 120 dB).

Files that are not whole, finite audio raise an `UnreadableAudioError`
subclass naming the problem, so that a dataset reader can skip them:
`TruncatedAudioError` (fewer samples than the header declares) and
`NonFiniteAudioError` (NaN or infinite samples). Float samples beyond
[-1, 1] are returned as they are; `fit_range` scales such a clip into range.
"""

import os
import struct
from typing import Optional, Tuple

import numpy as np
import soundfile
import soxr

# Extensions scanned in dataset folders, where libsndfile has the format.
_FORMAT_EXTENSIONS = {
    'WAV': ('.wav', '.wave'), 'RF64': ('.rf64',), 'W64': ('.w64',),
    'AIFF': ('.aif', '.aiff', '.aifc'), 'AU': ('.au', '.snd'),
    'CAF': ('.caf',), 'FLAC': ('.flac',), 'OGG': ('.ogg', '.oga', '.opus'),
    'MP3': ('.mp3',),
}
AUDIO_EXTENSIONS = tuple(
    ext for fmt, exts in _FORMAT_EXTENSIONS.items()
    if fmt in soundfile.available_formats() for ext in exts)
RESAMPLE_QUALITY = 'HQ'


class UnreadableAudioError(ValueError):
  """Raised when a file is not audio that can be decoded whole."""


class TruncatedAudioError(UnreadableAudioError):
  """Raised when a file holds fewer samples than its header declares."""


class NonFiniteAudioError(UnreadableAudioError):
  """Raised when decoded samples are NaN or infinite."""


def _declared_riff_data_bytes(path: str) -> Optional[Tuple[int, int]]:
  """(bytes the RIFF 'data' chunk declares, bytes present), or None.

  None for files that are not RIFF/WAVE, have no data chunk, or declare an
  unknown length (0 or 0xFFFFFFFF, as streaming writers and RF64 do).
  """
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    head = f.read(12)
    if len(head) < 12 or head[:4] != b'RIFF' or head[8:12] != b'WAVE':
      return None
    pos = 12
    while pos + 8 <= size:
      f.seek(pos)
      chunk_id, chunk_size = struct.unpack('<4sI', f.read(8))
      if chunk_id == b'data':
        if chunk_size in (0, 0xFFFFFFFF):
          return None
        return chunk_size, size - pos - 8
      pos += 8 + chunk_size + (chunk_size % 2)
  return None


def read_audio(path: str) -> Tuple[np.ndarray, int]:
  """Decodes an audio file to a mono float waveform.

  Args:
    path: path of a file in any format libsndfile reads.

  Returns:
    (waveform float32 [samples], sample rate in Hz). PCM and compressed
    formats give samples in [-1, 1]; float files give their values as stored
    (see `fit_range`).

  Raises:
    UnreadableAudioError: libsndfile cannot decode the file.
    TruncatedAudioError: the file ends before the samples its header declares.
    NonFiniteAudioError: some samples are NaN or infinite.
  """
  try:
    with soundfile.SoundFile(path) as f:
      rate, declared = f.samplerate, f.frames
      samples = f.read(dtype='float64', always_2d=True)
  except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
    raise UnreadableAudioError(f'{path}: {e}') from e
  riff = _declared_riff_data_bytes(path)
  if riff is not None and riff[1] < riff[0]:
    raise TruncatedAudioError(
        f'{path}: truncated, the data chunk declares {riff[0]} bytes and '
        f'the file holds {riff[1]}')
  if len(samples) < declared:
    raise TruncatedAudioError(
        f'{path}: truncated, {len(samples)} of {declared} samples decoded')
  finite = np.isfinite(samples)
  if not finite.all():
    raise NonFiniteAudioError(
        f'{path}: {np.size(finite) - np.count_nonzero(finite)} NaN or '
        'infinite sample(s)')
  return samples.mean(axis=1).astype(np.float32), int(rate)


def fit_range(samples: np.ndarray) -> Tuple[np.ndarray, float]:
  """Scales a waveform into [-1, 1] if it exceeds it.

  y = x / max(1, max |x|): clips already in range are unchanged; louder ones
  (float files written at another scale) keep their shape, not clipped.

  Args:
    samples: float waveform [samples].

  Returns:
    (float32 waveform [samples] in [-1, 1], the original peak max |x|).
  """
  samples = np.asarray(samples, np.float32)
  peak = float(np.max(np.abs(samples))) if samples.size else 0.
  if peak > 1.:
    samples = samples / np.float32(peak)
  return samples, peak


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """Resamples a waveform with libsoxr ('HQ': linear phase, passband to 91%
  of the lower Nyquist frequency, stopband attenuation above 120 dB).

  Args:
    samples: float waveform [samples].
    rate_in: its sample rate in Hz.
    rate_out: the wanted sample rate in Hz.

  Returns:
    float32 waveform [round(len(samples) * rate_out / rate_in)].
  """
  samples = np.asarray(samples, np.float64)
  if rate_in == rate_out:
    return samples.astype(np.float32)
  if rate_in <= 0 or rate_out <= 0:
    raise ValueError(f'sample rates must be positive, got {rate_in} -> '
                     f'{rate_out} Hz')
  out = soxr.resample(samples, rate_in, rate_out, quality=RESAMPLE_QUALITY)
  return out.astype(np.float32)
