"""The field's baselines: the thesis' LSTM, Sivaprasad et al.'s late fusion, a linear floor.

Every model here maps a film's sequence of segment features to one output per segment and
shares one call:

    outputs, carry = model.apply(variables, features, carry=None, deterministic=True)

with `features[m]` of shape (batch, T, dim) for each of `model.modalities` (canonical
dims), `outputs` (batch, T) and `carry` the recurrent state after the last segment (None
for the linear model). `carry=None` starts from `model.initial_carry(batch)` (zeros), so
training on consecutive windows of a film passes each window's carry to the next (reset
it with `reset_carry` where a new film starts), and evaluation runs the whole film at once;
both give the same outputs (tested). `mask` (batch, T), False on padding, skips a step:
the carry goes through it unchanged. `task="regression"` ends in tanh (scaled to
`output_range`), `task="binary"` in a logit (fear: train with a class-weighted
binary cross-entropy).

    from aan_jax.models import baselines
    model = baselines.LSTMBaseline(modalities=("vggish", "emobase2010"), hidden=64)
    variables = model.init(jax.random.key(0), model.dummy_features(2, 5))
    y, carry = model.apply(variables, features)                  # y: (2, 5)
    y2, carry = model.apply(variables, next_window, carry)       # the film goes on

The LSTM cell is torch.nn.LSTM's (gates i, f, g, o; bias_ih and bias_hh), so a torch LSTM's
state_dict imports with `aan_jax.convert.lstm.import_torch_lstm`. The models expect normalised features (per
fold, from training rows: the engine's job); nothing here normalises.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aan_jax.data.features import AUDIO_FEATURES, FEATURE_DIMS, FEATURES, VIDEO_FEATURES
from aan_jax.data.features import canonical_modalities
from aan_jax.models.layers import Dropout

TASKS = ("regression", "binary")
# Sivaprasad et al. run one LSTM per modality group and fuse the groups' outputs.
MODALITY_GROUPS: dict[str, tuple[str, ...]] = {"audio": AUDIO_FEATURES, "video": VIDEO_FEATURES}

Carry = Any  # a pytree of (layers, batch, hidden) arrays, or None


def check_sequence_features(features: Mapping[str, jax.Array], modalities: Sequence[str]
                            ) -> tuple[int, int]:
  """Validates (batch, T, dim) features for `modalities`; returns (batch, T)."""
  if not isinstance(features, Mapping):
    raise ValueError(
        "features must be a mapping from modality name to an array of shape "
        f"(batch, segments, dim); got {type(features).__name__}")
  lead = None
  for m in modalities:
    dim = FEATURE_DIMS[m]
    if m not in features:
      raise ValueError(f"missing modality {m!r}: expected an array of shape "
                       f"(batch, segments, {dim}); got keys {sorted(features)}")
    shape = tuple(np.shape(features[m]))
    if len(shape) != 3 or shape[-1] != dim:
      raise ValueError(f"modality {m!r} has shape {shape}; expected (batch, segments, {dim})")
    if lead is None:
      lead = shape[:2]
    elif shape[:2] != lead:
      raise ValueError(
          f"modality {m!r} has (batch, segments) {shape[:2]} but the others have {lead}")
  return lead


def dummy_features(modalities: Sequence[str], batch: int = 1, length: int = 1) -> dict:
  """Zeros of the right shapes, for `init`."""
  return {m: jnp.zeros((batch, length, FEATURE_DIMS[m]), jnp.float32)
          for m in canonical_modalities(modalities)}


def zero_carry(num_layers: int, batch: int, hidden: int) -> Carry:
  """An LSTM's state before a film's first segment: torch's (h_0, c_0) of zeros."""
  zeros = jnp.zeros((num_layers, batch, hidden), jnp.float32)
  return {"h": zeros, "c": zeros}


def reset_carry(carry: Carry, start: jax.Array) -> Carry:
  """Zeros the carry of the batch rows where `start` (batch,) is True (a new film)."""
  start = jnp.asarray(start, bool)
  return jax.tree.map(lambda c: jnp.where(start[:, None], 0.0, c), carry)


def _check_task(task: str):
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def _output(z: jax.Array, task: str, output_range: tuple[float, float]) -> jax.Array:
  """The head's activation: tanh scaled to output_range, or the logit itself."""
  if task == "binary":
    return z
  lo, hi = output_range
  if (lo, hi) == (-1.0, 1.0):
    return jnp.tanh(z)
  return lo + (hi - lo) * 0.5 * (jnp.tanh(z) + 1.0)


# ------------------------------------------------------------------------------ LSTM


def _uniform(bound: float):
  """U(-bound, bound); torch.nn.LSTM draws every weight and bias so, bound 1/sqrt(hidden)."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class TorchLSTM(nn.Module):
  """A stack of LSTM layers with torch.nn.LSTM's maths, batch first.

  Per layer k, parameters `layer_{k}_kernel_ih` (in, 4H), `layer_{k}_kernel_hh` (H, 4H),
  `layer_{k}_bias_ih` and `layer_{k}_bias_hh` (4H,): torch's weight_ih_lk and
  weight_hh_lk transposed and its two biases, the 4H axis in torch's gate order i, f, g, o:
    i = sigmoid(x W_ii + b_ii + h W_hi + b_hi)    f, o likewise
    g = tanh(x W_ig + b_ig + h W_hg + b_hg)
    c' = f * c + i * g,  h' = o * tanh(c')
  Initialised as torch.nn.LSTM is: every weight and bias uniform in +-1/sqrt(H). (Not
  Keras' orthogonal recurrent kernels: on this 2-core CPU, jaxlib 0.10.2, a jitted,
  vmapped init holding two orthogonal inits, i.e. two LAPACK QRs that XLA runs
  side by side on its thread pool, deadlocked every time: the late-fusion model's
  engine init.) `dropout` acts between layers, as torch's. The carry is
  {"h": (layers, B, H), "c": (layers, B, H)}: torch's (h_n, c_n).
  """
  hidden: int = 512
  num_layers: int = 1
  dropout: float = 0.0
  unroll: int = 1  # lax.scan's unroll over segments

  def initial_carry(self, batch: int) -> Carry:
    return zero_carry(self.num_layers, batch, self.hidden)

  @nn.compact
  def __call__(self, x: jax.Array, carry: Carry = None, mask: jax.Array | None = None,
               deterministic: bool = True) -> tuple[jax.Array, Carry]:
    b, t, _ = x.shape
    h4 = 4 * self.hidden
    if carry is None:
      carry = self.initial_carry(b)
    if mask is None:
      mask = jnp.ones((b, t), bool)
    keep = jnp.swapaxes(jnp.asarray(mask, bool), 0, 1)[..., None]   # (T, B, 1)
    hs, cs = [], []
    for k in range(self.num_layers):
      if k:
        x = Dropout(self.dropout)(x, deterministic=deterministic)
      init = _uniform(self.hidden ** -0.5)
      w_ih = self.param(f"layer_{k}_kernel_ih", init, (x.shape[-1], h4))
      w_hh = self.param(f"layer_{k}_kernel_hh", init, (self.hidden, h4))
      b_ih = self.param(f"layer_{k}_bias_ih", init, (h4,))
      b_hh = self.param(f"layer_{k}_bias_hh", init, (h4,))
      # The input side of every segment in one matmul, outside the recurrence: only
      # h W_hh is sequential.
      xw = jnp.swapaxes(x @ w_ih + b_ih + b_hh, 0, 1)                # (T, B, 4H)

      def step(state, inp, w_hh=w_hh):
        h, c = state
        z, ok = inp
        i, f, g, o = jnp.split(z + h @ w_hh, 4, axis=-1)
        c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
        # A masked (padding) step leaves the state as it was.
        h_new, c_new = jnp.where(ok, h_new, h), jnp.where(ok, c_new, c)
        return (h_new, c_new), h_new

      (h, c), ys = jax.lax.scan(step, (carry["h"][k], carry["c"][k]), (xw, keep),
                                unroll=self.unroll)
      hs.append(h)
      cs.append(c)
      x = jnp.swapaxes(ys, 0, 1)                                      # (B, T, H)
    return x, {"h": jnp.stack(hs), "c": jnp.stack(cs)}


def _segment_inputs(features: Mapping[str, jax.Array], modalities: Sequence[str],
                    projection: int) -> jax.Array:
  """(B, T, D): per-modality Dense(projection) outputs, or the raw features, concatenated."""
  parts = []
  for m in modalities:
    x = jnp.asarray(features[m], jnp.float32)
    parts.append(nn.Dense(projection, name=f"proj_{m}")(x) if projection else x)
  return jnp.concatenate(parts, axis=-1)


class LSTMBaseline(nn.Module):
  """The thesis' stateful LSTM: inputs -> dropout -> LSTM -> dropout -> Dense(1) -> tanh | logit.

  `projection` > 0: each modality -> Dense(projection) (as the AAN's input projections),
  concatenated; 0: the concatenated features themselves (the thesis; its input
  BatchNorm is the engine's per-fold feature normalisation here).
  """
  modalities: Sequence[str] = FEATURES
  projection: int = 8
  hidden: int = 512               # the thesis found 512 cells best (of 256, 512, 1024)
  num_layers: int = 1
  input_dropout: float = 0.5      # the thesis' best dropout was 0.5
  dropout: float = 0.5            # on the LSTM's outputs (and between layers)
  task: str = "regression"        # "regression": tanh head; "binary": logit head
  output_range: tuple[float, float] = (-1.0, 1.0)   # tanh mapped onto it (EIMT16: (1, 5))
  unroll: int = 1

  def _lstm(self) -> TorchLSTM:
    return TorchLSTM(self.hidden, self.num_layers, self.dropout, self.unroll, name="lstm")

  def initial_carry(self, batch: int) -> Carry:
    """Zeros: the state before a film's first segment."""
    return zero_carry(self.num_layers, batch, self.hidden)

  def dummy_features(self, batch: int = 1, length: int = 1) -> dict:
    return dummy_features(self.modalities, batch, length)

  @nn.compact
  def __call__(self, features: Mapping[str, jax.Array], carry: Carry = None,
               deterministic: bool = True, mask: jax.Array | None = None
               ) -> tuple[jax.Array, Carry]:
    _check_task(self.task)
    mods = canonical_modalities(self.modalities)
    check_sequence_features(features, mods)
    x = _segment_inputs(features, mods, self.projection)
    x = Dropout(self.input_dropout)(x, deterministic=deterministic)
    x, carry = self._lstm()(x, carry, mask, deterministic)
    x = Dropout(self.dropout)(x, deterministic=deterministic)
    z = nn.Dense(1, name="head")(x)[..., 0]
    return _output(z, self.task, self.output_range), carry


def modality_groups(modalities: Sequence[str]) -> dict[str, tuple[str, ...]]:
  """{"audio": (...), "video": (...)}: the groups `modalities` has members of."""
  mods = canonical_modalities(modalities)
  groups = {g: tuple(m for m in ms if m in mods) for g, ms in MODALITY_GROUPS.items()}
  return {g: ms for g, ms in groups.items() if ms}


class LateFusionLSTM(nn.Module):
  """Sivaprasad et al.'s scheme: one LSTMBaseline per modality group, a learned weighted mean.

  Each group (audio: vggish, emobase2010; video: resnet50, flownet, i3d; those present
  in `modalities`) has its own projections, LSTM and head; the output is
  sum_g softmax(w)_g * output_g, with w (one logit per group, zeros at init: the plain
  mean) learned with the rest. Regression fuses the groups' tanh outputs (so the result
  stays in output_range), binary fuses their logits. Their correlation-based feature
  selection is not reproduced: the groups see the engine's features.
  """
  modalities: Sequence[str] = FEATURES
  projection: int = 8
  hidden: int = 512               # per group
  num_layers: int = 1
  input_dropout: float = 0.5
  dropout: float = 0.5
  task: str = "regression"
  output_range: tuple[float, float] = (-1.0, 1.0)
  unroll: int = 1

  def initial_carry(self, batch: int) -> Carry:
    return {g: zero_carry(self.num_layers, batch, self.hidden)
            for g in modality_groups(self.modalities)}

  def dummy_features(self, batch: int = 1, length: int = 1) -> dict:
    return dummy_features(self.modalities, batch, length)

  @nn.compact
  def __call__(self, features: Mapping[str, jax.Array], carry: Carry = None,
               deterministic: bool = True, mask: jax.Array | None = None
               ) -> tuple[jax.Array, Carry]:
    _check_task(self.task)
    check_sequence_features(features, canonical_modalities(self.modalities))
    groups = modality_groups(self.modalities)
    carry = carry if carry is not None else {g: None for g in groups}
    outs, new_carry = [], {}
    for g, ms in groups.items():
      branch = LSTMBaseline(ms, self.projection, self.hidden, self.num_layers,
                            self.input_dropout, self.dropout, self.task,
                            self.output_range, self.unroll, name=g)
      y, new_carry[g] = branch(
          {m: features[m] for m in ms}, carry[g], deterministic, mask)
      outs.append(y)
    w = jax.nn.softmax(self.param("fusion_logits", nn.initializers.zeros, (len(groups),)))
    return jnp.tensordot(w, jnp.stack(outs), axes=1), new_carry


class LinearBaseline(nn.Module):
  """The floor: one linear map of the concatenated (normalised) features per segment.

  Regression: the linear prediction itself (no tanh: a linear regression); binary: a
  logit (logistic regression). No state: `carry` passes through untouched. It starts near
  a constant: small weights (1/100 of LeCun's scale: thousands of inputs would otherwise
  start it with an output spread of about 1, several times the labels') and, for
  regression, the bias at the middle of `output_range` (EIMT16's 1-5 labels: 3); the
  output itself is not bounded.
  """
  modalities: Sequence[str] = FEATURES
  dropout: float = 0.0            # on the inputs
  task: str = "regression"
  output_range: tuple[float, float] = (-1.0, 1.0)   # only where the bias starts

  def initial_carry(self, batch: int) -> Carry:
    del batch
    return None

  def dummy_features(self, batch: int = 1, length: int = 1) -> dict:
    return dummy_features(self.modalities, batch, length)

  @nn.compact
  def __call__(self, features: Mapping[str, jax.Array], carry: Carry = None,
               deterministic: bool = True, mask: jax.Array | None = None
               ) -> tuple[jax.Array, Carry]:
    del mask  # each segment on its own
    _check_task(self.task)
    mods = canonical_modalities(self.modalities)
    check_sequence_features(features, mods)
    x = _segment_inputs(features, mods, projection=0)
    x = Dropout(self.dropout)(x, deterministic=deterministic)
    mid = 0.0 if self.task == "binary" else 0.5 * (self.output_range[0] + self.output_range[1])
    head = nn.Dense(1, name="head",
                    kernel_init=nn.initializers.variance_scaling(1e-4, "fan_in", "normal"),
                    bias_init=nn.initializers.constant(mid))
    return head(x)[..., 0], carry


# ------------------------------------------------------------------- torch import
