"""Regression metrics and the paper's loss, as pure jit-able functions.

Every function takes an optional `mask` (same shape as the inputs; bool or 0/1 weights)
so padded batches and held-out rows can be left out without changing shapes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

_EPS = 1e-8


def _weights(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  if mask is None:
    return jnp.ones_like(x, dtype=jnp.float32)
  return jnp.asarray(mask, jnp.float32)


def _moments(pred, target, mask):
  w = _weights(pred, mask)
  n = jnp.sum(w)
  safe_n = jnp.maximum(n, 1.0)
  mp = jnp.sum(w * pred) / safe_n
  mt = jnp.sum(w * target) / safe_n
  dp, dt = pred - mp, target - mt
  var_p = jnp.sum(w * dp * dp) / safe_n
  var_t = jnp.sum(w * dt * dt) / safe_n
  cov = jnp.sum(w * dp * dt) / safe_n
  return n, mp, mt, var_p, var_t, cov


def mse(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean squared error over the (masked) elements."""
  w = _weights(pred, mask)
  return jnp.sum(w * jnp.square(pred - target)) / jnp.maximum(jnp.sum(w), 1.0)


def pearson(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Pearson correlation coefficient; 0 where either side has zero variance.

  The denominator is guarded with `jnp.where` on both branches so that gradients stay
  finite (a plain division would give NaN gradients on a constant batch).
  """
  _, _, _, var_p, var_t, cov = _moments(pred, target, mask)
  denom2 = var_p * var_t
  ok = denom2 > _EPS * _EPS
  return jnp.where(ok, cov / jnp.sqrt(jnp.where(ok, denom2, 1.0)), 0.0)


def ccc(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Lin's concordance correlation coefficient (population moments)."""
  _, mp, mt, var_p, var_t, cov = _moments(pred, target, mask)
  denom = var_p + var_t + jnp.square(mp - mt)
  ok = denom > _EPS
  return jnp.where(ok, 2.0 * cov / jnp.where(ok, denom, 1.0), 0.0)


def aan_loss(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """The paper's loss: MSE + (1 - PCC) over the batch; finite on constant batches."""
  return mse(pred, target, mask) + (1.0 - pearson(pred, target, mask))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class RegressionStats:
  """Sufficient statistics for pooled MSE/PCC/CCC; merge by adding (CLU style)."""
  # Stored as sums so that stats over several batches or movies merge exactly.
  n: jax.Array
  sp: jax.Array
  st: jax.Array
  spp: jax.Array
  stt: jax.Array
  spt: jax.Array
  sse: jax.Array

  @classmethod
  def from_batch(cls, pred, target, mask=None) -> "RegressionStats":
    w = _weights(pred, mask)
    pred, target = jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32)
    return cls(jnp.sum(w), jnp.sum(w * pred), jnp.sum(w * target),
               jnp.sum(w * pred * pred), jnp.sum(w * target * target),
               jnp.sum(w * pred * target), jnp.sum(w * jnp.square(pred - target)))

  def merge(self, other: "RegressionStats") -> "RegressionStats":
    return jax.tree_util.tree_map(jnp.add, self, other)

  def compute(self) -> dict[str, jax.Array]:
    n = jnp.maximum(self.n, 1.0)
    mp, mt = self.sp / n, self.st / n
    var_p = self.spp / n - mp * mp
    var_t = self.stt / n - mt * mt
    cov = self.spt / n - mp * mt
    denom2 = var_p * var_t
    ok = denom2 > _EPS * _EPS
    pcc = jnp.where(ok, cov / jnp.sqrt(jnp.where(ok, denom2, 1.0)), 0.0)
    cden = var_p + var_t + jnp.square(mp - mt)
    c = jnp.where(cden > _EPS, 2 * cov / jnp.where(cden > _EPS, cden, 1.0), 0.0)
    return {"mse": self.sse / n, "pcc": pcc, "ccc": c, "n": self.n}
