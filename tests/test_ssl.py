"""Self-supervised pre-training (COLA), probes from a pre-training workdir,
freezing, and the random filter initializers.

The COLA similarity and loss are recomputed with NumPy from the model's
weights; the initializers' draws are tested against the distributions they
promise with Kolmogorov-Smirnov statistics computed with NumPy.
"""

import json
import math
import os
import time

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

import example_fixtures as fx
from example import cola
from example import locks
from example import main
from example import pretrained
from example import pretraining
from example import probing
from example import train
from example import workdir as workdir_lib
from leaf_audio import convolution
from leaf_audio import frontend
from leaf_audio import gabor
from leaf_audio import initializers
from leaf_audio import models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# LEAF computed exactly: the recipe's fast mode is not what these tests
# check, and its traces made the pre-training fixture take 200 s, not 45 s.
TINY = ['AudioClassifier.encoder = @ConvNet()', 'ConvNet.filters = [4, 8]',
        'Leaf.n_filters = 8', "Leaf.implementation = 'conv'"]


# Kolmogorov-Smirnov, by definition.


def ks_statistic(samples, cdf):
  """sup_x |F_n(x) - F(x)| of the empirical CDF of `samples` against `cdf`."""
  x = np.sort(np.asarray(samples, np.float64))
  n = len(x)
  f = cdf(x)
  return max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n))


def ks_critical(n, alpha=0.001):
  """Asymptotic critical value sqrt(-ln(alpha / 2) / 2) / sqrt(n)."""
  return math.sqrt(-math.log(alpha / 2.) / 2.) / math.sqrt(n)


def uniform_cdf(low, high):
  return lambda x: np.clip((x - low) / (high - low), 0., 1.)


# COLA: pairs, similarity, loss.


def test_sample_pair_gives_two_distinct_crops_of_one_clip():
  clip = tf.range(100, 103 + 30, dtype=tf.float32)  # 33 samples, 4 starts.
  seen = set()
  for i in range(400):
    pair = cola.sample_pair(clip, 30, tf.constant([7, i])).numpy()
    starts = (int(pair[0, 0]) - 100, int(pair[1, 0]) - 100)
    for crop, start in zip(pair, starts):  # Contiguous slices of the clip.
      np.testing.assert_array_equal(crop, np.arange(100 + start,
                                                    130 + start))
    assert starts[0] != starts[1]
    seen.add(starts)
  # Every ordered pair of distinct starts turns up (12 of them).
  assert seen == {(a, b) for a in range(4) for b in range(4) if a != b}


def test_sample_pair_of_a_short_clip_pads_it():
  pair = cola.sample_pair(tf.ones([10]), 16, tf.constant([1, 2])).numpy()
  np.testing.assert_array_equal(pair, np.tile(
      np.concatenate([np.ones(10), np.zeros(6)]), (2, 1)))
  # Exactly the segment: one start, both crops the clip.
  pair = cola.sample_pair(tf.range(16, dtype=tf.float32), 16,
                          tf.constant([3, 4])).numpy()
  np.testing.assert_array_equal(pair, np.tile(np.arange(16), (2, 1)))


def test_pair_stream_takes_both_views_from_the_same_clip():
  # Clip k holds k * 1000 + t, so each crop tells its clip.
  clips = tf.data.Dataset.from_tensor_slices(
      {'audio': np.arange(6)[:, None] * 1000. + np.arange(50.)[None]})
  views = list(pretraining.pair_stream(clips, 20, None, ()))
  assert len(views) == 6
  for k, ((anchor, positive), _) in enumerate(views):
    assert int(anchor[0]) // 1000 == k == int(positive[0]) // 1000
    assert int(anchor[0]) != int(positive[0])
  # A seeded stream (validation) repeats its crops.
  seeded = lambda: [v[0][0].numpy() for v in
                    pretraining.pair_stream(clips, 20, 5, ())]
  np.testing.assert_array_equal(seeded(), seeded())


def _numpy_layer_norm(x, gamma, beta, epsilon):
  mean = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + epsilon) * gamma + beta


def test_cola_similarity_and_loss_match_numpy():
  keras.utils.set_random_seed(1)
  model = cola.ColaModel(frontend=frontend.MelFilterbanks(n_filters=8),
                         encoder=models.ConvNet(filters=[4]),
                         embedding_dim=6)
  rng = np.random.default_rng(0)
  anchor = rng.uniform(-1, 1, (5, 4000)).astype('float32')
  positive = rng.uniform(-1, 1, (5, 4000)).astype('float32')
  model((anchor[:1], positive[:1]))
  # LayerNorm's scale and offset away from 1 and 0, so that they count.
  model.norm.gamma.assign(rng.uniform(0.5, 1.5, 6))
  model.norm.beta.assign(rng.uniform(-.3, .3, 6))
  logits = model((anchor, positive)).numpy()

  def embed(x):
    h = model.pooled(model.frontend(x)).numpy().astype(np.float64)
    z = h @ model.projection.kernel.numpy()
    return np.tanh(_numpy_layer_norm(z, model.norm.gamma.numpy(),
                                     model.norm.beta.numpy(),
                                     model.norm.epsilon))

  expected = embed(anchor) @ model.bilinear.numpy() @ embed(positive).T
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
  assert model.projection.bias is None

  shifted = expected - expected.max(1, keepdims=True)
  log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
  np.testing.assert_allclose(cola.cola_loss(None, logits).numpy(),
                             -np.diag(log_softmax), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(
      cola.pair_accuracy(None, logits).numpy(),
      (expected.argmax(1) == np.arange(5)).astype('float32'))


def test_spec_augment_touches_only_the_positive_view():
  model = cola.ColaModel(frontend=frontend.MelFilterbanks(n_filters=8),
                         embedding_dim=4, spec_augment=True)
  x = np.random.default_rng(1).uniform(-1, 1, (3, 4000)).astype('float32')
  model((x, x))
  features = model.frontend(x)
  anchors = model.embed(features).numpy()
  calls = []
  original = model.embed
  model.embed = lambda f, training=False: calls.append(f) or original(f)
  model((x, x), training=True)
  np.testing.assert_array_equal(calls[0].numpy(), features.numpy())
  assert not np.array_equal(calls[1].numpy(), features.numpy())
  del anchors


def test_cola_model_round_trips_through_keras_file(tmp_path):
  model = cola.ColaModel(frontend=frontend.Leaf(n_filters=4),
                         encoder=models.ConvNet(filters=[4]), embedding_dim=8)
  x = np.random.default_rng(2).uniform(-1, 1, (2, 3200)).astype('float32')
  expected = model((x, x)).numpy()
  path = str(tmp_path / 'cola.keras')
  pretraining.save(model, path)
  loaded = keras.saving.load_model(path, compile=False)
  np.testing.assert_allclose(loaded((x, x)).numpy(), expected, rtol=1e-5)
  assert isinstance(loaded.frontend, frontend.Leaf)


# Random initializers.


@pytest.mark.parametrize('kernel_size', [401, 201])
def test_random_gabor_init_draws_uniform_frequencies_and_bandwidths(
    kernel_size):
  n, sr = 4000, 16000
  kernel = initializers.RandomGaborInit(kernel_size=kernel_size, seed=3)(
      (n, 2)).numpy()
  freqs_hz = kernel[:, 0] * sr / (2 * np.pi)
  # FWHM of |H(w)| = exp(-sigma^2 (w - eta)^2 / 2), in Hz.
  fwhm_hz = np.sqrt(2 * np.log(2)) * sr / (np.pi * kernel[:, 1])
  assert ks_statistic(freqs_hz, uniform_cdf(60., 7800.)) < ks_critical(n)
  # Uniform over the FWHM of gabor.sigma_range, the range the layer clips
  # to: sr / W to sr / 4.
  low_sigma, high_sigma = gabor.sigma_range(kernel_size)
  widest = np.sqrt(2 * np.log(2)) * sr / (np.pi * low_sigma)
  narrowest = np.sqrt(2 * np.log(2)) * sr / (np.pi * high_sigma)
  np.testing.assert_allclose([narrowest, widest], [sr / kernel_size, sr / 4])
  np.testing.assert_allclose(gabor.bandwidth_range(kernel_size, sr),
                             [narrowest, widest])
  assert ks_statistic(fwhm_hz, uniform_cdf(narrowest, widest)) < ks_critical(n)
  assert low_sigma <= kernel[:, 1].min() < 1.01 * low_sigma
  assert 0.9 * high_sigma < kernel[:, 1].max() <= high_sigma
  # Not uniform in sigma: the KS test can tell the two apart.
  sigma_range = uniform_cdf(kernel[:, 1].min(), kernel[:, 1].max())
  assert ks_statistic(kernel[:, 1], sigma_range) > 5 * ks_critical(n)
  # Within GaborConstraint's range: the constraint changes nothing.
  constrained = convolution.GaborConstraint(kernel_size)(kernel).numpy()
  np.testing.assert_allclose(constrained, kernel, rtol=1e-6)


def test_random_gabor_init_is_seeded_and_serializable():
  init = initializers.RandomGaborInit(min_freq=100., max_freq=4000.,
                                      kernel_size=201, max_bandwidth=1000.,
                                      seed=7)
  first = init((40, 2)).numpy()
  np.testing.assert_array_equal(first, init((40, 2)).numpy())
  other = initializers.RandomGaborInit(seed=8)((40, 2)).numpy()
  assert not np.array_equal(first, other)
  hz = first[:, 0] * 16000 / (2 * np.pi)
  assert 100 <= hz.min() and hz.max() <= 4000
  copy = keras.initializers.deserialize(keras.initializers.serialize(init))
  np.testing.assert_array_equal(copy((40, 2)).numpy(), first)
  unseeded = initializers.RandomGaborInit()
  assert not np.array_equal(unseeded((40, 2)), unseeded((40, 2)))


def test_random_initializers_refuse_bad_arguments():
  with pytest.raises(ValueError, match='GaborConstraint'):
    initializers.RandomGaborInit(max_bandwidth=5000.)
  with pytest.raises(ValueError, match='max_freq'):
    initializers.RandomGaborInit(max_freq=9000.)
  with pytest.raises(ValueError, match='seed'):
    initializers.RandomSincInit(seed=-1)
  with pytest.raises(ValueError, match=r'\[n_filters, 2\]'):
    initializers.RandomSincInit()((401, 1, 80))


def test_random_sinc_init_draws_uniform_cutoffs():
  n, sr, min_low, min_band = 3000, 16000, 50., 50.
  init = initializers.RandomSincInit(seed=4)
  conv = convolution.SincConv1D(2 * n, 65, kernel_initializer=init)
  conv.build((None, None, 1))
  kernel = conv.kernel.numpy().astype(np.float64)
  # The cut-offs SincConv1D uses.
  low = min_low + np.abs(kernel[:, 0])
  high = np.clip(low + min_band + np.abs(kernel[:, 1]), min_low, sr / 2)
  top = sr / 2 - min_band
  assert np.all(kernel >= 0) and np.all(high - low >= min_band - 1e-3)
  assert high.max() <= sr / 2
  # low and high - min_band are the order statistics of two uniform draws:
  # pooled, they are uniform; the lower one has CDF 1 - (1 - u)^2.
  pooled = np.concatenate([low, high - min_band])
  u = uniform_cdf(min_low, top)
  assert ks_statistic(pooled, u) < ks_critical(2 * n)
  assert ks_statistic(low, lambda x: 1 - (1 - u(x))**2) < ks_critical(n)
  assert ks_statistic(high - min_band, lambda x: u(x)**2) < ks_critical(n)
  np.testing.assert_array_equal(init((n, 2)), init((n, 2)))


@pytest.mark.parametrize('config', ['leaf', 'leaf_random', 'sincnet',
                                    'sincnet_random', 'mel'])
def test_ssl_configs_build_their_frontends(config):
  gin.clear_config()
  try:
    main.parse_config([os.path.join(REPO, 'configs', 'ssl', f'{config}.gin')],
                      ['AudioClassifier.encoder = None'])
    model = cola.from_gin()
  finally:
    gin.clear_config()
  layer = model.frontend
  layer.build((None, 16000))
  if config == 'leaf_random':
    kernel = layer._complex_conv.kernel.numpy()
    np.testing.assert_array_equal(
        kernel, initializers.RandomGaborInit(seed=0)((40, 2)).numpy())
  if config == 'sincnet_random':
    assert isinstance(layer._complex_conv, convolution.SincConv1D)
    reference = frontend.SincNet()
    reference.build((None, 16000))
    shapes = lambda l: sorted(tuple(w.shape) for w in l.weights)
    assert shapes(layer) == shapes(reference)
    np.testing.assert_array_equal(
        layer._complex_conv.kernel.numpy(),
        initializers.RandomSincInit(seed=0)((40, 2)).numpy())
    x = np.random.default_rng(0).uniform(-1, 1, (1, 16000)).astype('float32')
    assert layer(x).shape == reference(x).shape


# Pre-training -> probe, end to end.


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  base = tmp_path_factory.mktemp('ssl')
  fx.make_split_dataset(str(base / 'tones'), counts=(4, 1, 2))
  plain = base / 'plain'
  os.makedirs(plain)
  for i in range(6):
    fx.write_wav(str(plain / f'clip_{i}.wav'), fx.tone(300 + 150 * i, 1.3,
                                                       seed=i))
  return base


def _pretrain(base, workdir, config='leaf', epochs=1, extra=()):
  gin.clear_config()
  try:
    main.parse_config(
        [os.path.join(REPO, 'configs', 'ssl', f'{config}.gin')],
        TINY + [f"pretrain.workdir = '{workdir}'",
                f"pretrain.datasets = ['{base}/tones', '{base}/plain']",
                f"pretrain.data_dir = '{base}/tfds'",
                f'pretrain.num_epochs = {epochs}',
                'pretrain.steps_per_epoch = 2', 'pretrain.batch_size = 4',
                'pretrain.segment_seconds = 0.5'] + list(extra))
    return pretraining.pretrain(verbose=0)
  finally:
    gin.clear_config()


@pytest.fixture(scope='module')
def pretrained_dir(corpus):
  """A tiny LEAF pre-training: 1 epoch, then resumed for a second."""
  workdir = str(corpus / 'pretrain')
  extra = ['ColaModel.spec_augment = True', 'Leaf.window_len = 10.0']
  _pretrain(corpus, workdir, extra=extra)
  with open(os.path.join(workdir, 'state', 'training_metadata.json')) as f:
    first_state = json.load(f)
  first = pretrained.load(workdir).bilinear.numpy()
  logs = _pretrain(corpus, workdir, epochs=2, extra=extra)
  return {'workdir': workdir, 'first_state': first_state,
          'first_bilinear': first, 'logs': logs}


def test_plain_folder_splits_hold_out_a_tenth(corpus):
  splits = pretraining.plain_folder_splits(str(corpus / 'plain'))
  train_clips = [e['audio'].numpy() for e in splits['train']]
  eval_clips = [e['audio'].numpy() for e in splits['eval']]
  assert (len(train_clips), len(eval_clips)) == (5, 1)
  assert all(c.shape == (int(1.3 * 16000),) for c in train_clips + eval_clips)
  with pytest.raises(ValueError, match='no audio file'):
    pretraining.plain_folder_splits(str(corpus / 'tfds'))


def test_pretraining_workdir_holds_a_loadable_model(pretrained_dir):
  workdir = pretrained_dir['workdir']
  for name in ('pretrained.keras', 'operative_config.gin',
               os.path.join('state', 'training_metadata.json')):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert os.listdir(os.path.join(workdir, 'tensorboard', 'validation'))
  assert set(pretrained_dir['logs']) == {
      'loss', 'pair_accuracy', 'val_loss', 'val_pair_accuracy'}
  model = pretrained.load(workdir)
  assert isinstance(model.frontend, frontend.Leaf)
  assert model.frontend.n_filters == 8 and model.frontend.window_size == 161
  assert model.encoder.filters == [4, 8]
  with open(os.path.join(workdir, 'operative_config.gin')) as f:
    assert 'pretrain.segment_seconds = 0.5' in f.read()


def test_pretraining_resumes(pretrained_dir):
  assert pretrained_dir['first_state']['epoch'] == 1
  with open(os.path.join(pretrained_dir['workdir'], 'state',
                         'training_metadata.json')) as f:
    state = json.load(f)
  # The second invocation ran epoch 2 only, on from the first's step count.
  assert state['epoch'] == 2 and state['iterations'] == 4
  after = pretrained.load(pretrained_dir['workdir']).bilinear.numpy()
  assert not np.array_equal(pretrained_dir['first_bilinear'], after)


def test_pretraining_seed_repeats_the_run(corpus, tmp_path):
  """pretrain.seed fixes initialization, shuffling and crops: two runs with
  one seed end with identical weights (unseeded, the initializations
  alone differ)."""
  def weights(name, seed):
    extra = [f'pretrain.seed = {seed}', 'pretrain.steps_per_epoch = 1',
             'pretrain.datasets = None',
             f"pretrain.dataset = '{corpus}/plain'"]
    _pretrain(corpus, str(tmp_path / name), config='mel', extra=extra)
    return [w.numpy() for w in pretrained.load(str(tmp_path / name)).weights]
  first, again = weights('a', 5), weights('b', 5)
  for x, y in zip(first, again):
    np.testing.assert_array_equal(x, y)


def test_pretraining_workdir_resumes_only_the_run_that_made_it(
    corpus, pretrained_dir):
  workdir = pretrained_dir['workdir']
  record = workdir_lib.read_record(workdir)
  assert record['config']['pretrain.batch_size'] == '4'
  assert record['config']['ColaModel.spec_augment'] == 'True'
  assert [d['name'] for d in record['datasets']] == ['tones', 'plain']
  assert record['datasets'][0]['classes'] == ['high', 'low']
  assert record['datasets'][1]['files'] == {'train': 5, 'eval': 1}
  state = os.path.join(workdir, 'state', 'training_metadata.json')
  before = open(state).read()
  # Another configuration: stops before any step, listing what differs
  # (more epochs alone would resume, as test_pretraining_resumes does).
  with pytest.raises(workdir_lib.WorkdirMismatchError) as error:
    _pretrain(corpus, workdir, epochs=3,
              extra=['ColaModel.spec_augment = False',
                     'Leaf.window_len = 10.0', 'pretrain.learning_rate = 0.01'])
  message = str(error.value)
  assert ('ColaModel.spec_augment: True in the workdir, False now'
          in message)
  assert 'pretrain.learning_rate: 0.0001 in the workdir, 0.01 now' in message
  assert 'pretrain.num_epochs' not in message
  assert 'pick another pretrain.workdir' in message
  assert open(state).read() == before


def test_a_busy_pretraining_workdir_stops_a_second_run_at_once(corpus,
                                                               tmp_path):
  workdir = str(tmp_path / 'busy')
  os.makedirs(workdir)
  with locks.hold(os.path.join(workdir, 'lock'), 'a test'):
    start = time.time()
    with pytest.raises(workdir_lib.WorkdirBusyError,
                       match=rf'in use by pid {os.getpid()} on host .*'
                       'pick another pretrain.workdir'):
      _pretrain(corpus, workdir)
    assert time.time() - start < 5
  assert os.listdir(workdir) == ['lock']  # Nothing else was written.


def _probe(corpus, workdir, init_from, freeze, config='configs/ssl/probe.gin',
           extra=()):
  origin = 'None' if init_from is None else f"'{init_from}'"
  gin.clear_config()
  try:
    main.parse_config([os.path.join(REPO, config)], [
        f"train.workdir = '{workdir}'", f"train.dataset = '{corpus}/tones'",
        f"train.data_dir = '{corpus}/tfds'", f'train.init_from = {origin}',
        f'train.freeze = {freeze!r}' if freeze else 'train.freeze = None',
        'train.num_epochs = 1', 'train.steps_per_epoch = 3',
        'train.batch_size = 4', 'train.learning_rate = 0.01'] + list(extra))
    return train.train(verbose=0)
  finally:
    gin.clear_config()


def _weights(layer):
  return [w.numpy().copy() for w in layer.weights]


def _reloaded_classifier(workdir, init_from, freeze):
  """The probe's best weights in a classifier built the same way."""
  model = pretrained.classifier({'tones': 2}, init_from, freeze)
  model(tf.zeros([1, 16000]))
  model.load_weights(os.path.join(workdir, 'best.weights.h5'))
  return model


def test_linear_probe_keeps_frontend_and_encoder_bit_identical(
    corpus, pretrained_dir, tmp_path):
  source_dir = pretrained_dir['workdir']
  source = pretrained.load(source_dir)
  workdir = str(tmp_path / 'probe')
  # configs/ssl/probe.gin binds no frontend: the architecture comes from
  # the pre-training workdir.
  metrics = _probe(corpus, workdir, source_dir, 'encoder')
  assert metrics['tones']['examples'] == 4
  model = _reloaded_classifier(workdir, source_dir, 'encoder')
  for mine, theirs in ((model.frontend, source.frontend),
                       (model.encoder, source.encoder)):
    for a, b in zip(_weights(mine), _weights(theirs)):
      np.testing.assert_array_equal(a, b)
  assert [w.name for w in model.trainable_weights] == ['kernel', 'bias']
  initial = pretrained.classifier({'tones': 2}, source_dir, 'encoder')
  initial(tf.zeros([1, 16000]))
  assert not np.array_equal(initial.heads['tones'].kernel.numpy(),
                            model.heads['tones'].kernel.numpy())
  assert os.path.exists(os.path.join(workdir, 'export', 'saved_model.pb'))


def test_freezing_the_frontend_trains_the_encoder(corpus, pretrained_dir,
                                                  tmp_path):
  source_dir = pretrained_dir['workdir']
  source = pretrained.load(source_dir)
  workdir = str(tmp_path / 'frontend_frozen')
  _probe(corpus, workdir, source_dir, 'frontend')
  model = _reloaded_classifier(workdir, source_dir, 'frontend')
  for a, b in zip(_weights(model.frontend), _weights(source.frontend)):
    np.testing.assert_array_equal(a, b)
  changed = [not np.array_equal(a, b) for a, b in
             zip(_weights(model.encoder), _weights(source.encoder))]
  assert any(changed)


@pytest.mark.parametrize('freeze,trainable', [
    (None, {'frontend', 'encoder', 'head'}), ('frontend', {'encoder', 'head'}),
    ('encoder', {'head'})])
def test_freeze_sets_what_trains(pretrained_dir, freeze, trainable):
  # With init_from (the pre-trained layers) and without (the floor: an
  # untrained network from gin).
  for init_from in (pretrained_dir['workdir'], None):
    gin.clear_config()
    try:
      main.parse_config([os.path.join(REPO, 'configs', 'ssl', 'mel.gin')],
                        TINY)
      model = pretrained.classifier({'tones': 2}, init_from, freeze)
    finally:
      gin.clear_config()
    model(tf.zeros([1, 16000]))
    parts = {'frontend': model.frontend, 'encoder': model.encoder,
             'head': model.heads['tones']}
    owners = {name for name, part in parts.items()
              if part.trainable_weights}
    assert owners == trainable - ({'frontend'} if init_from is None else
                                  set())  # Mel has no weights.


def test_classifier_and_cola_share_one_pooling():
  keras.utils.set_random_seed(0)
  mel = frontend.MelFilterbanks(n_filters=8)
  encoder = models.ConvNet(filters=[6])
  model = models.AudioClassifier(6, frontend=mel, encoder=encoder)
  x = np.random.default_rng(0).uniform(-1, 1, (3, 4000)).astype('float32')
  model(x)
  # Identity head: the logits are the embedding itself.
  model.heads['head'].set_weights([np.eye(6, dtype='float32'),
                                   np.zeros(6, 'float32')])
  inference = model(x, training=False).numpy()
  # NumPy's maximum of the encoder's output over time and frequency, and
  # COLA's pooling of the same layers.
  features = mel(x)
  maps = encoder(features[..., None], training=False).numpy()
  np.testing.assert_allclose(inference, maps.max(axis=(1, 2)), rtol=1e-6)
  cola_model = cola.ColaModel(frontend=mel, encoder=encoder, embedding_dim=4)
  np.testing.assert_allclose(cola_model.pooled(features).numpy(), inference,
                             rtol=1e-6)
  np.testing.assert_allclose(
      models.pooled_embedding(features, encoder).numpy(), inference,
      rtol=1e-6)


def test_frozen_encoder_applies_no_dropout():
  """A frozen encoder gives a probe fixed features: with dropout 0.5,
  training=True differs from training=False until the encoder is frozen,
  then equals it (before the fix, a frozen encoder still dropped half its
  activations in example.main's probes)."""
  keras.utils.set_random_seed(0)
  mel = frontend.MelFilterbanks(n_filters=8)
  encoder = models.ConvNet(filters=[6], dropout=0.5)
  model = models.AudioClassifier(6, frontend=mel, encoder=encoder)
  x = np.random.default_rng(0).uniform(-1, 1, (3, 4000)).astype('float32')
  model(x)
  # Identity head: the logits are the embedding itself.
  model.heads['head'].set_weights([np.eye(6, dtype='float32'),
                                   np.zeros(6, 'float32')])
  assert not np.allclose(model(x, training=True).numpy(),
                         model(x, training=False).numpy())
  encoder.trainable = False
  # (After the training call above moved batch normalization's statistics.)
  inference = model(x, training=False).numpy()
  np.testing.assert_array_equal(model(x, training=True).numpy(), inference)
  np.testing.assert_array_equal(model(x, training=False).numpy(), inference)
  features = mel(x)
  cola_model = cola.ColaModel(frontend=mel, encoder=encoder, embedding_dim=4)
  np.testing.assert_array_equal(
      cola_model.pooled(features, training=True).numpy(), inference)
  encoder.trainable = True
  # In training mode, a trainable encoder's dropout is applied.
  assert not np.allclose(cola_model.pooled(features, training=True).numpy(),
                         inference)


def test_bad_init_from_and_freeze_are_refused(tmp_path):
  with pytest.raises(ValueError, match='train.freeze must be one of'):
    pretrained.check(None, 'heads')
  with pytest.raises(ValueError, match='example.pretrain'):
    pretrained.check(str(tmp_path), 'encoder')


def test_demo_probe_fits_separable_embeddings_and_averages_clip_logits():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(3), 20)
  centers = rng.normal(size=(3, 5)) * 4
  x = (centers[labels] + rng.normal(size=(60, 5))).astype('float32')
  head = probing.fit_probe(x, labels, 3, seed=0, steps=200)
  clips = np.arange(60) // 2  # Two windows per clip.
  logits = head.predict(x, verbose=0)
  mean_logits = logits.reshape(30, 2, 3).mean(1)
  expected = np.mean(mean_logits.argmax(1) == labels[::2])
  assert probing.clip_accuracy(head, x, clips, labels) == expected
  assert expected > 0.9


def test_probe_minimizes_its_regularized_objective():
  """At the probe's solution, the gradient of mean cross-entropy + l2 |W|^2
  (computed with NumPy on the standardized embeddings) vanishes."""
  l2 = 0.05
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, 90)
  x = (rng.normal(size=(3, 6))[labels] + 2 * rng.normal(size=(90, 6))
       ).astype('float32')
  head = probing.fit_probe(x, labels, 3, seed=0, steps=1000, l2=l2)
  kernel, bias = head.layers[-1].get_weights()
  z = (x - x.mean(0)) / (x.std(0) + 1e-6)
  logits = z @ kernel + bias
  np.testing.assert_allclose(head.predict(x, verbose=0), logits, rtol=1e-3,
                             atol=1e-4)
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  error = (p - np.eye(3)[labels]) / len(x)
  grad_kernel = z.T @ error + 2 * l2 * kernel
  assert np.abs(grad_kernel).max() < 2e-3
  assert np.abs(error.sum(0)).max() < 2e-3
  # A stronger weight gives a smaller kernel.
  weaker = probing.fit_probe(x, labels, 3, seed=0, steps=1000, l2=l2 / 10)
  assert (np.linalg.norm(weaker.layers[-1].get_weights()[0]) >
          np.linalg.norm(kernel))


def test_probe_summary_is_mean_std_and_range_over_runs():
  # Two runs (pre-trainings) of two head seeds each; a run missing a task
  # does not count for it.
  runs = [[{'a': 0.5, 'b': 0.2}, {'a': 0.7, 'b': 0.4}],
          [{'a': 0.2, 'b': 0.1}, {'a': 0.2, 'b': 0.3}],
          [{'a': 0.9}]]
  stats = probing.summarize(runs, 'b')
  values = [0.3, 0.2]
  assert stats['runs'] == 2
  np.testing.assert_allclose(
      [stats['mean'], stats['std'], stats['min'], stats['max']],
      [np.mean(values), np.std(values, ddof=1), 0.2, 0.3])
  assert probing.summarize(runs, 'a')['runs'] == 3
  assert probing.summarize(runs, 'c') is None
  assert probing.summarize(runs[2:], 'a')['std'] == 0.


def test_ssl_demo_runs_seed_major_and_reuses_finished_probes(tmp_path,
                                                             monkeypatch):
  # Seed-major: a demo stopped during the second seed has compared every
  # frontend once. Run again, it reuses each seed's probes and floor unless
  # the pre-training or the probe flags changed. The pre-trainings, probes
  # and floors are stubbed; the configs and the results files are real.
  from absl import flags
  from example import ssl_demo
  calls = []

  def pretrain(key, seed, workdir, num_epochs, extra):
    os.makedirs(workdir, exist_ok=True)
    calls.append(('pretrain', key, seed))

  def probe(model, tasks, seeds, steps):
    calls.append(('probe', model))
    return [{}]

  monkeypatch.setattr(ssl_demo.tasks_lib, 'load_tasks', lambda *a: [])
  monkeypatch.setattr(ssl_demo, 'pretrain', pretrain)
  monkeypatch.setattr(ssl_demo, '_state',
                      lambda workdir: {'epoch': 4, 'iterations': 120})
  monkeypatch.setattr(ssl_demo.pretrained, 'load', lambda workdir: 'pre')
  monkeypatch.setattr(ssl_demo, 'untrained',
                      lambda key, seed, extra: ('floor', key, seed))
  monkeypatch.setattr(ssl_demo.probing, 'probe', probe)
  monkeypatch.setattr(ssl_demo, 'supervised', lambda tasks: {})
  was_parsed = flags.FLAGS.is_parsed()
  names = ('workdir', 'seeds', 'frontends', 'probe_steps')
  saved = {k: flags.FLAGS[k].value for k in names} if was_parsed else None
  args = ['ssl_demo', f'--workdir={tmp_path}', '--seeds=0,1',
          '--frontends=leaf,mel']
  try:
    flags.FLAGS(args)
    ssl_demo.main(['ssl_demo'])
    first, calls[:] = list(calls), []
    ssl_demo.main(['ssl_demo'])
    second, calls[:] = list(calls), []
    flags.FLAGS(args + ['--probe_steps=7'])
    ssl_demo.main(['ssl_demo'])
    third = list(calls)
  finally:
    if was_parsed:
      for k, v in saved.items():
        flags.FLAGS[k].value = v
    else:
      flags.FLAGS.unparse_flags()
  assert first == [
      ('pretrain', 'leaf', 0), ('probe', 'pre'),
      ('probe', ('floor', 'leaf', 1000)),
      ('pretrain', 'mel', 0), ('probe', 'pre'),
      ('probe', ('floor', 'mel', 1000)),
      ('pretrain', 'leaf', 1), ('probe', 'pre'),
      ('probe', ('floor', 'leaf', 1001)),
      ('pretrain', 'mel', 1), ('probe', 'pre'),
      ('probe', ('floor', 'mel', 1001))]
  assert second == [c for c in first if c[0] == 'pretrain']
  assert third == first
  with open(os.path.join(tmp_path, 'results.json')) as f:
    results = json.load(f)
  assert [r['seed'] for r in results['mel']['pretrained']] == [0, 1]
