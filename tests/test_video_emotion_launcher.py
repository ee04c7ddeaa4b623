"""experiments.video_emotion: the output contract on a tiny synthetic corpus (VAANet, two
devices), exported classifiers reproducing the test predictions, and the corpus loaders."""

from __future__ import annotations

import csv
import json
import os
import re
import types

import numpy as np
import pytest

from aan_jax.training import categorical
from aan_jax.data import corpora
from aan_jax.data import synthetic

PROGRESS = (r"(\d+)/2 \[[^\]\n]*epoch[^\]\n]*, 2/2 runs still training\]"  # tqdm's bar
            r"|epoch (\d+)/2: 2/2 runs still training \(\d+ s\)")     # without tqdm
TINY = {"synthetic.num_clips": 32, "synthetic.num_splits": 2, "synthetic.snippets": 2,
        "synthetic.positions": 4, "synthetic.backbone_dim": 8, "synthetic.audio_frames": 16,
        "hidden": 8, "audio_dim": 8, "audio_segments": 2, "audio_widths": "4,4,4,4",
        "audio_blocks": "1,1,1,1", "num_epochs": 2, "checkpoint_every": 1, "batch_size": 8}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, run_launcher):
  d = tmp_path_factory.mktemp("ve")
  p = run_launcher("video_emotion", d, {"dataset": "synthetic", **TINY})
  assert p.returncode == 0, p.stderr[-3000:]
  return d, p


def test_launcher_writes_the_output_contract(workdir):
  d, p = workdir
  out = json.loads((d / "results.json").read_text())
  assert out["task"] == "categorical" and out["model"] == "vaanet"
  # The launcher records what the command line gave: the demo's sizes never replace those.
  assert {"num_epochs", "hidden", "synthetic.num_clips"} <= set(out["config"]["explicit"].split(","))
  assert out["config"]["num_epochs"] == 2 and out["config"]["hidden"] == 8
  assert set(out["per_split"]) == {"split01", "split02"}
  accs = [f["accuracy"] for f in out["per_split"].values()]
  assert out["accuracy"] == pytest.approx(np.mean(accs))
  assert set(out["accuracy_spread"]) == {"std", "min", "max"}
  for f in out["per_split"].values():
    assert set(f["per_class_recall"]) == set(out["classes"]) and f["n"] > 0
  assert out["devices"] == 2  # the launcher's two CPU devices: the run axis was sharded
  assert out["positive_classes"] == ["Anticipation", "Joy", "Surprise", "Trust"]
  conf = np.asarray(out["confusion"])
  assert conf.shape == (8, 8) and conf.sum() == sum(f["n"] for f in out["per_split"].values())
  with open(d / "predictions.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == conf.sum()
  assert {"split", "id", "label", "predicted", "p_Anger", "p_Trust"} <= set(rows[0])
  assert all(abs(sum(float(r[f"p_{c}"]) for c in out["classes"]) - 1) < 1e-4 for r in rows)
  assert (d / "plots" / "confusion.png").stat().st_size > 1000
  index = json.loads((d / "models" / "index.json").read_text())
  assert len(index["models"]) == 2
  events = [f for _, _, fs in os.walk(d / "tensorboard") for f in fs if "tfevents" in f]
  assert len(events) == 2
  assert (d / "checkpoints").is_dir()
  assert "VAANet on synthetic" in p.stdout and "split01" in p.stdout
  # Progress per chunk (checkpoint_every=1): epochs 1 and 2 of 2, both runs training, in
  # tqdm's bar or, without tqdm, as "epoch 1/2: 2/2 runs still training (3 s)".
  epochs = [int(a or b) for a, b in re.findall(PROGRESS, p.stderr)]
  assert list(dict.fromkeys(epochs)) == [1, 2], p.stderr[-2000:]


def test_exported_classifiers_reproduce_the_test_predictions(workdir):
  from aan_jax.export import core as export
  d, _ = workdir
  corpus = synthetic.make_clips(32, 2, 0, 2, 4, 8, 16, 32)
  with open(d / "predictions.csv") as f:
    rows = list(csv.DictReader(f))
  models = export.load_classifiers(d)
  assert [m.metadata["split"] for m in models] == ["split01", "split02"]
  for m in models:
    mine = [r for r in rows if r["split"] == m.metadata["split"]]
    idx = [corpus.ids.index(r["id"]) for r in mine]
    probs = m.predict({k: v[idx] for k, v in corpus.inputs.items()})
    want = np.asarray([[float(r[f"p_{c}"]) for c in m.classes] for r in mine])
    np.testing.assert_allclose(probs, want, atol=2e-6)
  with pytest.raises(ValueError, match="input 'visual' has per-example shape"):
    models[0].logits({"visual": np.zeros((1, 3, 4, 8)), "audio": np.zeros((1, 16, 32))})


def test_bad_settings_and_missing_datasets_say_which(tmp_path, run_launcher):
  p = run_launcher("video_emotion", tmp_path / "w",
                   {"dataset": "synthetic", **TINY, "loss": "hinge", "batch_size": 0})
  assert p.returncode == 1
  lines = [x for x in p.stderr.splitlines() if x.startswith("error:")]
  assert any(x.startswith("error: loss:") for x in lines), p.stderr
  assert any(x.startswith("error: batch_size:") for x in lines), p.stderr
  c = categorical.get_config()
  c.dataset = "videoemotion8"
  c.data_dir = str(tmp_path / "nothing")
  with pytest.raises(corpora.DatasetMissing, match="tfds build datasets/videoemotion8"):
    corpora.load_clips(c)


def test_tfds_examples_become_a_clip_corpus_with_every_split():
  names = ("Anger", "Disgust", "Fear", "Joy", "Sadness", "Surprise")
  info = types.SimpleNamespace(
      features={"label": types.SimpleNamespace(names=list(names))},
      metadata={"splits": [1, 2, 3]})
  member = [[1, 2, 0], [1, 1, 2], [2, 1, 1], [1, 2, 1], [2, 0, 1]]
  examples = [{"visual": np.full((2, 4, 3), i, np.float32), "mfcc": np.zeros((8, 4), np.float32),
               "label": i % 6, "video": f"{names[i % 6]}/v{i}".encode(),
               "split": np.asarray(m, np.int8)} for i, m in enumerate(member)]
  c = corpora.clips_from_examples("ekman6", examples, info, "i3d")
  assert c.classes == names and c.ids[1] == "Disgust/v1"
  # Every split with both lists is kept, in the metadata's numbering.
  assert c.split_names == ("split01", "split02", "split03")
  np.testing.assert_array_equal(c.splits[0][0], [0, 1, 3])
  np.testing.assert_array_equal(c.splits[0][1], [2, 4])
  np.testing.assert_array_equal(c.splits[2][1], [1])
  assert c.inputs["visual"].shape == (5, 2, 4, 3) and c.inputs["audio"].shape == (5, 8, 4)


def test_synthetic_clips_are_stratified_and_carry_the_class():
  c = synthetic.make_clips()
  assert len(c.labels) == 200 and len(c.splits) == 10 and len(c.classes) == 8
  for tr, te in c.splits:
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 200
    counts = np.bincount(c.labels[te], minlength=8)
    assert counts.min() >= 7 and counts.max() <= 10  # a third of each class
  assert c.inputs["visual"].shape == (200, 4, 4, 64) and c.inputs["audio"].shape == (200, 64, 32)
  # Each modality alone separates the classes above chance (nearest class mean, split 1).
  tr, te = c.splits[0]
  for name in ("visual", "audio"):
    x = c.inputs[name].reshape(200, -1)
    means = np.stack([x[tr][c.labels[tr] == k].mean(0) for k in range(8)])
    pred = np.argmin(((x[te][:, None] - means[None]) ** 2).sum(-1), 1)
    assert np.mean(pred == c.labels[te]) > 0.3, name


def test_the_synthetic_demo_never_replaces_a_setting_given_on_the_command_line():
  c = categorical.get_config()
  c.num_epochs = 100  # VAANet's default, given explicitly
  with c.unlocked():
    c.explicit = "num_epochs"
  r = categorical.resolve(c)
  assert r.num_epochs == 100 and r.learning_rate == categorical.SYNTHETIC_SIZES["learning_rate"]
  c.explicit = ""
  assert categorical.resolve(c).num_epochs == categorical.SYNTHETIC_SIZES["num_epochs"]
