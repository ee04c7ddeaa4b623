"""Child process of tests/test_engine_lstm.py: every baseline through every launcher, and a
learning-rate sweep as one program, with the launchers' XLA settings.

    python tests/engine_lstm_launchers.py WORKDIR    # prints a JSON line last; exit 0 = passed
"""

import dataclasses
import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aan_jax.training import launch  # pylint: disable=wrong-import-position

launch.configure_xla()  # before JAX starts, as `python -m experiments.*` does

# pylint: disable=wrong-import-position,g-import-not-at-top
import jax
import numpy as np

from aan_jax.data import corpora
from aan_jax.engine import core as engine
from aan_jax.evaluation import pooled as evaluate
from aan_jax.export import core as export
from aan_jax.training import regression as train
from experiments import cognimuse_loo, eimt16_global, mediaeval_continuous
import test_engine_lstm as T


def tiny(c, model, **kw):
  c.model = model
  c.synthetic.segments_per_movie = 12
  c.synthetic.num_movies = 4
  c.synthetic.num_train = 40
  c.synthetic.num_test = 10
  c.num_epochs = 2
  c.patience = 1
  c.hidden = 8
  c.modalities = "audio"
  c.batch_size = 6
  c.bootstrap = 20
  c.dataset = "synthetic"
  c.plots = False
  c.encoder_impl = "xla"
  c.update(kw)
  return c


def reloaded_models_reproduce(workdir, corpus):
  """Every exported model, reloaded, predicts its test groups (whole films from a zero
  state) as the engine did, to float32 rounding."""
  table = evaluate.read_predictions(str(workdir / "predictions.csv"))
  models = export.load_models(str(workdir))
  for m in models:
    rows = table["run"] == m.name
    assert rows.any(), m.name
    for g in sorted(set(table["group"][rows].tolist())):
      h = corpus.groups.index(g)
      n = int(corpus.mask[h].sum())
      pred = m.predict({k: corpus.features[k][h, :n] for k in m.modalities})
      sel = rows & (table["group"] == g)
      got = pred[table["item"][sel].astype(int)].astype(np.float32)
      np.testing.assert_allclose(got, table["prediction"][sel], rtol=5e-6, atol=1e-6)
  return models, table


def launchers(model, root):
  done = []
  # COGNIMUSE, leave one movie out.
  c = tiny(cognimuse_loo.get_config(), model)
  res = train.train_and_evaluate(c, str(root / "loo"))
  assert res["model"] == model and np.isfinite(res["arousal"]["mse"]), res
  models, _ = reloaded_models_reproduce(root / "loo", corpora.load(train.resolve(c)))
  assert len(models) == 8
  done.append(f"{model}/cognimuse_loo")
  # EIMT16: fixed split over excerpts, labels on 1-5, a tanh head mapped onto (1, 5).
  c = tiny(eimt16_global.get_config(), model, target_batch_size="")  # one program
  res = train.train_and_evaluate(c, str(root / "eimt16"))
  assert res["config"]["output_range"] == "1,5" and res["arousal"]["n"] == 10
  _, table = reloaded_models_reproduce(root / "eimt16", corpora.load(train.resolve(c)))
  if model != "linear":
    assert ((table["prediction"] > 1) & (table["prediction"] < 5)).all()
  done.append(f"{model}/eimt16_global")
  # MediaEval: official split; valence (tanh head) and fear (logit head, class-weighted
  # BCE) as two programs, one per task.
  # (The LSTM with both tasks; the others with fear alone, one program fewer each.)
  targets = ("valence", "fear") if model == "lstm" else ("fear",)
  c = tiny(mediaeval_continuous.get_config(), model, targets=targets)
  c.synthetic.num_movies = 8
  c.validation_groups = 1
  res = mediaeval_continuous.run(c, str(root / "me"))
  assert res["fear"]["task"] == "binary" and 0 <= res["fear"]["ap"] <= 1
  with open(root / "me" / "models" / "index.json") as f:
    index = json.load(f)["models"]
  if model == "lstm":
    assert {e["task"] for e in index} == {"regression", "binary"}
    assert sorted(os.listdir(root / "me" / "checkpoints")) == ["batch6_binary",
                                                               "batch6_regression"]
  _, table = reloaded_models_reproduce(root / "me", corpora.load(train.resolve(c)))
  fear = table["prediction"][table["target"] == "fear"]
  assert ((fear >= 0) & (fear <= 1)).all()   # probabilities, from the logit head
  done.append(f"{model}/mediaeval_continuous")
  return done


def sweep():
  """Two learning rates: one compiled program; a point's runs equal that rate alone."""
  traces = []
  impl = engine._chunk_impl
  def counted(*a):
    traces.append(1)
    return impl(*a)
  engine._chunk_impl = counted
  try:
    corpus = T.ragged_corpus()
    c = T.seq_config(targets=("arousal", "valence"), num_epochs=2, batch_size=3)
    c.sweep.learning_rate = "1e-3,3e-2"
    res = train.train(corpus, c)
  finally:
    engine._chunk_impl = impl
  assert len(traces) == 1 and len(res.runs) == 2 * 5 * 2
  summary, _ = train.evaluate(res, 10)
  assert len(summary["sweep"]["points"]) == 2
  # A point's runs train as that rate alone in a program of its own (with their ids).
  cfg = T.seq_config(targets=("arousal", "valence"), num_epochs=2, batch_size=3,
                     learning_rate=3e-2)
  runs = engine.make_runs(cfg.targets, res.folds, len(corpus.groups), [res.points[1]])
  runs = dataclasses.replace(runs, run_id=np.asarray(
      [engine.stable_id(n.replace("/p0", "/p1")) for n in runs.names], np.int32))
  eng = engine.Engine(corpus, cfg, cfg.targets, runs, "off")
  pred = eng.predict(eng.run_chunk(eng.init_state(), 2)["best_params"], "test")
  sel = np.flatnonzero(res.runs.point == 1)
  assert [res.runs.names[r].replace("/p1", "/p0") for r in sel] == list(runs.names)
  np.testing.assert_allclose(pred, res.test_predictions[sel], rtol=1e-4, atol=2e-5)
  # The two rates trained differently.
  assert np.abs(res.test_predictions[sel] - res.test_predictions[res.runs.point == 0]).max() > 1e-3
  return len(traces)


def main(workdir):
  root = pathlib.Path(workdir)
  done = []
  for model in ("lstm", "lstm_late_fusion", "linear"):
    done += launchers(model, root / model)
  print(json.dumps({"launchers": done, "sweep_traces": sweep(),
                    "devices": len(jax.local_devices())}))


if __name__ == "__main__":
  main(sys.argv[1])
