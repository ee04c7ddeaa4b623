"""The tasks' losses and the regression metrics they use, as pure jit-able functions.

Every function takes an optional `mask` (same shape as the inputs; bool or 0/1 weights)
so padded batches and held-out rows can be left out without changing shapes.
"""

from __future__ import annotations

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


def binary_loss(logits, y, w, pos_weight):
  """Class-weighted binary cross-entropy: positives weigh `pos_weight` (negatives/positives
  of the training rows), so an imbalanced label cannot be fitted by one class."""
  c = w * jnp.where(y > 0.5, pos_weight, 1.0)
  nll = jnp.where(y > 0.5, jax.nn.softplus(-logits), jax.nn.softplus(logits))
  return jnp.sum(c * nll) / jnp.maximum(jnp.sum(c), 1e-6)


def classification_loss(logits, labels, weights, loss: str, positive, lam):
  """VAANet's polarity-consistent cross-entropy ("pcce") or plain cross-entropy ("ce")."""
  from aan_jax.models import vaanet  # pylint: disable=g-import-not-at-top
  if loss == "pcce":
    return vaanet.pcce_loss(logits, labels, positive, lam, weights)
  return vaanet.ce_loss(logits, labels, weights)
