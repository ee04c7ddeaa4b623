"""Metrics against numpy/scipy, masks, and the paper's loss on degenerate batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from aan_jax.tasks import figures
from aan_jax.tasks import losses as metrics


def _ccc(x, y):
  cov = np.mean((x - x.mean()) * (y - y.mean()))
  return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_numpy_scipy(seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=200).astype(np.float32)
  y = (0.6 * x + rng.normal(size=200)).astype(np.float32) + 0.3
  np.testing.assert_allclose(metrics.mse(x, y), np.mean((x - y) ** 2), rtol=1e-5)
  np.testing.assert_allclose(metrics.pearson(x, y), stats.pearsonr(x, y)[0], rtol=1e-4)
  np.testing.assert_allclose(metrics.ccc(x, y), _ccc(x, y), rtol=1e-4)
  # The figures evaluation reports (numpy, float64) are the same quantities.
  f = figures.regression_metrics(x, y)
  np.testing.assert_allclose(f["pcc"], stats.pearsonr(x, y)[0], rtol=1e-6)
  np.testing.assert_allclose(f["mse"], np.mean((x - y) ** 2, dtype=np.float64), rtol=1e-6)
  np.testing.assert_allclose(f["ccc"], _ccc(x.astype(np.float64), y.astype(np.float64)), rtol=1e-9)


def test_masked_equals_subset():
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(2, 64)).astype(np.float32)
  mask = rng.random(64) > 0.4
  for fn in (metrics.mse, metrics.pearson, metrics.ccc, metrics.aan_loss):
    np.testing.assert_allclose(jax.jit(fn)(x, y, mask), fn(x[mask], y[mask]), rtol=1e-5)
  # Padding values never leak in.
  x2 = np.where(mask, x, 1e6).astype(np.float32)
  np.testing.assert_allclose(metrics.pearson(x2, y, mask), metrics.pearson(x, y, mask), rtol=1e-5)


def test_loss_finite_on_constant_predictions():
  y = jnp.linspace(-1, 1, 30)
  pred = jnp.zeros(30)
  loss, grad = jax.value_and_grad(metrics.aan_loss)(pred, y)
  assert np.isfinite(loss) and np.all(np.isfinite(grad))
  np.testing.assert_allclose(loss, np.mean(np.asarray(y) ** 2) + 1.0, rtol=1e-6)
  # Both sides constant, and an all-masked batch.
  assert np.isfinite(metrics.aan_loss(jnp.ones(5), jnp.ones(5)))
  assert np.isfinite(metrics.aan_loss(pred, y, jnp.zeros(30)))
  g = jax.grad(metrics.aan_loss)(jnp.ones(5), jnp.ones(5))
  assert np.all(np.isfinite(g))


def test_loss_rewards_correlation():
  y = jnp.linspace(-1, 1, 30)
  assert metrics.aan_loss(0.5 * y, y) < metrics.aan_loss(-0.5 * y, y)


def test_bootstrap_intervals_equal_one_bootstrap_per_figure():
  """The resamples computed once for every figure give each figure's own interval."""
  from aan_jax.evaluation import pooled
  from aan_jax.tasks.figures import regression_metrics
  rng = np.random.default_rng(3)
  groups = np.repeat(np.array(list("abcdefg")), rng.integers(5, 40, 7))
  rng.shuffle(groups)  # rows of a group need not be contiguous
  p, t = rng.normal(size=groups.size), rng.normal(size=groups.size)
  fn = lambda rows: regression_metrics(p[rows], t[rows])
  together = pooled.bootstrap_intervals(groups, fn, ("mse", "pcc", "ccc"), 300, seed=5)
  for k in ("mse", "pcc", "ccc"):
    alone = pooled.bootstrap_interval(groups, lambda rows, k=k: fn(rows)[k], 300, seed=5)
    assert together[k] == alone
  # ...and what a resample is: a group drawn twice counts twice (against a direct loop).
  names = np.unique(groups)
  pick = np.random.default_rng(5).integers(len(names), size=(300, len(names)))
  direct = [fn(np.concatenate([np.flatnonzero(groups == names[i]) for i in s]))["mse"]
            for s in pick]
  assert together["mse"] == [float(np.quantile(direct, 0.025)), float(np.quantile(direct, 0.975))]
