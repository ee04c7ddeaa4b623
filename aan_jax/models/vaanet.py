"""VAANet (Zhao et al., AAAI 2020) after its frozen visual backbone, in Flax, and its losses.

Written from the facts in ../shared/VAANET.md (the authors' code has no license; nothing
of it is copied). Inputs are the backbone's maps per snippet and raw MFCCs:

    from aan_jax.models import vaanet
    model = vaanet.VAANet()
    variables = model.init(jax.random.key(0), *model.dummy_inputs(2))
    out = model.apply(variables, visual, audio, deterministic=True)
    out["logits"]   # (batch, 8); out["alpha"], out["beta"], out["gamma"]: attention weights

`visual` is (batch, snippets, positions, channels): the 3D ResNet-101's (2048, 1, 4, 4)
map of each 16-frame snippet, positions in row-major order (h * 4 + w), channels last;
`audio` is (batch, 4096, 32) raw MFCC frames. Training (`deterministic=False`) uses batch
statistics in every BatchNorm and returns the updated running statistics through the
mutable `batch_stats` collection, as PyTorch's train mode does.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# VE8_CLASSES (VideoEmotion-8 in the authors' and classInd.txt's order) and EKMAN6_CLASSES
# are written in aan_jax.data.classes, which the corpora and the builders read too.
from aan_jax.data.classes import EKMAN6_CLASSES, VE8_CLASSES  # noqa: F401  (re-exported)

# PCCE's polarity: Anticipation, Joy, Surprise, Trust are positive (the authors' "pcce_ve8").
VE8_POSITIVE = (1, 4, 6, 7)
# The authors' code has no Ekman-6 PCCE; this grouping (joy and surprise positive, as in
# VE8, where Surprise is positive too) is ours.
EKMAN6_POSITIVE = (3, 5)


# ---- initialisers matching the authors' module init (VAANET.md, "Init") ----

# kaiming_normal(mode="fan_out") for a relu gain: std = sqrt(2 / fan_out), untruncated.
_kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch's default Linear/Conv weight init: U(+-1/sqrt(fan_in)).
_torch_default = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias(fan_in: int):
  """torch's default bias init: U(+-1/sqrt(fan_in)) (fan_in of the weight, not the bias)."""
  bound = 1.0 / math.sqrt(max(fan_in, 1))
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                  bound)


def _dense(features: int, fan_in: int, *, bias: bool = True, kernel_init=_torch_default,
           bias_init=None, name: str):
  return nn.Dense(features, use_bias=bias, kernel_init=kernel_init,
                  bias_init=bias_init or _torch_bias(fan_in), name=name)


class TorchBatchNorm(nn.Module):
  """BatchNorm over every axis but the last, with PyTorch's semantics (eps 1e-5, momentum 0.1).

  By hand rather than nn.BatchNorm because torch updates the running variance with the
  UNBIASED batch variance (normalising with the biased one); parity of the running
  statistics after a training step needs exactly that.
  """
  momentum: float = 0.1
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x, axes)
      var = jnp.mean(jnp.square(x - mean), axes)
      n = x.size // c
      if not self.is_initializing():
        m = self.momentum
        ra_mean.value = (1 - m) * ra_mean.value + m * mean
        ra_var.value = (1 - m) * ra_var.value + m * var * (n / max(n - 1, 1))
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class Attention1D(nn.Module):
  """VAANet's attention unit: a 1-wide conv to one channel, BN, tanh, a Linear over the rest.

  `x` is (..., length, channels); returns the (..., length) scores after the Linear
  (softmax, scaling or ReLU are the caller's, they differ between the four units).
  """
  length: int
  fc_bias: bool = False
  fc_bias_init: float | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    s = _dense(1, x.shape[-1], bias=False, kernel_init=_kaiming_fan_out, name="conv")(x)[..., 0]
    s = jnp.tanh(TorchBatchNorm(name="bn")(s[..., None], not train)[..., 0])
    bias_init = (nn.initializers.constant(self.fc_bias_init) if self.fc_bias_init is not None
                 else None)
    return _dense(self.length, self.length, bias=self.fc_bias, bias_init=bias_init,
                  name="fc")(s)


class BasicBlock(nn.Module):
  """ResNet-18's block: two 3x3 convs with BN, a 1x1 conv + BN shortcut when the shape changes."""
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = lambda f, k, s, p, name: nn.Conv(f, (k, k), (s, s), padding=((p, p), (p, p)),
                                            use_bias=False, kernel_init=_kaiming_fan_out,
                                            name=name)
    y = conv(self.features, 3, self.stride, 1, "conv1")(x)
    y = nn.relu(TorchBatchNorm(name="bn1")(y, not train))
    y = conv(self.features, 3, 1, 1, "conv2")(y)
    y = TorchBatchNorm(name="bn2")(y, not train)
    if self.stride != 1 or x.shape[-1] != self.features:  # torchvision's rule
      x = TorchBatchNorm(name="down_bn")(conv(self.features, 1, self.stride, 0, "down_conv")(x),
                                         not train)
    return nn.relu(x + y)


class AudioResNet(nn.Module):
  """The audio ResNet-18: a (7, 1) stride (2, 1) first conv for 1-channel MFCC images.

  Input (n, time, coefficients, 1); output (n, widths[-1]), the mean over the last map
  (the authors' AvgPool2d covers the whole 8 x 2 map of a 256 x 32 segment).
  """
  widths: Sequence[int] = (64, 128, 256, 512)
  blocks: Sequence[int] = (2, 2, 2, 2)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    # The new first conv keeps torch's default init (the authors did not re-initialise it).
    x = nn.Conv(self.widths[0], (7, 1), (2, 1), padding=((3, 3), (0, 0)), use_bias=False,
                kernel_init=_torch_default, name="stem_conv")(x)
    x = nn.relu(TorchBatchNorm(name="stem_bn")(x, not train))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for i, (width, n) in enumerate(zip(self.widths, self.blocks)):
      for j in range(n):
        stride = 2 if (i > 0 and j == 0) else 1
        x = BasicBlock(width, stride, name=f"layer{i + 1}_{j}")(x, train)
    return jnp.mean(x, axis=(1, 2))


class VAANet(nn.Module):
  """VAANet's visual attention (spatial, channel-wise, temporal), audio branch, and fusion.

  Sizes default to the authors' (VAANET.md); all are configurable so that the same module
  runs on other backbone maps (e.g. I3D Mixed_5c: 1024 channels) and at tiny test sizes.
  """
  num_classes: int = 8
  seq_len: int = 12            # snippets per video (ta_net.fc is seq_len x seq_len)
  positions: int = 16          # backbone map positions per snippet (4 x 4)
  backbone_dim: int = 2048     # backbone channels
  hidden: int = 512            # conv0 width
  audio_segments: int = 16     # MFCC segments per video
  audio_frames: int = 256      # MFCC frames per segment
  n_mfcc: int = 32
  audio_widths: Sequence[int] = (64, 128, 256, 512)
  audio_blocks: Sequence[int] = (2, 2, 2, 2)
  audio_dim: int = 256         # a_fc width

  def dummy_inputs(self, batch: int = 1) -> tuple[jax.Array, jax.Array]:
    """Zero inputs of the right shapes: (visual, audio)."""
    return (jnp.zeros((batch, self.seq_len, self.positions, self.backbone_dim), jnp.float32),
            jnp.zeros((batch, self.audio_segments * self.audio_frames, self.n_mfcc),
                      jnp.float32))

  def check_inputs(self, visual, audio) -> None:
    """Raises a ValueError that names the expected shapes when the inputs do not fit."""
    v, a = tuple(np.shape(visual)), tuple(np.shape(audio))
    want_v = (self.seq_len, self.positions, self.backbone_dim)
    want_a = (self.audio_segments * self.audio_frames, self.n_mfcc)
    if len(v) != 4 or v[1:] != want_v:
      raise ValueError(f"visual has shape {v}; expected (batch, {want_v[0]} snippets, "
                       f"{want_v[1]} positions, {want_v[2]} channels)")
    if len(a) != 3 or a[1:] != want_a:
      raise ValueError(f"audio has shape {a}; expected (batch, {want_a[0]} MFCC frames, "
                       f"{want_a[1]} coefficients)")
    if v[0] != a[0]:
      raise ValueError(f"visual has batch {v[0]} but audio has batch {a[0]}")

  @nn.compact
  def __call__(self, visual: jax.Array, audio: jax.Array, deterministic: bool = True) -> dict:
    self.check_inputs(visual, audio)
    train = not deterministic
    b, s, p, _ = visual.shape
    visual = jnp.asarray(visual, jnp.float32)
    # conv0: a 1-wide Conv1d over positions = a Dense on the channel axis.
    f = _dense(self.hidden, self.backbone_dim, kernel_init=_kaiming_fan_out, name="conv0")(visual)
    f = nn.relu(TorchBatchNorm(name="conv0_bn")(f, not train))             # (B, S, P, H)

    # Spatial attention: softmax over positions, scaled by their count (mean weight 1).
    alpha = nn.softmax(Attention1D(p, name="sa")(f, train), axis=-1) * p     # (B, S, P)
    fs = f * alpha[..., None]
    # Channel-wise attention: a learned weighted sum over positions per channel.
    beta_in = jnp.swapaxes(fs, -1, -2)                                      # (B, S, H, P)
    beta = nn.softmax(Attention1D(self.hidden, name="cwa")(beta_in, train), axis=-1)
    beta = beta * self.hidden                                               # (B, S, H)
    v = jnp.mean(fs * beta[:, :, None, :], axis=2)                          # (B, S, H)
    # Temporal attention over snippets: ReLU of the scores, no softmax (the authors' choice).
    gamma = nn.relu(Attention1D(s, fc_bias=True, fc_bias_init=1.0, name="ta")(v, train))
    f_v = jnp.mean(v * gamma[..., None], axis=1)                            # (B, H)

    # Audio: consecutive segments of MFCC frames, each a 1-channel (time x coefficient) image.
    seg = jnp.asarray(audio, jnp.float32).reshape(
        b * self.audio_segments, self.audio_frames, self.n_mfcc, 1)
    a = AudioResNet(self.audio_widths, self.audio_blocks, name="a_resnet")(seg, train)
    a = _dense(self.audio_dim, a.shape[-1], name="a_fc")(a)
    e = jnp.tanh(TorchBatchNorm(name="a_fc_bn")(a, not train))
    e = e.reshape(b, self.audio_segments, self.audio_dim)                   # (B, J, A)
    audio_gamma = nn.relu(Attention1D(self.audio_segments, fc_bias=True, name="aa")(e, train))
    f_a = jnp.mean(e * audio_gamma[..., None], axis=1)                      # (B, A)

    logits = _dense(self.num_classes, self.hidden + self.audio_dim, name="av_fc")(
        jnp.concatenate([f_v, f_a], axis=-1))
    return {"logits": logits, "alpha": alpha, "beta": beta, "gamma": gamma,
            "audio_gamma": audio_gamma}


# ---- losses ----

def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example cross-entropy of integer labels: (batch,)."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def polarity_weights(logits: jax.Array, labels: jax.Array, positive: Sequence[int],
                     lam: float = 0.5) -> jax.Array:
  """PCCE's per-example weight: 1 + lam where the argmax's polarity differs from the label's.

  A constant in the loss (no gradient flows through the argmax).
  """
  is_pos = jnp.zeros((logits.shape[-1],), bool).at[jnp.asarray(positive, jnp.int32)].set(True)
  pred = jnp.argmax(jax.lax.stop_gradient(logits), axis=-1)
  return 1.0 + lam * (is_pos[pred] != is_pos[labels.astype(jnp.int32)]).astype(logits.dtype)


def _mean(x: jax.Array, weights: jax.Array | None) -> jax.Array:
  if weights is None:
    return jnp.mean(x)
  w = jnp.asarray(weights, x.dtype)
  return jnp.sum(w * x) / jnp.maximum(jnp.sum(w), 1e-12)


def ce_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Plain cross-entropy, the mean over the batch (`weights`: per-example, e.g. a pad mask)."""
  return _mean(cross_entropy(logits, labels), weights)


def pcce_loss(logits: jax.Array, labels: jax.Array, positive: Sequence[int] = VE8_POSITIVE,
              lam: float = 0.5, weights: jax.Array | None = None) -> jax.Array:
  """Polarity-consistent cross-entropy (the authors' default, lambda_0 = 0.5)."""
  ce = cross_entropy(logits, labels) * polarity_weights(logits, labels, positive, lam)
  return _mean(ce, weights)
