"""Figures of a categorical experiment: accuracy per run, per split (mean over seeds) and
their mean with the spread over splits; per-class recall; the confusion matrix summed over
splits; and predictions.csv, one row per test example with every class's probability."""

from __future__ import annotations

import numpy as np

from aan_jax import tasks
from aan_jax.tasks import figures


def _spread(values) -> dict:
  v = np.asarray(values, np.float64)
  return {"std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "min": float(v.min()),
          "max": float(v.max())}


def evaluate(result) -> tuple[dict, dict]:
  """(summary, table): accuracy per run, per split (mean over seeds) and their mean, with
  the spread over splits; per-class recall; the confusion matrix summed over splits."""
  c, runs = result.corpus, result.runs
  k = len(c.classes)
  table = {key: [] for key in ("run", "split", "seed", "point", "id", "label", "predicted")}
  probs_all = []
  per_run, conf_point = {}, {}
  for r in range(len(runs)):
    idx = runs.test_idx[r][runs.test_ok[r]]
    logits = result.test_logits[r][runs.test_ok[r]]
    pred = logits.argmax(-1)
    labels = np.asarray(c.labels)[idx]
    conf = figures.confusion(labels, pred, k)
    p = int(runs.point[r])
    conf_point[p] = conf_point.get(p, 0) + conf
    per_run[runs.names[r]] = {"split": c.split_names[runs.fold[r]], "seed": int(runs.seed[r]),
                              "learning_rate": float(runs.hparams["learning_rate"][r]),
                              "confusion": conf.tolist(), **figures.categorical_figures(conf, c.classes)}
    table["run"] += [runs.names[r]] * len(idx)
    table["split"] += [c.split_names[runs.fold[r]]] * len(idx)
    table["seed"] += [int(runs.seed[r])] * len(idx)
    table["point"] += [p] * len(idx)
    table["id"] += [c.ids[i] for i in idx]
    table["label"] += [c.classes[i] for i in labels]
    table["predicted"] += [c.classes[i] for i in pred]
    probs_all.append(tasks.CATEGORICAL.transform(logits.astype(np.float64)))
  table["probabilities"] = np.concatenate(probs_all)
  points = []
  for p, rate in enumerate(result.rates):
    sel = [r for r in range(len(runs)) if runs.point[r] == p]
    per_split = {}
    for sk in sorted({int(runs.fold[r]) for r in sel}):
      rs = [r for r in sel if runs.fold[r] == sk]
      conf = sum(np.asarray(per_run[runs.names[r]]["confusion"]) for r in rs)
      figs = figures.categorical_figures(conf, c.classes)
      # The split's accuracy: the mean over its seeds' accuracies.
      figs["accuracy"] = float(np.mean([per_run[runs.names[r]]["accuracy"] for r in rs]))
      figs["seeds"] = len(rs)
      per_split[c.split_names[sk]] = figs
    accs = [f["accuracy"] for f in per_split.values()]
    points.append({"learning_rate": rate, "accuracy": float(np.mean(accs)),
                   "accuracy_spread": _spread(accs), "per_split": per_split,
                   "confusion": np.asarray(conf_point[p]).tolist(),
                   **{"pooled_" + key: v for key, v in figures.categorical_figures(conf_point[p], c.classes).items()
                      if key != "n"}})
  summary = {"classes": list(c.classes), "splits": len(points[0]["per_split"]),
             "runs": per_run}
  if len(points) == 1:
    summary.update({key: points[0][key] for key in ("accuracy", "accuracy_spread", "per_split",
                                                    "confusion", "pooled_accuracy",
                                                    "pooled_mean_recall",
                                                    "pooled_per_class_recall")})
  else:
    # No validation set in this protocol: nothing is selected on the test lists.
    summary.update({"accuracy": None, "sweep": points,
                    "note": "several learning rates: each point's accuracy is in 'sweep'; "
                            "no point is selected (the protocol has no validation set)"})
  return summary, table


def write_predictions(path: str, table: dict, classes) -> None:
  """predictions.csv: run, split, seed, id, label, predicted, one probability per class."""
  import csv  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  from aan_jax.util import atomic  # pylint: disable=g-import-not-at-top
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(["run", "split", "seed", "learning_rate_point", "id", "label", "predicted"]
             + [f"p_{c}" for c in classes])
  for i in range(len(table["id"])):
    w.writerow([table["run"][i], table["split"][i], table["seed"][i], table["point"][i],
                table["id"][i], table["label"][i], table["predicted"][i]]
               + [f"{x:.6f}" for x in table["probabilities"][i]])
  atomic.write_file(path, buf.getvalue())
