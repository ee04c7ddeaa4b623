"""Opens a built TFDS dataset: the one opener of corpus.load_tfds, corpora.load_clips and
faces.raf_db.

    version_dir, config = tfds_reader.find(name, data_dir, config)  # or "Build it first" errors
    builder = tfds_reader.open_builder(version_dir)
    for example in tfds_reader.read_split(builder, "train"): ...    # numpy

Finding the build needs no TensorFlow; TensorFlow and TFDS are imported only when a builder
is opened (`import_tfds`), never at module import (aan_jax imports without them), and TF
is kept off the GPUs, whose memory JAX needs.
"""

from __future__ import annotations

import functools
import os
import pathlib

# The configs read when a dataset has several built and none is named.
DEFAULT_CONFIGS = ("intended", "mediaeval2017", "excerpt")
BUILD_HINT = ("Build it first: `tfds build datasets/{name} --manual_dir=DIR --data_dir={data_dir}` "
              "(see datasets/{name}/README.md for what DIR must hold).")


def default_data_dir() -> str:
  """TFDS_DATA_DIR, else ~/tensorflow_datasets (TFDS's own default)."""
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def find(name: str, data_dir, config: str | None) -> tuple[pathlib.Path, str | None]:
  """(the newest built version folder of data_dir/name/[config/]VERSION, its config).

  No config: a builder without configs, else the one config built, else the first of
  DEFAULT_CONFIGS built (ValueError if none of several is). FileNotFoundError (saying how
  to build it) when nothing is built.
  """
  root = pathlib.Path(data_dir) / name

  def versions(d):
    out = [p for p in d.iterdir() if p.is_dir() and (p / "dataset_info.json").is_file()] if d.is_dir() else []
    return sorted(out, key=lambda p: tuple(int(x) for x in p.name.split(".") if x.isdigit()))

  hint = BUILD_HINT.format(name=name, data_dir=data_dir)
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
    preferred = [c for c in DEFAULT_CONFIGS if c in configs]
    if not preferred:
      raise ValueError(f"{name} under {data_dir} has configs {configs}; pass config=")
    configs = preferred
  return versions(root / configs[0])[-1], configs[0]


@functools.lru_cache(maxsize=None)
def import_tfds():
  """tensorflow_datasets, imported now with TensorFlow (ImportError without them); TF is
  told once per process to leave the GPUs alone (it would otherwise reserve the memory JAX
  needs). A failed import is not remembered: the next call tries again."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # TF already initialised its devices; nothing more to do
    pass
  return tfds


def open_builder(version_dir):
  """The read-only builder of a built version folder (from `find`)."""
  return import_tfds().builder_from_directory(str(version_dir))


def read_split(builder, split: str, batch_size: int | None = None):
  """A split as numpy, in file order: examples one by one, or batches (-1: all in one)."""
  tfds = import_tfds()
  return tfds.as_numpy(builder.as_dataset(split=split, batch_size=batch_size,
                                          shuffle_files=False))
