"""A deterministic COGNIMUSE-shaped corpus for demos, tests and benchmarks.

Twelve movies (the COGNIMUSE codes) x `segments_per_movie` 5-s segments x the five
features. Each movie has a slowly varying latent state (an AR(1) process, so curves
look like annotation curves) and a movie-level latent. Features are noisy linear
images of both plus a per-movie nuisance shift; arousal and valence are nonlinear
functions of a few latent directions plus a per-movie offset that the features show
only in part, so a held-out movie is learnable from the features, but not trivially.
"""

from __future__ import annotations

import numpy as np

from aan_jax.data import Corpus
from aan_jax.features import FEATURE_DIMS, FEATURES

MOVIES = ("BMI", "LOR", "GLA", "DEP", "CRA", "CHI", "FNE", "ABE", "MDB", "NCO", "RAT", "SIL")
_LATENT = 6


def _ar1(rng: np.random.Generator, n: int, k: int, rho: float) -> np.ndarray:
  eps = rng.standard_normal((n, k)).astype(np.float32) * np.sqrt(1 - rho * rho)
  z = np.empty((n, k), np.float32)
  z[0] = rng.standard_normal(k)
  for t in range(1, n):
    z[t] = rho * z[t - 1] + eps[t]
  return z


def make_corpus(segments_per_movie: int = 360, seed: int = 0,
                num_movies: int = len(MOVIES)) -> Corpus:
  """Builds the synthetic corpus; the same arguments always give the same arrays."""
  if not 2 <= num_movies <= len(MOVIES):
    raise ValueError(f"num_movies must be in [2, {len(MOVIES)}]; got {num_movies}")
  if segments_per_movie < 2:
    raise ValueError(f"segments_per_movie must be at least 2; got {segments_per_movie}")
  rng = np.random.default_rng(seed)
  s = segments_per_movie
  # Projections shared by all movies: the "feature extractors".
  proj = {m: rng.standard_normal((_LATENT, d)).astype(np.float32) / np.sqrt(_LATENT)
          for m, d in FEATURE_DIMS.items()}
  movie_dir = {m: rng.standard_normal((2, d)).astype(np.float32) / np.sqrt(2)
               for m, d in FEATURE_DIMS.items()}
  movies = {}
  for name in MOVIES[:num_movies]:
    z = _ar1(rng, s, _LATENT, rho=0.92)
    u = rng.standard_normal(2).astype(np.float32)  # movie-level mood, seen in the features
    w = rng.standard_normal(2).astype(np.float32)  # movie-level offset the features never show
    mv = {}
    for m in FEATURES:
      d = FEATURE_DIMS[m]
      nuisance = 0.3 * rng.standard_normal(d).astype(np.float32)  # unrelated to targets
      noise = 1.0 * rng.standard_normal((s, d), dtype=np.float32)
      mv[m] = z @ proj[m] + 0.5 * (u @ movie_dir[m]) + nuisance + noise
    a = 0.55 * np.tanh(z[:, 0] + 0.6 * z[:, 1] * z[:, 2]) + 0.3 * u[0] + 0.15 * w[0]
    v = 0.55 * np.tanh(z[:, 3] - 0.5 * z[:, 4] ** 2 + 0.4) + 0.3 * u[1] + 0.15 * w[1]
    mv["arousal"] = np.clip(a + 0.1 * rng.standard_normal(s), -1, 1).astype(np.float32)
    mv["valence"] = np.clip(v + 0.1 * rng.standard_normal(s), -1, 1).astype(np.float32)
    mv["start_s"] = np.arange(s, dtype=np.float32) * 5.0
    movies[name] = mv
  return Corpus.from_movies("synthetic", movies, info={
      "synthetic": True, "seed": seed, "segments_per_movie": s})
