"""The three models side by side on a tiny synthetic corpus, with paired differences."""

import json

from aan_jax.training import compare
from experiments import compare_models


def test_compare_models_prints_all_three_and_their_paired_differences(tmp_path, capsys):
  c = compare_models.get_config()
  c.models = "aan"  # the AAN family only (the baselines: tests/test_engine_lstm.py)
  c.dataset = "synthetic"
  c.synthetic.segments_per_movie = 10
  c.synthetic.num_movies = 3
  c.num_epochs = 1
  c.patience = 1
  c.num_layers = 1
  c.modalities = "vggish"
  c.batch_size = 6
  c.plots = False
  c.bootstrap = 20
  c.compilation_cache = ""
  results = compare.compare_models(c, str(tmp_path))
  assert list(results) == ["feature_aan", "temporal_aan", "feature_temporal_aan"]
  # Each model ran with its own paper hyperparameters.
  assert results["feature_aan"]["config"]["learning_rate"] == 5e-4
  assert results["temporal_aan"]["config"]["dropout"] == 0.5
  out = capsys.readouterr().out
  table = out.split("MSE and PCC over all test predictions pooled.")[-1]
  for label in ("Feature AAN (vggish)", "Temporal AAN (vggish)", "Feature+Temporal AAN (vggish)"):
    assert label in table
  assert "paper:" not in table  # the paper's rows only for COGNIMUSE with all features
  assert "feature_aan - temporal_aan, arousal MSE" in out
  with open(tmp_path / "comparison.json") as f:
    saved = json.load(f)
  assert saved["models"]["temporal_aan"]["valence"]["mse"] == results["temporal_aan"]["valence"]["mse"]
  d = saved["paired_differences"]["feature_aan - temporal_aan/valence/mse"]
  want = results["feature_aan"]["valence"]["mse"] - results["temporal_aan"]["valence"]["mse"]
  assert abs(d["difference"] - want) < 1e-9 and d["n"] == results["feature_aan"]["valence"]["n"]
