"""Tests of the training engine on tiny synthetic corpora."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import chex
import numpy as np
import pytest

from aan_jax import engine
from aan_jax.engine import core as engine_core
from aan_jax.evaluation import pooled as evaluate
from aan_jax.export import core as export
from aan_jax.tasks import losses as metrics
from aan_jax.data import protocols
from aan_jax.data import synthetic
from aan_jax.training import regression as train


def tiny_config(**kw):
  c = train.get_config()
  c.num_layers = 1
  c.batch_size = 6
  c.num_epochs = 4
  c.patience = 2
  c.learning_rate = 3e-3
  c.checkpoint_every = 2
  c.targets = ("arousal",)
  c.modalities = "vggish,emobase2010"  # small programs compile fast
  c.bootstrap = 50
  c.update(kw)
  return c


@pytest.fixture(scope="module")
def corpus():
  return synthetic.make_corpus(segments_per_movie=16, seed=1, num_movies=4)


def test_synthetic_is_deterministic_and_cognimuse_shaped():
  a = synthetic.make_corpus(segments_per_movie=8, seed=3)
  b = synthetic.make_corpus(segments_per_movie=8, seed=3)
  assert a.movies == synthetic.MOVIES and a.mask.shape == (12, 8) and a.mask.all()
  assert a.features["resnet50"].shape == (12, 8, 2048)
  np.testing.assert_array_equal(a.features["i3d"], b.features["i3d"])
  np.testing.assert_array_equal(a.targets["valence"], b.targets["valence"])
  c = synthetic.make_corpus(segments_per_movie=8, seed=4)
  assert not np.allclose(a.targets["arousal"], c.targets["arousal"])
  # emobase2010 has openSMILE-like scales (hundreds to thousands), the others do not.
  assert np.abs(a.features["emobase2010"]).mean() > 100
  assert np.abs(a.features["vggish"]).mean() < 10


def test_leave_one_out_folds_hold_out_and_validate_on_distinct_movies():
  c = synthetic.make_corpus(segments_per_movie=4, num_movies=12)
  folds = protocols.leave_one_out(c, "validation", seed=0)
  runs = engine.make_runs(("arousal", "valence"), folds, 12, train.sweep_points(tiny_config()))
  assert len(runs) == 24
  for r in range(len(runs)):
    held, val = runs.test_idx[r, 0], runs.val_idx[r, 0]
    assert held != val and runs.train_weight[r, held] == 0 and runs.train_weight[r, val] == 0
    assert runs.train_weight[r].sum() == 10
  paper = protocols.leave_one_out(c, "held_out")
  assert all(f.validation == f.test and len(f.train) == 11 for f in paper)
  assert len(set(runs.run_id.tolist())) == 24  # every run its own PRNG stream


def test_all_folds_at_once_equal_each_fold_alone(corpus):
  cfg = tiny_config(num_epochs=3, targets=("arousal", "valence"))
  folds = protocols.leave_one_out(corpus, "validation", cfg.seed)
  together = train.train(corpus, cfg)
  assert len(together.runs) == 8
  for t, h in (("valence", 1), ("arousal", 3)):
    alone = train.train(corpus, tiny_config(num_epochs=3, targets=(t,)), folds=[folds[h]])
    r = together.runs.names.index(f"{t}/{corpus.groups[h]}/seed0/p0")
    np.testing.assert_allclose(alone.test_predictions[0], together.test_predictions[r],
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(alone.train_loss[0], together.train_loss[r], rtol=1e-4, atol=1e-5)
    assert alone.best_epoch[0] == together.best_epoch[r]


def test_early_stopping_freezes_a_fold_at_its_best_epoch(corpus):
  # Held-out mode: the early-stopping loss is then measured on the very movie whose
  # predictions are returned, so they can be checked against the best epoch's loss.
  cfg = tiny_config(num_epochs=12, patience=1, learning_rate=2e-2, checkpoint_every=12,
                    early_stopping="held_out", seed=1)
  res = train.train(corpus, cfg)
  assert res.early_stopping == "held_out"
  stopped = np.flatnonzero(res.epochs_trained < cfg.num_epochs)
  assert len(stopped), "no fold stopped early; the test needs one"
  assert res.epochs_trained.max() > res.epochs_trained[stopped].min()  # the others went on
  for r in stopped:
    best = int(res.best_epoch[r])
    assert res.epochs_trained[r] == best + 1 + cfg.patience
    assert np.isnan(res.val_loss[r, res.epochs_trained[r]:]).all()
    assert np.nanargmin(res.val_loss[r]) == best
    # Its predictions come from the parameters it had at its best epoch.
    h = res.runs.test_idx[r, 0]
    loss = metrics.aan_loss(res.test_predictions[r, 0], corpus.targets["arousal"][h], corpus.mask[h])
    np.testing.assert_allclose(float(loss), res.val_loss[r, best], rtol=1e-4)
    assert float(loss) < res.val_loss[r, res.epochs_trained[r] - 1]


@pytest.fixture(scope="module")
def sweep(corpus):
  """A 2x2 sweep over learning rate and dropout, fear included (4 movies, one without fear
  labels, official dev/test split)."""
  c = synthetic.make_corpus(segments_per_movie=24, seed=5, num_movies=6, fear=True,
                            test_movies=2)
  cfg = tiny_config(num_epochs=4, targets=("arousal", "fear"), protocol="official",
                    validation_groups=1)
  cfg.sweep.learning_rate = "1e-3,2e-2"
  cfg.sweep.dropout = "0.0,0.3"
  result = train.train(c, cfg)
  summary, table = train.evaluate(result, bootstrap=50)
  return c, cfg, result, summary, table


def test_sweep_selects_each_targets_point_on_validation(sweep):
  c, cfg, result, summary, _ = sweep
  assert len(result.runs) == 2 * 4  # targets x grid points (one fold)
  sw = summary["sweep"]
  assert [(p["learning_rate"], p["dropout"]) for p in sw["points"]] == [
      (1e-3, 0.0), (1e-3, 0.3), (2e-2, 0.0), (2e-2, 0.3)]
  for target in ("arousal", "fear"):
    val = [p["validation"][target]["loss"] for p in sw["points"]]
    assert sw["selected"][target] == int(np.argmin(val))
  # The top-level figures are the selected point's test figures.
  i = sw["selected"]["arousal"]
  assert summary["arousal"]["mse"] == pytest.approx(sw["points"][i]["test"]["arousal"]["mse"], rel=1e-12)
  # The evidence is in the summary: per target, the point, what it was chosen on, and every
  # point's validation loss (the same numbers as each point's own entry).
  for target in ("arousal", "fear"):
    on = sw["selected_on"][target]
    assert on["point"] == sw["selected"][target] and on["runs_with_validation"] == 1
    assert on["validation_loss"] == pytest.approx(
        [p["validation"][target]["loss"] for p in sw["points"]], rel=1e-12)


def test_a_sweep_without_validation_is_refused_in_one_line():
  """patience 0 turns early stopping off, so no fold carves validation groups: a sweep would
  have nothing to be selected on, and is refused before anything runs."""
  cfg = tiny_config(patience=0)
  cfg.sweep.learning_rate = "1e-4,3e-3"
  with pytest.raises(train.ConfigError) as e:
    train.validate(cfg)
  assert str(e.value).startswith("sweep: grid points are chosen on validation groups")
  assert len(str(e.value).splitlines()) == 1
  cfg.sweep.patience = "0,5"  # a point with early stopping: folds carve validation groups
  train.validate(cfg)


def test_selection_never_falls_back_to_the_first_point(sweep):
  """A result whose runs have no validation figure cannot select a point: it says so."""
  from aan_jax.evaluation import selection  # pylint: disable=g-import-not-at-top
  _, _, result, _, _ = sweep
  runs = dataclasses.replace(result.runs, val_ok=np.zeros_like(result.runs.val_ok))
  with pytest.raises(selection.SelectionError, match="no grid point has a validation figure"):
    train.evaluate(dataclasses.replace(result, runs=runs), bootstrap=10)


def test_a_grid_point_equals_that_setting_trained_alone(sweep):
  # Learning rate and dropout are per-run values in one program: the sweep's run with
  # (2e-2, 0.3) must train exactly as a plain run with those settings.
  c, cfg, result, _, _ = sweep
  alone_cfg = tiny_config(num_epochs=4, targets=("arousal", "fear"), protocol="official",
                          validation_groups=1, learning_rate=2e-2, dropout=0.3)
  # A plain engine with those settings (concrete rates, one program of its own) and the
  # sweep run's PRNG stream (its id) must give the same numbers.
  folds = result.folds
  runs = engine.make_runs(("arousal", "fear"), folds, len(c.groups), [result.points[3]])
  runs = dataclasses.replace(runs, run_id=np.asarray(
      [engine.stable_id(n.replace("/p0", "/p3")) for n in runs.names], np.int32))
  eng = engine.Engine(c, alone_cfg, runs, targets=("arousal", "fear"),
                      early_stopping="validation")
  state = eng.init_state()
  state = eng.run_chunk(state, 4)
  pred = eng.predict(eng.best(state), "test")
  for j, t in enumerate(("arousal", "fear")):
    r = result.runs.names.index(f"{t}/official/seed0/p3")
    raw = pred[j] if t == "arousal" else 1 / (1 + np.exp(-pred[j]))
    np.testing.assert_allclose(raw, result.test_predictions[r], rtol=2e-4, atol=2e-5)


def test_fear_metrics_equal_scikit_learn(sweep):
  sklearn = pytest.importorskip("sklearn.metrics")
  c, _, _, summary, table = sweep
  sel = table["target"] == "fear"
  y, s, g = table["truth"][sel], table["prediction"][sel], table["group"][sel]
  assert set(np.unique(y)) <= {0.0, 1.0}
  assert summary["fear"]["ap"] == pytest.approx(sklearn.average_precision_score(y, s), abs=1e-12)
  per = [sklearn.average_precision_score(y[g == m], s[g == m]) for m in np.unique(g)
         if y[g == m].any()]
  assert summary["fear"]["map"] == pytest.approx(np.mean(per), abs=1e-12)
  # The unlabelled movie (fear = -1) gives no fear row at all.
  unlabelled = c.groups[-1]
  assert unlabelled not in set(g.tolist())
  rng = np.random.default_rng(0)
  for _ in range(20):  # ties and random scores too
    yy = rng.integers(0, 2, 50)
    ss = rng.integers(0, 6, 50).astype(float)
    if yy.any():
      assert evaluate.average_precision(ss, yy) == pytest.approx(
          sklearn.average_precision_score(yy, ss), abs=1e-12)


def test_class_weighted_fear_does_not_collapse_to_one_class():
  # 10% positives; one movie has no fear labels at all.
  c = synthetic.make_corpus(segments_per_movie=80, seed=2, num_movies=8, fear=True,
                            test_movies=2)
  cfg = tiny_config(num_epochs=15, patience=3, checkpoint_every=15, targets=("fear",),
                    protocol="official", validation_groups=1, modalities="vggish")
  result = train.train(c, cfg)
  summary, table = train.evaluate(result, bootstrap=20)
  f = summary["fear"]
  assert f["ap"] > 2 * f["prevalence"], f
  # Both classes are predicted at the class-balanced decision point (score 0.5), and the
  # positives score higher than the negatives on average.
  score, y = table["prediction"], table["truth"]
  assert 0.02 < np.mean(score >= 0.5) < 0.98
  assert score[y > 0.5].mean() > score[y < 0.5].mean() + 0.1


def test_results_and_predictions_agree_and_models_reproduce_them(tmp_path, monkeypatch):
  from aan_jax.data import corpora
  small = synthetic.make_corpus(segments_per_movie=16, seed=1, num_movies=4)
  monkeypatch.setattr(corpora, "synthetic", lambda config: small)
  cfg = tiny_config(dataset="synthetic", targets=("arousal", "valence"), bootstrap=50)
  out = train.train_and_evaluate(cfg, str(tmp_path))
  table = evaluate.read_predictions(str(tmp_path / "predictions.csv"))
  for t in ("arousal", "valence"):
    sel = table["target"] == t
    p, y = table["prediction"][sel].astype(np.float64), table["truth"][sel].astype(np.float64)
    assert out[t]["mse"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
    assert out[t]["pcc"] == pytest.approx(np.corrcoef(p, y)[0, 1], rel=1e-9)
    assert out[t]["n"] == sel.sum() == small.mask.sum()
    lo, hi = out[t]["interval"]["mse"]
    assert lo <= out[t]["mse"] <= hi
    for g, figs in out[t]["per_group"].items():
      gs = sel & (table["group"] == g)
      assert figs["mse"] == pytest.approx(np.mean((table["prediction"][gs].astype(float)
                                                   - table["truth"][gs]) ** 2), rel=1e-12)
  # Exported models reload (no torch, no TF) and reproduce the test predictions exactly.
  models = export.load_models(str(tmp_path))
  assert len(models) == 8
  for m in models:
    h = small.groups.index(m.fold)
    pred = m.predict({k: small.features[k][h] for k in m.modalities})
    rows = (table["run"] == m.name)
    np.testing.assert_array_equal(pred.astype(np.float32), table["prediction"][rows])
    # The target's pooled test RMSE goes with every model (the predictor's uncertainty for a
    # single model's moments).
    assert m.metadata["test_error"]["rmse"] == pytest.approx(np.sqrt(out[m.target]["mse"]),
                                                             rel=1e-6)
  # TensorBoard event files: one folder per run.
  assert len(os.listdir(tmp_path / "tensorboard")) == 8
  assert os.path.exists(tmp_path / "plots" / "BMI.png")


def test_test_items_never_influence_the_exported_parameters(tmp_path):
  c = synthetic.make_corpus(segments_per_movie=16, seed=1, num_movies=5, test_movies=1)
  cfg = tiny_config(num_epochs=3, protocol="official", validation_groups=1,
                    targets=("arousal", "valence"))
  a = train.train(c, cfg)
  test = c.groups.index(c.splits["test"][0])
  changed = dataclasses.replace(
      c, features={k: v.copy() for k, v in c.features.items()},
      targets={k: v.copy() for k, v in c.targets.items()},
      label_mask=dict(c.label_mask))
  rng = np.random.default_rng(9)
  for k in changed.features:
    changed.features[k][test] = rng.standard_normal(changed.features[k][test].shape) * 1e3
  for k in changed.targets:
    changed.targets[k][test] = rng.uniform(-1, 1, changed.targets[k][test].shape)
  b = train.train(changed, cfg)
  for x, y in zip(jax_leaves(a.best_params), jax_leaves(b.best_params)):
    np.testing.assert_array_equal(x, y)
  for k in a.norm["mean"]:
    np.testing.assert_array_equal(a.norm["mean"][k], b.norm["mean"][k])
  np.testing.assert_array_equal(a.best_epoch, b.best_epoch)
  # ... while a changed training movie does change them (the test can fail).
  changed.features["vggish"][0] += 1.0
  c2 = train.train(changed, cfg)
  assert any(not np.array_equal(x, y) for x, y in zip(jax_leaves(a.best_params),
                                                      jax_leaves(c2.best_params)))


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_resume_after_interruption_gives_the_same_results(corpus, tmp_path):
  cfg = tiny_config(num_epochs=6, checkpoint_every=2)
  clean = train.train(corpus, cfg)

  class Stop(Exception):
    pass

  def interrupt(p):
    if p["epoch"] >= 2:
      raise Stop()

  with pytest.raises(Stop):
    train.train(corpus, cfg, workdir=str(tmp_path), progress=interrupt)
  seen = []
  resumed = train.train(corpus, cfg, workdir=str(tmp_path), progress=seen.append)
  assert seen[0]["epoch"] == 4  # it went on from the checkpoint at epoch 2
  np.testing.assert_array_equal(resumed.test_predictions, clean.test_predictions)
  np.testing.assert_array_equal(resumed.best_epoch, clean.best_epoch)
  a, b = train.evaluate(resumed)[0], train.evaluate(clean)[0]
  assert a["arousal"]["mse"] == b["arousal"]["mse"] and a["arousal"]["pcc"] == b["arousal"]["pcc"]
  # A checkpoint of another experiment is refused, not silently resumed.
  with pytest.raises(RuntimeError, match="different experiment"):
    train.train(corpus, tiny_config(num_epochs=6, learning_rate=1e-3), workdir=str(tmp_path))


def test_compiled_chunk_is_traced_once_and_patience_zero_trains_every_epoch(
    corpus, monkeypatch):
  traces = []
  impl = engine_core._chunk_impl
  def counted(*a):
    traces.append(1)
    return impl(*a)
  monkeypatch.setattr(engine_core, "_chunk_impl", chex.assert_max_traces(counted, n=1))
  # A batch size no other test uses, so this plan is compiled afresh here.
  cfg = tiny_config(num_epochs=3, checkpoint_every=1, patience=0, batch_size=7)
  res = train.train(corpus, cfg)
  assert len(traces) == 1  # three chunks of one epoch each, one trace
  assert res.early_stopping == "off"
  assert (res.epochs_trained == 3).all() and (res.best_epoch == 2).all()
  assert (res.runs.train_weight.sum(1) == 3).all()  # no validation movie taken out


@pytest.mark.parametrize("setting, message", [
    ({"batch_size": 0}, "batch_size: must be a whole number >= 1"),
    ({"learning_rate": float("nan")}, "learning_rate: must be a finite number > 0"),
    ({"num_epochs": -1}, "num_epochs: must be a whole number >= 1"),
    ({"dropout": 1.0}, "dropout: must be in [0, 1)"),
    ({"model": "nope"}, "model: unknown 'nope'"),
    # A boolean is not a number, for every task (the categorical task refused it before).
    ({"num_epochs": True}, "num_epochs: must be a whole number >= 1; got True"),
    ({"seeds": False}, "seeds: must be a whole number >= 1; got False"),
    ({"modalities": "vggish,smell"}, "modalities: unknown modality 'smell'"),
    ({"targets": ("joy",)}, "targets: unknown 'joy'"),
])
def test_bad_settings_are_refused_before_anything_runs(setting, message):
  with pytest.raises(train.ConfigError) as e:
    train.validate(tiny_config(**setting))
  assert message in str(e.value)


def test_every_bad_setting_is_one_line():
  cfg = tiny_config(batch_size=0, learning_rate=-1.0)
  cfg.sweep.dropout = "0.1,x"
  with pytest.raises(train.ConfigError) as e:
    train.validate(cfg)
  lines = str(e.value).splitlines()
  assert len(lines) == 3 and lines[2].startswith("sweep.dropout")


SHARDED = textwrap.dedent("""
    import numpy as np, jax
    from aan_jax.data import synthetic
    from aan_jax.training import regression as train
    assert len(jax.local_devices()) == 4, jax.local_devices()
    corpus = synthetic.make_corpus(segments_per_movie=16, seed=1, num_movies=4)
    c = train.get_config()
    c.update(num_layers=1, modalities="vggish,emobase2010", batch_size=6, num_epochs=3, patience=2, learning_rate=3e-3,
             targets=("arousal",))
    sharded = train.train(corpus, c)
    assert sharded.num_devices == 4, sharded.num_devices
    c.max_devices = 1
    single = train.train(corpus, c)
    assert single.num_devices == 1
    # Matmuls split over devices round differently, and Adam amplifies that over the
    # epochs (~1e-4 here; ~1e-6 with dropout off); other dropout masks or data than
    # a run would draw alone change its predictions by far more (~0.1 and up).
    np.testing.assert_allclose(sharded.test_predictions, single.test_predictions, rtol=1e-3, atol=3e-4)
    np.testing.assert_array_equal(sharded.best_epoch, single.best_epoch)
    print("SHARDED_OK")
""")


def test_sharded_over_four_fake_devices_matches_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0 and "SHARDED_OK" in out.stdout, out.stderr[-3000:]


@pytest.mark.parametrize("model", ["feature_aan", "temporal_aan"])
def test_folded_normalisation_equals_plain(model, monkeypatch):
  # Training folds each run's feature normalisation into the input projections
  # (engine.groups.FOLD_NORMALISATION); it must train as normalising the features does.
  # emobase2010's openSMILE-like scales (hundreds to thousands) are the hard case.
  import jax  # pylint: disable=g-import-not-at-top
  from aan_jax.engine import groups  # pylint: disable=g-import-not-at-top
  c = synthetic.make_corpus(segments_per_movie=12, seed=2, num_movies=4)
  cfg = tiny_config(model=model, num_epochs=2, patience=0, window=3,
                    targets=("arousal", "valence"))
  folds = protocols.leave_one_out(c, "off", cfg.seed)
  runs = engine.make_runs(cfg.targets, folds, len(c.groups), train.sweep_points(cfg))
  calls = []
  fold = groups.fold_normalisation
  monkeypatch.setattr(groups, "fold_normalisation", lambda *a: calls.append(1) or fold(*a))
  out = {}
  for folded in (True, False):
    monkeypatch.setattr(groups, "FOLD_NORMALISATION", folded)
    eng = engine.Engine(c, cfg, runs, targets=cfg.targets, early_stopping="off")
    assert eng.plan.fold_normalisation is folded
    state = eng.run_chunk(eng.init_state(), 2)
    params = {jax.tree_util.keystr(k): np.asarray(v)
              for k, v in jax.tree_util.tree_leaves_with_path(state["params"])}
    out[folded] = (params, np.asarray(state["history"]["train_loss"]),
                   eng.predict(eng.best(state), "test"))
  assert calls, "the folded path was not taken"
  # Every parameter but the attention's key biases, which do not change the outputs (a
  # softmax does not see a shift shared by every key): their gradient is rounding noise,
  # which Adam scales up to whole steps, in either path.
  for name, a in out[True][0].items():
    if "['key']['bias']" not in name:
      np.testing.assert_allclose(a, out[False][0][name], rtol=1e-3, atol=2e-5, err_msg=name)
  np.testing.assert_allclose(out[True][1], out[False][1], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(out[True][2], out[False][2], rtol=1e-4, atol=1e-4)
