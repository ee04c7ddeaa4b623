"""Evaluation protocols: which groups each fold trains, validates and tests on.

A protocol turns a corpus into folds. A fold is three disjoint sets of groups (movies, or
excerpts for EIMT16): training, validation (drives early stopping and the choice of a
sweep's grid point) and test (never seen by anything but the final figures). Folds are
weights over the group axis, never copies of the data.

    leave_one_out   COGNIMUSE: each group is the test set once; validation is a group
                    drawn from the others (or, as the authors' scripts did, the test group
                    itself: early_stopping="held_out", optimistic).
    fixed_split     EIMT16: the corpus's own train/test split; validation is a random
                    fraction of the training groups.
    official        MediaEval: train on the dev movies, test on the official test movies;
                    validation movies drawn from dev.
    dev_loo         MediaEval, as an option: leave one dev movie out, within dev.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from aan_jax.data.corpus import Corpus

PROTOCOLS = ("leave_one_out", "fixed_split", "official", "dev_loo")
EARLY_STOPPING_LABELS = {
    "validation": "validation groups drawn from each fold's training groups",
    "held_out": "the test group itself (as in the authors' scripts; optimistic)",
    "off": "off (patience 0): parameters after the last epoch",
}


@dataclasses.dataclass(frozen=True)
class Fold:
  """One fold: disjoint training, validation and test groups (indices into the corpus)."""
  name: str
  train: tuple[int, ...]
  validation: tuple[int, ...]
  test: tuple[int, ...]

  def weights(self, num_groups: int) -> np.ndarray:
    w = np.zeros(num_groups, np.float32)
    w[list(self.train)] = 1.0
    return w


def _draw(candidates: Sequence[int], k: int, seed, key: int) -> list[int]:
  """k groups drawn without replacement, reproducibly from (seed, key)."""
  rng = np.random.default_rng([int(seed), int(key)])
  k = min(k, len(candidates))
  return sorted(int(candidates[i]) for i in rng.choice(len(candidates), k, replace=False))


def leave_one_out(corpus: Corpus, early_stopping: str = "validation", seed: int = 0,
                  among: Sequence[int] | None = None) -> list[Fold]:
  """One fold per group of `among` (default all): that group is its test set."""
  pool = list(range(len(corpus.groups))) if among is None else [int(g) for g in among]
  if len(pool) < 2 + (early_stopping == "validation"):
    raise ValueError(f"{len(pool)} groups leave no training group for leave-one-out "
                     f"with early stopping {early_stopping!r}")
  folds = []
  for g in pool:
    others = [o for o in pool if o != g]
    if early_stopping == "validation":
      # Drawn as the engine always drew it (one of the others, from [seed, group]).
      val = [others[int(np.random.default_rng([seed, g]).integers(len(others)))]]
    elif early_stopping == "held_out":
      val = [g]
    else:
      val = []
    train = tuple(o for o in others if o not in val)
    folds.append(Fold(corpus.groups[g], train, tuple(val), (g,)))
  return folds


def fixed_split(corpus: Corpus, train_split: str = "train", test_split: str = "test",
                validation_fraction: float = 0.1, seed: int = 0,
                early_stopping: str = "validation") -> list[Fold]:
  """The corpus's own split; validation is a random fraction of the training groups."""
  idx = _split_indices(corpus, (train_split, test_split))
  train, test = idx[train_split], idx[test_split]
  val: list[int] = []
  if early_stopping == "validation":
    k = max(1, int(round(validation_fraction * len(train))))
    val = _draw(train, k, seed, 0)
  elif early_stopping == "held_out":
    raise ValueError("early_stopping='held_out' would stop on the test set of a fixed "
                     "split; use 'validation' or patience 0")
  return [Fold("split", tuple(g for g in train if g not in val), tuple(val), tuple(test))]


def official(corpus: Corpus, validation_groups: int = 3, seed: int = 0,
             early_stopping: str = "validation") -> list[Fold]:
  """Train on the official dev movies, test on the official test movies."""
  idx = _split_indices(corpus, ("dev", "test"))
  dev, test = idx["dev"], idx["test"]
  val: list[int] = []
  if early_stopping == "validation":
    if len(dev) <= validation_groups:
      raise ValueError(f"{len(dev)} dev movies leave none for training after drawing "
                       f"{validation_groups} validation movies")
    val = _draw(dev, validation_groups, seed, 0)
  elif early_stopping == "held_out":
    raise ValueError("early_stopping='held_out' would stop on the official test movies; "
                     "use 'validation' or patience 0")
  return [Fold("official", tuple(g for g in dev if g not in val), tuple(val), tuple(test))]


def dev_loo(corpus: Corpus, early_stopping: str = "validation", seed: int = 0) -> list[Fold]:
  """Leave one dev movie out, within the dev movies (the test movies are not used)."""
  return leave_one_out(corpus, early_stopping, seed, among=_split_indices(corpus, ("dev",))["dev"])


def _split_indices(corpus: Corpus, names: Sequence[str]) -> dict[str, list[int]]:
  pos = {g: i for i, g in enumerate(corpus.groups)}
  out = {}
  for n in names:
    if n not in corpus.splits:
      raise ValueError(f"corpus {corpus.name!r} has no {n!r} split (it has "
                       f"{sorted(corpus.splits) or 'none'}); use another protocol")
    out[n] = [pos[g] for g in corpus.splits[n]]
  return out


def make_folds(corpus: Corpus, protocol: str, early_stopping: str, seed: int = 0,
               validation_fraction: float = 0.1, validation_groups: int = 3) -> list[Fold]:
  """The folds of `protocol` on `corpus` (see the module docstring)."""
  if protocol == "leave_one_out":
    return leave_one_out(corpus, early_stopping, seed)
  if protocol == "fixed_split":
    return fixed_split(corpus, validation_fraction=validation_fraction, seed=seed,
                       early_stopping=early_stopping)
  if protocol == "official":
    return official(corpus, validation_groups, seed, early_stopping)
  if protocol == "dev_loo":
    return dev_loo(corpus, early_stopping, seed)
  raise ValueError(f"unknown protocol {protocol!r}; use one of {PROTOCOLS}")
