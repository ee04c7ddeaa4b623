"""Honest evaluation of an experiment's runs: selection on validation, pooled figures with
bootstrap intervals over groups, and the prediction table they are computed from.

Everything here is numpy in float64 on the float32 predictions that predictions.csv holds,
so every pooled figure in results.json can be recomputed exactly from that file.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Callable, Sequence

import numpy as np

PREDICTION_COLUMNS = ("run", "fold", "group", "item", "start_s", "end_s", "target", "truth",
                      "prediction")


# Each task's figures (aan_jax.tasks.figures), used here per target.
from aan_jax.tasks.figures import (  # noqa: E402,F401
    average_precision, best_threshold, binary_metrics, f1_at, regression_metrics)


def bootstrap_interval(groups, fn: Callable[[np.ndarray], float], n: int = 1000,
                       seed: int = 0, level: float = 0.95) -> list[float]:
  """A percentile interval of fn(rows) over resamples of whole groups (movies, excerpts)."""
  return bootstrap_intervals(groups, lambda rows: {"v": fn(rows)}, ("v",), n, seed, level)["v"]


def bootstrap_intervals(groups, fn: Callable[[np.ndarray], dict], keys, n: int = 1000,
                        seed: int = 0, level: float = 0.95) -> dict:
  """bootstrap_interval for several figures of one fn(rows) -> {key: value}: each resample
  is computed once for all keys (the same resamples, so the same intervals as one call per
  key; a third of the demo's evaluation time)."""
  groups = np.asarray(groups)
  names, inverse = np.unique(groups, return_inverse=True)
  if len(names) < 2:
    return {k: [math.nan, math.nan] for k in keys}
  order = np.argsort(inverse, kind="stable")  # each group's rows, in row order
  starts = np.r_[0, np.cumsum(np.bincount(inverse, minlength=len(names)))]
  rows = [order[starts[i]:starts[i + 1]] for i in range(len(names))]
  # All resamples' picks at once: the same stream as one integers() call per resample.
  picks = np.random.default_rng(seed).integers(len(names), size=(n, len(names)))
  values: dict = {k: [] for k in keys}
  for pick in picks:
    out = fn(np.concatenate([rows[i] for i in pick]))
    for k in keys:
      if not math.isnan(out[k]):
        values[k].append(out[k])
  a = (1 - level) / 2
  return {k: [float(np.quantile(v, a)), float(np.quantile(v, 1 - a))] if v
          else [math.nan, math.nan] for k, v in values.items()}


# ------------------------------------------------------------------------- the table


def prediction_table(result, runs_rows: Sequence[int]) -> dict:
  """Column arrays of predictions.csv for the given runs (test predictions, labelled rows)."""
  c, runs = result.corpus, result.runs
  cols = {k: [] for k in PREDICTION_COLUMNS}
  for r in runs_rows:
    target = result.targets[runs.target[r]]
    lab = c.label_mask[target]
    for j, (g, ok) in enumerate(zip(runs.test_idx[r], runs.test_ok[r])):
      if not ok:
        continue
      items = np.flatnonzero(lab[g])
      n = len(items)
      cols["run"] += [runs.names[r]] * n
      cols["fold"] += [result.folds[runs.fold[r]].name] * n
      cols["group"] += [c.groups[g]] * n
      cols["item"] += items.tolist()
      cols["start_s"] += c.start_s[g, items].tolist()
      cols["end_s"] += c.end_s[g, items].tolist()
      cols["target"] += [target] * n
      cols["truth"] += c.targets[target][g, items].tolist()
      cols["prediction"] += result.test_predictions[r, j, items].tolist()
  out = {k: np.asarray(v) for k, v in cols.items()}
  for k in ("truth", "prediction", "start_s", "end_s"):
    out[k] = np.asarray(out[k], np.float32)
  return out


def write_predictions(path: str, table: dict) -> None:
  """predictions.csv (atomically); float32 values with 9 significant digits (they round-trip)."""
  from aan_jax.util import atomic  # pylint: disable=g-import-not-at-top
  buf = io.StringIO(newline="")
  w = csv.writer(buf)
  w.writerow(PREDICTION_COLUMNS)
  fmt = lambda x: "" if math.isnan(x) else f"{x:.9g}"
  for i in range(len(table["run"])):
    w.writerow([table["run"][i], table["fold"][i], table["group"][i], int(table["item"][i]),
                fmt(float(table["start_s"][i])), fmt(float(table["end_s"][i])),
                table["target"][i], fmt(float(table["truth"][i])),
                fmt(float(table["prediction"][i]))])
  atomic.write_file(path, buf.getvalue())


def read_predictions(path: str) -> dict:
  """predictions.csv back into column arrays (float32 where written from float32)."""
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  out = {k: np.asarray([r[k] for r in rows]) for k in PREDICTION_COLUMNS}
  for k in ("truth", "prediction", "start_s", "end_s"):
    out[k] = np.asarray([float(x) if x else math.nan for x in out[k]], np.float32)
  out["item"] = out["item"].astype(int)
  return out


def summarize_target(table: dict, task: str, thresholds: dict | None = None,
                     bootstrap: int = 1000, seed: int = 0) -> dict:
  """Pooled figures of one target's rows with intervals, and the figures per group."""
  pred, truth, groups = table["prediction"], table["truth"], table["group"]
  if task == "binary":
    th = np.asarray([thresholds[r] for r in table["run"]], np.float64)
    out = binary_metrics(pred, truth, groups, th)
    keys = ("ap", "map", "f1")
    fn = lambda i: binary_metrics(pred[i], truth[i], groups[i], th[i])
    per_group = {}
    for g in dict.fromkeys(groups.tolist()):
      sel = groups == g
      per_group[g] = {"ap": average_precision(pred[sel], truth[sel]), "n": int(sel.sum()),
                      "positives": int((truth[sel] > 0.5).sum())}
  else:
    out = regression_metrics(pred, truth)
    keys = ("mse", "pcc", "ccc")
    fn = lambda i: regression_metrics(pred[i], truth[i])
    per_group = {g: regression_metrics(pred[groups == g], truth[groups == g])
                 for g in dict.fromkeys(groups.tolist())}
  out["interval"] = bootstrap_intervals(groups, fn, keys, bootstrap, seed)
  out["interval_level"] = 0.95
  out["per_group"] = per_group
  return out


def paired_difference(a: dict, b: dict, task: str, key: str, n: int = 1000,
                      seed: int = 0) -> dict:
  """Model a minus model b on the rows both predicted, with a bootstrap over groups."""
  ka = {(g, i, t): k for k, (g, i, t) in enumerate(zip(a["group"], a["item"], a["target"]))}
  pairs = [(ka[(g, i, t)], k) for k, (g, i, t) in enumerate(zip(b["group"], b["item"], b["target"]))
           if (g, i, t) in ka]
  if not pairs:
    return {"difference": math.nan, "interval": [math.nan, math.nan], "n": 0}
  ia, ib = map(np.asarray, zip(*pairs))
  groups = a["group"][ia]

  def metric(tab, idx):
    if task == "binary":
      return average_precision(tab["prediction"][idx], tab["truth"][idx])
    return regression_metrics(tab["prediction"][idx], tab["truth"][idx])[key]

  diff = lambda rows: metric(a, ia[rows]) - metric(b, ib[rows])
  return {"difference": diff(np.arange(len(ia))),
          "interval": bootstrap_interval(groups, diff, n, seed), "n": int(len(ia))}
