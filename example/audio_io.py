"""Reads WAV and FLAC files into float waveforms and resamples them.

WAV files are parsed here (PCM 8/16/24/32-bit, IEEE float 32/64-bit, plain or
WAVE_FORMAT_EXTENSIBLE). FLAC files need the optional `soundfile` package.
Every reader returns a mono float32 waveform in [-1, 1] and its sample rate;
multi-channel audio is averaged to mono.
"""

import math
import os
import struct
from typing import Tuple

import numpy as np

AUDIO_EXTENSIONS = ('.wav', '.flac')

_PCM = 1
_IEEE_FLOAT = 3
_EXTENSIBLE = 0xFFFE


class UnreadableAudioError(ValueError):
  """Raised when a file is not audio this module can decode."""


class MissingDecoderError(ImportError):
  """Raised when decoding a format needs a package that is not installed."""


def _pcm_to_float(raw: bytes, bits: int) -> np.ndarray:
  """Converts little-endian PCM bytes to float32 samples in [-1, 1)."""
  if bits == 8:
    return (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.) / 128.
  if bits == 16:
    return np.frombuffer(raw, '<i2').astype(np.float32) / 32768.
  if bits == 24:
    b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
    ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
    return ints.astype(np.float32) / float(1 << 23)
  if bits == 32:
    return (np.frombuffer(raw, '<i4').astype(np.float64) /
            float(1 << 31)).astype(np.float32)
  raise UnreadableAudioError(f'unsupported PCM sample width: {bits} bits')


def _read_chunks(data: bytes):
  """Yields (chunk id, chunk bytes) of a RIFF/WAVE byte string."""
  if len(data) < 12 or data[:4] != b'RIFF' or data[8:12] != b'WAVE':
    raise UnreadableAudioError('not a RIFF/WAVE file')
  pos = 12
  while pos + 8 <= len(data):
    chunk_id, size = data[pos:pos + 4], struct.unpack('<I', data[pos + 4:pos + 8])[0]
    yield chunk_id, data[pos + 8:pos + 8 + size]
    pos += 8 + size + (size % 2)


def read_wav(path: str) -> Tuple[np.ndarray, int]:
  """Decodes a WAV file.

  Args:
    path: path of a .wav file.

  Returns:
    (waveform float32 [samples] in [-1, 1], sample rate in Hz).

  Raises:
    UnreadableAudioError: the file is not a WAV file this reader supports.
  """
  with open(path, 'rb') as f:
    data = f.read()
  fmt, payload = None, None
  for chunk_id, chunk in _read_chunks(data):
    if chunk_id == b'fmt ':
      fmt = chunk
    elif chunk_id == b'data':
      payload = chunk
  if fmt is None or payload is None or len(fmt) < 16:
    raise UnreadableAudioError('missing "fmt " or "data" chunk')
  tag, channels, rate, _, block_align, bits = struct.unpack('<HHIIHH', fmt[:16])
  if tag == _EXTENSIBLE:
    if len(fmt) < 26:
      raise UnreadableAudioError('truncated WAVE_FORMAT_EXTENSIBLE header')
    tag = struct.unpack('<H', fmt[24:26])[0]
  if channels < 1 or rate < 1 or block_align != channels * bits // 8:
    raise UnreadableAudioError(
        f'inconsistent header: {channels} channels, {rate} Hz, {bits} bits')
  payload = payload[:len(payload) - len(payload) % block_align]
  if tag == _PCM:
    samples = _pcm_to_float(payload, bits)
  elif tag == _IEEE_FLOAT and bits in (32, 64):
    samples = np.frombuffer(payload, '<f4' if bits == 32 else '<f8')
  else:
    raise UnreadableAudioError(f'unsupported WAV format tag {tag} ({bits} bits)')
  samples = samples.astype(np.float32).reshape(-1, channels).mean(axis=1)
  return samples, rate


def read_flac(path: str) -> Tuple[np.ndarray, int]:
  """Decodes a FLAC file with `soundfile`.

  Args:
    path: path of a .flac file.

  Returns:
    (waveform float32 [samples] in [-1, 1], sample rate in Hz).

  Raises:
    MissingDecoderError: `soundfile` is not installed.
    UnreadableAudioError: libsndfile cannot decode the file.
  """
  try:
    import soundfile  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise MissingDecoderError(
        f'reading FLAC ({path}) needs the soundfile package: '
        'pip install soundfile') from e
  try:
    samples, rate = soundfile.read(path, dtype='float32', always_2d=True)
  except (RuntimeError, soundfile.LibsndfileError) as e:
    raise UnreadableAudioError(str(e)) from e
  return samples.mean(axis=1).astype(np.float32), int(rate)


def read_audio(path: str) -> Tuple[np.ndarray, int]:
  """Decodes a .wav or .flac file (by extension) to a mono float waveform.

  Args:
    path: path of the audio file.

  Returns:
    (waveform float32 [samples] in [-1, 1], sample rate in Hz).
  """
  ext = os.path.splitext(path)[1].lower()
  if ext == '.wav':
    return read_wav(path)
  if ext == '.flac':
    return read_flac(path)
  raise UnreadableAudioError(
      f'{path}: unknown extension {ext!r}, expected one of {AUDIO_EXTENSIONS}')


def resample(samples: np.ndarray, rate_in: int, rate_out: int,
             zero_crossings: int = 16, rolloff: float = 0.94,
             kaiser_beta: float = 8.6, chunk: int = 16384) -> np.ndarray:
  """Resamples a waveform with a Kaiser-windowed sinc interpolator.

  Output sample n sits at input position n * rate_in / rate_out; it is the
  sum of the input samples around that position weighted by a lowpass sinc
  whose cutoff is `rolloff` times the lower of the two Nyquist frequencies.
  The fractional part of that position takes only rate_out / gcd(rate_in,
  rate_out) values, so the weights are computed once per phase.

  Args:
    samples: float waveform [samples].
    rate_in: its sample rate in Hz.
    rate_out: the wanted sample rate in Hz.
    zero_crossings: sinc zero crossings kept on each side of the centre.
    rolloff: cutoff as a fraction of the lower Nyquist frequency.
    kaiser_beta: shape of the Kaiser window.
    chunk: output samples computed per vectorized step (bounds memory).

  Returns:
    float32 waveform [round(len(samples) * rate_out / rate_in)].
  """
  samples = np.asarray(samples, np.float64)
  if rate_in == rate_out:
    return samples.astype(np.float32)
  step = math.gcd(rate_in, rate_out)
  up, down = rate_out // step, rate_in // step  # Output n is at n * down / up.
  cutoff = rolloff * min(1., up / down)  # Relative to the input Nyquist.
  half_width = zero_crossings / cutoff  # In input samples.
  taps = np.arange(-int(np.ceil(half_width)), int(np.ceil(half_width)) + 1)
  phase_offset = (np.arange(up) * down % up) / up  # Fractional positions.
  distance = phase_offset[:, None] - taps[None, :]  # [up, taps]
  inside = np.clip(1. - (distance / half_width) ** 2, 0., None)
  weights = (cutoff * np.sinc(cutoff * distance) *
             np.i0(kaiser_beta * np.sqrt(inside)) / np.i0(kaiser_beta))
  weights[np.abs(distance) > half_width] = 0.
  n_out = int(round(len(samples) * up / down))
  padded = np.pad(samples, (len(taps), len(taps)))  # Zeros beyond the ends.
  out = np.empty(n_out, np.float64)
  for start in range(0, n_out, chunk):
    n = np.arange(start, min(start + chunk, n_out))
    index = (n * down // up)[:, None] + taps[None, :] + len(taps)
    out[n] = np.sum(padded[index] * weights[n % up], axis=1)
  return out.astype(np.float32)
