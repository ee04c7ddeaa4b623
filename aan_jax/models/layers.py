"""Building blocks shared by the AttendAffectNet models."""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from aan_jax.util import prng

ENCODER_IMPLS = ("xla", "cpu_kernel")
_ENCODER_IMPL = contextvars.ContextVar("aan_jax_encoder_impl", default="xla")


@contextlib.contextmanager
def encoder_impl(name: str):
  """Every `Encoder` traced inside the block runs as `name`: "xla" or "cpu_kernel".

  "xla" (the default outside any block) is the Flax layers below, on any backend;
  "cpu_kernel" is the same math as one fused C++ kernel (aan_jax.models.kernels; CPU only; no
  attention mask), with the same parameters and the same dropout masks. Read when a
  model is traced, not when it runs: a jitted function keeps the implementation it was
  first traced with, so put the block inside the traced function (it is then seen by
  whichever thread traces it). Also usable as a decorator.
  """
  if name not in ENCODER_IMPLS:
    raise ValueError(f"unknown encoder impl {name!r}; use 'xla' or 'cpu_kernel'")
  token = _ENCODER_IMPL.set(name)
  try:
    yield
  finally:
    _ENCODER_IMPL.reset(token)


def current_encoder_impl() -> str:
  """The encoder implementation selected by the innermost `encoder_impl` block."""
  return _ENCODER_IMPL.get()


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


def is_zero(rate) -> bool:
  """True for a concrete rate of 0; a traced rate (per-run sweeps) is never skipped."""
  return isinstance(rate, (int, float)) and rate == 0


def _drop(x: jax.Array, rate, deterministic: bool, mask: jax.Array | None) -> jax.Array:
  """Dropout with the given multipliers (0 or 1 / keep) where given, else Dropout(rate)."""
  if mask is not None:
    return x * mask
  return Dropout(rate)(x, deterministic=deterministic)


class Dropout(nn.Module):
  """Inverted dropout whose `rate` may be a traced scalar (a per-run hyperparameter).

  flax's nn.Dropout compares its rate with 0 and 1 in Python, which a traced rate cannot
  do; the engine trains runs with different dropout rates in one program. With a
  concrete rate this draws exactly nn.Dropout's mask (same rng stream, same bernoulli).
  """
  rate: float = 0.1

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or is_zero(self.rate):
      return x
    keep = 1.0 - self.rate
    kept = jax.random.bernoulli(self.make_rng("dropout"), keep, x.shape)
    return jnp.where(kept, x / keep, 0.0)


class FeedForward(nn.Module):
  """The released single-linear feed-forward, in one of its two forms.

  kind="relu":          dropout(relu(W x))          (audio+video models)
  kind="tanh_residual": W(dropout(x + tanh(x)))      (audio-only and video-only models)
  """
  kind: str = "relu"
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool,
               dropout_mask: jax.Array | None = None) -> jax.Array:
    dense = nn.Dense(x.shape[-1], name="dense")
    drop = lambda y: _drop(y, self.dropout, deterministic, dropout_mask)
    if self.kind == "relu":
      return drop(nn.relu(dense(x)))
    if self.kind == "tanh_residual":
      return dense(drop(x + jnp.tanh(x)))
    raise ValueError(f"unknown feed-forward kind {self.kind!r}; use 'relu' or 'tanh_residual'")


class _Projection(nn.Module):
  """Holds one kernel and bias under a stable name (DenseGeneral's, for the converter)."""
  kernel_shape: tuple[int, ...]
  bias_shape: tuple[int, ...]

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    fan = self.kernel_shape[:-1] if len(self.bias_shape) == 1 else self.kernel_shape[:1]
    flat = (math.prod(fan), math.prod(self.kernel_shape) // math.prod(fan))
    # lecun_normal on the flattened kernel, as DenseGeneral draws it.
    init = lambda k, shape: nn.initializers.lecun_normal()(k, flat).reshape(shape)
    return (self.param("kernel", init, self.kernel_shape),
            self.param("bias", nn.initializers.zeros, self.bias_shape))


class Attention(nn.Module):
  """Multi-head dot-product attention with the parameters of nn.MultiHeadDotProductAttention.

  Written by hand for performance: with d_model=8, 2 heads and 5 tokens every tensor is
  tiny, so cost is per op; flax's module runs three projections and two batched dot
  products of 4-wide heads, which XLA's CPU backend executes as many small matmul calls.
  Here a self-attention projects q, k, v in one matmul and the scaling, masking, softmax
  and dropout are a few fused elementwise ops (12-fold step ~45% faster than flax's
  module on this CPU; broadcast-multiply-reduce instead of the two einsums was slower).
  The parameters
  keep flax's names and shapes (query/key/value kernel (d, h, dk), bias (h, dk); out
  kernel (h, dk, d), bias (d,)) so that checkpoints and aan_jax.convert.attendaffectnet are unchanged.
  Dropout drops every attention weight independently (as torch does), or multiplies them
  by `dropout_mask` where given; `mask` is broadcastable to (batch..., heads, queries,
  keys), False where attention is blocked.
  """
  num_heads: int = 2
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array, mask: jax.Array | None = None,
               deterministic: bool = True,
               dropout_mask: jax.Array | None = None) -> jax.Array:
    d, h = inputs_q.shape[-1], self.num_heads
    dk = d // h
    qkv = [_Projection((d, h, dk), (h, dk), name=n)() for n in ("query", "key", "value")]
    w_out, b_out = _Projection((h, dk, d), (d,), name="out")()
    if inputs_kv is inputs_q:  # self-attention: one matmul for q, k and v
      w = jnp.concatenate([k.reshape(d, d) for k, _ in qkv], axis=1)
      b = jnp.concatenate([b.reshape(d) for _, b in qkv])
      q, k, v = jnp.split(inputs_q @ w + b, 3, axis=-1)
    else:
      q = inputs_q @ qkv[0][0].reshape(d, d) + qkv[0][1].reshape(d)
      w = jnp.concatenate([k.reshape(d, d) for k, _ in qkv[1:]], axis=1)
      b = jnp.concatenate([b.reshape(d) for _, b in qkv[1:]])
      k, v = jnp.split(inputs_kv @ w + b, 2, axis=-1)
    heads = lambda t: t.reshape(t.shape[:-1] + (h, dk))
    q, k, v = heads(q) / math.sqrt(dk), heads(k), heads(v)
    # scores[..., head, i, j] = <q_i, k_j> for that head; keys last, so the softmax
    # reduces over the minor axis (several times faster on XLA's CPU backend).
    scores = jnp.einsum("...nhd,...mhd->...hnm", q, k)
    if mask is not None:
      scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1)
    if dropout_mask is not None:
      weights = weights * dropout_mask
    elif not deterministic and not is_zero(self.dropout_rate):
      keep = 1.0 - self.dropout_rate
      kept = jax.random.bernoulli(self.make_rng("dropout"), keep, weights.shape)
      weights = jnp.where(kept, weights / keep, 0.0)
    out = jnp.einsum("...hnm,...mhd->...nhd", weights, v)
    return out.reshape(out.shape[:-2] + (d,)) @ w_out.reshape(d, d) + b_out


def _attention(num_heads: int, rate: float, name: str) -> Attention:
  return Attention(num_heads=num_heads, dropout_rate=rate, name=name)


class Residual(nn.Module):
  """Residual sublayer: norm-first x + dropout(sublayer(LayerNorm(x))) as released, or
  post-norm LayerNorm(x + dropout(sublayer(x))) as the paper's text describes."""
  dropout: float = 0.1
  norm_first: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, sublayer: Callable[[jax.Array], jax.Array],
               deterministic: bool, dropout_mask: jax.Array | None = None) -> jax.Array:
    norm = TorchLayerNorm(name="norm")
    drop = lambda y: _drop(y, self.dropout, deterministic, dropout_mask)
    if self.norm_first:
      return x + drop(sublayer(norm(x)))
    return norm(x + drop(sublayer(x)))


# The encoder's dropout stream, shared with the fused CPU kernel (aan_jax/models/kernels/encoder.cc,
# `Masks`): one uint32 seed per call from the "dropout" rng; each dropout site of each
# sample has a counter, and an element is kept when lowbias32(counter * golden ^ key) <
# keep * 2^32. Both paths draw these exact masks, so a seed trains alike on either, and
# on a CPU or a GPU. Per sample b of the flattened batch and layer l the counters are
# (b * num_layers + l) * sites + [attention weights (heads, T, T) | attention residual
# (T, D) | feed-forward (T, D) | feed-forward residual (T, D)], all modulo 2^32.
_GOLDEN = 0x9E3779B9
_RUN_SALT = 0x632BE5AB


def dropout_key(seed: jax.Array) -> jax.Array:
  """The hash key of an encoder call's dropout seed (encoder.cc's RunKey)."""
  return prng._mix(jnp.asarray(seed, jnp.uint32) + jnp.uint32(_RUN_SALT))  # pylint: disable=protected-access


def dropout_multipliers(key: jax.Array, counters: jax.Array, rate) -> jax.Array:
  """0 or 1 / keep per counter (float32); everything kept (1) when rate <= 0."""
  rate = jnp.asarray(rate, jnp.float32)
  keep = 1.0 - rate
  h = prng._mix(counters * jnp.uint32(_GOLDEN) ^ key)  # pylint: disable=protected-access
  # floor(keep * 2^32) as the kernel computes it (exact: a power-of-two scaling), 2^32 - 1
  # when keep is 1; the clamp only keeps the unused branch's conversion in range.
  t = keep * 2.0**32
  thresh = jnp.where(t >= 2.0**32, jnp.uint32(0xFFFFFFFF),
                     jnp.minimum(t, 4294967040.0).astype(jnp.uint32))
  scale = jnp.where(keep > 0, 1.0 / keep, 0.0)
  return jnp.where(rate <= 0, 1.0, jnp.where(h < thresh, scale, 0.0)).astype(jnp.float32)


def encoder_dropout_masks(key: jax.Array, layer, batch: int, tokens: int, d_model: int,
                          num_heads: int, num_layers: int, rate, attention_rate):
  """One encoder layer's dropout multipliers for `batch` samples: (attention weights
  (batch, heads, T, T), attention residual, feed-forward, feed-forward residual (batch,
  T, D)); None for a site whose rate is a concrete 0. `layer` may be traced."""
  hw, td = num_heads * tokens * tokens, tokens * d_model
  sites = hw + 3 * td
  u32 = lambda n: jnp.uint32(n % 2**32)
  base = (jnp.arange(batch, dtype=jnp.uint32) * u32(num_layers * sites)
          + jnp.asarray(layer).astype(jnp.uint32) * u32(sites))

  def draw(offset, shape, r):
    if is_zero(r):
      return None
    n = math.prod(shape)
    counters = base[:, None] + u32(offset) + jnp.arange(n, dtype=jnp.uint32)
    return dropout_multipliers(key, counters, r).reshape((batch,) + shape)

  return (draw(0, (num_heads, tokens, tokens), attention_rate),
          draw(hw, (tokens, d_model), rate), draw(hw + td, (tokens, d_model), rate),
          draw(hw + 2 * td, (tokens, d_model), rate))


class EncoderLayer(nn.Module):
  """Self-attention and feed-forward, each in a norm-first residual sublayer.

  `dropout_masks`: the four multipliers of `encoder_dropout_masks` (used instead of
  drawing from the "dropout" rng where not None).
  """
  num_heads: int = 2
  dropout: float = 0.1
  attention_dropout: float = 0.1
  ffn: str = "relu"

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool, mask: jax.Array | None = None,
               dropout_masks: tuple | None = None):
    m_attn, m_res1, m_ff, m_res2 = dropout_masks or (None,) * 4
    attn = _attention(self.num_heads, self.attention_dropout, "attn")
    x = Residual(self.dropout, name="sub_attn")(
        x, lambda y: attn(y, y, mask=mask, deterministic=deterministic, dropout_mask=m_attn),
        deterministic, m_res1)
    ff = FeedForward(self.ffn, self.dropout, name="ff")
    return Residual(self.dropout, name="sub_ff")(
        x, lambda y: ff(y, deterministic, m_ff), deterministic, m_res2)


class Encoder(nn.Module):
  """A stack of norm-first encoder layers followed by a final LayerNorm.

  Runs as XLA ops or as the fused CPU kernel, as the enclosing `encoder_impl` block says;
  both take one seed from the "dropout" rng and draw the same masks from it
  (`encoder_dropout_masks`). Rates may be traced (one per run under vmap).
  """
  num_layers: int = 6
  num_heads: int = 2
  dropout: float = 0.1
  attention_dropout: float = 0.1
  ffn: str = "relu"

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool, mask: jax.Array | None = None):
    impl = current_encoder_impl()
    train = not deterministic and not (is_zero(self.dropout) and is_zero(self.attention_dropout))
    seed = jax.random.bits(self.make_rng("dropout"), (), jnp.uint32) if train else None
    if impl == "cpu_kernel" and not self.is_initializing():
      return self._fused(x, seed, mask)
    lead, (tokens, d) = x.shape[:-2], x.shape[-2:]
    batch = math.prod(lead)
    key = None if seed is None else dropout_key(seed)

    def masks(layer):
      if key is None:
        return None
      return tuple(None if m is None else m.reshape(lead + m.shape[1:])
                   for m in encoder_dropout_masks(key, layer, batch, tokens, d, self.num_heads,
                                                  self.num_layers, self.dropout,
                                                  self.attention_dropout))

    make = lambda **kw: EncoderLayer(self.num_heads, self.dropout, self.attention_dropout,
                                     self.ffn, **kw)
    layers = [make(name=f"layer_{i}") for i in range(self.num_layers)]
    if self.is_initializing() or self.num_layers < 2:
      for i, layer in enumerate(layers):
        x = layer(x, deterministic, mask, masks(i))
    else:
      # The layers run as one lax.scan over their stacked parameters (kept under their
      # own names, layer_i, for checkpoints and the converter): XLA then compiles one
      # layer instead of num_layers, which cut the training program's compile time ~2x.
      stacked = jax.tree.map(lambda *a: jnp.stack(a),
                             *[self.variables["params"][f"layer_{i}"] for i in range(self.num_layers)])
      body = make(parent=None)

      def one(x, pl):
        p, layer = pl
        return body.apply({"params": p}, x, deterministic, mask, masks(layer)), None

      x, _ = jax.lax.scan(one, x, (stacked, jnp.arange(self.num_layers)))
    return TorchLayerNorm(name="norm")(x)

  def _fused(self, x, seed, mask):
    from aan_jax.models import kernels  # pylint: disable=g-import-not-at-top
    if mask is not None:
      raise ValueError("the cpu_kernel encoder takes no attention mask; use encoder_impl('xla')")
    train = seed is not None
    lead = x.shape[:-2]
    y = kernels.encoder(
        x.reshape((-1,) + x.shape[-2:]),
        kernels.pack_encoder_params(self.variables["params"], self.num_layers),
        seed if train else jnp.zeros((), jnp.uint32),
        num_layers=self.num_layers, num_heads=self.num_heads, ffn=self.ffn,
        rate=self.dropout if train else 0.0,
        attention_rate=self.attention_dropout if train else 0.0)
    return y.reshape(lead + y.shape[-2:])


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
