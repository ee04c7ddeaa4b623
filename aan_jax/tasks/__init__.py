"""What is learned, per target kind: its loss, the transform of the model's raw output, and
its figures (the way scenic's base models carry `loss_function` and `get_metrics_fn`).

  regression   MSE + (1 - PCC), weighted per run (mse_weight, pcc_weight); MSE, PCC, CCC
  binary       class-weighted BCE on a logit; sigmoid; AP, MAP, F1 at a validation threshold
  categorical  VAANet's PCCE or CE on logits; softmax; accuracy, recall, confusion

A program whose runs mix regression and binary targets (MediaEval's valence, arousal and
fear) computes each run's own loss: `loss` picks it by the run's task index.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp
import numpy as np

from aan_jax.tasks import figures, losses


def _regression_loss(out, y, w, run, plan):
  del plan
  hp = run["hparams"]
  return (hp["mse_weight"] * losses.mse(out, y, w)
          + hp["pcc_weight"] * (1.0 - losses.pearson(out, y, w)))


def _binary_loss(out, y, w, run, plan):
  del plan
  return losses.binary_loss(out, y, w, run["pos_weight"])


def _categorical_loss(out, y, w, run, plan):
  del run
  return losses.classification_loss(out, y, w, plan.loss, plan.positive, plan.lam)


def _sigmoid(raw):
  return 1.0 / (1.0 + np.exp(-raw))


def _softmax(raw):
  x = raw - raw.max(-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(-1, keepdims=True)


def _regression_figures(pred, truth, groups=None, thresholds=None):
  del groups, thresholds
  return figures.regression_metrics(pred, truth)


@dataclasses.dataclass(frozen=True)
class Task:
  """loss(out, y, w, run, plan) -> scalar (traced); transform(raw numpy) -> prediction;
  figures(pred, truth, groups, thresholds) -> dict (numpy, float64)."""
  name: str
  loss: Callable
  transform: Callable
  figures: Callable


REGRESSION = Task("regression", _regression_loss, lambda raw: raw, _regression_figures)
BINARY = Task("binary", _binary_loss, _sigmoid, figures.binary_metrics)
CATEGORICAL = Task("categorical", _categorical_loss, _softmax,
                   lambda conf, classes: figures.categorical_figures(conf, classes))
TASKS = {t.name: t for t in (REGRESSION, BINARY, CATEGORICAL)}
ORDER = tuple(TASKS)


def get(name: str) -> Task:
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; expected one of {list(TASKS)}")
  return TASKS[name]


def kinds(tasks) -> tuple[str, ...]:
  """The distinct task kinds of a program, in a fixed order (a run's task index points here)."""
  return tuple(k for k in ORDER if k in set(tasks))


def loss(plan, out, y, w, run):
  """The run's own task loss; plan.tasks lists the program's targets' kinds."""
  names = kinds(plan.tasks)
  values = [TASKS[n].loss(out, y, w, run, plan) for n in names]
  total = values[0]
  for i in range(1, len(values)):
    total = jnp.where(run["task_index"] == i, values[i], total)
  return total
