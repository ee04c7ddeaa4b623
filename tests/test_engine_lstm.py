"""The baselines in the engine: stateful training over consecutive windows, launchers, export."""

import dataclasses
import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aan_jax import baselines, data, engine, evaluate, export, metrics, protocols, synthetic
from aan_jax import train
from experiments import cognimuse_loo, eimt16_global, mediaeval_continuous

LENGTHS = (13, 9, 11, 7, 12)   # films of different lengths: padding past each one's end


def ragged_corpus(seed=3):
  """Five COGNIMUSE-shaped films of different lengths (vggish only is used)."""
  full = synthetic.make_corpus(segments_per_movie=max(LENGTHS), seed=seed, num_movies=5)
  movies = {}
  for g, n in enumerate(LENGTHS):
    movies[full.groups[g]] = {k: full.features[k][g, :n] for k in full.features} | {
        t: full.targets[t][g, :n] for t in ("arousal", "valence")}
  return data.Corpus.from_movies("synthetic", movies)


def seq_config(**kw):
  c = train.get_config()
  c.model = "lstm"
  c.modalities = "vggish"
  c.hidden = 8
  c.projection = 4
  c.window = 4
  c.batch_size = 1        # 2 films per row batch here: 3 passes over the 5 films
  c.num_epochs = 1
  c.patience = 0
  c.dropout = 0.0
  c.learning_rate = 1e-2
  c.targets = ("arousal",)
  c.bootstrap = 20
  c.encoder_impl = "xla"  # no fused AAN encoder to build: these are LSTMs
  c.update(kw)
  return c


def one_run_engine(corpus, c, fold=0):
  folds = protocols.make_folds(corpus, "leave_one_out", "validation", 0, 0.1, 1)
  runs = engine.make_runs(c.targets, [folds[fold]], len(corpus.groups), train.sweep_points(c))
  return engine.Engine(corpus, c, c.targets, runs, train.early_stopping_mode(c)), folds[fold]


def reference_epoch(corpus, c, eng, params, norm):
  """The thesis' stateful loop, written plainly: films in the engine's shuffled order, b at a
  time; each row walks its film in windows of W, the LSTM state carried (as a constant)
  from window to window, one Adam step per window on the run's training films' items."""
  module = baselines.LSTMBaseline(("vggish",), projection=c.projection, hidden=c.hidden,
                                  input_dropout=0.0, dropout=0.0)
  tx = optax.adam(c.learning_rate)
  opt = tx.init(params)
  b, w = eng.plan.batch, eng.plan.window
  g_total, items = corpus.mask.shape
  k_perm, _ = jax.random.split(jax.random.fold_in(eng._train_key, 0))
  order = np.argsort(np.asarray(jax.random.uniform(k_perm, (g_total,))), kind="stable")
  weight = eng.runs.train_weight[0]
  x_all = (corpus.features["vggish"] - norm["mean"]) / norm["std"]
  y_all = corpus.targets["arousal"]

  def loss_fn(p, x, carry, mask, y, wt):
    out, new = module.apply({"params": p}, {"vggish": x}, carry, deterministic=True, mask=mask)
    return (metrics.mse(out.reshape(-1), y.reshape(-1), wt.reshape(-1))
            + 1 - metrics.pearson(out.reshape(-1), y.reshape(-1), wt.reshape(-1))), new
  grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  windows = 0
  for start in range(0, g_total, b):
    films = list(order[start:start + b])
    carry = module.initial_carry(b)
    for s0 in range(0, items, w):
      x = np.zeros((b, w, 128), np.float32)
      mask = np.zeros((b, w), bool)
      y = np.zeros((b, w), np.float32)
      wt = np.zeros((b, w), np.float32)
      for row, g in enumerate(films):
        for j in range(w):
          i = s0 + j
          if i < items and corpus.mask[g, i]:
            x[row, j], y[row, j], mask[row, j] = x_all[g, i], y_all[g, i], True
            wt[row, j] = weight[g]
      (_, new_carry), grads = grad(params, x, carry, mask, y, wt)
      if wt.sum() > 0:
        updates, opt = tx.update(grads, opt, params)
        params = optax.apply_updates(params, updates)
        windows += 1
      carry = new_carry
  return params, windows


def test_sequential_epoch_equals_a_plain_stateful_loop():
  corpus = ragged_corpus()
  c = seq_config()
  eng, _ = one_run_engine(corpus, c)
  assert (eng.plan.batch, eng.plan.window) == (2, 4)
  assert eng.plan.steps == 3 * math.ceil(max(LENGTHS) / 4)   # 3 passes x 4 windows
  state = eng.init_state()
  start = jax.tree.map(lambda x: np.asarray(x[0]), state["params"])
  norm = {k: eng.norm[k]["vggish"][0] for k in ("mean", "std")}
  state = eng.run_chunk(state, 1)
  got = jax.tree.map(lambda x: np.asarray(x[0]), state["params"])
  want, windows = reference_epoch(corpus, c, eng, start, norm)
  assert windows >= 4
  moved = max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(start)))
  assert moved > 1e-3   # the epoch trained
  chex.assert_trees_all_close(got, want, atol=1e-5, rtol=0)


def test_held_out_and_validation_films_do_not_affect_training():
  corpus = ragged_corpus()
  c = seq_config(dropout=0.5, num_epochs=2)
  eng, fold = one_run_engine(corpus, c, fold=1)
  state = eng.run_chunk(eng.init_state(), 2)
  # Other features and labels on the run's test and validation films.
  rng = np.random.default_rng(0)
  other = data.Corpus(corpus.name, corpus.groups,
                      {k: v.copy() for k, v in corpus.features.items()},
                      {k: v.copy() for k, v in corpus.targets.items()}, corpus.mask,
                      corpus.start_s, corpus.end_s)
  for g in list(fold.test) + list(fold.validation):
    for k in other.features:
      other.features[k][g] = rng.standard_normal(other.features[k][g].shape) * 5
    for k in other.targets:
      other.targets[k][g] = rng.uniform(-1, 1, other.targets[k][g].shape)
  eng2, _ = one_run_engine(other, c, fold=1)
  state2 = eng2.run_chunk(eng2.init_state(), 2)
  chex.assert_trees_all_equal(state["params"], state2["params"])
  np.testing.assert_array_equal(np.asarray(state["train_loss"]), np.asarray(state2["train_loss"]))
  assert np.isfinite(np.asarray(state["train_loss"])).all()


def _tiny(c, model, **kw):
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


def _reloaded_models_reproduce(workdir, corpus):
  table = evaluate.read_predictions(str(workdir / "predictions.csv"))
  models = export.load_models(str(workdir))
  for m in models:
    rows = table["run"] == m.name
    for g in sorted(set(table["group"][rows].tolist())):
      h = corpus.groups.index(g)
      n = int(corpus.mask[h].sum())
      pred = m.predict({k: corpus.features[k][h, :n] for k in m.modalities})
      sel = rows & (table["group"] == g)
      got = pred[table["item"][sel].astype(int)].astype(np.float32)
      np.testing.assert_allclose(got, table["prediction"][sel], rtol=0, atol=1e-6)
  return models, table


@pytest.mark.parametrize("model", ["lstm", "lstm_late_fusion", "linear"])
def test_each_baseline_trains_through_each_launcher(tmp_path, model):
  from aan_jax import corpora
  # COGNIMUSE, leave one movie out.
  c = _tiny(cognimuse_loo.get_config(), model)
  res = train.train_and_evaluate(c, str(tmp_path / "loo"))
  assert res["model"] == model and np.isfinite(res["arousal"]["mse"])
  models, _ = _reloaded_models_reproduce(tmp_path / "loo", corpora.load(train.resolve(c)))
  assert len(models) == 8
  # EIMT16: fixed split over excerpts, labels on 1-5, a tanh head mapped onto (1, 5).
  c = _tiny(eimt16_global.get_config(), model)
  res = train.train_and_evaluate(c, str(tmp_path / "eimt16"))
  assert res["config"]["output_range"] == "1,5" and res["arousal"]["n"] == 10
  _, table = _reloaded_models_reproduce(tmp_path / "eimt16", corpora.load(train.resolve(c)))
  if model != "linear":
    assert ((table["prediction"] > 1) & (table["prediction"] < 5)).all()
  # MediaEval: official split; valence/arousal and fear (a logit head, class-weighted BCE).
  c = _tiny(mediaeval_continuous.get_config(), model)
  c.synthetic.num_movies = 8
  c.validation_groups = 1
  res = mediaeval_continuous.run(c, str(tmp_path / "me"))
  assert res["fear"]["task"] == "binary" and 0 <= res["fear"]["ap"] <= 1
  with open(tmp_path / "me" / "models" / "index.json") as f:
    index = json.load(f)["models"]
  assert {e["task"] for e in index} == {"regression", "binary"}
  c2 = train.resolve(c)
  with c2.unlocked():
    c2.tfds_config = "mediaeval2017"
  models, table = _reloaded_models_reproduce(tmp_path / "me", corpora.load(c2))
  fear = table["prediction"][table["target"] == "fear"]
  assert ((fear >= 0) & (fear <= 1)).all()   # probabilities, from the logit head


def test_a_learning_rate_sweep_trains_as_one_program(monkeypatch):
  traces = []
  impl = engine._chunk_impl
  def counted(*a):
    traces.append(1)
    return impl(*a)
  monkeypatch.setattr(engine, "_chunk_impl", counted)
  corpus = ragged_corpus()
  c = seq_config(targets=("arousal", "valence"), num_epochs=2, batch_size=3)
  c.sweep.learning_rate = "1e-3,3e-2"
  res = train.train(corpus, c)
  assert len(traces) == 1 and len(res.runs) == 2 * 5 * 2
  summary, _ = train.evaluate(res, 10)
  assert len(summary["sweep"]["points"]) == 2
  # A point's runs train as that rate alone in a program of its own (with their ids).
  cfg = seq_config(targets=("arousal", "valence"), num_epochs=2, batch_size=3,
                   learning_rate=3e-2)
  runs = engine.make_runs(cfg.targets, res.folds, len(corpus.groups), [res.points[1]])
  runs = dataclasses.replace(runs, run_id=np.asarray(
      [engine.stable_id(n.replace("/p0", "/p1")) for n in runs.names], np.int32))
  eng = engine.Engine(corpus, cfg, cfg.targets, runs, "off")
  pred = eng.predict(eng.run_chunk(eng.init_state(), 2)["best_params"], "test")
  sel = np.flatnonzero(res.runs.point == 1)
  assert [res.runs.names[r].replace("/p1", "/p0") for r in sel] == list(runs.names)
  np.testing.assert_allclose(pred, res.test_predictions[sel], rtol=1e-4, atol=2e-5)


def test_fear_head_is_a_logit_and_regression_heads_tanh_in_range():
  c = seq_config(output_range="1,5")
  for task, lo, hi in (("regression", 1, 5), ("binary", -np.inf, np.inf)):
    cfg = c.copy_and_resolve_references()
    with cfg.unlocked():
      cfg._task = task
    m = engine.get_model_spec("lstm").build(cfg)
    assert m.task == task and m.output_range == (1.0, 5.0)
  with pytest.raises(train.ConfigError, match="output_range"):
    train.validate(seq_config(output_range="5,1"))
