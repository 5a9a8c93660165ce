"""Clip-level metrics from averaged logits, in NumPy.

Single-label tasks: accuracy and softmax cross-entropy. Multi-label tasks
(AudioSet-like): mean average precision, mean ROC AUC over classes, and the
d-prime of that mean AUC, d' = sqrt(2) * Phi^-1(AUC) (Table 4).
"""

import math
import statistics
from typing import Dict

import numpy as np


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def classification_metrics(logits: np.ndarray,
                           labels: np.ndarray) -> Dict[str, float]:
  """Accuracy and mean softmax cross-entropy.

  Args:
    logits: float [examples, classes].
    labels: int [examples].

  Returns:
    {'accuracy', 'loss'}.
  """
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels, np.int64)
  nll = -_log_softmax(logits)[np.arange(len(labels)), labels]
  return {'accuracy': float(np.mean(logits.argmax(axis=-1) == labels)),
          'loss': float(np.mean(nll))}


def _ranks(scores: np.ndarray) -> np.ndarray:
  """1-based ranks of `scores`, ties sharing their average rank."""
  order = np.argsort(scores, kind='mergesort')
  sorted_scores = scores[order]
  ranks = np.empty(len(scores), np.float64)
  starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
  ends = np.r_[starts[1:], len(scores)]
  for start, end in zip(starts, ends):
    ranks[order[start:end]] = (start + end + 1) / 2.
  return ranks


def roc_auc(scores: np.ndarray, targets: np.ndarray) -> float:
  """Area under the ROC curve of one class (Mann-Whitney U, ties count 1/2).

  Args:
    scores: float [examples].
    targets: {0, 1} [examples] with both values present.

  Returns:
    the AUC in [0, 1].
  """
  positive = targets > 0.5
  n_pos, n_neg = positive.sum(), (~positive).sum()
  rank_sum = _ranks(np.asarray(scores, np.float64))[positive].sum()
  return float((rank_sum - n_pos * (n_pos + 1) / 2.) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
  """Average precision of one class: mean over positives p of the precision
  among examples scoring at least as high as p.

  Args:
    scores: float [examples].
    targets: {0, 1} [examples] with at least one 1.

  Returns:
    the average precision in [0, 1].
  """
  scores = np.asarray(scores, np.float64)
  positive = targets > 0.5
  order = np.argsort(-scores, kind='mergesort')
  sorted_scores, sorted_pos = scores[order], positive[order]
  # Last index of each group of tied scores: ties share one threshold.
  group_end = np.r_[np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]),
                    len(scores) - 1]
  group_of = np.searchsorted(group_end, np.arange(len(scores)))
  hits = np.cumsum(sorted_pos)[group_end][group_of]
  precision = hits / (group_end[group_of] + 1.)
  return float(precision[sorted_pos].mean())


def d_prime(auc: float, eps: float = 1e-9) -> float:
  """d' = sqrt(2) * Phi^-1(auc), Phi the standard normal CDF.

  An AUC of exactly 0 or 1 is moved `eps` inside (0, 1) so that d' stays
  finite (about +-8.5).
  """
  auc = min(max(auc, eps), 1. - eps)
  return math.sqrt(2.) * statistics.NormalDist().inv_cdf(auc)


def multilabel_metrics(logits: np.ndarray,
                       targets: np.ndarray) -> Dict[str, float]:
  """mAP, mean AUC and d' over the classes where they are defined.

  AP needs a positive example of the class, AUC a positive and a negative.

  Args:
    logits: float [examples, classes].
    targets: {0, 1} [examples, classes].

  Returns:
    {'mAP', 'auc', 'd_prime'}.
  """
  logits = np.asarray(logits, np.float64)
  targets = np.asarray(targets, np.float64)
  aps, aucs = [], []
  for c in range(logits.shape[1]):
    n_pos = targets[:, c].sum()
    if n_pos > 0:
      aps.append(average_precision(logits[:, c], targets[:, c]))
    if 0 < n_pos < len(targets):
      aucs.append(roc_auc(logits[:, c], targets[:, c]))
  auc = float(np.mean(aucs)) if aucs else float('nan')
  return {'mAP': float(np.mean(aps)) if aps else float('nan'),
          'auc': auc,
          'd_prime': d_prime(auc) if aucs else float('nan')}
