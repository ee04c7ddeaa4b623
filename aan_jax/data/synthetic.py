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

from aan_jax.data.classes import VE8_CLASSES
from aan_jax.data.corpus import COGNIMUSE_MOVIES, Corpus
from aan_jax.data.features import FEATURES, PAPER_FEATURE_DIMS as FEATURE_DIMS

MOVIES = COGNIMUSE_MOVIES
_LATENT = 6


def _ar1(rng: np.random.Generator, n: int, k: int, rho: float) -> np.ndarray:
  eps = rng.standard_normal((n, k)).astype(np.float32) * np.sqrt(1 - rho * rho)
  z = np.empty((n, k), np.float32)
  z[0] = rng.standard_normal(k)
  for t in range(1, n):
    z[t] = rho * z[t - 1] + eps[t]
  return z


def make_corpus(segments_per_movie: int = 360, seed: int = 0,
                num_movies: int = len(MOVIES), fear: bool = False,
                test_movies: int = 0) -> Corpus:
  """Builds the synthetic corpus; the same arguments always give the same arrays.

  emobase2010 has the scales of the real openSMILE functionals (offsets and spreads from
  about 1 to a few thousand per dimension), so that feature normalisation matters as it
  does on real data. With `fear`, a binary target (about 10% positive, where arousal is
  high and valence low) is added, unlabelled (-1) on the last movie, as MediaEval leaves
  some movies without fear labels; with `test_movies`, the last ones form a "test" split
  and the others "dev" (the official-split protocol).
  """
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
  # Per-dimension scales of openSMILE's functionals: energies and F0 in the hundreds or
  # thousands, ratios near 1 (drawn once, like the feature extractors).
  emo_scale = np.exp(rng.uniform(0.0, np.log(3000.0), FEATURE_DIMS["emobase2010"])).astype(np.float32)
  emo_offset = (emo_scale * rng.uniform(0.0, 3.0, FEATURE_DIMS["emobase2010"])).astype(np.float32)
  names = MOVIES[:num_movies]
  # Written in place into the corpus's arrays (every movie has s segments, so nothing is
  # padded): fresh memory is slow to fault in on these machines, and building each movie's
  # arrays, then copying them (Corpus.from_movies), took 1-3 s of the README demo. The
  # products are summed here in a fixed order, not by BLAS, whose float32 sums changed in
  # the last bit with the alignment of the memory it wrote to (seen: 1 value in 3).
  feats = {m: np.empty((num_movies, s, FEATURE_DIMS[m]), np.float32) for m in FEATURES}
  targets = {t: np.empty((num_movies, s), np.float32)
             for t in ("arousal", "valence") + (("fear",) if fear else ())}
  for i, name in enumerate(names):
    z = _ar1(rng, s, _LATENT, rho=0.92)
    u = rng.standard_normal(2).astype(np.float32)  # movie-level mood, seen in the features
    w = rng.standard_normal(2).astype(np.float32)  # movie-level offset the features never show
    for m in FEATURES:
      d = FEATURE_DIMS[m]
      nuisance = 0.3 * rng.standard_normal(d).astype(np.float32)  # unrelated to targets
      noise = 1.0 * rng.standard_normal((s, d), dtype=np.float32)
      x = feats[m][i]
      np.multiply(z[:, :1], proj[m][0], out=x)
      for k in range(1, _LATENT):  # z @ proj[m], summed in a fixed order (see above)
        x += z[:, k:k + 1] * proj[m][k]
      x += 0.5 * (u[0] * movie_dir[m][0] + u[1] * movie_dir[m][1])
      x += nuisance
      x += noise
      if m == "emobase2010":
        x *= emo_scale
        x += emo_offset
    a = 0.55 * np.tanh(z[:, 0] + 0.6 * z[:, 1] * z[:, 2]) + 0.3 * u[0] + 0.15 * w[0]
    v = 0.55 * np.tanh(z[:, 3] - 0.5 * z[:, 4] ** 2 + 0.4) + 0.3 * u[1] + 0.15 * w[1]
    targets["arousal"][i] = np.clip(a + 0.1 * rng.standard_normal(s), -1, 1)
    targets["valence"][i] = np.clip(v + 0.1 * rng.standard_normal(s), -1, 1)
    if fear:
      score = z[:, 0] - z[:, 3] + 0.3 * rng.standard_normal(s)
      targets["fear"][i] = score > np.quantile(score, 0.9)
      if name == MOVIES[num_movies - 1]:
        targets["fear"][i] = -1.0  # a movie without fear labels
  splits = {}
  if test_movies:
    if not 0 < test_movies < num_movies - 1:
      raise ValueError(f"test_movies must leave at least 2 dev movies; got {test_movies}")
    splits = {"dev": names[:num_movies - test_movies], "test": names[num_movies - test_movies:]}
  start = np.broadcast_to(np.arange(s, dtype=np.float32) * 5.0, (num_movies, s)).copy()
  return Corpus("synthetic", tuple(names), feats, targets, np.ones((num_movies, s), bool),
                start, start + 5.0, {"synthetic": True, "seed": seed, "segments_per_movie": s},
                splits=splits)


def make_excerpts(num_train: int = 400, num_test: int = 100, parts: int = 1,
                  seed: int = 0) -> Corpus:
  """An EIMT16-shaped corpus: independent excerpts, one label each on the 1-5 scale, a
  train/test split; with parts=4 each excerpt has 4 sub-segments (the temporal4 config),
  the label on the last one. No timestamps (start_s/end_s are NaN)."""
  rng = np.random.default_rng(seed)
  g = num_train + num_test
  proj = {m: rng.standard_normal((_LATENT, d)).astype(np.float32) / np.sqrt(_LATENT)
          for m, d in FEATURE_DIMS.items()}
  z = rng.standard_normal((g, parts, _LATENT)).astype(np.float32)
  z = np.cumsum(z, axis=1) / np.sqrt(np.arange(1, parts + 1))[None, :, None]
  feats = {m: (z @ proj[m] + rng.standard_normal((g, parts, d), dtype=np.float32)).astype(np.float32)
           for m, d in FEATURE_DIMS.items()}
  zl = z[:, -1]
  arousal = 3 + 1.2 * np.tanh(zl[:, 0] + 0.5 * zl[:, 1]) + 0.3 * rng.standard_normal(g)
  valence = 3 + 1.2 * np.tanh(zl[:, 3] - 0.4 * zl[:, 4] ** 2 + 0.3) + 0.3 * rng.standard_normal(g)
  targets, label_mask = {}, {}
  for t, v in (("arousal", arousal), ("valence", valence)):
    targets[t] = np.zeros((g, parts), np.float32)
    targets[t][:, -1] = np.clip(v, 1, 5)
    label_mask[t] = np.zeros((g, parts), bool)
    label_mask[t][:, -1] = True
  names = tuple(f"ACCEDE{i:05d}" for i in range(num_train)) + tuple(
      f"MEDIAEVAL16_{i:05d}" for i in range(num_test))
  nan = np.full((g, parts), np.nan, np.float32)
  return Corpus("synthetic_excerpts", names, feats, targets, np.ones((g, parts), bool), nan,
                nan.copy(), {"synthetic": True, "seed": seed}, label_mask=label_mask,
                splits={"train": names[:num_train], "test": names[num_train:]},
                group_kind="excerpt")


def make_clips(num_clips: int = 200, num_splits: int = 10, seed: int = 0, snippets: int = 4,
               positions: int = 4, backbone_dim: int = 64, audio_frames: int = 64,
               n_mfcc: int = 32, classes=None):
  """A VideoEmotion-8-like categorical corpus (aan_jax.data.corpus.ClipCorpus).

  Each clip's class shows in both modalities, each only in part: the visual maps carry a
  class direction at a few positions and snippets (with a per-clip strength, so that some
  clips barely show it) plus a direction shared by each polarity group; the MFCCs carry a
  class-specific spectral profile whose timing varies per clip, on the scale of real
  MFCCs (tens). `num_splits` stratified 2:1 train/test splits, like the official lists.
  """
  from aan_jax.data.corpus import ClipCorpus  # pylint: disable=g-import-not-at-top
  classes = tuple(classes or VE8_CLASSES)
  k = len(classes)
  if num_clips < 2 * k:
    raise ValueError(f"num_clips must be at least {2 * k}; got {num_clips}")
  rng = np.random.default_rng(seed)
  labels = np.arange(num_clips) % k
  rng.shuffle(labels)
  proto_v = rng.standard_normal((k, backbone_dim)).astype(np.float32)
  # Classes that share a polarity look alike, so that confusions are not uniform.
  polarity = np.asarray([1.0 if c.lower() in ("anticipation", "joy", "surprise", "trust")
                         else -1.0 for c in classes], np.float32)
  shared = rng.standard_normal(backbone_dim).astype(np.float32)
  proto_v = 0.7 * proto_v + 0.7 * polarity[:, None] * shared[None]
  where_v = rng.random((num_clips, snippets, positions)) < 0.5   # where the class shows
  strength = rng.uniform(0.0, 1.0, num_clips).astype(np.float32)
  visual = rng.standard_normal((num_clips, snippets, positions, backbone_dim)).astype(np.float32)
  visual += (0.6 * strength[:, None, None, None] * where_v[..., None]
             * proto_v[labels][:, None, None, :])
  # Backbone maps are post-ReLU activations: non-negative.
  visual = np.maximum(visual + 0.5, 0.0).astype(np.float32)
  proto_a = rng.standard_normal((k, n_mfcc)).astype(np.float32)
  t = np.arange(audio_frames, dtype=np.float32)
  onset = rng.uniform(0, audio_frames, num_clips)
  envelope = np.exp(-0.5 * ((t[None] - onset[:, None]) / (0.25 * audio_frames)) ** 2)
  audio = 8.0 * rng.standard_normal((num_clips, audio_frames, n_mfcc)).astype(np.float32)
  audio += 6.0 * envelope[..., None] * proto_a[labels][:, None, :]
  audio[..., 0] -= 300.0  # MFCC 0 (log energy) sits far below zero in real audio
  splits = []
  for _ in range(num_splits):
    train, test = [], []
    for c in range(k):
      members = rng.permutation(np.flatnonzero(labels == c))
      n_test = max(1, round(len(members) / 3))
      test += members[:n_test].tolist()
      train += members[n_test:].tolist()
    splits.append((np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(test, np.int64))))
  ids = tuple(f"{classes[c]}/clip{i:04d}" for i, c in enumerate(labels))
  return ClipCorpus(
      name="synthetic", inputs={"visual": visual, "audio": audio.astype(np.float32)},
      labels=labels.astype(np.int32), classes=classes, splits=tuple(splits),
      split_names=tuple(f"split{j + 1:02d}" for j in range(num_splits)), ids=ids,
      info={"synthetic": True, "seed": seed})
