"""AttendAffectNet models in Flax.

`FeatureAAN` is the Feature AttendAffectNet exactly as the authors released it
(shared/reference/attendaffectnet): one Dense(d_model) per modality, the modality tokens
as a sequence without positional encoding, a norm-first self-attention encoder, a final
LayerNorm, mean over tokens, optional tanh, dropout, Dense(1).

    from aan_jax import models
    model = models.FeatureAAN(modalities=("vggish", "emobase2010"))
    variables = model.init(jax.random.key(0), model.dummy_features(2))
    y = model.apply(variables, features, deterministic=True)   # shape (batch,)
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aan_jax.features import FEATURE_DIMS, FEATURES, canonical_modalities
from aan_jax.layers import Encoder


def check_features(features: Mapping[str, jax.Array], modalities: Sequence[str]) -> tuple:
  """Validates `features` against `modalities`; returns the common leading shape."""
  if not isinstance(features, Mapping):
    raise ValueError(
        "features must be a mapping from modality name to array, e.g. "
        f"{{'{modalities[0]}': array of shape (batch, {FEATURE_DIMS[modalities[0]]})}}; "
        f"got {type(features).__name__}")
  lead = None
  for m in modalities:
    dim = FEATURE_DIMS[m]
    if m not in features:
      raise ValueError(
          f"missing modality {m!r}: expected an array of shape (batch, {dim}); "
          f"got keys {sorted(features)}")
    shape = tuple(np.shape(features[m]))
    if len(shape) < 2 or shape[-1] != dim:
      raise ValueError(
          f"modality {m!r} has shape {shape}; expected (batch, {dim})")
    if lead is None:
      lead = shape[:-1]
    elif shape[:-1] != lead:
      raise ValueError(
          f"modality {m!r} has leading shape {shape[:-1]} but the others have {lead}")
  return lead


class ModalityTokens(nn.Module):
  """Projects each modality vector to d_model: (..., M, d_model), canonical order."""
  modalities: Sequence[str] = FEATURES
  d_model: int = 8

  @nn.compact
  def __call__(self, features: Mapping[str, jax.Array]) -> jax.Array:
    mods = canonical_modalities(self.modalities)
    check_features(features, mods)
    tokens = [nn.Dense(self.d_model, name=f"proj_{m}")(jnp.asarray(features[m], jnp.float32))
              for m in mods]
    return jnp.stack(tokens, axis=-2)


class FeatureAAN(nn.Module):
  """Feature AttendAffectNet: self-attention over modality tokens -> one scalar."""
  modalities: Sequence[str] = FEATURES
  d_model: int = 8
  num_heads: int = 2
  num_layers: int = 6
  dropout: float = 0.1            # residual sublayers and feed-forward
  attention_dropout: float = 0.1  # on the attention weights
  output_dropout: float = 0.1     # before the output layer
  ffn: str = "relu"               # "relu" (audio+video) or "tanh_residual" (single-stream)
  output_tanh: bool = False       # tanh on the pooled vector (single-stream models)

  @nn.compact
  def __call__(self, features: Mapping[str, jax.Array], deterministic: bool = True):
    x = ModalityTokens(self.modalities, self.d_model, name="tokens")(features)
    lead = x.shape[:-2]
    x = x.reshape((-1,) + x.shape[-2:])  # attention wants one batch axis
    x = Encoder(self.num_layers, self.num_heads, self.dropout, self.attention_dropout,
                self.ffn, name="encoder")(x, deterministic)
    pooled = jnp.mean(x, axis=-2)
    if self.output_tanh:
      pooled = jnp.tanh(pooled)
    pooled = nn.Dropout(self.output_dropout)(pooled, deterministic=deterministic)
    y = nn.Dense(1, name="head")(pooled)[..., 0]
    return y.reshape(lead)

  def dummy_features(self, batch: int = 1) -> dict[str, jax.Array]:
    """Zeros of the right shapes, for `init`."""
    return {m: jnp.zeros((batch, FEATURE_DIMS[m]), jnp.float32)
            for m in canonical_modalities(self.modalities)}
