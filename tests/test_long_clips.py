"""Long clips: the exact FFT computation in groups of blocks.

`overlap_save.filterbank_energies_fft` computes clips of more than
`group_blocks` blocks one group at a time, with a backward pass that
computes each group again. The references: the direct convolution, squared
modulus and pooling in NumPy (outputs), and the same function computing
every block at once (gradients).
"""

import numpy as np
import pytest
import tensorflow as tf

from leaf_audio import frontend
from leaf_audio.filterbank import overlap_save

# Small filters, so that a short clip spans many blocks: blocks of 100
# frames at a stride of 4 samples are 400 samples long.
TAPS, POOL, STRIDE = 25, 11, 4
SAMPLES = 3123  # 8 blocks of 100 frames ('SAME'), 7 + 79 frames ('VALID')


def small_problem(seed=0, batch=2):
  rng = np.random.default_rng(seed)
  waveform = rng.standard_normal((batch, SAMPLES)).astype(np.float32)
  filters = (rng.standard_normal((3, TAPS)) +
             1j * rng.standard_normal((3, TAPS))).astype(np.complex64)
  windows = rng.uniform(0., 1., (POOL, 3)).astype(np.float32)
  return waveform, filters, windows


def direct_energies(waveform, filters, windows, stride, padding):
  """The reference, in NumPy: 'SAME' cross-correlation as TensorFlow pads
  it, squared modulus, strided pooling with each channel's window."""
  batch, length = waveform.shape
  taps = filters.shape[1]
  pool = windows.shape[0]
  padded = np.pad(waveform.astype(np.float64),
                  [(0, 0), ((taps - 1) // 2, taps // 2)])
  frames_in = np.stack([padded[:, j:j + length] for j in range(taps)], -1)
  energies = np.abs(frames_in @ filters.T.astype(np.complex128))**2
  if padding == 'SAME':
    frames = -(-length // stride)
    pad_left = max((frames - 1) * stride + pool - length, 0) // 2
  else:
    frames, pad_left = (length - pool) // stride + 1, 0
  energies = np.pad(energies, [(0, 0), (pad_left, stride * frames + pool),
                               (0, 0)])
  return np.stack([
      np.einsum('but,ut->bt',
                energies[:, k * stride:k * stride + pool], windows)
      for k in range(frames)], 1)


def energies_and_gradients(waveform, filters, windows, padding, group_blocks):
  waveform, filters, windows = map(tf.convert_to_tensor,
                                   (waveform, filters, windows))
  with tf.GradientTape() as tape:
    tape.watch([waveform, filters, windows])
    energies = overlap_save.filterbank_energies_fft(
        waveform, filters, windows, STRIDE, padding, group_blocks,
        max_blocks=group_blocks)
    # A loss that weighs every frame and channel differently.
    weights = tf.sin(tf.reshape(tf.range(tf.size(energies), dtype=tf.float32),
                                tf.shape(energies)))
    loss = tf.reduce_sum(energies * weights)
  return energies, tape.gradient(loss, [waveform, filters, windows])


def assert_close(actual, expected, tolerance):
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape
  assert np.abs(actual - expected).max() <= tolerance * np.abs(expected).max()


@pytest.mark.parametrize('padding', ['SAME', 'VALID'])
@pytest.mark.parametrize('group_blocks', [1, 3])
def test_groups_of_blocks_equal_direct_and_unblocked(padding, group_blocks):
  waveform, filters, windows = small_problem()
  energies, grads = energies_and_gradients(waveform, filters, windows,
                                           padding, group_blocks)
  assert_close(energies,
               direct_energies(waveform, filters, windows, STRIDE, padding),
               1e-5)
  whole, whole_grads = energies_and_gradients(waveform, filters, windows,
                                              padding, 1000)
  assert_close(energies, whole, 1e-6)
  for grad, whole_grad in zip(grads, whole_grads):
    assert_close(grad, whole_grad, 1e-5)


def test_groups_of_blocks_compile_with_xla():
  waveform, filters, windows = small_problem(seed=1)
  whole, whole_grads = energies_and_gradients(waveform, filters, windows,
                                              'SAME', 1000)
  energies, grads = tf.function(
      lambda *args: energies_and_gradients(*args, 'SAME', 3),
      jit_compile=True)(waveform, filters, windows)
  assert_close(energies, whole, 1e-5)
  for grad, whole_grad in zip(grads, whole_grads):
    assert_close(grad, whole_grad, 1e-5)


@pytest.fixture
def blocks_at_once(monkeypatch):
  """Records the number of blocks (x batch) of every squared modulus taken:
  [batch * blocks, channels, n_fft] complex filtered blocks."""
  counts = []
  squared_modulus = overlap_save.squared_modulus

  def recording(z):
    counts.append(int(z.shape[0]))
    return squared_modulus(z)

  monkeypatch.setattr(overlap_save, 'squared_modulus', recording)
  return counts


@pytest.mark.parametrize('group_blocks', [2, 1000])
def test_blocks_computed_at_once_are_bounded(blocks_at_once, group_blocks):
  waveform, filters, windows = small_problem(batch=2)
  tf.function(lambda *args: energies_and_gradients(*args, 'SAME',
                                                   group_blocks))(
                                                       waveform, filters,
                                                       windows)
  # Forward, and the backward pass's recomputation when in groups.
  assert max(blocks_at_once) == 2 * min(group_blocks, 8)
  assert len(blocks_at_once) == (2 if group_blocks < 8 else 1)


@pytest.mark.parametrize('make', [frontend.Leaf,
                                  frontend.TimeDomainFilterbanks])
def test_frontends_compute_long_clips_in_groups(blocks_at_once, make):
  """33 s at 16 kHz is 33 blocks of 100 frames: more than `MAX_BLOCKS`
  (32), so in groups of at most `GROUP_BLOCKS` (4): 9 groups of 4 (the
  last 3 blocks beyond the clip)."""
  assert (overlap_save.MAX_BLOCKS, overlap_save.GROUP_BLOCKS) == (32, 4)
  waveform = tf.constant(0.1 * np.random.default_rng(2).standard_normal(
      (1, 33 * 16000)).astype(np.float32))
  features = make()(waveform)
  assert features.shape[1] in (3300, (33 * 16000 - 401) // 160 + 1)
  assert blocks_at_once and set(blocks_at_once) == {4}  # eagerly: per group
