"""Tests of the leave-one-movie-out launcher (tiny synthetic runs, a missing dataset)."""

import json
import os

import pytest

from experiments import cognimuse_loo


def test_missing_cognimuse_says_how_to_build_it_and_how_to_run_the_demo(tmp_path):
  c = cognimuse_loo.resolve(cognimuse_loo.get_config())
  assert c.num_epochs == 500 and c.patience == 30  # the paper's preset
  with c.unlocked():
    c.data_dir = str(tmp_path / "no_tfds_here")
  with pytest.raises(SystemExit) as e:
    cognimuse_loo.load_corpus(c)
  msg = str(e.value)
  assert "tfds build datasets/cognimuse --manual_dir=" in msg
  assert "--config.dataset=synthetic" in msg


def test_synthetic_run_writes_results_table_and_plots(tmp_path, capsys, fresh_compilation_cache):
  c = cognimuse_loo.get_config()
  c.dataset = "synthetic"
  c.synthetic.segments_per_movie = 12
  c.synthetic.num_movies = 3
  c.num_epochs = 2
  c.patience = 1
  c.num_layers = 1
  c.modalities = "audio"
  c.batch_size = 6
  c.compilation_cache = str(tmp_path / "xla")
  out = cognimuse_loo.run(c, str(tmp_path))
  # The training, prediction and init programs were written to the persistent cache.
  assert len([f for f in os.listdir(tmp_path / "xla") if f.endswith("-cache")]) >= 3
  with open(tmp_path / "results.json") as f:
    res = json.load(f)
  for t in ("arousal", "valence"):
    assert set(res[t]) >= {"mse", "pcc", "per_movie"}
    assert set(res[t]["per_movie"]) == {"BMI", "LOR", "GLA"}
  assert res["early_stopping"] == "validation" and res["seconds"] > 0
  assert "training movies" in res["early_stopping_label"]
  assert res == json.loads(json.dumps(out))
  for mv in ("BMI", "LOR", "GLA"):
    assert os.path.getsize(tmp_path / "plots" / f"{mv}.png") > 1000
  table = capsys.readouterr().out
  assert "Feature AAN (audio)" in table and "Arousal MSE" in table and "GLA" in table


def test_xla_flags_only_those_the_installed_jaxlib_knows(monkeypatch):
  """jaxlib 0.11 aborts the process on --xla_cpu_use_fusion_emitters (seen on a GPU machine)."""
  for version, wanted in (((0, 10), True), ((0, 11), False), ((1, 0), False)):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    monkeypatch.setattr(cognimuse_loo, "_jaxlib_version", lambda v=version: v)
    cognimuse_loo._configure_xla()  # pylint: disable=protected-access
    flags = os.environ["XLA_FLAGS"]
    assert ("xla_cpu_use_fusion_emitters" in flags) == wanted, (version, flags)
    assert flags.startswith("--xla_dump_to=/tmp/x") and "multi_thread_eigen=false" in flags
  assert cognimuse_loo._jaxlib_version() >= (0, 4)  # read from the installed metadata
