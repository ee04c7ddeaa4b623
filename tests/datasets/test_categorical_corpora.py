"""The categorical launcher's loader on a VideoEmotion-8 built from the builder's dummy data:
every split, the video filed under two classes, labels and inputs as built."""

from __future__ import annotations

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import _builders  # noqa: E402
from aan_jax.training import categorical  # noqa: E402
from aan_jax.data import corpora  # noqa: E402

_builders.hide_gpus()
ve8 = _builders.load_module("videoemotion8")
ve8_dummy = _builders.load_module("videoemotion8", "make_dummy_data.py")


def test_load_clips_reads_every_split_of_a_built_videoemotion8(tmp_path):
  builder = ve8.Builder(data_dir=str(tmp_path / "data"), config="resnet101")
  builder.download_and_prepare(
      download_dir=str(tmp_path / "downloads"), download_config=tfds.download.DownloadConfig(
          manual_dir=str(_builders.DATASETS / "videoemotion8" / "dummy_data")))
  c = categorical.get_config()
  c.dataset = "videoemotion8"
  c.data_dir = str(tmp_path / "data")
  corpus = corpora.load_clips(c)
  assert corpus.classes == tuple(ve8_dummy.CLASSES)
  assert corpus.split_names == ("split01", "split02")
  dup = ve8_dummy.DUP
  # The video listed under Disgust and under Fear is two examples, each with its class.
  for cls in ("Disgust", "Fear"):
    i = corpus.ids.index(f"{cls}/{dup}")
    assert corpus.classes[corpus.labels[i]] == cls
  j2 = corpus.ids.index("Joy/j2")
  seed = ve8_dummy.all_videos().index("Joy/j2")
  np.testing.assert_allclose(corpus.inputs["visual"][j2, 3, 5, :4],
                             seed + 3 / 16 + 5 / 64 + np.arange(4) / 4)
  assert corpus.inputs["audio"].shape[1:] == (4096, 32)
  # Membership as the builder wrote it: split01 trains on Fear's copy, split02 does not list it.
  a1 = corpus.ids.index("Anger/a1")
  fear = corpus.ids.index(f"Fear/{dup}")
  assert a1 in corpus.splits[0][0]
  assert a1 in corpus.splits[1][1]
  assert fear in corpus.splits[0][0]
  assert fear not in corpus.splits[1][0] and fear not in corpus.splits[1][1]
  # The model's sizes come from the data: a Trainer builds on it (no training here).
  runs = categorical.make_runs(corpus, c)
  assert len(runs) == 2 and list(runs.n_train) == [len(s[0]) for s in corpus.splits]
