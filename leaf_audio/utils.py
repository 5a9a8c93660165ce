"""Small helpers shared by the frontends: mel scale and window functions."""

import enum
import inspect

import gin
import keras
import numpy as np


def hz2mel(frequency_hz):
  """Converts frequencies in Hz to the mel scale (HTK formula).

  Args:
    frequency_hz: a float or array of frequencies in Hz.

  Returns:
    The same frequencies in mels, `2595 * log10(1 + f / 700)`.
  """
  return 2595. * np.log10(1. + np.asarray(frequency_hz) / 700.)


def mel2hz(frequency_mel):
  """Converts frequencies on the mel scale back to Hz (inverse of `hz2mel`).

  Args:
    frequency_mel: a float or array of frequencies in mels.

  Returns:
    The same frequencies in Hz, `700 * (10 ** (m / 2595) - 1)`.
  """
  return 700. * (np.power(10., np.asarray(frequency_mel) / 2595.) - 1.)


def window_samples(sample_rate, window_len) -> int:
  """Taps of a window of `window_len` ms: int(sample_rate window_len // 1000
  + 1), as the original release counts them (401 at 16 kHz and 25 ms)."""
  return int(sample_rate * window_len // 1000 + 1)


def hop_samples(sample_rate, window_stride) -> int:
  """Samples between frames `window_stride` ms apart: int(sample_rate
  window_stride // 1000) (160 at 16 kHz and 10 ms)."""
  return int(sample_rate * window_stride // 1000)


@gin.constants_from_enum
class WindowType(enum.Enum):
  """Window functions available to `window`."""
  HAMMING = 1
  HANNING = 2
  SQUARED_HANNING = 3


def window(window_type: WindowType, tmax: int) -> np.ndarray:
  """Returns a window of `tmax` samples as a float64 NumPy array.

  The Hann window is the one of the original release, which is shifted by one
  sample: `w[n] = 0.5 * (1 - cos(2 pi (n - 1) / (tmax - 1)))`, so that its peak
  is at `n = (tmax + 1) / 2`. The Hamming window is the periodic one,
  `0.54 - 0.46 cos(2 pi n / tmax)`.

  Args:
    window_type: a `WindowType`.
    tmax: length of the window, in samples (at least 2).

  Returns:
    An array of shape [tmax].
  """
  if tmax < 2:
    raise ValueError(f'A window needs at least 2 samples, got tmax={tmax}.')
  n = np.arange(tmax, dtype=np.float64)
  if window_type == WindowType.HAMMING:
    return 0.54 - 0.46 * np.cos(2. * np.pi * n / tmax)
  hann = 0.5 * (1. - np.cos(2. * np.pi * (n - 1.) / (tmax - 1.)))
  if window_type == WindowType.HANNING:
    return hann
  if window_type == WindowType.SQUARED_HANNING:
    return hann**2
  raise ValueError(
      f'window_type must be a WindowType (HAMMING, HANNING, SQUARED_HANNING), '
      f'got {window_type!r}.')


def register(cls):
  """Makes a Keras class gin-configurable and Keras-serializable.

  Registers `cls` with gin under its own name (so that gin files can bind
  e.g. `Leaf.n_filters`) and with Keras under the 'leaf_audio' package (so
  that `.keras` files reload it). Gin wraps `__init__` in a function of
  `(*args, **kwargs)`; the original signature is kept on the wrapper, where
  Keras reads it to record the constructor arguments.

  Args:
    cls: a Keras layer, initializer or constraint class.

  Returns:
    The same class, registered.
  """
  signature = inspect.signature(cls.__init__)
  # Only named arguments may be bound, so that a misspelt binding fails when
  # the gin file is parsed rather than being passed on as a keyword argument.
  named = [name for name, param in signature.parameters.items()
           if name != 'self' and param.kind not in (param.VAR_POSITIONAL,
                                                    param.VAR_KEYWORD)]
  cls = gin.configurable(cls, allowlist=named)
  cls.__init__.__signature__ = signature
  return keras.saving.register_keras_serializable(package='leaf_audio')(cls)
