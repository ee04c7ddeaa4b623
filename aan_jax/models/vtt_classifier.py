"""VTT's TSM ResNet-18 as a clip classifier over face buffers, with its input pipeline.

    from aan_jax.models import vtt_classifier
    module = vtt_classifier.build(config)              # config.vtt: widths, stage_sizes, ...
    variables = vtt_classifier.init(module, key, {"faces": faces})   # {"params", "batch_stats"}
    logits, new = vtt_classifier.train_logits(module, variables, {"faces": faces}, key)
    logits, _ = vtt_classifier.eval_logits(module, variables, {"faces": faces})

`faces` is (B, T=4, H, W, 3) uint8 RGB (or floats in 0..255, as exported models get them):
one face buffer per example (a still image, such as a RAF-DB face, is a buffer of 4 copies:
`vtt.still_buffers`; stills (B, H, W, 3) are also taken and repeated here). Everything
after the uint8 input runs in JAX: training jitters each frame by a few pixels (a random
crop of the edge-padded frame, as a face detector's box moves between the frames of a still
face) and mirrors whole buffers at random; then an optional resize to `image_size`, and
ImageNet normalisation (`vtt.normalize`'s constants). The engine's spec for it is "vtt"
(aan_jax.engine.zoo); the task is aan_jax.training.faces.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from aan_jax.models import vtt

INPUT = "faces"


def get_config() -> ml_collections.ConfigDict:
  """The model's settings (config.vtt in the face_expression launcher)."""
  c = ml_collections.ConfigDict()
  c.num_classes = 7
  c.widths = (64, 128, 256, 512)     # ResNet-18; tests use e.g. (8, 16)
  c.stage_sizes = (2, 2, 2, 2)
  c.shift_div = 8                    # 0: a plain per-frame ResNet-18
  c.dropout = 0.0                    # before the classifier
  c.image_size = 0                   # 0: frames as they come (RAF-DB: 100); VTT used 224
  c.jitter = 4                       # training: per-frame shift of up to this many pixels
  c.flip = True                      # training: mirror whole buffers at random
  return c


def _settings(config) -> ml_collections.ConfigDict:
  """config.vtt where the config has one (a launcher's), else the defaults."""
  c = get_config()
  sub = config.get("vtt") if config is not None and hasattr(config, "get") else None
  if sub is not None:
    c.update(sub)
  if config is not None and hasattr(config, "get") and config.get("num_classes"):
    c.num_classes = int(config.num_classes)
  return c


class VTTClassifier(vtt.TSMResNet18):
  """TSMResNet18 with its input settings attached (the spec functions read them)."""
  image_size: int = 0
  jitter: int = 0
  flip: bool = False


def build(config) -> VTTClassifier:
  c = _settings(config)
  return VTTClassifier(num_classes=c.num_classes, widths=tuple(c.widths),
                       stage_sizes=tuple(c.stage_sizes), shift_div=c.shift_div,
                       dropout=c.dropout, image_size=c.image_size, jitter=c.jitter,
                       flip=c.flip)


def as_buffers(faces: jax.Array, num_frames: int = vtt.BUFFER) -> jax.Array:
  """(B, T, H, W, 3) buffers as they are; (B, H, W, 3) stills -> (B, T, H, W, 3) copies."""
  if faces.ndim == 4:
    return jnp.repeat(faces[:, None], num_frames, axis=1)
  if faces.ndim != 5:
    raise ValueError(f"faces: expected (B, {num_frames}, H, W, 3) buffers or (B, H, W, 3) "
                     f"stills, got shape {faces.shape}")
  return faces


def jitter_and_flip(x: jax.Array, key: jax.Array, jitter: int, flip: bool) -> jax.Array:
  """Training augmentation of (B, T, H, W, C): each frame its own crop of the edge-padded
  frame (offsets in [-jitter, jitter]), each buffer mirrored left-right with p=1/2."""
  b, t, h, w, c = x.shape
  k_crop, k_flip = jax.random.split(key)
  if jitter > 0:
    pad = jnp.pad(x, ((0, 0), (0, 0), (jitter, jitter), (jitter, jitter), (0, 0)), mode="edge")
    off = jax.random.randint(k_crop, (b, t, 2), 0, 2 * jitter + 1)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
    x = jax.vmap(jax.vmap(crop))(pad, off)
  if flip:
    mirror = jax.random.bernoulli(k_flip, 0.5, (b,))
    x = jnp.where(mirror[:, None, None, None, None], x[:, :, :, ::-1], x)
  return x


def preprocess(module: VTTClassifier, faces, key: jax.Array | None = None) -> jax.Array:
  """uint8 faces -> normalised float32 buffers (B, T, S, S, 3); augmented when key is given."""
  x = as_buffers(jnp.asarray(faces), module.num_frames)
  if key is not None:
    x = jitter_and_flip(x, key, module.jitter, module.flip)
  x = x.astype(jnp.float32) / 255.0
  if module.image_size and x.shape[2:4] != (module.image_size, module.image_size):
    b, t, _, _, c = x.shape
    x = jax.image.resize(x, (b, t, module.image_size, module.image_size, c), "bilinear")
  return (x - vtt.IMAGENET_MEAN) / vtt.IMAGENET_STD


def init(module: VTTClassifier, key: jax.Array, inputs) -> dict:
  """{"params", "batch_stats"} for the shapes of inputs["faces"] (only its first row is used).

  The engine's keys are aan_jax.util.prng's hash (categorical's prng_impl default): with threefry,
  XLA:CPU took ~50 s to compile this ResNet's initialisers on a loaded 2-core machine."""
  x = preprocess(module, jnp.asarray(inputs[INPUT])[:1])
  return dict(module.init({"params": key, "dropout": key}, x, train=False))


def train_logits(module: VTTClassifier, variables, inputs, key):
  """(B, classes) logits in training mode, and the updated {"batch_stats"}."""
  k_aug, k_drop = jax.random.split(key)
  x = preprocess(module, inputs[INPUT], k_aug)
  return module.apply(variables, x, train=True, mutable=["batch_stats"],
                      rngs={"dropout": k_drop})


def eval_logits(module: VTTClassifier, variables, inputs):
  """(B, classes) logits with BatchNorm's running statistics; no extras."""
  return module.apply(variables, preprocess(module, inputs[INPUT]), train=False), {}
