"""Each task's figures in numpy (float64): regression (MSE, PCC, CCC), binary (AP, MAP, F1 at a
threshold chosen on validation) and categorical (accuracy, recall, confusion)."""

from __future__ import annotations

import math

import numpy as np


def regression_metrics(pred, truth) -> dict:
  """MSE, Pearson and Lin's concordance over all rows (population moments)."""
  p, t = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
  n = len(p)
  if n == 0:
    return {"mse": math.nan, "pcc": math.nan, "ccc": math.nan, "n": 0}
  mp, mt = p.mean(), t.mean()
  vp, vt = np.mean((p - mp) ** 2), np.mean((t - mt) ** 2)
  cov = np.mean((p - mp) * (t - mt))
  pcc = cov / math.sqrt(vp * vt) if vp * vt > 0 else 0.0
  cden = vp + vt + (mp - mt) ** 2
  return {"mse": float(np.mean((p - t) ** 2)), "pcc": float(pcc),
          "ccc": float(2 * cov / cden) if cden > 0 else 0.0, "n": int(n)}


def average_precision(score, truth) -> float:
  """Average precision as scikit-learn's average_precision_score defines it (the step-wise
  sum over distinct thresholds, no interpolation); NaN without a positive."""
  s, y = np.asarray(score, np.float64), np.asarray(truth) > 0.5
  if not y.any():
    return math.nan
  order = np.argsort(-s, kind="mergesort")
  s, y = s[order], y[order]
  last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last row of each distinct score
  tps = np.cumsum(y)[last]
  precision = tps / (last + 1)
  recall = tps / tps[-1]
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def best_threshold(score, truth) -> float:
  """The score threshold (predict positive where score >= it) with the best F1."""
  s, y = np.asarray(score, np.float64), np.asarray(truth) > 0.5
  if not y.any() or len(s) == 0:
    return 0.5
  order = np.argsort(-s, kind="mergesort")
  s_sorted, y_sorted = s[order], y[order]
  last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
  tps = np.cumsum(y_sorted)[last]
  f1 = 2 * tps / (last + 1 + y.sum())
  return float(s_sorted[last[int(np.argmax(f1))]])


def f1_at(score, truth, threshold) -> dict:
  s, y = np.asarray(score, np.float64), np.asarray(truth) > 0.5
  pred = s >= np.asarray(threshold, np.float64)
  tp = float(np.sum(pred & y))
  precision = tp / pred.sum() if pred.sum() else 0.0
  recall = tp / y.sum() if y.sum() else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f1": f1}


def binary_metrics(score, truth, groups, thresholds) -> dict:
  """AP pooled over all rows, MAP (mean over groups with a positive of the group's AP), and
  precision/recall/F1 at each row's threshold (chosen on validation)."""
  score, truth, groups = np.asarray(score), np.asarray(truth), np.asarray(groups)
  per = [average_precision(score[groups == g], truth[groups == g]) for g in np.unique(groups)]
  per = [a for a in per if not math.isnan(a)]
  out = {"ap": average_precision(score, truth), "map": float(np.mean(per)) if per else math.nan,
         "prevalence": float(np.mean(truth > 0.5)) if len(truth) else math.nan,
         "n": int(len(truth))}
  out.update(f1_at(score, truth, thresholds))
  return out


def confusion(labels, predicted, k: int) -> np.ndarray:
  """(k, k) counts: true class x predicted class."""
  c = np.zeros((k, k), np.int64)
  np.add.at(c, (np.asarray(labels), np.asarray(predicted)), 1)
  return c


def categorical_figures(c: np.ndarray, classes) -> dict:
  """Accuracy, per-class recall (None for a class with no example) and their mean, from a
  confusion matrix."""
  support = c.sum(1)
  recall = np.where(support > 0, np.diag(c) / np.maximum(support, 1), np.nan)
  return {"accuracy": float(np.trace(c) / max(c.sum(), 1)), "n": int(c.sum()),
          "mean_recall": float(np.nanmean(recall)) if np.isfinite(recall).any() else math.nan,
          "per_class_recall": {n: (float(r) if np.isfinite(r) else None)
                               for n, r in zip(classes, recall)}}
