"""Dense per-movie arrays: the form in which the training engine sees a corpus.

A corpus of M movies with at most S segments each is held as padded arrays with a mask,
so that folds (held-out movies) are masks over the movie axis, never copies of the data.
This module stays free of TensorFlow at import time; readers of built TFDS datasets
import it lazily inside their functions.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from aan_jax.features import FEATURE_DIMS

TARGETS = ("arousal", "valence")


@dataclasses.dataclass
class Corpus:
  """Per-segment features and targets of M movies, padded to S segments.

  features: name -> float32 (M, S, dim); targets: name -> float32 (M, S);
  mask: bool (M, S), True where a real segment; start_s/end_s: float32 (M, S).
  """
  name: str
  movies: tuple[str, ...]
  features: dict[str, np.ndarray]
  targets: dict[str, np.ndarray]
  mask: np.ndarray
  start_s: np.ndarray
  end_s: np.ndarray
  info: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    m, s = self.mask.shape
    if len(self.movies) != m:
      raise ValueError(f"{len(self.movies)} movie names for {m} movies")
    for k, v in self.features.items():
      if k not in FEATURE_DIMS:
        raise ValueError(f"unknown feature {k!r}; expected one of {list(FEATURE_DIMS)}")
      if v.shape != (m, s, FEATURE_DIMS[k]):
        raise ValueError(f"feature {k!r} has shape {v.shape}; expected {(m, s, FEATURE_DIMS[k])}")
    for k, v in self.targets.items():
      if v.shape != (m, s):
        raise ValueError(f"target {k!r} has shape {v.shape}; expected {(m, s)}")

  @property
  def num_segments(self) -> np.ndarray:
    return self.mask.sum(axis=1)

  @classmethod
  def from_movies(cls, name: str, movies: Mapping[str, Mapping[str, np.ndarray]],
                  info: dict | None = None) -> "Corpus":
    """Builds a padded corpus from per-movie dicts of (n_i, ...) arrays.

    Each movie dict holds feature arrays (n_i, dim), target arrays (n_i,), and
    optionally start_s/end_s (n_i,).
    """
    names = tuple(movies)
    if not names:
      raise ValueError("no movies given")
    lengths = [len(next(iter(v for k, v in movies[n].items() if k in TARGETS))) for n in names]
    m, s = len(names), max(lengths)
    first = movies[names[0]]
    feats = {k: np.zeros((m, s, FEATURE_DIMS[k]), np.float32) for k in first if k in FEATURE_DIMS}
    targets = {k: np.zeros((m, s), np.float32) for k in first if k in TARGETS}
    start = np.zeros((m, s), np.float32)
    end = np.zeros((m, s), np.float32)
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
    return cls(name, names, feats, targets, mask, start, end, dict(info or {}))
