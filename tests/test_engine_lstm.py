"""The baselines in the engine: stateful training over consecutive windows, launchers, export."""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aan_jax.models import baselines
from aan_jax.data import corpus as data
from aan_jax import engine
from aan_jax.tasks import losses as metrics
from aan_jax.data import protocols
from aan_jax.data import synthetic
from aan_jax.training import regression as train

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
  eng = engine.Engine(corpus, c, runs, targets=c.targets,
                      early_stopping=train.early_stopping_mode(c))
  return eng, folds[fold]


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
  k_perm, _ = jax.random.split(jax.random.fold_in(eng._train_keys, 0))
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
  np.testing.assert_array_equal(np.asarray(state["history"]["train_loss"]), np.asarray(state2["history"]["train_loss"]))
  assert np.isfinite(np.asarray(state["history"]["train_loss"])).all()


def test_each_baseline_through_each_launcher_and_a_sweep_in_one_program(tmp_path):
  # In a process of its own with the launchers' XLA settings (`python -m experiments.*`
  # sets them before JAX starts: classic CPU emitters, one device per core), so that the
  # twelve programs compile in a fraction of the time they take in this process. Four fake
  # CPU devices (the launchers keep a device count already set).
  env = dict(os.environ, PYTHONPATH=os.getcwd(),
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  proc = subprocess.run(
      [sys.executable, os.path.join(os.path.dirname(__file__), "engine_lstm_launchers.py"),
       str(tmp_path)], env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  done = json.loads(proc.stdout.strip().splitlines()[-1])
  assert done["launchers"] == [f"{m}/{l}" for m in ("lstm", "lstm_late_fusion", "linear")
                               for l in ("cognimuse_loo", "eimt16_global",
                                         "mediaeval_continuous")]
  assert done["sweep_traces"] == 1 and done["devices"] == 4
  # results.json records the devices the run axis was split over: all four, since a
  # program's runs are padded to a multiple of the devices (aan_jax.engine.split): 8 = 4
  # films x 2 targets; the 2 targets of one split and MediaEval's 1 run per task, padded.
  assert done["recorded_devices"] == {
      f"{m}/{l}": 4 for m in ("lstm", "lstm_late_fusion", "linear")
      for l in ("cognimuse_loo", "eimt16_global", "mediaeval_continuous")}


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


def _fake_results(mse, targets=("arousal", "valence")):
  r = {"targets": list(targets), "early_stopping_label": "validation movie"}
  for t in targets:
    r[t] = ({"task": "binary", "ap": 0.4, "map": 0.5} if t == "fear"
            else {"task": "regression", "mse": mse, "pcc": 0.5})
  return r


def test_comparison_prints_baselines_beside_the_aan_family_and_the_published_rows():
  from aan_jax.training import compare
  from aan_jax.outputs import results as report
  assert compare.model_names("all") == ["feature_aan", "temporal_aan", "feature_temporal_aan",
                                        "lstm", "lstm_late_fusion", "linear"]
  assert compare.model_names("baselines,feature_aan") == ["lstm", "lstm_late_fusion", "linear",
                                                          "feature_aan"]
  results = {m: _fake_results(0.1 + i / 100) for i, m in enumerate(compare.model_names("all"))}
  text = report.format_comparison(results, "all", "cognimuse", paper=True)
  rows = {}
  for line in text.splitlines():
    label, *figs = re.split(r"\s{2,}", line.strip())
    rows[label] = figs
  assert rows["LSTM (audio+video)"] == ["0.130", "0.500", "0.130", "0.500"]
  assert rows["LSTM, late fusion (audio+video)"][0] == "0.140"
  assert rows["Linear (audio+video)"][0] == "0.150"
  # Seed 001, Table I: the paper's rows and Sivaprasad et al.'s LSTM, MSE / PCC.
  assert rows["paper: Sivaprasad et al. LSTM (audio+video)"] == ["0.080", "0.840", "0.210", "0.500"]
  assert rows["paper: Feature AAN (audio+video)"] == ["0.124", "0.630", "0.178", "0.572"]
  assert rows["paper: Temporal AAN (audio+video)"] == ["0.153", "0.551", "0.238", "0.319"]
  audio = report.format_comparison(results, "audio", "cognimuse", paper=True)
  assert "paper: Feature AAN (audio)" in audio and "0.125" in audio and "0.621" in audio
  assert "Sivaprasad" not in audio   # their figures are for audio and video together
  video = report.format_comparison(results, "video", "cognimuse", paper=True)
  assert "0.152" in video and "0.267" in video
  eimt = report.format_comparison(results, "all", "eimt16_global", paper=True)
  assert "paper: UMFN (Yi et al. 2022)" in eimt and "0.742" in eimt
  assert "paper:" not in report.format_comparison(results, "all", "synthetic",
                                                  paper=bool(report.paper_rows("synthetic", "audio+video")))
  fear = {m: _fake_results(0.1, ("valence", "fear")) for m in ("lstm", "linear")}
  assert "Fear AP" in report.format_comparison(fear, "audio", "liris_accede_continuous")
