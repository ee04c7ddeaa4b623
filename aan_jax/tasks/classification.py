"""The categorical task's loss and metrics: cross-entropy, accuracy, per-class recall (mergeable)."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None
                  ) -> jax.Array:
  """Mean softmax cross-entropy over the rows where mask is true (all rows by default)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  w = jnp.ones_like(ce) if mask is None else jnp.asarray(mask, ce.dtype)
  return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)


@flax.struct.dataclass
class ClassificationStats:
  """A confusion matrix (true x predicted counts): merges exactly across batches and devices."""
  confusion: jax.Array

  @classmethod
  def from_batch(cls, logits, labels, mask=None, num_classes: int | None = None
                 ) -> "ClassificationStats":
    k = num_classes or logits.shape[-1]
    pred = jnp.argmax(logits, axis=-1)
    w = jnp.ones(labels.shape, jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    onehot = lambda z: jax.nn.one_hot(z, k, dtype=jnp.float32)
    return cls((onehot(labels) * w[..., None]).reshape(-1, k).T @ onehot(pred).reshape(-1, k))

  def merge(self, other: "ClassificationStats") -> "ClassificationStats":
    return ClassificationStats(self.confusion + other.confusion)

  def compute(self) -> dict[str, jax.Array]:
    """accuracy, per_class_recall (NaN for a class with no example), mean_recall over seen classes."""
    c = self.confusion
    support = c.sum(1)
    recall = jnp.where(support > 0, jnp.diag(c) / jnp.maximum(support, 1.0), jnp.nan)
    return {"accuracy": jnp.trace(c) / jnp.maximum(c.sum(), 1.0), "per_class_recall": recall,
            "mean_recall": jnp.nanmean(recall), "count": c.sum()}
