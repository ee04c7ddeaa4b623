"""The COGNIMUSE builder: dummy_data (.npz + CSV/.dat), Beam on DirectRunner, bad data, reader."""

from __future__ import annotations

import atexit
import functools
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import _builders  # noqa: E402
from _common import annotations as ann  # noqa: E402
from aan_jax.data import corpus as aan_data  # noqa: E402

_builders.hide_gpus()
cognimuse = _builders.load_module("cognimuse")
dummy = _builders.load_module("cognimuse", "make_dummy_data.py")
from tensorflow_datasets.testing import dataset_builder_testing  # noqa: E402


class CognimuseNpzTest(tfds.testing.DatasetBuilderTestCase):
  """Features given as .npz, annotations as CSV (BMI) and official .dat (LOR)."""
  DATASET_CLASS = cognimuse.Builder
  SPLITS = {"BMI": 3, "LOR": 3}
  SKIP_CHECKSUMS = True
  BUILDER_CONFIG_NAMES_TO_TEST = ["intended"]


class CognimuseExperiencedTest(tfds.testing.DatasetBuilderTestCase):
  """Experienced: LOR's two traces averaged, cut to 374 frames, so its last segment drops."""
  DATASET_CLASS = cognimuse.Builder
  SPLITS = {"BMI": 3, "LOR": 2}
  SKIP_CHECKSUMS = True
  BUILDER_CONFIG_NAMES_TO_TEST = ["experienced"]


_DownloadConfig = tfds.download.DownloadConfig


def _beam_download_config(**kwargs):
  """DownloadConfig as the test case makes it, with a DirectRunner pipeline asked for."""
  beam = tfds.core.lazy_imports.apache_beam
  kwargs["beam_options"] = beam.options.pipeline_options.PipelineOptions(
      ["--runner=DirectRunner"])
  return _DownloadConfig(**kwargs)


class CognimuseBeamTest(tfds.testing.DatasetBuilderTestCase):
  """The same dummy data through the Beam path (one element per movie) on DirectRunner."""
  DATASET_CLASS = cognimuse.Builder
  SPLITS = {"BMI": 3, "LOR": 3}
  SKIP_CHECKSUMS = True
  BUILDER_CONFIG_NAMES_TO_TEST = ["intended"]

  def setUp(self):
    super().setUp()
    patcher = mock.patch.object(dataset_builder_testing.download, "DownloadConfig",
                                _beam_download_config)
    patcher.start()
    self.patchers.append(patcher)


@functools.lru_cache(maxsize=None)
def video_manual_dir() -> pathlib.Path:
  """Once per session: two 5-s videos (BMI, LOR) and one .npz (GLA), with CSV annotations.

  Extraction (random weights) is the slow part (~30-60 s per video here), so every test
  that builds from these videos shares this folder and its feature cache.
  """
  root = pathlib.Path(tempfile.mkdtemp(prefix="cognimuse_videos_"))
  atexit.register(shutil.rmtree, root, ignore_errors=True)
  _builders.write_video(root / "2001BMI" / "BMI.mp4", 5.0)
  _builders.write_video(root / "videos" / "LOR.mp4", 5.0)
  dummy.write_csv(root / "annotations" / "BMI.csv", 125, seed=1)
  dummy.write_csv(root / "annotations" / "LOR.csv", 126, seed=2)
  dummy.write_features(root / "features" / "GLA.npz", 2, seed=3)
  dummy.write_csv(root / "annotations" / "GLA.csv", 250, seed=3)
  return root


def _needs_extractor():
  try:
    import extract  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    return extract.extract_file
  except (ImportError, AttributeError) as e:
    raise unittest.SkipTest(f"the extractor is not available ({e})")


class CognimuseVideoTest(tfds.testing.DatasetBuilderTestCase):
  """Videos (BMI, LOR; features extracted during the build, random weights) next to a .npz."""
  DATASET_CLASS = cognimuse.Builder
  SPLITS = {"BMI": 1, "LOR": 1, "GLA": 2}
  SKIP_CHECKSUMS = True
  BUILDER_CONFIG_NAMES_TO_TEST = ["intended"]

  @classmethod
  def setUpClass(cls):
    _needs_extractor()
    cls._env = mock.patch.dict(os.environ, {"AAN_JAX_EXTRACT_WEIGHTS": "random"})
    cls._env.start()
    super().setUpClass()

  @classmethod
  def tearDownClass(cls):
    super().tearDownClass()
    cls._env.stop()

  @property
  def dummy_data(self):  # generated per session instead of dummy_data/ (memoized upstream)
    return tfds.core.Path(video_manual_dir())

  def _download_and_prepare_as_dataset(self, builder):
    super()._download_and_prepare_as_dataset(builder)
    cache = list((video_manual_dir() / "aan_jax_features").glob("*/*.npz"))
    assert sorted(p.name[:3] for p in cache) == ["BMI", "LOR"]  # extracted once per video
    corpus = aan_data.load_tfds("cognimuse", data_dir=builder.data_dir_root)
    assert corpus.info["metadata"]["extract_weights"] == "random"
    assert corpus.info["metadata"]["extracted_from_video"] == ["BMI", "LOR"]
    assert corpus.movies == ("BMI", "LOR", "GLA")
    assert corpus.mask.tolist() == [[True, False], [True, False], [True, True]]
    for f, v in corpus.features.items():
      assert np.isfinite(v).all() and np.abs(v[:2, 0]).sum() > 0, f


def _build(manual_dir, data_dir, config="intended"):
  builder = cognimuse.Builder(data_dir=str(data_dir), config=config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir)))
  return builder


def test_labels_are_segment_means_and_reader_gives_dense_arrays(tmp_path):
  manual = tmp_path / "manual"
  shutil.copytree(pathlib.Path(cognimuse.__file__).parent / "dummy_data", manual)
  builder = _build(manual, tmp_path / "data")
  corpus = aan_data.load_tfds("cognimuse", data_dir=tmp_path / "data")
  assert corpus.movies == ("BMI", "LOR")  # canonical order
  assert corpus.mask.all() and corpus.mask.shape == (2, 3)
  # BMI labels: mean of CSV frames [125 i, 125 (i+1)); the CSV's extra frame is unused.
  arousal, valence = dummy.trace(376, seed=1)
  for i in range(3):
    np.testing.assert_allclose(corpus.targets["arousal"][0, i], arousal[125 * i:125 * (i + 1)].mean(), atol=1e-6)
    np.testing.assert_allclose(corpus.targets["valence"][0, i], valence[125 * i:125 * (i + 1)].mean(), atol=1e-6)
  # LOR from the official .dat: valence is the 2nd column, arousal the 3rd.
  arousal, valence = dummy.trace(375, seed=2)
  np.testing.assert_allclose(corpus.targets["arousal"][1], arousal.reshape(3, 125).mean(1), atol=1e-6)
  np.testing.assert_allclose(corpus.targets["valence"][1], valence.reshape(3, 125).mean(1), atol=1e-6)
  with np.load(manual / "features" / "LOR.npz") as z:
    np.testing.assert_array_equal(corpus.features["i3d"][1], z["i3d"])
    np.testing.assert_array_equal(corpus.end_s[1], z["end_s"])
  assert corpus.info["config"] == "intended"
  assert builder.info.metadata["extract_weights"].startswith("n/a")
  # Leave-one-out by split strings.
  train = "+".join(s for s in builder.info.splits if s != "LOR")
  assert train == "BMI"
  held_out = list(tfds.as_numpy(builder.as_dataset(split="LOR")))
  assert [ex["segment_index"] for ex in held_out] == [0, 1, 2]
  assert {ex["movie"] for ex in held_out} == {b"LOR"}

  # The experienced config averages the two LOR traces (cut to the shorter, 374 frames).
  _build(manual, tmp_path / "data", config="experienced")
  exp = aan_data.load_tfds("cognimuse", data_dir=tmp_path / "data", config="experienced",
                           features=["vggish"])
  assert set(exp.features) == {"vggish"}
  a4, _ = dummy.trace(375, seed=4)
  a5, _ = dummy.trace(374, seed=5)
  mean = (a4[:374] + a5) / 2
  np.testing.assert_allclose(exp.targets["arousal"][1, :2], mean[:250].reshape(2, 125).mean(1), atol=1e-6)
  # The third segment needs frames up to 375 but the averaged trace has 374: dropped.
  assert exp.mask[1].tolist() == [True, True, False]


def test_reader_says_how_to_build(tmp_path):
  with pytest.raises(FileNotFoundError, match="tfds build datasets/cognimuse"):
    aan_data.load_tfds("cognimuse", data_dir=tmp_path)


def _manual_with(tmp_path, **features_kwargs):
  manual = tmp_path / "manual"
  dummy.write_features(manual / "features" / "BMI.npz", 3, **features_kwargs)
  dummy.write_csv(manual / "annotations" / "BMI.csv", 375)
  return manual


@pytest.mark.parametrize("case, match", [
    ("empty", r"manual.? does not exist or is empty.*features/<CODE>.npz"),
    ("missing_feature", r"BMI.npz: feature 'vggish' is missing.*python -m extract"),
    ("nan_feature", r"BMI.npz: feature 'i3d' is NaN or infinite in segment 1"),
    ("nan_label", r"BMI.csv: arousal is NaN or infinite at row 4"),
    ("length", r"BMI.csv: the annotation covers 15.00 s but the video .* lasts 60.00 s"),
    ("no_pairs", r"no movie has both features .*LOR: .*LOR.npz but no intended annotation"),
])
def test_bad_data_fails_naming_the_file(tmp_path, case, match):
  if case == "empty":
    manual = tmp_path / "manual"
    manual.mkdir()
  elif case == "missing_feature":
    manual = _manual_with(tmp_path, drop="vggish")
  elif case == "nan_feature":
    manual = _manual_with(tmp_path)
    path = manual / "features" / "BMI.npz"
    with np.load(path) as z:
      arrays = dict(z)
    arrays["i3d"][1, 7] = np.nan
    np.savez(path, **arrays)
  elif case == "nan_label":
    manual = _manual_with(tmp_path)
    path = manual / "annotations" / "BMI.csv"
    lines = path.read_text().splitlines()
    lines[3] = "2,nan,0.1"
    path.write_text("\n".join(lines))
  elif case == "length":
    manual = _manual_with(tmp_path, duration_s=60.0, seg_s=20.0)
  else:
    manual = tmp_path / "manual"
    dummy.write_features(manual / "features" / "LOR.npz", 3)
  # TFDS itself refuses an empty manual dir (AssertionError, with our instructions).
  with pytest.raises(AssertionError if case == "empty" else ann.CorpusFileError,
                     match=re.compile(match, re.S)):
    _build(manual, tmp_path / "data")


def test_movie_without_annotation_is_skipped_with_reason(tmp_path, caplog):
  manual = _manual_with(tmp_path)
  dummy.write_features(manual / "features" / "GLA.npz", 2)
  with caplog.at_level("WARNING"):
    builder = _build(manual, tmp_path / "data")
  assert list(builder.info.splits.keys()) == ["BMI"]
  assert "GLA" in caplog.text and "no intended annotation" in caplog.text


def test_end_to_end_videos_to_tfds_build_to_loo_results(tmp_path):
  """Tiny videos + CSVs -> `tfds build` -> `python -m experiments.cognimuse_loo` -> results.json."""
  _needs_extractor()
  manual = video_manual_dir()
  env = dict(os.environ, AAN_JAX_EXTRACT_WEIGHTS="random", CUDA_VISIBLE_DEVICES="")
  tfds_cli = pathlib.Path(sys.executable).with_name("tfds")
  # --download_dir=manual: reuse the features the video test case extracted (same cache).
  build = subprocess.run(
      [str(tfds_cli), "build", str(_builders.DATASETS / "cognimuse"), "--config=intended",
       f"--manual_dir={manual}",
       f"--data_dir={tmp_path / 'data'}", f"--download_dir={manual}"],
      capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
  assert build.returncode == 0, build.stderr[-3000:]
  run = subprocess.run(
      [sys.executable, "-m", "experiments.cognimuse_loo", f"--config.data_dir={tmp_path / 'data'}",
       f"--workdir={tmp_path / 'work'}", "--config.num_epochs=2", "--config.patience=2",
       "--config.plots=False", f"--config.compilation_cache={tmp_path / 'xla'}"],
      capture_output=True, text=True, env=env, cwd=_builders.ROOT, check=False)
  assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:])
  results = json.loads((tmp_path / "work" / "results.json").read_text())
  assert results["dataset"] == "cognimuse"
  assert set(results["arousal"]["per_group"]) == {"BMI", "LOR", "GLA"}
  assert (tmp_path / "work" / "predictions.csv").is_file()
  assert (tmp_path / "work" / "models" / "index.json").is_file()
