"""Corpora generated in the official file formats -> `tfds build` -> each launcher, each
model, each protocol -> the output contract (results.json agrees with predictions.csv)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import _builders  # noqa: E402
from aan_jax.evaluation import pooled as evaluate  # noqa: E402
from aan_jax.export import core as export  # noqa: E402
from aan_jax.training import regression as train  # noqa: E402

_builders.hide_gpus()
eimt16 = _builders.load_module("eimt16_global")
liris = _builders.load_module("liris_accede_continuous")
eimt16_dummy = _builders.load_module("eimt16_global", "make_dummy_data.py")
liris_dummy = _builders.load_module("liris_accede_continuous", "make_dummy_data.py")


def _eimt16_manual(root: pathlib.Path, train_n: int = 10, test_n: int = 4):
  rng = np.random.default_rng(0)
  (root / "annotations").mkdir(parents=True, exist_ok=True)
  rows = ["id\tname\tvalenceRank\tarousalRank\tvalenceValue\tarousalValue\tvalenceVariance\tarousalVariance"]
  names = [f"ACCEDE{i:05d}" for i in range(train_n)]
  tests = [f"MEDIAEVAL16_{i:05d}" for i in range(test_n)]
  for i, n in enumerate(names):
    rows.append(f"{i}\t{n}.mp4\t{i}\t{i}\t{rng.uniform(1, 5):.3f}\t{rng.uniform(1, 5):.3f}\t0.1\t0.1")
  (root / "annotations" / "ACCEDEranking.txt").write_text("\n".join(rows) + "\n")
  (root / "MEDIAEVAL16-Global_prediction.txt").write_text(
      "".join(f"{n}.mp4\t{rng.uniform(1, 5):.3f}\t{rng.uniform(1, 5):.3f}\n" for n in tests))
  for seed, name in enumerate(names + tests):
    eimt16_dummy.write_features(root / "features" / f"{name}.npz", 1, seed)
    eimt16_dummy.write_features(root / "features_4x16" / f"{name}.npz", 4, seed)


def _liris2017_manual(root: pathlib.Path, dev: int = 6, test: int = 2, windows: int = 6):
  rng = np.random.default_rng(1)
  ann = root / "annotations"
  ann.mkdir(parents=True, exist_ok=True)
  movies = [f"Movie{i}" for i in range(dev)] + [f"MEDIAEVAL17_{i:02d}" for i in range(test)]
  for seed, m in enumerate(movies):
    liris_dummy.write_windows(root / "features" / f"{m}.npz", windows, seed)
    va = ["Id\tTime\tMeanValence\tMeanArousal"] + [
        f"{i}\t{5 * i}\t{rng.uniform(-1, 1):.3f}\t{rng.uniform(-1, 1):.3f}" for i in range(windows)]
    fear = ["Id\tTime\tFear"] + [f"{i}\t{5 * i}\t{int(i % 3 == 1)}" for i in range(windows)]
    if m.startswith("Movie"):
      (ann / f"{m}-MEDIAEVAL2017-valence_arousal.txt").write_text("\n".join(va) + "\n")
      (ann / f"{m}-MEDIAEVAL2017-fear.txt").write_text("\n".join(fear) + "\n")
    else:
      (ann / f"{m}_Valence-Arousal.txt").write_text("\n".join(va) + "\n")
      (ann / f"{m}_fear.txt").write_text("\n".join(fear) + "\n")


def _prepare(builder_cls, config, manual, data_dir):
  b = builder_cls(config=config, data_dir=str(data_dir))
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))


def _tiny(config, data_dir, **kw):
  config.data_dir = str(data_dir)
  config.num_epochs = 2
  config.patience = 1
  config.num_layers = 1
  config.modalities = "vggish,emobase2010"
  config.bootstrap = 20
  config.plots = True
  config.update(kw)
  return config


def _check_contract(workdir: pathlib.Path, targets, runs: int):
  res = json.loads((workdir / "results.json").read_text())
  table = evaluate.read_predictions(str(workdir / "predictions.csv"))
  for t in targets:
    sel = table["target"] == t
    assert res[t]["n"] == sel.sum() > 0
    if res[t]["task"] == "regression":
      p, y = table["prediction"][sel].astype(float), table["truth"][sel].astype(float)
      assert res[t]["mse"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
    else:
      assert set(np.unique(table["truth"][sel])) <= {0.0, 1.0}
  assert len(export.load_models(str(workdir))) == runs
  return res, table


def test_tfds_build_then_eimt16_launcher_each_model(tmp_path):
  from experiments import eimt16_global  # pylint: disable=g-import-not-at-top
  manual, data = tmp_path / "manual", tmp_path / "data"
  _eimt16_manual(manual)
  # The `tfds build` command itself for one config; the builder API for the other.
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
  tfds_cli = pathlib.Path(sys.executable).with_name("tfds")
  build = subprocess.run(
      [str(tfds_cli), "build", str(_builders.DATASETS / "eimt16_global"), "--config=excerpt",
       f"--manual_dir={manual}", f"--data_dir={data}"], capture_output=True, text=True,
      env=env, cwd=tmp_path, check=False)
  assert build.returncode == 0, build.stderr[-3000:]
  _prepare(eimt16.Builder, "temporal4", manual, data)
  for model in ("feature_aan", "temporal_aan", "feature_temporal_aan"):
    work = tmp_path / model
    res, table = _check_contract_after(
        eimt16_global.get_config(), data, work, ("arousal", "valence"), 2, model=model)
    assert res["tfds_config"] == ("excerpt" if model == "feature_aan" else "temporal4")
    assert res["arousal"]["n"] == 4 and res["protocol"]["name"] == "fixed_split"
    assert set(table["group"].tolist()) == {f"MEDIAEVAL16_{i:05d}" for i in range(4)}
    assert os.path.exists(work / "plots" / "arousal_scatter.png")


def _check_contract_after(config, data, work, targets, runs, **kw):
  train.train_and_evaluate(_tiny(config, data, **kw), str(work))
  return _check_contract(work, targets, runs)


@pytest.mark.parametrize("protocol, model", [("official", "feature_aan"),
                                             ("dev_loo", "temporal_aan")])
def test_tfds_build_then_mediaeval_launcher(tmp_path, protocol, model):
  from experiments import mediaeval_continuous  # pylint: disable=g-import-not-at-top
  manual, data = tmp_path / "manual", tmp_path / "data"
  _liris2017_manual(manual)
  _prepare(liris.Builder, "mediaeval2017", manual, data)
  c = _tiny(mediaeval_continuous.get_config(), data, protocol=protocol, model=model,
            validation_groups=2)
  work = tmp_path / "work"
  mediaeval_continuous.run(c, str(work))
  targets = ("valence", "arousal", "fear")
  runs = 3 if protocol == "official" else 3 * 6
  res, table = _check_contract(work, targets, runs)
  assert res["tfds_config"] == "mediaeval2017" and res["protocol"]["name"] == protocol
  groups = set(table["group"].tolist())
  if protocol == "official":  # tested on the official test movies only
    assert groups == {"MEDIAEVAL17_00", "MEDIAEVAL17_01"}
    assert res["fear"]["ap"] == pytest.approx(
        evaluate.average_precision(table["prediction"][table["target"] == "fear"],
                                   table["truth"][table["target"] == "fear"]), abs=1e-12)
  else:  # leave one dev movie out: every dev movie is a test movie once, never a test one
    assert groups == {f"Movie{i}" for i in range(6)}
