"""The corpus a config names: a built TFDS dataset, or a synthetic stand-in for demos."""

from __future__ import annotations

import os

from aan_jax.data import Corpus

# The builder config each dataset reads unless told otherwise; EIMT16's temporal models
# read the 4 sub-segments of each excerpt (temporal4).
DEFAULT_TFDS_CONFIG = {"cognimuse": "intended", "liris_accede_continuous": "mediaeval2017"}
_TEMPORAL = ("temporal_aan", "feature_temporal_aan")

BUILD_HINT = """\
The {name} dataset (config {tfds_config}) is not built (or cannot be read) at \
data_dir={data_dir!r}: {error}

Build it once from the downloaded corpus and the extracted features:
    tfds build datasets/{name} --config={tfds_config} --manual_dir=/path/to/{name} \
--data_dir={data_dir_or_default}
(see datasets/{name}/README.md for what the manual dir must hold), then run the same
command again with --config.data_dir={data_dir_or_default}.

Without the corpus, run the synthetic demo: add --config.dataset=synthetic"""


class DatasetMissing(FileNotFoundError):
  """The named dataset is not built; the message says how to build it."""


def tfds_config(config) -> str:
  if config.tfds_config:
    return config.tfds_config
  if config.dataset == "eimt16_global":
    return "temporal4" if config.model in _TEMPORAL else "excerpt"
  return DEFAULT_TFDS_CONFIG.get(config.dataset, "")


def load(config) -> Corpus:
  """The corpus for `config.dataset`; a clear message if the dataset is not built."""
  if config.dataset == "synthetic":
    return synthetic(config)
  from aan_jax import data  # pylint: disable=g-import-not-at-top
  from aan_jax.features import canonical_modalities  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(config.data_dir) if config.data_dir else None
  name, cfg = config.dataset, tfds_config(config)
  try:
    return data.load_tfds(name, data_dir, config=cfg or None,
                          features=canonical_modalities(config.modalities))
  except (ImportError, AttributeError, FileNotFoundError) as e:
    error = e
  except Exception as e:  # pylint: disable=broad-except
    # TFDS signals a missing dataset with its own exception types.
    if "NotFound" not in type(e).__name__ and "could not find data" not in str(e):
      raise
    error = e
  raise DatasetMissing(BUILD_HINT.format(
      name=name, tfds_config=cfg, data_dir=config.data_dir,
      error=f"{type(error).__name__}: {error}",
      data_dir_or_default=config.data_dir or "~/tensorflow_datasets"))


def synthetic(config) -> Corpus:
  """The synthetic corpus shaped like the launcher's dataset (its protocol says which)."""
  from aan_jax import synthetic as syn  # pylint: disable=g-import-not-at-top
  s = config.synthetic
  if config.protocol == "fixed_split":
    parts = 4 if config.model in _TEMPORAL else 1
    return syn.make_excerpts(s.num_train, s.num_test, parts=parts, seed=s.seed)
  fear = "fear" in tuple(config.targets)
  test = max(1, s.num_movies // 4) if config.protocol in ("official", "dev_loo") else 0
  return syn.make_corpus(s.segments_per_movie, s.seed, s.num_movies, fear=fear,
                         test_movies=test)
