"""VTT's face-expression model: ResNet-18 with the temporal shift module over frame buffers.

    model = vtt.TSMResNet18(num_classes=7)
    variables = model.init(key, model.dummy_input(1))          # (N, T=4, 224, 224, 3)
    logits = model.apply(variables, faces, train=False)      # (N, 7): mean over the T frames

The VTT system (seed 003) classifies each face track from a buffer of 4 consecutive RGB
face crops (4 x 3 x 224 x 224 in its PyTorch layout) with a ResNet-18 whose residual blocks
shift part of their channels along time (Lin et al., TSM, 2019): a 1/8 of the channels
comes from the next frame, a 1/8 from the previous one (zeros past either end), the rest
stays, so that frames exchange information at no cost in parameters or FLOPs. Frames are
folded into the batch for the 2-D layers and unfolded only to shift.
Inputs are RGB in [0, 1] normalised with ImageNet's mean and std (`normalize`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# BUFFER: frames per face buffer in VTT. still_buffers, the stills-as-buffers view, serves
# the face corpora too: both are written in aan_jax.data.faces and re-exported here.
from aan_jax.data.faces import BUFFER, still_buffers  # noqa: F401

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def temporal_shift(x: jax.Array, num_frames: int, shift_div: int = 8) -> jax.Array:
  """Shifts channels along time in x (N*T, H, W, C): C//div from t+1, C//div from t-1, zero-padded."""
  if shift_div <= 0:
    return x
  nt, h, w, c = x.shape
  if nt % num_frames:
    raise ValueError(f"batch {nt} is not a multiple of the {num_frames} frames per buffer")
  fold = c // shift_div
  x = x.reshape(nt // num_frames, num_frames, h, w, c)
  zero = jnp.zeros_like(x[:, :1, ..., :fold])
  from_next = jnp.concatenate([x[:, 1:, ..., :fold], zero], axis=1)
  from_prev = jnp.concatenate([zero, x[:, :-1, ..., fold:2 * fold]], axis=1)
  out = jnp.concatenate([from_next, from_prev, x[..., 2 * fold:]], axis=-1)
  return out.reshape(nt, h, w, c)


class BasicBlock(nn.Module):
  """ResNet's basic block, its residual branch fed the time-shifted input (TSM "blockres")."""
  features: int
  strides: int = 1
  num_frames: int = BUFFER
  shift_div: int = 8

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                   name=name)
    y = temporal_shift(x, self.num_frames, self.shift_div)
    y = nn.Conv(self.features, (3, 3), (self.strides,) * 2, padding=1, use_bias=False,
                name="conv1")(y)
    y = nn.relu(bn("bn1")(y))
    y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, name="conv2")(y)
    y = bn("bn2")(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), (self.strides,) * 2, use_bias=False,
                  name="downsample_conv")(x)
      x = bn("downsample_bn")(x)
    return nn.relu(x + y)


class TSMResNet18(nn.Module):
  """(N, T, H, W, 3) normalised RGB face buffers -> (N, classes) logits (or (N, T, classes))."""
  num_classes: int = 7
  num_frames: int = BUFFER
  shift_div: int = 8  # 0: no shift (a plain per-frame ResNet-18, for comparison)
  widths: Sequence[int] = (64, 128, 256, 512)
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False, per_frame: bool = False):
    n, t, h, w, c = x.shape
    if t != self.num_frames:
      raise ValueError(f"got buffers of {t} frames; this model was built for {self.num_frames}")
    x = jnp.asarray(x, jnp.float32).reshape(n * t, h, w, c)
    x = nn.Conv(self.widths[0], (7, 7), (2, 2), padding=3, use_bias=False, name="conv1")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             name="bn1")(x))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for s, (width, blocks) in enumerate(zip(self.widths, self.stage_sizes)):
      for b in range(blocks):
        x = BasicBlock(width, 2 if s > 0 and b == 0 else 1, self.num_frames, self.shift_div,
                       name=f"layer{s + 1}_{b}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, name="fc")(x).reshape(n, t, self.num_classes)
    # TSM's consensus: the clip's logits are the mean of its frames'.
    return logits if per_frame else logits.mean(axis=1)

  def dummy_input(self, batch: int = 1, size: int = 224) -> jax.Array:
    return jnp.zeros((batch, self.num_frames, size, size, 3), jnp.float32)


def normalize(rgb_uint8) -> np.ndarray:
  """uint8 RGB (..., 3) -> float32 normalised with ImageNet's mean and std."""
  return ((np.asarray(rgb_uint8, np.float32) / 255.0) - IMAGENET_MEAN) / IMAGENET_STD


def buffers(track_frames: np.ndarray, num_frames: int = BUFFER) -> np.ndarray:
  """(T_track, H, W, 3) crops of one face track -> (B, num_frames, H, W, 3) sliding buffers.

  Buffer k holds crops k-num_frames+1 .. k (the first ones repeat crop 0), so that every
  crop gets a prediction from itself and the ones before it, as a stream would.
  """
  track_frames = np.asarray(track_frames)
  if not len(track_frames):
    return np.zeros((0, num_frames) + track_frames.shape[1:], track_frames.dtype)
  idx = np.arange(len(track_frames))[:, None] + np.arange(-num_frames + 1, 1)[None, :]
  return track_frames[np.clip(idx, 0, None)]
