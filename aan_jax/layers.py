"""Building blocks shared by the AttendAffectNet models."""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


class TorchLayerNorm(nn.Module):
  """LayerNorm as the authors wrote it: a * (x - mean) / (std + eps) + b, unbiased std.

  Written by hand (not nn.LayerNorm) because parity with the released models needs the
  unbiased std and eps added to the std rather than to the variance.
  """
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (d,))
    bias = self.param("bias", nn.initializers.zeros, (d,))
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.sum(jnp.square(x - mean), axis=-1, keepdims=True) / max(d - 1, 1)
    return scale * (x - mean) / (jnp.sqrt(var) + self.eps) + bias


class FeedForward(nn.Module):
  """The released single-linear feed-forward, in one of its two forms.

  kind="relu":          dropout(relu(W x))          (audio+video models)
  kind="tanh_residual": W(dropout(x + tanh(x)))      (audio-only and video-only models)
  """
  kind: str = "relu"
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    dense = nn.Dense(x.shape[-1], name="dense")
    drop = nn.Dropout(self.dropout)
    if self.kind == "relu":
      return drop(nn.relu(dense(x)), deterministic=deterministic)
    if self.kind == "tanh_residual":
      return dense(drop(x + jnp.tanh(x), deterministic=deterministic))
    raise ValueError(f"unknown feed-forward kind {self.kind!r}; use 'relu' or 'tanh_residual'")


def _attention(num_heads: int, rate: float, name: str) -> nn.MultiHeadDotProductAttention:
  # broadcast_dropout=False: torch drops every attention weight independently.
  return nn.MultiHeadDotProductAttention(
      num_heads=num_heads, dropout_rate=rate, broadcast_dropout=False, name=name)


class Residual(nn.Module):
  """Residual sublayer: norm-first x + dropout(sublayer(LayerNorm(x))) as released, or
  post-norm LayerNorm(x + dropout(sublayer(x))) as the paper's text describes."""
  dropout: float = 0.1
  norm_first: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, sublayer: Callable[[jax.Array], jax.Array],
               deterministic: bool) -> jax.Array:
    norm = TorchLayerNorm(name="norm")
    drop = nn.Dropout(self.dropout)
    if self.norm_first:
      return x + drop(sublayer(norm(x)), deterministic=deterministic)
    return norm(x + drop(sublayer(x), deterministic=deterministic))


class EncoderLayer(nn.Module):
  """Self-attention and feed-forward, each in a norm-first residual sublayer."""
  num_heads: int = 2
  dropout: float = 0.1
  attention_dropout: float = 0.1
  ffn: str = "relu"

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool, mask: jax.Array | None = None):
    attn = _attention(self.num_heads, self.attention_dropout, "attn")
    x = Residual(self.dropout, name="sub_attn")(
        x, lambda y: attn(y, y, mask=mask, deterministic=deterministic), deterministic)
    ff = FeedForward(self.ffn, self.dropout, name="ff")
    return Residual(self.dropout, name="sub_ff")(
        x, lambda y: ff(y, deterministic), deterministic)


class Encoder(nn.Module):
  """A stack of norm-first encoder layers followed by a final LayerNorm."""
  num_layers: int = 6
  num_heads: int = 2
  dropout: float = 0.1
  attention_dropout: float = 0.1
  ffn: str = "relu"

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool, mask: jax.Array | None = None):
    for i in range(self.num_layers):
      x = EncoderLayer(self.num_heads, self.dropout, self.attention_dropout, self.ffn,
                       name=f"layer_{i}")(x, deterministic, mask)
    return TorchLayerNorm(name="norm")(x)


def sinusoidal_positions(length: int, width: int) -> jax.Array:
  """The Transformer's sinusoidal positional encoding, shape (length, width)."""
  pos = jnp.arange(length, dtype=jnp.float32)[:, None]
  div = jnp.exp(jnp.arange(0, width, 2, dtype=jnp.float32) * (-math.log(10000.0) / width))
  pe = jnp.zeros((length, width), jnp.float32)
  pe = pe.at[:, 0::2].set(jnp.sin(pos * div))
  pe = pe.at[:, 1::2].set(jnp.cos(pos * div[: width // 2]))
  return pe


class DecoderLayer(nn.Module):
  """Masked self-attention, attention to the memory, feed-forward; norm-first residuals."""
  num_heads: int = 2
  dropout: float = 0.1
  attention_dropout: float = 0.1
  ffn: str = "relu"
  norm_first: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, memory: jax.Array, self_mask: jax.Array,
               memory_mask: jax.Array, deterministic: bool) -> jax.Array:
    self_attn = _attention(self.num_heads, self.attention_dropout, "self_attn")
    cross_attn = _attention(self.num_heads, self.attention_dropout, "cross_attn")
    ff = FeedForward(self.ffn, self.dropout, name="ff")
    x = Residual(self.dropout, self.norm_first, name="sub_self")(
        x, lambda y: self_attn(y, y, mask=self_mask, deterministic=deterministic),
        deterministic)
    x = Residual(self.dropout, self.norm_first, name="sub_cross")(
        x, lambda y: cross_attn(y, memory, mask=memory_mask, deterministic=deterministic),
        deterministic)
    return Residual(self.dropout, self.norm_first, name="sub_ff")(
        x, lambda y: ff(y, deterministic), deterministic)
