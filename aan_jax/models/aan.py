"""AttendAffectNet models in Flax.

`FeatureAAN` is the Feature AttendAffectNet exactly as the authors released it
(shared/reference/attendaffectnet): one Dense(d_model) per modality, the modality tokens
as a sequence without positional encoding, a norm-first self-attention encoder, a final
LayerNorm, mean over tokens, optional tanh, dropout, Dense(1).

    from aan_jax.models import aan as models
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

from aan_jax.data.features import FEATURE_DIMS, FEATURES, canonical_modalities
from aan_jax.models.layers import DecoderLayer, Dropout, Encoder, TorchLayerNorm, sinusoidal_positions


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
    # Runs as XLA ops or as the fused CPU kernel: see aan_jax.models.layers.encoder_impl.
    x = Encoder(self.num_layers, self.num_heads, self.dropout, self.attention_dropout,
                self.ffn, name="encoder")(x, deterministic)
    pooled = jnp.mean(x, axis=-2)
    if self.output_tanh:
      pooled = jnp.tanh(pooled)
    pooled = Dropout(self.output_dropout)(pooled, deterministic=deterministic)
    y = nn.Dense(1, name="head")(pooled)[..., 0]
    return y.reshape(lead)

  def dummy_features(self, batch: int = 1) -> dict[str, jax.Array]:
    """Zeros of the right shapes, for `init`."""
    return {m: jnp.zeros((batch, FEATURE_DIMS[m]), jnp.float32)
            for m in canonical_modalities(self.modalities)}


class TemporalAAN(nn.Module):
  """Temporal AttendAffectNet: a decoder over a window of L consecutive segments.

  Call: `model.apply(variables, features, targets_in, segment_mask=None,
  deterministic=True)` with `features[m]` of shape (batch, L, dim), `targets_in` (batch, L)
  the previous scalar outputs (position 0 holds `start_value`; see `shift_targets`), and
  `segment_mask` (batch, L), False on padding at a movie's start. Returns (batch, L): the
  output for every position; sequence-to-one training uses the last one.

  Segment side: each modality -> Dense(d_model), concatenated (d_model x modalities) plus
  the sinusoidal positional encoding. Target side: each previous scalar duplicated to that
  width (no embedding table, no parameters) plus the same encoding.
  With `feature_layers > 0` each segment's modality tokens first pass through a Feature
  AAN encoder shared across time (the Feature+Temporal AAN).

  `norm_first=True` (default) uses the released code's norm-first sublayers. Note: a
  LayerNorm is blind to adding the same value to every element, so with norm-first
  sublayers the duplicated scalar on the target side (c * ones) is removed by every norm
  and the previous outputs cannot change any output; only the positional encoding of the
  target side is seen. `norm_first=False` gives the post-norm sublayers the paper's text
  describes ("a residual connection followed by a layer normalization"), in which the
  previous outputs do reach the attention, and the autoregressive loop matters.
  """
  modalities: Sequence[str] = FEATURES
  d_model: int = 8
  num_heads: int = 2
  num_layers: int = 6
  dropout: float = 0.5
  attention_dropout: float = 0.1
  output_dropout: float = 0.5
  ffn: str = "relu"
  start_value: float = 0.0
  feature_layers: int = 0       # > 0: Feature+Temporal AAN
  feature_dropout: float = 0.1  # dropout inside the per-segment feature encoder
  norm_first: bool = True       # decoder sublayers; see the class docstring
  window: int = 5               # L, segments per window (5 COGNIMUSE, 4 EIMT16)

  @property
  def width(self) -> int:
    return self.d_model * len(canonical_modalities(self.modalities))

  def setup(self):
    # setup (not compact) so that `encode` and `decode` are separate methods: the
    # autoregressive loop encodes the segments once and re-runs only the decoder.
    self.tokens = ModalityTokens(self.modalities, self.d_model)
    if self.feature_layers:
      # XLA ops or the fused CPU kernel: see aan_jax.models.layers.encoder_impl.
      self.feature_encoder = Encoder(self.feature_layers, self.num_heads,
                                     self.feature_dropout, self.feature_dropout, self.ffn)
    self.layers = [DecoderLayer(self.num_heads, self.dropout, self.attention_dropout,
                                self.ffn, self.norm_first) for _ in range(self.num_layers)]
    if self.norm_first:  # post-norm layers already end in a LayerNorm
      self.norm = TorchLayerNorm()
    self.out_dropout = Dropout(self.output_dropout)
    self.head = nn.Dense(1)

  def __call__(self, features: Mapping[str, jax.Array], targets_in: jax.Array,
               segment_mask: jax.Array | None = None, deterministic: bool = True):
    memory = self.encode(features, deterministic)
    return self.decode(memory, targets_in, segment_mask, deterministic)

  def encode(self, features: Mapping[str, jax.Array], deterministic: bool = True):
    """The segment side: (batch, L, width) with the positional encoding added."""
    vectors = self.segment_vectors(features, deterministic)
    if vectors.ndim != 3:
      raise ValueError(
          f"TemporalAAN wants features of shape (batch, L, dim); got {vectors.shape[:-1]} "
          "leading axes")
    length, width = vectors.shape[-2:]
    return vectors + sinusoidal_positions(length, width)

  def segment_vectors(self, features: Mapping[str, jax.Array], deterministic: bool = True):
    """Each segment's concatenated (and, with feature_layers, self-attended) modality
    tokens, (..., width), before the positional encoding: per segment, not per window."""
    tokens = self.tokens(features)
    lead, (m, d) = tokens.shape[:-2], tokens.shape[-2:]
    if self.feature_layers:
      tokens = self.feature_encoder(tokens.reshape(-1, m, d), deterministic)
    return tokens.reshape(lead + (m * d,))

  def decode(self, memory: jax.Array, targets_in: jax.Array,
             segment_mask: jax.Array | None = None, deterministic: bool = True):
    """The decoder over the target side given the encoded segments: (batch, L)."""
    b, length, width = memory.shape
    if targets_in.shape != (b, length):
      raise ValueError(f"targets_in has shape {targets_in.shape}; expected {(b, length)}")
    # The duplicated-scalar output embedding: no parameters on the target side.
    x = jnp.repeat(jnp.asarray(targets_in, jnp.float32)[..., None], width, axis=-1)
    x = x + sinusoidal_positions(length, width)
    if segment_mask is None:
      segment_mask = jnp.ones((b, length), bool)
    valid = jnp.asarray(segment_mask, bool)
    causal = jnp.tril(jnp.ones((length, length), bool))
    self_mask = (causal[None] & valid[:, None, :])[:, None]   # (b, 1, L, L)
    memory_mask = jnp.broadcast_to(valid[:, None, None, :], (b, 1, length, length))
    for layer in self.layers:
      x = layer(x, memory, self_mask, memory_mask, deterministic)
    if self.norm_first:
      x = self.norm(x)
    x = self.out_dropout(x, deterministic=deterministic)
    return self.head(x)[..., 0]

  def dummy_inputs(self, batch: int = 1, length: int | None = None):
    """Zeros of the right shapes, for `init`: (features, targets_in)."""
    length = length or self.window
    feats = {m: jnp.zeros((batch, length, FEATURE_DIMS[m]), jnp.float32)
             for m in canonical_modalities(self.modalities)}
    return feats, jnp.zeros((batch, length), jnp.float32)


class FeatureTemporalAAN(TemporalAAN):
  """Feature+Temporal AAN: the Feature AAN encoder per segment, then the temporal decoder."""
  feature_layers: int = 6


def shift_targets(targets: jax.Array, segment_mask: jax.Array | None,
                  start_value: float = 0.0) -> jax.Array:
  """Teacher-forcing inputs: position t holds targets[t-1], or the start value where
  t is the first real position of the window (t = 0, or the previous one is padding)."""
  targets = jnp.asarray(targets, jnp.float32)
  prev = jnp.concatenate([jnp.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
  if segment_mask is None:
    has_prev = jnp.arange(targets.shape[1]) > 0
  else:
    m = jnp.asarray(segment_mask, bool)
    has_prev = jnp.concatenate([jnp.zeros_like(m[:, :1]), m[:, :-1]], axis=1)
  return jnp.where(has_prev, prev, start_value)


def autoregressive_predict(model: TemporalAAN, variables, features: Mapping[str, jax.Array],
                           segment_mask: jax.Array | None = None) -> jax.Array:
  """Evaluation as the paper does it: start from the start value, predict position 0,
  feed it back as the input of position 1, ..., one position at a time.

  A fixed-shape buffer and `lax.fori_loop`, so it jit-compiles once per shape and can be
  vmapped over folds. Returns (batch, L) outputs; the last is the window's prediction.
  """
  memory = model.apply(variables, features, method=TemporalAAN.encode)  # once, not per step
  if segment_mask is None:
    segment_mask = jnp.ones(memory.shape[:2], bool)
  return _autoregress(model, variables, memory, jnp.asarray(segment_mask, bool))


def _autoregress(model, variables, memory, segment_mask):
  b, length = memory.shape[0], memory.shape[1]

  def step(p, outputs):
    targets_in = shift_targets(outputs, segment_mask, model.start_value)
    y = model.apply(variables, memory, targets_in, segment_mask, method=TemporalAAN.decode)
    # Position p only sees inputs up to p, which are final by now: keep its output.
    return outputs.at[:, p].set(y[:, p])

  return jax.lax.fori_loop(0, length, step, jnp.zeros((b, length), jnp.float32))


def window_indices(num_segments: int, length: int) -> tuple[np.ndarray, np.ndarray]:
  """For each segment, the indices of the L segments ending at it (S, L), and a mask
  that is False on the positions before the movie's start (padding)."""
  idx = np.arange(num_segments)[:, None] - (length - 1) + np.arange(length)[None]
  return np.clip(idx, 0, None), idx >= 0


def predict_movie(model: TemporalAAN, variables, features: Mapping[str, jax.Array],
                  length: int | None = None, valid: jax.Array | None = None) -> jax.Array:
  """Autoregressive prediction for every segment of one movie: (S,).

  features[m]: (S, dim) per segment. Segment vectors are computed once per segment and
  gathered into windows (not recomputed per window); each window ending at segment s
  predicts s. `valid` (S,) marks real segments (False on padding after a movie's end).
  """
  length = length or model.window
  vectors = model.apply(variables, features, method=TemporalAAN.segment_vectors)
  s, width = vectors.shape
  idx, mask = window_indices(s, length)
  memory = vectors[idx] + sinusoidal_positions(length, width)
  mask = jnp.asarray(mask)
  if valid is not None:
    mask = mask & jnp.asarray(valid, bool)[idx]
  return _autoregress(model, variables, memory, mask)[:, -1]
