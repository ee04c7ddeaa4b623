"""The runs of an experiment: the leading array axis of everything the engine trains.

A *run* is one model trained for one target on one fold (or official split), with one seed
and one grid point of a sweep. Its PRNG stream comes from a stable id of its name, so it
does not depend on which other runs train beside it. Per run: its hyperparameters
(`hparams`), and the lists of what it trains, validates and tests on:

  group corpora (aan_jax.data.corpus.Corpus): `train_weight` (R, G), 1 on its training
    groups: every run reads the same batch and weighs the rows it does not train on zero;
  clip corpora (ClipCorpus): `train_idx`/`n_train`, its training examples: each run reads
    its own batches (BatchNorm statistics must not see another run's rows).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np

# Hyperparameters that may differ per run without recompiling (sweeps) on group corpora.
RUN_HPARAMS = ("learning_rate", "dropout", "patience", "mse_weight", "pcc_weight")


def stable_id(*parts) -> int:
  """A 31-bit id from names: a run's PRNG stream does not depend on which runs train with it."""
  h = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
  return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def pad_lists(lists: Sequence[Sequence[int]], width: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
  """(idx, ok): index lists as rows of one int32 array padded with 0 (to `width`, default the
  longest), and where the real entries are."""
  width = width or max(1, max((len(x) for x in lists), default=1))
  idx = np.zeros((len(lists), width), np.int32)
  ok = np.zeros((len(lists), width), bool)
  for r, x in enumerate(lists):
    idx[r, :len(x)] = x
    ok[r, :len(x)] = True
  return idx, ok


@dataclasses.dataclass(frozen=True)
class Runs:
  """The runs of an experiment: numpy arrays with a leading run axis R."""
  target: np.ndarray        # (R,) index into the experiment's targets (0 for clip corpora)
  fold: np.ndarray          # (R,) index into the folds, or the corpus's official splits
  seed: np.ndarray          # (R,) seed index (0 .. seeds-1)
  point: np.ndarray         # (R,) grid point index
  run_id: np.ndarray        # (R,) stable id for the run's PRNG stream
  val_idx: np.ndarray       # (R, V) validation groups (padded)
  val_ok: np.ndarray        # (R, V)
  test_idx: np.ndarray      # (R, T) test groups or examples (padded)
  test_ok: np.ndarray       # (R, T)
  hparams: dict             # name -> (R,) per-run hyperparameters
  names: tuple              # (R,) "target/fold/seedK/pN" or "split/seedK/pN"
  train_weight: np.ndarray | None = None   # (R, G) group corpora: 1 for training groups
  train_idx: np.ndarray | None = None      # (R, L) clip corpora: training examples (padded)
  n_train: np.ndarray | None = None        # (R,) clip corpora

  def __len__(self):
    return len(self.target)

  def select(self, rows) -> "Runs":
    """The runs at `rows` (e.g. those of one batch size)."""
    rows = np.asarray(rows)
    kw = {}
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if v is None:
        kw[f.name] = None
      elif f.name == "hparams":
        kw[f.name] = {k: a[rows] for k, a in v.items()}
      elif f.name == "names":
        kw[f.name] = tuple(v[i] for i in rows)
      else:
        kw[f.name] = v[rows]
    return Runs(**kw)


def _i32(x):
  return np.asarray(x, np.int32)


def make_runs(targets: Sequence[str], folds: Sequence, num_groups: int,
              points: Sequence[dict], seeds: int = 1) -> Runs:
  """Runs over a group corpus = targets x folds x seeds x grid points (that nesting)."""
  rows = []
  for t, target in enumerate(targets):
    for f, fold in enumerate(folds):
      for s in range(seeds):
        for p, _ in enumerate(points):
          rows.append((t, f, s, p, f"{target}/{fold.name}/seed{s}/p{p}"))
  if not rows:
    raise ValueError("no runs: no target, fold or grid point")
  t, f, s, p, names = zip(*rows)
  val_idx, val_ok = pad_lists([folds[i].validation for i in f])
  test_idx, test_ok = pad_lists([folds[i].test for i in f])
  hp = {k: np.asarray([points[i][k] for i in p],
                      np.int32 if k == "patience" else np.float32) for k in RUN_HPARAMS}
  return Runs(_i32(t), _i32(f), _i32(s), _i32(p), _i32([stable_id(n) for n in names]),
              val_idx, val_ok, test_idx, test_ok, hp, tuple(names),
              train_weight=np.stack([folds[i].weights(num_groups) for i in f]))


def make_split_runs(corpus, splits: Sequence[int], seeds: int, rates: Sequence[float]) -> Runs:
  """Runs over a clip corpus = splits x seeds x learning rates (that nesting); no validation
  lists (the categorical protocols have none)."""
  rows = []
  for k in splits:
    for s in range(seeds):
      for p in range(len(rates)):
        rows.append((k, s, p, f"{corpus.split_names[k]}/seed{s}/p{p}"))
  if not rows:
    raise ValueError("no runs: no split, seed or learning rate")
  k, s, p, names = zip(*rows)
  train_idx, _ = pad_lists([corpus.splits[i][0] for i in k])
  test_idx, test_ok = pad_lists([corpus.splits[i][1] for i in k])
  val_idx, val_ok = pad_lists([[] for _ in k])
  return Runs(np.zeros(len(k), np.int32), _i32(k), _i32(s), _i32(p),
              _i32([stable_id(corpus.name, n) for n in names]), val_idx, val_ok,
              test_idx, test_ok,
              {"learning_rate": np.asarray([rates[i] for i in p], np.float32)}, tuple(names),
              train_idx=train_idx, n_train=_i32([len(corpus.splits[i][0]) for i in k]))


def shared_batch_size(batch_size: int, n_rows: int, train_rows: np.ndarray) -> int:
  """Rows per shared batch, so that each run sees `batch_size` training rows on average.

  Every run reads the same batch of rows and weighs the rows it does not train on zero,
  so the batch is scaled up by all rows / a run's training rows (the runs' mean); the
  number of steps per epoch then matches a per-fold loop with `batch_size`.
  """
  mean_train = float(np.mean(train_rows))
  if mean_train < 1:
    raise ValueError("a run has no training row: check the protocol's training groups")
  return max(1, round(batch_size * n_rows / mean_train))
