"""EIMT16 Global and LIRIS-ACCEDE continuous built from tiny generated videos (random weights).

Plain `download_and_prepare` with a generated manual_dir (not DatasetBuilderTestCase,
whose dummy_data is a fixed folder): each manual folder mixes a video with `.npz` inputs.
Extraction dominates (~40-50 s per clip here), so each corpus is built once per module
and only one config of each is built from video; their other configs take the same
`load_or_extract` path with another segmentation string and are tested on `.npz`.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
from unittest import mock

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import _builders  # noqa: E402
from aan_jax.data.features import PAPER_FEATURE_DIMS  # noqa: E402

_builders.hide_gpus()
eimt16 = _builders.load_module("eimt16_global")
eimt16_dummy = _builders.load_module("eimt16_global", "make_dummy_data.py")
liris = _builders.load_module("liris_accede_continuous")
liris_dummy = _builders.load_module("liris_accede_continuous", "make_dummy_data.py")


def _needs_extractor():
  # find_spec, not import: torch must not load into this TensorFlow process.
  missing = [m for m in ("extract", "torch", "av") if importlib.util.find_spec(m) is None]
  if missing:
    pytest.skip(f"building from video needs {missing} (pip install 'aan-jax[extract]')")


def _build(mod, config: str, manual: pathlib.Path, tmp: pathlib.Path, beam: bool = False):
  kwargs = {}
  if beam:
    beam_mod = tfds.core.lazy_imports.apache_beam
    kwargs["beam_options"] = beam_mod.options.pipeline_options.PipelineOptions(
        ["--runner=DirectRunner"])
  builder = mod.Builder(data_dir=str(tmp / "data"), config=config)
  with mock.patch.dict(os.environ, {"AAN_JAX_EXTRACT_WEIGHTS": "random"}):
    builder.download_and_prepare(
        download_dir=str(tmp / "downloads"),
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual), **kwargs))
  return builder


def _examples(builder, split: str, key: str) -> dict:
  return {e[key].decode(): e for e in tfds.as_numpy(builder.as_dataset(split=split))}


def _cached(tmp: pathlib.Path, segmentation: str, stem: str) -> dict:
  with np.load(tmp / "downloads" / "aan_jax_features" / segmentation / f"{stem}.npz") as z:
    return {f: z[f] for f in PAPER_FEATURE_DIMS}


# ---- EIMT16 Global, config temporal4: one training clip as video, the rest as .npz ----

@pytest.fixture(scope="module")
def eimt16_build(tmp_path_factory):
  _needs_extractor()
  tmp = tmp_path_factory.mktemp("eimt16_video")
  manual = tmp / "manual"
  eimt16_dummy.make(manual)  # official label files; .npz for every clip
  # ACCEDE00000 only as a video: 64 frames at 25 fps = 2.56 s, 4 x 16 frames.
  for folder in ("features", "features_4x16"):
    (manual / folder / "ACCEDE00000.npz").unlink()
  _builders.write_video(manual / "data" / "ACCEDE00000.mp4", 2.56, width=64, height=48)
  return _build(eimt16, "temporal4", manual, tmp), manual, tmp


def test_eimt16_video_counts_splits_and_labels(eimt16_build):
  builder, _, _ = eimt16_build
  assert set(builder.info.splits.keys()) == {"train", "test"}
  assert builder.info.splits["train"].num_examples == 3
  assert builder.info.splits["test"].num_examples == 2
  assert builder.info.metadata["extract_weights"] == "random"
  assert builder.info.metadata["segmentation"] == "subsegments:4x16"
  train = _examples(builder, "train", "excerpt")
  test = _examples(builder, "test", "excerpt")
  assert set(train) == set(eimt16_dummy.TRAIN) and set(test) == set(eimt16_dummy.TEST)
  for labels, got in ((eimt16_dummy.TRAIN, train), (eimt16_dummy.TEST, test)):
    for name, (v, a) in labels.items():
      np.testing.assert_allclose([got[name]["valence"], got[name]["arousal"]], [v, a], rtol=1e-6)


def test_eimt16_video_features_are_the_extracted_ones(eimt16_build):
  builder, manual, tmp = eimt16_build
  ex = _examples(builder, "train", "excerpt")
  cached = _cached(tmp, "subsegments_4x16", "ACCEDE00000")  # written by the child extractor
  for f, d in PAPER_FEATURE_DIMS.items():
    got = ex["ACCEDE00000"][f]
    assert got.shape == (4, d) and got.dtype == np.float32, f
    assert np.isfinite(got).all() and np.abs(got).sum() > 0, f
    np.testing.assert_array_equal(got, cached[f])
  # The .npz clip next to it is read as given.
  with np.load(manual / "features_4x16" / "ACCEDE00001.npz") as z:
    np.testing.assert_array_equal(ex["ACCEDE00001"]["i3d"], z["i3d"])


# ---- LIRIS-ACCEDE continuous, config mediaeval2017, through Beam on DirectRunner ----

@pytest.fixture(scope="module")
def liris_build(tmp_path_factory):
  _needs_extractor()
  tmp = tmp_path_factory.mktemp("liris_video")
  manual = tmp / "manual"
  liris_dummy.make(manual)  # official 2017 label files; .npz for every movie
  (manual / "features" / "After_The_Rain.npz").unlink()
  # One 10-s window (start 0). 10 fps, not 25: extraction costs per frame, and the
  # window code does not depend on the rate; 100 frames instead of 250 halve the cost.
  _builders.write_video(manual / "movies" / "After_The_Rain.mp4", 10.0, fps=10, width=64,
                        height=48)
  return _build(liris, "mediaeval2017", manual, tmp, beam=True), manual, tmp


def test_liris_video_windows_labels_and_partition(liris_build):
  builder, _, tmp = liris_build
  assert set(builder.info.splits.keys()) == {"After_The_Rain", "MEDIAEVAL17_00"}
  assert builder.info.metadata["dev"] == ["After_The_Rain"]
  assert builder.info.metadata["test"] == ["MEDIAEVAL17_00"]
  assert builder.info.metadata["extract_weights"] == "random"
  rows = list(tfds.as_numpy(builder.as_dataset(split="After_The_Rain")))
  # A 10-s video holds one window [0, 10); its labels are the annotation row starting at 0.
  assert len(rows) == 1
  (ex,) = rows
  assert (ex["movie"], int(ex["segment_index"])) == (b"After_The_Rain", 0)
  assert (float(ex["start_s"]), float(ex["end_s"])) == (0.0, 10.0)
  np.testing.assert_allclose([ex["valence"], ex["arousal"]], [0.1, -0.2], rtol=1e-6)
  assert int(ex["fear"]) == 0
  cached = _cached(tmp, "sliding_10_5", "After_The_Rain")
  for f, d in PAPER_FEATURE_DIMS.items():
    assert ex[f].shape == (d,) and ex[f].dtype == np.float32, f
    assert np.isfinite(ex[f]).all() and np.abs(ex[f]).sum() > 0, f
    np.testing.assert_array_equal(ex[f], cached[f][0])
  test_rows = list(tfds.as_numpy(builder.as_dataset(split="MEDIAEVAL17_00")))
  np.testing.assert_allclose([e["valence"] for e in test_rows], [0.2, -0.1], rtol=1e-6)
