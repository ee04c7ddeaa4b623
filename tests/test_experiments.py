"""The launchers on tiny synthetic corpora: each writes the output contract."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from aan_jax.evaluation import pooled as evaluate
from aan_jax.export import core as export
from aan_jax.training import launch
from aan_jax.training import regression as train
from experiments import cognimuse_loo, eimt16_global, mediaeval_continuous


def _tiny(c, **kw):
  c.synthetic.segments_per_movie = 12
  c.synthetic.num_movies = 4
  c.synthetic.num_train = 40
  c.synthetic.num_test = 10
  c.num_epochs = 2
  c.patience = 1
  c.num_layers = 1
  c.modalities = "audio"
  c.batch_size = 6
  c.bootstrap = 20
  c.dataset = "synthetic"
  c.update(kw)
  return c


def _contract(workdir, targets, runs):
  with open(workdir / "results.json") as f:
    res = json.load(f)
  table = evaluate.read_predictions(str(workdir / "predictions.csv"))
  for t in targets:
    assert t in res and "interval" in res[t] and res[t]["per_group"]
    assert (table["target"] == t).sum() == res[t]["n"]
  assert len(export.load_models(str(workdir))) == runs
  assert len(os.listdir(workdir / "tensorboard")) == runs
  return res, table


def test_cognimuse_loo_synthetic_writes_the_contract(tmp_path, capsys, fresh_compilation_cache):
  c = _tiny(cognimuse_loo.get_config(), compilation_cache=str(tmp_path / "xla"))
  out = train.train_and_evaluate(c, str(tmp_path))
  # The training, prediction and init programs were written to the persistent cache.
  assert len([f for f in os.listdir(tmp_path / "xla") if f.endswith("-cache")]) >= 3
  res, _ = _contract(tmp_path, ("arousal", "valence"), 8)
  assert set(res["arousal"]["per_group"]) == {"BMI", "LOR", "GLA", "DEP"}
  assert res["protocol"]["name"] == "leave_one_out" and res["early_stopping"] == "validation"
  assert res == json.loads(json.dumps(out))
  for mv in ("BMI", "LOR", "GLA", "DEP"):
    assert os.path.getsize(tmp_path / "plots" / f"{mv}.png") > 1000
  table = capsys.readouterr().out
  assert "Feature AAN (audio)" in table and "Arousal MSE" in table and "95% interval" in table




def test_results_json_says_where_the_time_went(tmp_path):
  """The whole command, timed from outside: its phases add up to its wall time."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  t0 = time.time()
  r = subprocess.run(
      [sys.executable, "-m", "experiments.cognimuse_loo", "--config.dataset=synthetic",
       "--config.synthetic.segments_per_movie=12", "--config.synthetic.num_movies=4",
       "--config.num_epochs=2", "--config.patience=1", "--config.num_layers=1",
       "--config.modalities=audio", "--config.bootstrap=20", "--config.plots=False",
       f"--workdir={tmp_path}"], cwd=root, capture_output=True, text=True, timeout=600)
  wall = time.time() - t0
  assert r.returncode == 0, r.stderr[-2000:]
  with open(tmp_path / "results.json") as f:
    timings = json.load(f)["timings"]
  assert list(timings) == ["start-up", "data", "compile", "training", "evaluation", "writing",
                           "total"]
  assert all(v >= 0 for v in timings.values())
  assert sum(v for k, v in timings.items() if k != "total") == pytest.approx(
      timings["total"], abs=0.01)
  # From the process's start (to the clock tick) to results.json; then the table and exit.
  assert -0.05 < wall - timings["total"] < 1.0, (wall, timings)
  assert "time: start-up " in r.stderr and "s from the process's start" in r.stderr


@pytest.mark.parametrize("model", ["feature_aan", "temporal_aan"])
def test_eimt16_global_synthetic_fixed_split(tmp_path, capsys, model):
  c = _tiny(eimt16_global.get_config(), model=model)
  train.train_and_evaluate(c, str(tmp_path))
  res, table = _contract(tmp_path, ("arousal", "valence"), 2)
  assert res["protocol"]["name"] == "fixed_split" and res["protocol"]["group_kind"] == "excerpt"
  assert res["batch_sizes"] == {"arousal": 40, "valence": 20}  # the paper's EIMT16 settings
  assert res["config"]["learning_rate"] == 0.01
  assert res["arousal"]["n"] == 10  # one prediction per test excerpt
  if model == "temporal_aan":
    assert res["config"]["window"] == 4 and set(table["item"].tolist()) == {3}
  out = capsys.readouterr().out
  assert "UMFN (Yi et al. 2022)" not in out  # published rows only for real EIMT16, audio+video


def test_mediaeval_continuous_synthetic_with_fear(tmp_path, capsys):
  c = _tiny(mediaeval_continuous.get_config())
  c.synthetic.num_movies = 8
  c.validation_groups = 1
  mediaeval_continuous.run(c, str(tmp_path))
  res, table = _contract(tmp_path, ("valence", "arousal", "fear"), 3)
  assert res["fear"]["task"] == "binary" and set(res["fear"]) >= {"ap", "map", "f1"}
  assert res["tfds_config"] is None  # synthetic
  assert set(np.unique(table["truth"][table["target"] == "fear"])) <= {0.0, 1.0}
  assert "Fear (binary): AP" in capsys.readouterr().out


def test_missing_dataset_says_how_to_build_it_in_one_line_then_the_hint(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-m", "experiments.eimt16_global", f"--config.data_dir={tmp_path}",
       f"--workdir={tmp_path / 'w'}"], capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 1
  assert out.stderr.startswith("error: The eimt16_global dataset (config excerpt) is not built")
  assert "tfds build datasets/eimt16_global --config=excerpt --manual_dir=" in out.stderr
  assert "Traceback" not in out.stderr
  bad = subprocess.run(
      [sys.executable, "-m", "experiments.cognimuse_loo", "--config.dataset=synthetic",
       "--config.batch_size=0", "--config.learning_rate=nan", f"--workdir={tmp_path / 'w2'}"],
      capture_output=True, text=True, env=env, timeout=300)
  assert bad.returncode == 1 and "Traceback" not in bad.stderr
  assert bad.stderr.splitlines() == [
      "error: batch_size: must be a whole number >= 1; got 0",
      "error: learning_rate: must be a finite number > 0; got nan"]
  assert not os.path.exists(tmp_path / "w2" / "results.json")


def test_model_presets_follow_the_paper():
  c = cognimuse_loo.get_config()
  c.model = "temporal_aan"
  r = train.resolve(c)
  assert (r.learning_rate, r.dropout, r.num_epochs, r.patience) == (1e-3, 0.5, 1000, 30)
  c.model = "feature_aan"
  r = train.resolve(c)
  assert (r.learning_rate, r.dropout, r.num_epochs, r.patience) == (5e-4, 0.1, 500, 30)
  c.learning_rate = 0.01
  assert train.resolve(c).learning_rate == 0.01
  e = train.resolve(eimt16_global.get_config())
  assert (e.learning_rate, e.window, e.target_batch_size) == (0.01, 4, "arousal:40,valence:20")


def test_xla_flags_only_those_the_installed_jaxlib_knows(monkeypatch):
  """jaxlib 0.11 aborts the process on --xla_cpu_use_fusion_emitters (seen on a GPU machine)."""
  jaxlib_version = launch.jaxlib_version  # the real one, before it is replaced below
  for version, wanted in (((0, 10), True), ((0, 11), False), ((1, 0), False)):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    monkeypatch.setattr(launch, "jaxlib_version", lambda v=version: v)
    launch.configure_xla()
    flags = os.environ["XLA_FLAGS"]
    assert ("xla_cpu_use_fusion_emitters" in flags) == wanted, (version, flags)
    assert flags.startswith("--xla_dump_to=/tmp/x") and "multi_thread_eigen=false" in flags
  # Read from the installed metadata: the (major, minor) that jaxlib itself reports, and
  # (0, 0) where jaxlib's metadata is missing.
  import jaxlib.version  # pylint: disable=g-import-not-at-top
  assert jaxlib_version() == tuple(int(p) for p in jaxlib.version.__version__.split(".")[:2])
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  def missing(name):
    raise metadata.PackageNotFoundError(name)
  monkeypatch.setattr(metadata, "version", missing)
  assert jaxlib_version() == (0, 0)


def test_a_kill_while_writing_leaves_a_workdir_the_same_command_completes(tmp_path, monkeypatch):
  """The last checkpoint is complete before the outputs are written, so the rerun trains
  nothing and writes what an uninterrupted run writes."""
  from aan_jax.outputs import plots
  c = _tiny(cognimuse_loo.get_config(), checkpoint_every=1)
  clean = train.train_and_evaluate(c, str(tmp_path / "clean"))

  def killed(*a, **k):
    raise KeyboardInterrupt  # what SIGINT raises; the files on disk are a kill's
  monkeypatch.setattr(plots, "plot_result", killed)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(c, str(tmp_path / "w"))
  assert not (tmp_path / "w" / "results.json").exists()
  monkeypatch.undo()
  again = train.train_and_evaluate(c, str(tmp_path / "w"))
  assert again["timings"]["training"] < clean["timings"]["training"]  # restored, not retrained
  for t in ("arousal", "valence"):
    assert again[t]["mse"] == clean[t]["mse"] and again[t]["pcc"] == clean[t]["pcc"]
  _contract(tmp_path / "w", ("arousal", "valence"), 8)
