"""VTT's TSM ResNet-18 as a classifier of the engine's categorical task (inputs: face buffers).

    from aan_jax.training import faces as vtt_task                  # registers "vtt" with aan_jax.training.categorical
    module = vtt_task.build(config)               # config.vtt: widths, stage_sizes, image_size, ...
    variables = vtt_task.init(module, key, {"faces": faces})   # {"params", "batch_stats"}
    logits, new = vtt_task.train_logits(module, variables, {"faces": faces}, key)
    logits, _ = vtt_task.eval_logits(module, variables, {"faces": faces})

`faces` is (B, T=4, H, W, 3) uint8 RGB (or floats in 0..255, as exported models get them):
one face buffer per example (a still image, such as a RAF-DB face, is a buffer of 4 copies:
`vtt.still_buffers`; stills (B, H, W, 3) are also taken and repeated here). Everything
after the uint8 input runs in JAX: training jitters each frame by a few pixels (a random
crop of the edge-padded frame, as a face detector's box moves between the frames of a still
face) and mirrors whole buffers at random; then an optional resize to `image_size`, and
ImageNet normalisation (`vtt.normalize`'s constants).

The task itself (`python -m experiments.face_expression`): `train_and_evaluate` trains
every run of the config in aan_jax.training.categorical's engine on RAF-DB or synthetic faces
(`face_corpora`) and writes the engine's output contract.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aan_jax.training import categorical
from aan_jax.data import faces as face_corpora
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


categorical.register_classifier("vtt", categorical.ClassifierSpec(
    build, init, train_logits, eval_logits, label="VTT TSM ResNet-18"))


# ------------------------------------------------------------------- the task

DATASETS = ("raf_db", "synthetic")
# The synthetic demo's sizes, where the command line left the defaults: a small TSM on
# 16x16 faces trains in about a minute on a CPU.
SYNTHETIC_SIZES = {"num_epochs": 30, "learning_rate": 3e-3, "batch_size": 32}
SYNTHETIC_VTT = {"widths": (8, 16), "stage_sizes": (1, 1), "jitter": 2}
SYNTHETIC_FACES = {"size": 16, "per_class": 60}


def get_task_config() -> ml_collections.ConfigDict:
  """The categorical engine's settings for VTT's model on face stills (our defaults: VTT's
  own training settings are not published; Adam 1e-3, batch 64, 40 epochs, cross-entropy)."""
  c = categorical.get_config()
  c.dataset = "raf_db"   # raf_db | synthetic
  c.model = "vtt"
  c.loss = "ce"          # pcce: happy and surprise are FER's positive classes
  c.learning_rate = 1e-3
  c.batch_size = 64
  c.num_epochs = 40
  c.vtt = get_config()
  c.faces = face_corpora.get_config()
  return c


def resolve(config) -> ml_collections.ConfigDict:
  """The synthetic demo's sizes where the defaults were left (not given on the command line)."""
  config = config.copy_and_resolve_references()
  if config.dataset == "synthetic":
    d, given = get_task_config(), categorical.explicit_settings(config)
    same = lambda a, b: tuple(np.atleast_1d(a)) == tuple(np.atleast_1d(b))
    with config.unlocked():
      for prefix, group, ref, sizes in (("", config, d, SYNTHETIC_SIZES),
                                        ("vtt.", config.vtt, d.vtt, SYNTHETIC_VTT),
                                        ("faces.", config.faces, d.faces, SYNTHETIC_FACES)):
        for k, v in sizes.items():
          if prefix + k not in given and same(group[k], ref[k]):
            group[k] = v
  return config


def validate(config) -> None:
  """The engine's checks of its shared settings, then the dataset's and the model's."""
  problems = []
  shared = config.copy_and_resolve_references()
  with shared.unlocked():
    shared.dataset = "videoemotion8"  # categorical.validate knows only its own corpora
  try:
    categorical.validate(shared)
  except categorical.ConfigError as e:
    problems += str(e).splitlines()
  if config.dataset not in DATASETS:
    problems.append(f"dataset: unknown {config.dataset!r}; use one of {list(DATASETS)}")
  v, f = config.vtt, config.faces
  whole = lambda x, low: isinstance(x, int) and not isinstance(x, bool) and x >= low
  if not (len(v.widths) >= 1 and len(v.widths) == len(v.stage_sizes)
          and all(whole(x, 1) for x in tuple(v.widths) + tuple(v.stage_sizes))):
    problems.append(f"vtt.widths / vtt.stage_sizes: equal-length lists of whole numbers >= 1; "
                    f"got {v.widths!r} / {v.stage_sizes!r}")
  for k, low in (("shift_div", 0), ("image_size", 0), ("jitter", 0)):
    if not whole(v[k], low):
      problems.append(f"vtt.{k}: must be a whole number >= {low}; got {v[k]!r}")
  if not 0 <= v.dropout < 1:
    problems.append(f"vtt.dropout: must be in [0, 1); got {v.dropout!r}")
  if config.dataset == "synthetic":
    if not whole(f.size, 12):
      problems.append(f"faces.size: must be a whole number >= 12; got {f.size!r}")
    if not whole(f.per_class, 2):
      problems.append(f"faces.per_class: must be a whole number >= 2; got {f.per_class!r}")
    if not 0 < f.test_fraction < 1:
      problems.append(f"faces.test_fraction: must be in (0, 1); got {f.test_fraction!r}")
  if problems:
    raise categorical.ConfigError("\n".join(problems))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The launcher's one call: the engine's train and evaluate on a face corpus, and its
  output contract (results.json, predictions.csv, models/, tensorboard/, plots/confusion.png)."""
  from aan_jax.util import xla_cache  # pylint: disable=g-import-not-at-top
  config = resolve(config)
  validate(config)
  xla_cache.enable(config.compilation_cache)
  corpus = face_corpora.load(config)
  synthetic = config.dataset == "synthetic"
  return categorical.run_and_write(corpus, config, workdir, {
      "label": "VTT TSM ResNet-18",
      "protocol": ("stratified train/test split" if synthetic else "official train/test "
                   "partition") + "; last epoch on the test list (no validation set)",
      "input": "each still face as a buffer of 4 copies; training jitters each frame and "
               "mirrors whole buffers",
      "synthetic": synthetic})
