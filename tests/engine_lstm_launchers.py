"""Child process of tests/test_engine_lstm.py: every baseline through every launcher, and a
learning-rate sweep as one program, with the launchers' XLA settings.

    python tests/engine_lstm_launchers.py WORKDIR    # prints a JSON line last; exit 0 = passed
"""

import csv
import dataclasses
import json
import math
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
from aan_jax import engine
from aan_jax.engine import core as engine_core
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


def figures_match_predictions(res, workdir):
  """results.json's pooled test figures are those of predictions.csv's rows, recomputed here
  with numpy and scikit-learn (not the library's metrics): the MSE and Pearson's r of each
  regression target; fear's AP pooled over all rows and its MAP (the mean AP of the films
  with a fear segment)."""
  from sklearn.metrics import average_precision_score  # pylint: disable=g-import-not-at-top
  with open(workdir / "predictions.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  close = lambda a, b: math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
  for t in res["targets"]:
    mine = [r for r in rows if r["target"] == t]
    p = np.asarray([float(r["prediction"]) for r in mine])
    y = np.asarray([float(r["truth"]) for r in mine])
    figs = res[t]
    assert figs["n"] == len(mine) > 0 and np.isfinite(y).all(), (t, figs["n"], len(mine))
    if figs["task"] == "binary":
      positive = y > 0.5
      assert positive.any() and not positive.all(), t  # an AP that can be told apart
      ap = average_precision_score(positive, p)
      groups = np.asarray([r["group"] for r in mine])
      per = [average_precision_score(positive[groups == g], p[groups == g])
             for g in np.unique(groups) if positive[groups == g].any()]
      assert close(figs["ap"], ap) and close(figs["map"], float(np.mean(per))), (
          t, figs["ap"], ap, figs["map"], per)
    else:
      mse, pcc = float(np.mean((p - y) ** 2)), float(np.corrcoef(p, y)[0, 1])
      assert close(figs["mse"], mse) and close(figs["pcc"], pcc), (t, figs, mse, pcc)


def recorded_devices(workdir):
  with open(workdir / "results.json") as f:
    return json.load(f)["devices"]


def launchers(model, root):
  done, devices = [], {}
  # COGNIMUSE, leave one movie out.
  c = tiny(cognimuse_loo.get_config(), model)
  res = train.train_and_evaluate(c, str(root / "loo"))
  assert res["model"] == model, res
  figures_match_predictions(res, root / "loo")
  devices[f"{model}/cognimuse_loo"] = recorded_devices(root / "loo")
  models, _ = reloaded_models_reproduce(root / "loo", corpora.load(train.resolve(c)))
  assert len(models) == 8
  done.append(f"{model}/cognimuse_loo")
  # EIMT16: fixed split over excerpts, labels on 1-5, a tanh head mapped onto (1, 5).
  c = tiny(eimt16_global.get_config(), model, target_batch_size="")  # one program
  res = train.train_and_evaluate(c, str(root / "eimt16"))
  assert res["config"]["output_range"] == "1,5" and res["arousal"]["n"] == 10
  figures_match_predictions(res, root / "eimt16")
  devices[f"{model}/eimt16_global"] = recorded_devices(root / "eimt16")
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
  assert res["fear"]["task"] == "binary"
  figures_match_predictions(res, root / "me")  # AP and MAP as scikit-learn computes them
  devices[f"{model}/mediaeval_continuous"] = recorded_devices(root / "me")
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
  return done, devices


def sweep():
  """Two learning rates: one compiled program; a point's runs equal that rate alone."""
  traces = []
  impl = engine_core._chunk_impl
  def counted(*a):
    traces.append(1)
    return impl(*a)
  engine_core._chunk_impl = counted
  try:
    corpus = T.ragged_corpus()
    # patience 5 > 2 epochs: folds carve validation groups to select on, and no run stops.
    c = T.seq_config(targets=("arousal", "valence"), num_epochs=2, batch_size=3, patience=5)
    c.sweep.learning_rate = "1e-3,3e-2"
    res = train.train(corpus, c)
  finally:
    engine_core._chunk_impl = impl
  assert len(traces) == 1 and len(res.runs) == 2 * 5 * 2
  summary, _ = train.evaluate(res, 10)
  assert len(summary["sweep"]["points"]) == 2
  # A point's runs train as that rate alone in a program of its own (with their ids).
  cfg = T.seq_config(targets=("arousal", "valence"), num_epochs=2, batch_size=3,
                     learning_rate=3e-2, patience=5)
  runs = engine.make_runs(cfg.targets, res.folds, len(corpus.groups), [res.points[1]])
  runs = dataclasses.replace(runs, run_id=np.asarray(
      [engine.stable_id(n.replace("/p0", "/p1")) for n in runs.names], np.int32))
  eng = engine.Engine(corpus, cfg, runs, targets=cfg.targets, early_stopping="validation")
  pred = eng.predict(eng.best(eng.run_chunk(eng.init_state(), 2)), "test")
  sel = np.flatnonzero(res.runs.point == 1)
  assert [res.runs.names[r].replace("/p1", "/p0") for r in sel] == list(runs.names)
  np.testing.assert_allclose(pred, res.test_predictions[sel], rtol=1e-4, atol=2e-5)
  # The two rates trained differently.
  assert np.abs(res.test_predictions[sel] - res.test_predictions[res.runs.point == 0]).max() > 1e-3
  return len(traces)


def main(workdir):
  root = pathlib.Path(workdir)
  done, devices = [], {}
  for model in ("lstm", "lstm_late_fusion", "linear"):
    names, recorded = launchers(model, root / model)
    done += names
    devices.update(recorded)
  print(json.dumps({"launchers": done, "sweep_traces": sweep(),
                    "devices": len(jax.local_devices()), "recorded_devices": devices}))


if __name__ == "__main__":
  main(sys.argv[1])
