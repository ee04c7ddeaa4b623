"""RAF-DB as the face task's corpus (aan_jax.data.faces.raf_db), read from a TFDS build of
the builder's dummy data (here, with the TensorFlow tests: TF and torch in one process crash)."""

import ml_collections
import numpy as np
import pytest

import _builders
from aan_jax.data import faces as face_corpora
from aan_jax.models import fer
from aan_jax.data.corpus import ClipCorpus


def test_raf_db_from_the_dummy_build(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  pytest.importorskip("PIL")
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  _builders.hide_gpus()
  raf_db = _builders.load_module("raf_db")
  b = raf_db.Builder(data_dir=str(tmp_path / "data"))
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(_builders.DATASETS / "raf_db" / "dummy_data")))
  c = face_corpora.raf_db(str(tmp_path / "data"))
  assert isinstance(c, ClipCorpus) and c.name == "raf_db" and c.classes == fer.EMOTIONS
  assert c.inputs["faces"].shape == (7, 4, 100, 100, 3) and c.inputs["faces"].dtype == np.uint8
  (train, test), = c.splits
  assert c.split_names == ("official",)
  got = {c.ids[i]: (fer.EMOTIONS[c.labels[i]], i in set(test)) for i in range(7)}
  assert got == {"train_00001.jpg": ("happy", False), "train_00002.jpg": ("surprise", False),
                 "train_00003.jpg": ("angry", False), "train_00004.jpg": ("neutral", False),
                 "test_0001.jpg": ("sad", True), "test_0002.jpg": ("fear", True),
                 "test_0003.jpg": ("disgust", True)}
  assert sorted(train.tolist() + test.tolist()) == list(range(7))
  i = c.ids.index("test_0001.jpg")
  assert abs(int(c.inputs["faces"][i, 2, 50, 50, 2]) - 100) < 8  # the flat colour, every frame
  # The launcher's path, through load().
  cfg = ml_collections.ConfigDict({"dataset": "raf_db", "data_dir": str(tmp_path / "data")})
  assert face_corpora.load(cfg).ids == c.ids
