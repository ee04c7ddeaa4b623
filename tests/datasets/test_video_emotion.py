"""VideoEmotion-8 and Ekman-6 builders: dummy data, every split, the duplicated video,
bad lists, missing videos, and one build from a video (random 3D ResNet in Hara's layout)."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
from unittest import mock

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import _builders  # noqa: E402
from _common import emotion_lists  # noqa: E402
from _common.annotations import CorpusFileError  # noqa: E402

_builders.hide_gpus()
ve8 = _builders.load_module("videoemotion8")
ve8_dummy = _builders.load_module("videoemotion8", "make_dummy_data.py")
ekman6 = _builders.load_module("ekman6")
DUP = ve8_dummy.DUP


class VideoEmotion8Test(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = ve8.Builder
  SPLITS = {"videos": 7}  # 8 listed, Sadness/s1 has no features
  SKIP_CHECKSUMS = True
  BUILDER_CONFIG_NAMES_TO_TEST = ["resnet101"]


class Ekman6Test(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = ekman6.Builder
  SPLITS = {"videos": 7}
  SKIP_CHECKSUMS = True
  BUILDER_CONFIG_NAMES_TO_TEST = ["resnet101"]


def _build(mod, manual, tmp, config="resnet101"):
  builder = mod.Builder(data_dir=str(tmp / "data"), config=config)
  builder.download_and_prepare(download_dir=str(tmp / "downloads"),
                               download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return builder


def _rows(builder) -> dict:
  return {e["video"].decode(): e for e in tfds.as_numpy(builder.as_dataset(split="videos"))}


def test_ve8_labels_splits_and_the_duplicated_video(tmp_path):
  b = _build(ve8, _builders.DATASETS / "videoemotion8" / "dummy_data", tmp_path)
  rows = _rows(b)
  names = b.info.features["label"].names
  assert names == list(ve8_dummy.CLASSES)
  # The video filed under Disgust and Fear is kept under both, each with its own label.
  assert names[rows[f"Disgust/{DUP}"]["label"]] == "Disgust"
  assert names[rows[f"Fear/{DUP}"]["label"]] == "Fear"
  assert b.info.metadata["duplicate_names"] == {DUP: ["Disgust", "Fear"]}
  # Membership per split: 1 train, 2 test, 0 not listed.
  assert b.info.metadata["splits"] == [1, 2]
  np.testing.assert_array_equal(rows["Anger/a1"]["split"], [1, 2])
  np.testing.assert_array_equal(rows[f"Fear/{DUP}"]["split"], [1, 0])
  np.testing.assert_array_equal(rows[f"Trust/{ve8_dummy.ODD}"]["split"], [1, 2])
  assert names[rows[f"Trust/{ve8_dummy.ODD}"]["label"]] == "Trust"
  assert b.info.metadata["missing"] == ["Sadness/s1"]
  # Features as written: seed = sorted position of the video among all listed ones.
  seed = ve8_dummy.all_videos().index("Joy/j2")
  assert rows["Joy/j2"]["visual"].shape == (12, 16, 2048)
  np.testing.assert_allclose(rows["Joy/j2"]["visual"][3, 5, :4], seed + 3 / 16 + 5 / 64 + np.arange(4) / 4)
  np.testing.assert_allclose(rows["Joy/j2"]["mfcc"][7, :3], np.arange(3) - seed)


def test_ekman6_default_order_and_lower_case_folders(tmp_path):
  b = _build(ekman6, _builders.DATASETS / "ekman6" / "dummy_data", tmp_path)
  rows = _rows(b)
  names = b.info.features["label"].names
  assert names == ["Anger", "Disgust", "Fear", "Joy", "Sadness", "Surprise"]
  assert names[rows["Surprise/v03"]["label"]] == "Surprise"
  np.testing.assert_array_equal(rows["Sadness/v05"]["split"], [2])
  assert b.info.metadata["splits"] == [1]


def _manual(tmp_path, **kwargs) -> pathlib.Path:
  manual = tmp_path / "manual"
  ve8_dummy.make(manual, **kwargs)
  return manual


@pytest.mark.parametrize("lines, match", [
    ("Anger/a1 2\n", r"trainlist01.txt:1: label 2 is Anticipation in classInd.txt, but the video is in the Anger folder"),
    ("Anger/a1\n", r"trainlist01.txt:1: expected 'Class/video label'"),
    ("Angry/a1 1\n", r"trainlist01.txt:1: unknown class folder 'Angry'"),
    ("Anger/a1 9\n", r"trainlist01.txt:1: label 9 is outside 1..8"),
    ("Joy/j1 5\nJoy/j1 5\n", r"trainlist01.txt:2: Joy/j1 is listed twice \(first on line 1\)"),
    ("Joy/j2 5\n", r"testlist01.txt: Joy/j2 is also in trainlist01.txt"),
])
def test_bad_lists_name_file_and_line(tmp_path, lines, match):
  manual = _manual(tmp_path)
  (manual / "lists" / "trainlist01.txt").write_text(lines)
  with pytest.raises(CorpusFileError, match=match):
    emotion_lists.read_splits(manual, ve8_dummy.CLASSES)


def test_bad_class_index_and_unpaired_list(tmp_path):
  manual = _manual(tmp_path)
  (manual / "lists" / "classInd.txt").write_text("1 Anger\n3 Disgust\n")
  with pytest.raises(CorpusFileError, match=r"classInd.txt:2: index 3, expected 2"):
    emotion_lists.read_splits(manual, ve8_dummy.CLASSES)
  ve8_dummy.write_lists(manual / "lists")
  (manual / "lists" / "testlist02.txt").unlink()
  with pytest.raises(CorpusFileError, match=r"trainlist02.txt: split 2 has no testlist02.txt"):
    emotion_lists.read_splits(manual, ve8_dummy.CLASSES)


def test_missing_videos_are_skipped_and_none_is_an_error(tmp_path):
  manual = _manual(tmp_path, missing=("Sadness/s1", "Joy/j1"))
  tasks, meta = emotion_lists.build_tasks(manual, ve8_dummy.CLASSES, "resnet101",
                                          "features/resnet101", tmp_path / "cache", "VE8")
  assert meta["missing"] == ["Joy/j1", "Sadness/s1"] and len(tasks) == 6
  shutil.rmtree(manual / "features")
  with pytest.raises(CorpusFileError, match="none of the 8 listed videos has"):
    emotion_lists.build_tasks(manual, ve8_dummy.CLASSES, "resnet101", "features/resnet101",
                              tmp_path / "cache", "VE8")
  # A malformed .npz names the file.
  ve8_dummy.write_features(manual / "features" / "resnet101" / "Joy" / "j1.npz", 0, dim=1024)
  tasks, _ = emotion_lists.build_tasks(manual, ve8_dummy.CLASSES, "resnet101",
                                       "features/resnet101", tmp_path / "cache", "VE8")
  with pytest.raises(CorpusFileError, match=r"j1.npz: expected one backbone array \(resnet101\)"):
    list(emotion_lists.video_examples(tasks[0]))


def test_build_from_video(tmp_path):
  """One listed video as a file under VideoEmotion-8's release folders: extracted in a child
  process with a random 3D ResNet written in Hara et al.'s checkpoint layout."""
  missing = [m for m in ("torch", "av", "librosa") if importlib.util.find_spec(m) is None]
  if missing:
    pytest.skip(f"building from video needs {missing} (pip install 'aan-jax[extract]')")
  manual = tmp_path / "manual"
  train = {1: ["Anger/a1", "Joy/j1"]}
  test = {1: ["Joy/j2"]}
  ve8_dummy.make(manual, train=train, test=test, missing=("Joy/j2",))
  video = manual / "VideoEmotionDataset5-Joy" / "youtube" / "j2.mp4"
  _builders.write_video(video, 1.0, fps=25, width=64, height=48)
  ckpt = tmp_path / "resnet-101-kinetics.pth"
  # The child process builds the checkpoint's network: a one-block-per-layer 3D ResNet.
  import subprocess, sys  # pylint: disable=import-outside-toplevel,multiple-imports
  subprocess.run([sys.executable, "-c", (
      "import torch, sys; from extract.resnet3d import ResNet3D; torch.manual_seed(0); "
      "m = ResNet3D((1, 1, 1, 1)); "
      "torch.save({'state_dict': {'module.' + k: v for k, v in m.state_dict().items()}}, sys.argv[1])"),
      str(ckpt)], check=True, cwd=_builders.ROOT)
  env = {"AAN_RESNET101_3D_WEIGHTS": str(ckpt), "AAN_JAX_EXTRACT_WEIGHTS": "pretrained"}
  with mock.patch.dict(os.environ, env):
    b = _build(ve8, manual, tmp_path)
  rows = _rows(b)
  assert set(rows) == {"Anger/a1", "Joy/j1", "Joy/j2"}
  assert b.info.metadata["from_video"] == 1 and b.info.metadata["extract_weights"] == "pretrained"
  got = rows["Joy/j2"]
  assert got["visual"].shape == (12, 16, 2048) and np.isfinite(got["visual"]).all()
  assert got["visual"].std() > 0 and got["mfcc"].std() > 0
  np.testing.assert_array_equal(got["split"], [2])
  cached = tmp_path / "downloads" / "aan_jax_vaanet_features" / "resnet101" / \
      "VideoEmotionDataset5-Joy" / "youtube" / "j2.npz"
  with np.load(cached) as z:
    np.testing.assert_array_equal(got["visual"], z["resnet101"])
