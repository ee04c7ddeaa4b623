"""The RAF-DB builder: dummy_data, class mapping by name, bad list lines, missing/corrupt images."""

from __future__ import annotations

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("PIL")

import _builders  # noqa: E402
from _common import annotations as ann  # noqa: E402
from aan_jax.models import fer  # noqa: E402

_builders.hide_gpus()
raf_db = _builders.load_module("raf_db")
dummy = _builders.load_module("raf_db", "make_dummy_data.py")


class RafDbTest(tfds.testing.DatasetBuilderTestCase):
  """The official partition: 4 training and 3 test images in dummy_data."""
  DATASET_CLASS = raf_db.Builder
  SPLITS = {"train": 4, "test": 3}
  SKIP_CHECKSUMS = True


def _build(tmp_path, manual):
  b = raf_db.Builder(data_dir=str(tmp_path / "data"))
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return b


def test_labels_are_mapped_by_name_to_the_faces_order(tmp_path):
  b = _build(tmp_path, _builders.DATASETS / "raf_db" / "dummy_data")
  assert b.info.features["label"].names == list(fer.EMOTIONS)
  names = b.info.features["label"].names
  got = {e["file_name"].decode(): (names[e["label"]], int(e["raf_label"]), e["image"].shape)
         for e in tfds.as_numpy(b.as_dataset(split="train"))}
  assert got == {"train_00001.jpg": ("happy", 4, (100, 100, 3)),
                 "train_00002.jpg": ("surprise", 1, (100, 100, 3)),
                 "train_00003.jpg": ("angry", 6, (100, 100, 3)),
                 "train_00004.jpg": ("neutral", 7, (100, 100, 3))}
  test = {e["file_name"].decode(): names[e["label"]]
          for e in tfds.as_numpy(b.as_dataset(split="test"))}
  assert test == {"test_0001.jpg": "sad", "test_0002.jpg": "fear", "test_0003.jpg": "disgust"}
  img = next(iter(tfds.as_numpy(b.as_dataset(split="test"))))["image"]
  assert img.dtype == np.uint8 and abs(int(img[50, 50, 2]) - 100) < 8  # the flat colour


def _manual(tmp_path):
  m = tmp_path / "manual"
  dummy.make(m, size=8)
  return m


def test_a_bad_list_line_is_named(tmp_path):
  m = _manual(tmp_path)
  lst = m / "basic" / "EmoLabel" / "list_patition_label.txt"
  lst.write_text(lst.read_text() + "train_00009.jpg 8\n")
  with pytest.raises(ann.CorpusFileError, match=r"list_patition_label.txt:8: 'train_00009.jpg 8'"):
    _build(tmp_path, m)


def test_a_missing_or_corrupt_image_is_named(tmp_path):
  m = _manual(tmp_path)
  img = m / "basic" / "Image" / "aligned" / "test_0002_aligned.jpg"
  img.write_bytes(b"not a jpeg")
  with pytest.raises(ann.CorpusFileError, match="test_0002_aligned.jpg: not a readable image"):
    _build(tmp_path, m)
  img.unlink()
  with pytest.raises(ann.CorpusFileError, match="test_0002_aligned.jpg: listed in .* not there"):
    _build(tmp_path / "again", m)


def test_no_list_file(tmp_path):
  (tmp_path / "manual" / "basic").mkdir(parents=True)
  (tmp_path / "manual" / "basic" / "README.txt").write_text("not the list\n")
  with pytest.raises(ann.CorpusFileError, match="no basic/EmoLabel/list_patition_label.txt"):
    _build(tmp_path, tmp_path / "manual")
