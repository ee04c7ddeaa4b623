"""Selection and figures of a regression/fear experiment: each target's grid point chosen on
validation (never on test items, never without its evidence), its pooled test figures with
bootstrap intervals, per-group figures, and every point of a sweep.
"""

from __future__ import annotations

import math

import numpy as np

from aan_jax import tasks
from aan_jax.data.protocols import EARLY_STOPPING_LABELS
from aan_jax.engine.runs import RUN_HPARAMS
from aan_jax.evaluation import pooled as ev


class SelectionError(ValueError):
  """A sweep whose points cannot be compared on validation."""


def _validation_loss(result, r: int) -> tuple[float, dict]:
  """A run's loss and figures on its validation groups (best parameters), in float64."""
  c, runs = result.corpus, result.runs
  target = result.targets[runs.target[r]]
  preds, truth = [], []
  for j, (g, ok) in enumerate(zip(runs.val_idx[r], runs.val_ok[r])):
    if ok:
      lab = c.label_mask[target][g]
      preds.append(result.val_predictions[r, j][lab])
      truth.append(c.targets[target][g][lab])
  if not preds:
    return math.nan, {}
  p, t = np.concatenate(preds).astype(np.float64), np.concatenate(truth).astype(np.float64)
  if c.task(target) == "binary":
    pw = float(result.pos_weight[r])
    pc = np.clip(p, 1e-7, 1 - 1e-7)
    w = np.where(t > 0.5, pw, 1.0)
    loss = float(np.sum(w * -np.where(t > 0.5, np.log(pc), np.log1p(-pc))) / np.sum(w))
    return loss, {"loss": loss, "ap": ev.average_precision(p, t),
                  "threshold": ev.best_threshold(p, t)}
  m = ev.regression_metrics(p, t)
  hp = {k: float(v[r]) for k, v in result.runs.hparams.items()}
  loss = hp["mse_weight"] * m["mse"] + hp["pcc_weight"] * (1 - m["pcc"])
  return loss, {"loss": loss, **{k: m[k] for k in ("mse", "pcc", "ccc")}}


def evaluate(result, bootstrap: int | None = None) -> tuple[dict, dict]:
  """(summary, table): each target's selected grid point, its pooled test figures with
  intervals, per-group figures, the sweep, and the prediction table they come from."""
  c, runs = result.corpus, result.runs
  bootstrap = result.config.get("bootstrap", 1000) if bootstrap is None else bootstrap
  val = [_validation_loss(result, r) for r in range(len(runs))]
  summary: dict = {"early_stopping": result.early_stopping,
                   "early_stopping_label": EARLY_STOPPING_LABELS[result.early_stopping]}
  selected, selected_on, sweep_points_out = {}, {}, []
  tables = []
  for ti, target in enumerate(result.targets):
    task = c.task(target)
    losses = []
    for p in range(len(result.points)):
      sel = [r for r in range(len(runs)) if runs.target[r] == ti and runs.point[r] == p]
      vals = [val[r][0] for r in sel if not math.isnan(val[r][0])]
      losses.append(float(np.mean(vals)) if vals else math.inf)
    if len(result.points) > 1:
      if not np.isfinite(losses).any():
        # Never fall back to a point silently: without validation figures there is nothing
        # to choose on (training.regression.validate refuses such a sweep up front).
        raise SelectionError(
            f"{target}: no grid point has a validation figure to be selected on (no fold "
            "has validation groups); set patience >= 1 so that folds carve validation groups")
      best = int(np.argmin(losses))
      n_val = sum(1 for r in range(len(runs)) if runs.target[r] == ti
                  and runs.point[r] == best and not math.isnan(val[r][0]))
      selected_on[target] = {
          "point": best, "on": "mean validation loss over the point's runs",
          "runs_with_validation": n_val,
          "validation_loss": [x if math.isfinite(x) else None for x in losses]}
    else:
      best = 0
    selected[target] = best
    rows = [r for r in range(len(runs)) if runs.target[r] == ti and runs.point[r] == best]
    table = ev.prediction_table(result, rows)
    thresholds = {runs.names[r]: val[r][1].get("threshold", 0.5) for r in rows} \
        if task == "binary" else None
    figs = ev.summarize_target(table, task, thresholds, bootstrap, seed=0)
    figs["task"] = task
    if thresholds is not None:
      figs["thresholds"] = thresholds
    figs["runs"] = {runs.names[r]: {
        "fold": result.folds[runs.fold[r]].name, "seed": int(runs.seed[r]),
        "best_epoch": int(result.best_epoch[r]), "epochs_trained": int(result.epochs_trained[r]),
        "validation_groups": [c.groups[g] for g, ok in zip(runs.val_idx[r], runs.val_ok[r]) if ok],
        "validation": val[r][1]} for r in rows}
    summary[target] = figs
    tables.append(table)
  if len(result.points) > 1:
    for p, point in enumerate(result.points):
      entry = {k: point[k] for k in swept_keys(result)}
      entry["validation"], entry["test"] = {}, {}
      for ti, target in enumerate(result.targets):
        sel = [r for r in range(len(runs)) if runs.target[r] == ti and runs.point[r] == p]
        vs = [val[r][1] for r in sel if val[r][1]]
        entry["validation"][target] = {k: float(np.mean([v[k] for v in vs]))
                                       for k in (vs[0] if vs else {}) if k != "threshold"}
        tab = ev.prediction_table(result, sel)
        th = None
        if c.task(target) == "binary":
          th = {runs.names[r]: val[r][1].get("threshold", 0.5) for r in sel}
          th = np.asarray([th[x] for x in tab["run"]])
        entry["test"][target] = tasks.get(c.task(target)).figures(
            tab["prediction"], tab["truth"], tab["group"], th)
      sweep_points_out.append(entry)
    summary["sweep"] = {"points": sweep_points_out, "selected": selected,
                        "swept": swept_keys(result), "selected_on": selected_on}
  table = {k: np.concatenate([t[k] for t in tables]) for k in ev.PREDICTION_COLUMNS}
  return summary, table


def swept_keys(result) -> list[str]:
  return [k for k in RUN_HPARAMS
          if len({float(p[k]) for p in result.points}) > 1]
