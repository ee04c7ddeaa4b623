"""The corpus a config names: a built TFDS dataset, or a synthetic stand-in for demos."""

from __future__ import annotations

import os

from aan_jax.data import tfds_reader
from aan_jax.data.corpus import Corpus

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
  from aan_jax.data import corpus as data  # pylint: disable=g-import-not-at-top
  from aan_jax.data.features import canonical_modalities  # pylint: disable=g-import-not-at-top
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
  from aan_jax.data import synthetic as syn  # pylint: disable=g-import-not-at-top
  s = config.synthetic
  if config.protocol == "fixed_split":
    parts = 4 if config.model in _TEMPORAL else 1
    return syn.make_excerpts(s.num_train, s.num_test, parts=parts, seed=s.seed)
  fear = "fear" in tuple(config.targets)
  test = max(1, s.num_movies // 4) if config.protocol in ("official", "dev_loo") else 0
  return syn.make_corpus(s.segments_per_movie, s.seed, s.num_movies, fear=fear,
                         test_movies=test)


# ------------------------------------------------------------------ categorical corpora

CLIP_DATASETS = ("videoemotion8", "ekman6")


def load_clips(config):
  """The categorical corpus (aan_jax.data.corpus.ClipCorpus) for `config.dataset`: the
  synthetic one, or a built videoemotion8 / ekman6 with every split it lists."""
  from aan_jax.data import synthetic as syn  # pylint: disable=g-import-not-at-top
  if config.dataset == "synthetic":
    s = config.synthetic
    return syn.make_clips(s.num_clips, s.num_splits, s.seed, s.snippets, s.positions,
                          s.backbone_dim, s.audio_frames, s.n_mfcc)
  if config.dataset not in CLIP_DATASETS:
    raise ValueError(f"dataset: {config.dataset!r} is not a categorical corpus; use one of "
                     f"{list(CLIP_DATASETS) + ['synthetic']}")
  data_dir = (os.path.expanduser(config.data_dir) if config.data_dir
              else tfds_reader.default_data_dir())
  name, cfg = config.dataset, config.tfds_config or "resnet101"
  try:
    version_dir, _ = tfds_reader.find(name, data_dir, cfg)
    tfds_reader.import_tfds()
  except (ImportError, FileNotFoundError) as e:
    raise DatasetMissing(BUILD_HINT.format(
        name=name, tfds_config=cfg, data_dir=config.data_dir,
        error=f"{type(e).__name__}: {str(e).splitlines()[0]}",
        data_dir_or_default=config.data_dir or "~/tensorflow_datasets")) from None
  builder = tfds_reader.open_builder(version_dir)
  return clips_from_examples(name, tfds_reader.read_split(builder, "videos"), builder.info, cfg)


def clips_from_examples(name: str, examples, info, tfds_config: str = ""):
  """A ClipCorpus from the builders' examples (visual, mfcc, label, video, split vector)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from aan_jax.data.corpus import ClipCorpus  # pylint: disable=g-import-not-at-top
  visual, audio, labels, ids, member = [], [], [], [], []
  for ex in examples:
    visual.append(np.asarray(ex["visual"], np.float32))
    audio.append(np.asarray(ex["mfcc"], np.float32))
    labels.append(int(ex["label"]))
    v = ex["video"]
    ids.append(v.decode() if isinstance(v, bytes) else str(v))
    member.append(np.asarray(ex["split"], np.int8))
  if not labels:
    raise ValueError(f"{name}/{tfds_config}: the built dataset holds no video")
  member = np.stack(member)
  meta = dict(getattr(info, "metadata", None) or {})
  numbers = list(meta.get("splits", range(1, member.shape[1] + 1)))
  classes = tuple(info.features["label"].names)
  splits, names = [], []
  for j in range(member.shape[1]):
    tr, te = np.flatnonzero(member[:, j] == 1), np.flatnonzero(member[:, j] == 2)
    if len(tr) and len(te):
      splits.append((tr, te))
      names.append(f"split{int(numbers[j]):02d}")
  if not splits:
    raise ValueError(f"{name}/{tfds_config}: no split has both training and test videos")
  return ClipCorpus(name=name, inputs={"visual": np.stack(visual), "audio": np.stack(audio)},
                    labels=np.asarray(labels, np.int32), classes=classes, splits=tuple(splits),
                    split_names=tuple(names), ids=tuple(ids),
                    info={"config": tfds_config, "metadata": meta})
