"""EIMT16 Global and LIRIS-ACCEDE continuous builders on their dummy_data (.npz), plain and Beam."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import _builders  # noqa: E402
from _common import annotations as ann  # noqa: E402
from aan_jax.data import corpus as aan_data  # noqa: E402
from tensorflow_datasets.testing import dataset_builder_testing  # noqa: E402

_builders.hide_gpus()
eimt16 = _builders.load_module("eimt16_global")
liris = _builders.load_module("liris_accede_continuous")
_DownloadConfig = tfds.download.DownloadConfig


def _beam_download_config(**kwargs):
  beam = tfds.core.lazy_imports.apache_beam
  kwargs["beam_options"] = beam.options.pipeline_options.PipelineOptions(["--runner=DirectRunner"])
  return _DownloadConfig(**kwargs)


class _Beam:
  def setUp(self):
    super().setUp()
    patcher = mock.patch.object(dataset_builder_testing.download, "DownloadConfig",
                                _beam_download_config)
    patcher.start()
    self.patchers.append(patcher)


class Eimt16Test(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = eimt16.Builder
  SPLITS = {"train": 3, "test": 2}
  SKIP_CHECKSUMS = True


class Eimt16BeamTest(_Beam, tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = eimt16.Builder
  SPLITS = {"train": 3, "test": 2}
  SKIP_CHECKSUMS = True
  BUILDER_CONFIG_NAMES_TO_TEST = ["temporal4"]


class Liris2017Test(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = liris.Builder
  SPLITS = {"After_The_Rain": 3, "MEDIAEVAL17_00": 2}
  SKIP_CHECKSUMS = True
  BUILDER_CONFIG_NAMES_TO_TEST = ["mediaeval2017"]


class Liris2018BeamTest(_Beam, tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = liris.Builder
  SPLITS = {"MEDIAEVAL18_00": 3, "MEDIAEVAL18_54": 2}
  SKIP_CHECKSUMS = True
  BUILDER_CONFIG_NAMES_TO_TEST = ["mediaeval2018"]


def _build(mod, data_dir, config):
  builder = mod.Builder(data_dir=str(data_dir), config=config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(_builders.DATASETS / mod.__name__.split(".")[0] / "dummy_data")))
  return builder


def test_eimt16_labels_and_shapes(tmp_path):
  b = _build(eimt16, tmp_path, "temporal4")
  ex = {e["excerpt"].decode(): e for e in tfds.as_numpy(b.as_dataset(split="train"))}
  assert set(ex) == {"ACCEDE00000", "ACCEDE00001", "ACCEDE00002"}
  np.testing.assert_allclose([ex["ACCEDE00001"]["valence"], ex["ACCEDE00001"]["arousal"]], [3.4, 1.9], rtol=1e-6)
  assert ex["ACCEDE00000"]["i3d"].shape == (4, 1024)
  test = {e["excerpt"].decode(): e for e in tfds.as_numpy(b.as_dataset(split="test"))}
  np.testing.assert_allclose(test["MEDIAEVAL16_00001"]["arousal"], 3.3, rtol=1e-6)
  # The engine's reader: each excerpt a group of 4 sub-segments, its label on the last
  # (sequence-to-one), no invented timestamps, the corpus's own train/test split.
  corpus = aan_data.load_tfds("eimt16_global", data_dir=tmp_path)
  assert corpus.group_kind == "excerpt" and corpus.mask.shape == (5, 4)
  assert corpus.features["i3d"].shape == (5, 4, 1024)
  g = corpus.groups.index("MEDIAEVAL16_00001")
  assert corpus.label_mask["arousal"][g].tolist() == [False, False, False, True]
  np.testing.assert_allclose(corpus.targets["arousal"][g, -1], 3.3, rtol=1e-6)
  assert np.isnan(corpus.start_s).all()
  assert set(corpus.splits["test"]) == {"MEDIAEVAL16_00000", "MEDIAEVAL16_00001"}


def test_liris_windows_labels_and_official_partition(tmp_path):
  b = _build(liris, tmp_path, "mediaeval2017")
  assert b.info.metadata["dev"] == ["After_The_Rain"] and b.info.metadata["test"] == ["MEDIAEVAL17_00"]
  corpus = aan_data.load_tfds("liris_accede_continuous", data_dir=tmp_path)
  assert corpus.movies == ("After_The_Rain", "MEDIAEVAL17_00")
  np.testing.assert_allclose(corpus.targets["valence"][0], [0.1, 0.3, -0.4], rtol=1e-6)
  np.testing.assert_allclose(corpus.end_s[0] - corpus.start_s[0], [10, 10, 10])
  fear = [int(e["fear"]) for e in tfds.as_numpy(b.as_dataset(split="After_The_Rain"))]
  assert fear == [0, 1, 0]
  b18 = _build(liris, tmp_path, "mediaeval2018")
  rows = list(tfds.as_numpy(b18.as_dataset(split="MEDIAEVAL18_54")))
  assert [int(e["fear"]) for e in rows] == [1, 1]  # fear 7-8.5 s overlaps both windows
  secs = np.arange(15)
  val = 0.05 * (secs % 7) - 0.1
  np.testing.assert_allclose(rows[1]["valence"], np.round(val[5:15], 3).mean(), atol=1e-6)
  assert b18.info.metadata["test"] == ["MEDIAEVAL18_54"]


def test_eimt16_wrong_segment_count_names_the_file(tmp_path):
  manual = tmp_path / "manual"
  dummy = _builders.load_module("eimt16_global", "make_dummy_data.py")
  dummy.make(manual)
  dummy.write_features(manual / "features" / "ACCEDE00001.npz", 4, 0)
  b = eimt16.Builder(data_dir=str(tmp_path / "data"), config="excerpt")
  with pytest.raises(ann.CorpusFileError, match=r"ACCEDE00001.npz: has 4 segments; .*excerpt:64"):
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
