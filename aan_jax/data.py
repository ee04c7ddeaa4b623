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


# Canonical movie order per dataset; other datasets keep their split order (sorted).
_MOVIE_ORDER = {
    "cognimuse": ("BMI", "LOR", "GLA", "DEP", "CRA", "CHI", "FNE", "ABE", "MDB", "NCO",
                  "RAT", "SIL"),
}
_DEFAULT_CONFIGS = ("intended", "mediaeval2017", "excerpt")
_BUILD_HINT = ("Build it first: `tfds build datasets/{name} --manual_dir=DIR --data_dir={data_dir}` "
               "(see datasets/{name}/README.md for what DIR must hold).")


def _tfds_version_dir(name: str, data_dir, config: str | None):
  """The newest built version folder of data_dir/name/[config/]VERSION."""
  import pathlib  # pylint: disable=import-outside-toplevel
  root = pathlib.Path(data_dir) / name

  def versions(d):
    out = [p for p in d.iterdir() if p.is_dir() and (p / "dataset_info.json").is_file()] if d.is_dir() else []
    return sorted(out, key=lambda p: tuple(int(x) for x in p.name.split(".") if x.isdigit()))

  hint = _BUILD_HINT.format(name=name, data_dir=data_dir)
  if config is not None:
    found = versions(root / config)
    if not found:
      raise FileNotFoundError(f"no built dataset {name}/{config} under {data_dir}. {hint}")
    return found[-1], config
  if versions(root):  # a builder without configs
    return versions(root)[-1], None
  configs = [d.name for d in sorted(root.iterdir()) if versions(d)] if root.is_dir() else []
  if not configs:
    raise FileNotFoundError(f"no built dataset {name!r} under {data_dir}. {hint}")
  if len(configs) > 1:
    preferred = [c for c in _DEFAULT_CONFIGS if c in configs]
    if not preferred:
      raise ValueError(f"{name} under {data_dir} has configs {configs}; pass config=")
    configs = preferred
  return versions(root / configs[0])[-1], configs[0]


def load_tfds(name: str = "cognimuse", data_dir=None, config: str | None = None,
              features=None) -> Corpus:
  """Reads every split (movie) of a built TFDS dataset into a dense padded Corpus.

  Splits are movies (in the canonical COGNIMUSE order where it applies); segments are
  ordered by segment_index. TensorFlow is imported here, not at module import, and never
  sees a GPU (it would otherwise reserve the memory JAX needs).
  """
  import os  # pylint: disable=import-outside-toplevel
  from aan_jax.features import canonical_modalities  # pylint: disable=import-outside-toplevel
  if data_dir is None:
    data_dir = os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
  data_dir = os.fspath(data_dir)
  version_dir, config = _tfds_version_dir(name, data_dir, config)
  try:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"reading a TFDS dataset needs `pip install 'aan-jax[datasets]'` ({e})") from None
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # TF already initialised its devices; nothing more to do
    pass
  builder = tfds.builder_from_directory(str(version_dir))
  feats = canonical_modalities(features if features is not None else "all")
  have = set(builder.info.features.keys())
  missing = [f for f in feats if f not in have]
  if missing:
    raise ValueError(f"{version_dir}: dataset has no feature {missing[0]!r} (has {sorted(have)})")
  for f in feats:
    shape = tuple(builder.info.features[f].shape)
    if len(shape) != 1:
      raise ValueError(
          f"{version_dir}: feature {f!r} has per-example shape {shape}; load_tfds reads "
          "datasets with one vector per segment. Use tfds.load for this config.")
  splits = list(builder.info.splits.keys())
  order = _MOVIE_ORDER.get(name, ())
  splits = [s for s in order if s in splits] + sorted(s for s in splits if s not in order)
  keys = list(feats) + [k for k in ("arousal", "valence", "start_s", "end_s", "segment_index")
                        if k in have]
  movies = {}
  for split in splits:
    batch = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
    order_idx = np.argsort(batch["segment_index"], kind="stable") if "segment_index" in batch else slice(None)
    movies[split] = {k: np.asarray(batch[k])[order_idx] for k in keys if k != "segment_index"}
  info = {"data_dir": data_dir, "version_dir": str(version_dir), "config": config,
          "version": str(builder.info.version), "metadata": dict(builder.info.metadata or {})}
  return Corpus.from_movies(name, movies, info=info)
