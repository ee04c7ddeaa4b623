"""Dense per-movie arrays: the form in which the training engine sees a corpus.

A corpus of M movies with at most S segments each is held as padded arrays with a mask,
so that folds (held-out movies) are masks over the movie axis, never copies of the data.
This module stays free of TensorFlow at import time; readers of built TFDS datasets
import it lazily inside their functions (aan_jax.data.tfds_reader opens the builds).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from aan_jax.data import tfds_reader
from aan_jax.data.features import FEATURE_DIMS

# The 12 extended-COGNIMUSE movies in their canonical order (DESIGN.md): folds, tables and
# the synthetic stand-in follow it. The one place the list is written.
COGNIMUSE_MOVIES: tuple[str, ...] = (
    "BMI", "LOR", "GLA", "DEP", "CRA", "CHI", "FNE", "ABE", "MDB", "NCO", "RAT", "SIL")

TARGETS = ("arousal", "valence", "fear")
# A target's task: regression (the paper's loss and MSE/PCC/CCC) or binary (fear:
# class-weighted cross-entropy, AP/MAP); a categorical task is the next kind to add.
TASKS = {"arousal": "regression", "valence": "regression", "fear": "binary"}


@dataclasses.dataclass
class Corpus:
  """Features and labels of G groups x at most I items, padded, with masks.

  A *group* is what a protocol holds out or splits on: a movie (COGNIMUSE, MediaEval) or
  an excerpt (EIMT16). An *item* is what gets a prediction: a 5-s segment, a 10-s window,
  an excerpt's sub-segment. features: name -> float32 (G, I, dim); targets: name ->
  float32 (G, I); mask: bool (G, I), True where an item exists; label_mask: name -> bool
  (G, I), True where that target is labelled (default: mask; fear is unlabelled where the
  data give -1); start_s/end_s: float32 (G, I), NaN where the data have no times.
  splits: named lists of groups given by the corpus itself (e.g. "dev"/"test", "train"/"test").
  """
  name: str
  movies: tuple[str, ...]   # the groups (movies or excerpts); `groups` is an alias
  features: dict[str, np.ndarray]
  targets: dict[str, np.ndarray]
  mask: np.ndarray
  start_s: np.ndarray
  end_s: np.ndarray
  info: dict = dataclasses.field(default_factory=dict)
  label_mask: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  splits: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  group_kind: str = "movie"

  def __post_init__(self):
    m, s = self.mask.shape
    if len(self.movies) != m:
      raise ValueError(f"{len(self.movies)} group names for {m} groups")
    for k, v in self.features.items():
      if k not in FEATURE_DIMS:
        raise ValueError(f"unknown feature {k!r}; expected one of {list(FEATURE_DIMS)}")
      if v.shape != (m, s, FEATURE_DIMS[k]):
        raise ValueError(f"feature {k!r} has shape {v.shape}; expected {(m, s, FEATURE_DIMS[k])}")
    for k, v in self.targets.items():
      if v.shape != (m, s):
        raise ValueError(f"target {k!r} has shape {v.shape}; expected {(m, s)}")
      lm = self.label_mask.get(k)
      if lm is None:
        lm = self.mask & (v >= 0) if TASKS.get(k) == "binary" else self.mask.copy()
      self.label_mask[k] = np.asarray(lm, bool) & self.mask
    for split, names in self.splits.items():
      unknown = [n for n in names if n not in self.movies]
      if unknown:
        raise ValueError(f"split {split!r} names unknown group {unknown[0]!r}")

  @property
  def groups(self) -> tuple[str, ...]:
    return self.movies

  @property
  def num_segments(self) -> np.ndarray:
    return self.mask.sum(axis=1)

  def task(self, target: str) -> str:
    return TASKS.get(target, "regression")

  @classmethod
  def from_movies(cls, name: str, movies: Mapping[str, Mapping[str, np.ndarray]],
                  info: dict | None = None, **kwargs) -> "Corpus":
    """Builds a padded corpus from per-group dicts of (n_i, ...) arrays.

    Each group dict holds feature arrays (n_i, dim), target arrays (n_i,), and
    optionally start_s/end_s (n_i,). A binary target (fear) is unlabelled where < 0.
    """
    names = tuple(movies)
    if not names:
      raise ValueError("no movies given")
    lengths = [len(next(iter(v for k, v in movies[n].items() if k in TARGETS))) for n in names]
    m, s = len(names), max(lengths)
    first = movies[names[0]]
    feats = {k: np.zeros((m, s, FEATURE_DIMS[k]), np.float32) for k in first if k in FEATURE_DIMS}
    targets = {k: np.zeros((m, s), np.float32) for k in first if k in TARGETS}
    start = np.full((m, s), np.nan, np.float32)
    end = np.full((m, s), np.nan, np.float32)
    mask = np.zeros((m, s), bool)
    for i, (n, length) in enumerate(zip(names, lengths)):
      mv = movies[n]
      for k in feats:
        feats[k][i, :length] = mv[k]
      for k in targets:
        targets[k][i, :length] = mv[k]
      start[i, :length] = mv.get("start_s", np.arange(length, dtype=np.float32) * 5.0)
      end[i, :length] = mv.get("end_s", start[i, :length] + 5.0)
      mask[i, :length] = True
    return cls(name, names, feats, targets, mask, start, end, dict(info or {}), **kwargs)


# Canonical movie order per dataset; other datasets keep their split order (sorted).
_MOVIE_ORDER = {"cognimuse": COGNIMUSE_MOVIES}


def load_tfds(name: str = "cognimuse", data_dir=None, config: str | None = None,
              features=None) -> Corpus:
  """Reads every split (movie) of a built TFDS dataset into a dense padded Corpus.

  Splits are movies (in the canonical COGNIMUSE order where it applies); segments are
  ordered by segment_index. TensorFlow is imported here, not at module import, and never
  sees a GPU (it would otherwise reserve the memory JAX needs).
  """
  import os  # pylint: disable=import-outside-toplevel
  from aan_jax.data.features import canonical_modalities  # pylint: disable=import-outside-toplevel
  if data_dir is None:
    data_dir = tfds_reader.default_data_dir()
  data_dir = os.fspath(data_dir)
  version_dir, config = tfds_reader.find(name, data_dir, config)
  try:
    tfds_reader.import_tfds()
  except ImportError as e:
    raise ImportError(f"reading a TFDS dataset needs `pip install 'aan-jax[datasets]'` ({e})") from None
  builder = tfds_reader.open_builder(version_dir)
  feats = canonical_modalities(features if features is not None else "all")
  have = set(builder.info.features.keys())
  missing = [f for f in feats if f not in have]
  if missing:
    raise ValueError(f"{version_dir}: dataset has no feature {missing[0]!r} (has {sorted(have)})")
  if "excerpt" in have:
    return _load_excerpts(name, builder, feats, data_dir, version_dir, config)
  for f in feats:
    shape = tuple(builder.info.features[f].shape)
    if len(shape) != 1:
      raise ValueError(
          f"{version_dir}: feature {f!r} has per-example shape {shape}; load_tfds reads "
          "datasets with one vector per segment. Use tfds.load for this config.")
  splits = list(builder.info.splits.keys())
  order = _MOVIE_ORDER.get(name, ())
  splits = [s for s in order if s in splits] + sorted(s for s in splits if s not in order)
  keys = list(feats) + [k for k in TARGETS + ("start_s", "end_s", "segment_index") if k in have]
  movies = {}
  for split in splits:
    batch = tfds_reader.read_split(builder, split, batch_size=-1)
    order_idx = np.argsort(batch["segment_index"], kind="stable") if "segment_index" in batch else slice(None)
    movies[split] = {k: np.asarray(batch[k])[order_idx] for k in keys if k != "segment_index"}
  meta = dict(builder.info.metadata or {})
  info = {"data_dir": data_dir, "version_dir": str(version_dir), "config": config,
          "version": str(builder.info.version), "metadata": meta}
  corpus_splits = {k: tuple(meta[k]) for k in ("dev", "test") if isinstance(meta.get(k), list)}
  return Corpus.from_movies(name, movies, info=info, splits=corpus_splits)


def _load_excerpts(name, builder, feats, data_dir, version_dir, config) -> Corpus:
  """EIMT16: each excerpt is a group of 1 item (config excerpt) or of 4 sub-segments
  (temporal4). The excerpt's label belongs to its last item only: a temporal model's
  window over the 4 sub-segments then ends where the label is (sequence-to-one), and an
  excerpt gets exactly one prediction. The data have no timestamps: start_s/end_s are NaN."""
  names, parts_f, labels, split_of = [], {f: [] for f in feats}, {"arousal": [], "valence": []}, {}
  for split in sorted(builder.info.splits.keys()):
    batch = tfds_reader.read_split(builder, split, batch_size=-1)
    ex = [x.decode() if isinstance(x, bytes) else str(x) for x in batch["excerpt"]]
    names += ex
    split_of[split] = tuple(ex)
    for f in feats:
      arr = np.asarray(batch[f], np.float32)
      parts_f[f].append(arr[:, None] if arr.ndim == 2 else arr)
    for t in labels:
      labels[t].append(np.asarray(batch[t], np.float32))
  features = {f: np.concatenate(v) for f, v in parts_f.items()}
  g, items = features[feats[0]].shape[:2]
  targets, label_mask = {}, {}
  for t, v in labels.items():
    targets[t] = np.zeros((g, items), np.float32)
    targets[t][:, -1] = np.concatenate(v)
    label_mask[t] = np.zeros((g, items), bool)
    label_mask[t][:, -1] = True
  nan = np.full((g, items), np.nan, np.float32)
  info = {"data_dir": data_dir, "version_dir": str(version_dir), "config": config,
          "version": str(builder.info.version), "metadata": dict(builder.info.metadata or {})}
  return Corpus(name, tuple(names), features, targets, np.ones((g, items), bool), nan,
                nan.copy(), info, label_mask=label_mask, splits=split_of,
                group_kind="excerpt")


@dataclasses.dataclass
class ClipCorpus:
  """One labelled example per clip (or image) and the official splits over them."""
  name: str
  inputs: dict[str, np.ndarray]   # input name -> (N, ...) per example
  labels: np.ndarray              # (N,) int32 class index
  classes: tuple[str, ...]
  splits: tuple[tuple[np.ndarray, np.ndarray], ...]  # (train_idx, test_idx) per split
  split_names: tuple[str, ...]
  ids: tuple[str, ...]            # example names, for predictions.csv
  info: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    n = len(self.labels)
    for k, v in self.inputs.items():
      if len(v) != n:
        raise ValueError(f"corpus {self.name!r}: input {k!r} has {len(v)} examples, labels {n}")
    if len(self.ids) != n:
      raise ValueError(f"corpus {self.name!r}: {len(self.ids)} ids for {n} examples")
    if len(self.splits) != len(self.split_names):
      raise ValueError(f"corpus {self.name!r}: {len(self.splits)} splits, "
                       f"{len(self.split_names)} split names")
    labels = np.asarray(self.labels)
    if n and (labels.min() < 0 or labels.max() >= len(self.classes)):
      raise ValueError(f"corpus {self.name!r}: a label is outside 0..{len(self.classes) - 1}")
    for name, (tr, te) in zip(self.split_names, self.splits):
      if len(tr) == 0 or len(te) == 0:
        raise ValueError(f"corpus {self.name!r}: split {name} has an empty training or test list")
      if np.intersect1d(tr, te).size:
        raise ValueError(f"corpus {self.name!r}: split {name} has examples in both lists")
