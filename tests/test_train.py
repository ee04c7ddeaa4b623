"""Tests of the leave-one-movie-out engine on tiny synthetic corpora."""

import os
import subprocess
import sys
import textwrap

import chex
import numpy as np
import pytest

from aan_jax import metrics, synthetic, train


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


def test_runs_hold_out_and_validate_on_distinct_movies():
  runs = train.make_runs(12, 2, tiny_config())
  assert len(runs) == 24
  for r in range(len(runs)):
    assert runs.eval_movie[r] != runs.held_out[r]
    assert runs.train_weight[r, runs.held_out[r]] == 0
    assert runs.train_weight[r, runs.eval_movie[r]] == 0
    assert runs.train_weight[r].sum() == 10
  paper = train.make_runs(12, 1, tiny_config(early_stopping="held_out"))
  np.testing.assert_array_equal(paper.eval_movie, paper.held_out)
  assert (paper.train_weight.sum(1) == 11).all()


def test_all_folds_at_once_equal_each_fold_alone(corpus):
  cfg = tiny_config(num_epochs=3, targets=("arousal", "valence"))
  together = train.train_loo(corpus, cfg)
  assert len(together.runs) == 8
  for t, h in ((1, 1), (0, 3)):
    alone = train.train_loo(corpus, cfg, held_out=[h], targets=[t])
    r = int(np.flatnonzero((together.runs.held_out == h) & (together.runs.target == t))[0])
    np.testing.assert_allclose(alone.predictions[0], together.predictions[r], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(alone.train_loss[0], together.train_loss[r], rtol=1e-4, atol=1e-5)
    assert alone.best_epoch[0] == together.best_epoch[r]
  # Pooled figures are over all held-out predictions of a target.
  s = train.summarize(together)
  assert set(s["arousal"]["per_movie"]) == set(corpus.movies)
  sel = [r for r in range(len(together.runs)) if together.runs.target[r] == 1]
  preds = np.concatenate([together.predictions[r] for r in sel])
  truth = np.concatenate([corpus.targets["valence"][together.runs.held_out[r]] for r in sel])
  np.testing.assert_allclose(s["valence"]["mse"], np.mean((preds - truth) ** 2), rtol=1e-5)
  np.testing.assert_allclose(s["valence"]["pcc"], np.corrcoef(preds, truth)[0, 1], rtol=1e-4)


def test_early_stopping_freezes_a_fold_at_its_best_epoch(corpus):
  # Held-out mode: the early-stopping loss is then measured on the very movie whose
  # predictions are returned, so they can be checked against the best epoch's loss.
  # seed=1: a draw in which some folds stop early and others train on (checked below).
  cfg = tiny_config(num_epochs=12, patience=1, learning_rate=2e-2, checkpoint_every=12,
                    early_stopping="held_out", seed=1)
  res = train.train_loo(corpus, cfg)
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
    h = res.runs.held_out[r]
    loss = metrics.aan_loss(res.predictions[r], corpus.targets["arousal"][h], corpus.mask[h])
    np.testing.assert_allclose(float(loss), res.val_loss[r, best], rtol=1e-4)
    assert float(loss) < res.val_loss[r, res.epochs_trained[r] - 1]


def test_resume_after_interruption_gives_the_same_results(corpus, tmp_path):
  cfg = tiny_config(num_epochs=6, checkpoint_every=2)
  clean = train.train_loo(corpus, cfg)

  class Stop(Exception):
    pass

  def interrupt(p):
    if p["epoch"] >= 2:
      raise Stop()

  with pytest.raises(Stop):
    train.train_loo(corpus, cfg, workdir=str(tmp_path), progress=interrupt)
  seen = []
  resumed = train.train_loo(corpus, cfg, workdir=str(tmp_path), progress=seen.append)
  assert seen[0]["epoch"] == 4  # it went on from the checkpoint at epoch 2
  np.testing.assert_array_equal(resumed.predictions, clean.predictions)
  np.testing.assert_array_equal(resumed.best_epoch, clean.best_epoch)
  a, b = train.summarize(resumed), train.summarize(clean)
  assert a["arousal"]["mse"] == b["arousal"]["mse"] and a["arousal"]["pcc"] == b["arousal"]["pcc"]
  # A checkpoint of another experiment is refused, not silently resumed.
  with pytest.raises(RuntimeError, match="different experiment"):
    train.train_loo(corpus, tiny_config(num_epochs=6, learning_rate=1e-3), workdir=str(tmp_path))


def test_compiled_chunk_is_traced_once_and_patience_zero_trains_every_epoch(
    corpus, monkeypatch):
  traces = []
  impl = train._chunk_impl
  def counted(*a):
    traces.append(1)
    return impl(*a)
  monkeypatch.setattr(train, "_chunk_impl", chex.assert_max_traces(counted, n=1))
  # A learning rate no other test uses, so this plan is compiled afresh here.
  cfg = tiny_config(num_epochs=3, checkpoint_every=1, patience=0, learning_rate=1.234e-3)
  res = train.train_loo(corpus, cfg)
  assert len(traces) == 1  # three chunks of one epoch each, one trace
  assert res.early_stopping == "off"
  assert (res.epochs_trained == 3).all() and (res.best_epoch == 2).all()
  assert (res.runs.train_weight.sum(1) == 3).all()  # no validation movie taken out


SHARDED = textwrap.dedent("""
    import numpy as np, jax
    from aan_jax import synthetic, train
    assert len(jax.local_devices()) == 4, jax.local_devices()
    corpus = synthetic.make_corpus(segments_per_movie=16, seed=1, num_movies=4)
    c = train.get_config()
    c.update(num_layers=1, modalities="vggish,emobase2010", batch_size=6, num_epochs=3, patience=2, learning_rate=3e-3,
             targets=("arousal",))
    sharded = train.train_loo(corpus, c)
    assert sharded.num_devices == 4, sharded.num_devices
    c.max_devices = 1
    single = train.train_loo(corpus, c)
    assert single.num_devices == 1
    # Matmuls split over devices round differently, and Adam amplifies that over the
    # epochs (~1e-4 here; ~1e-6 with dropout off); other dropout masks or data than
    # a run would draw alone change its predictions by far more (~0.1 and up).
    np.testing.assert_allclose(sharded.predictions, single.predictions, rtol=1e-3, atol=3e-4)
    np.testing.assert_array_equal(sharded.best_epoch, single.best_epoch)
    print("SHARDED_OK")
""")


def test_sharded_over_four_fake_devices_matches_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0 and "SHARDED_OK" in out.stdout, out.stderr[-3000:]
