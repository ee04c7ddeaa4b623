"""Face-expression corpora for the categorical task: RAF-DB basic (built TFDS) and synthetic faces.

    corpus = face_corpora.load(config)       # config.dataset: "raf_db" or "synthetic"
    corpus = face_corpora.raf_db(data_dir)   # the official train/test split, one split
    corpus = face_corpora.synthetic(size=32, per_class=60, seed=0)

Each is an `aan_jax.data.corpus.ClipCorpus` with one input, "faces": (N, 4, H, W, 3) uint8
buffers for VTT's model. RAF-DB's stills become buffers of 4 copies of the image
(`still_buffers`, a view: no memory is copied), as a face that does not move; the
model's training augmentation then makes the copies differ (`vtt_task`). Classes are in the
order of `FER_EMOTIONS` (`fer.EMOTIONS`: angry, disgust, fear, happy, sad, surprise, neutral).
"""

from __future__ import annotations

import os

import numpy as np

from aan_jax.data import tfds_reader
from aan_jax.data.classes import FER_EMOTIONS

FACES = "faces"
BUFFER = 4  # frames per face buffer in VTT (aan_jax.models.vtt.BUFFER)

BUILD_HINT = """\
The raf_db dataset is not built (or cannot be read) at data_dir={data_dir!r}: {error}

Build it once from RAF-DB's basic part (request it from its authors):
    tfds build datasets/raf_db --manual_dir=/path/to/RAF-DB --data_dir={data_dir_or_default}
(see datasets/raf_db/README.md for what the manual dir must hold), then run the same
command again with --config.data_dir={data_dir_or_default}.

Without the corpus, run the synthetic demo: add --config.dataset=synthetic"""


def still_buffers(images, num_frames: int = BUFFER) -> np.ndarray:
  """(N, H, W, 3) still faces -> (N, num_frames, H, W, 3): each still repeated, as a face that
  does not move over the buffer. A read-only view (no copy): the frames share memory."""
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"expected (N, H, W, 3) still images, got shape {images.shape}")
  return np.broadcast_to(images[:, None], (len(images), num_frames) + images.shape[1:])


def _clip_corpus(**fields):
  # (Once imported here because ClipCorpus lived above data; data.corpus is numpy only.)
  from aan_jax.data.corpus import ClipCorpus  # pylint: disable=g-import-not-at-top
  return ClipCorpus(**fields)


def get_config():
  """The synthetic corpus's settings (config.faces in the face_expression launcher)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.size = 32            # pixels per side
  c.per_class = 100      # examples per class (7 classes)
  c.test_fraction = 0.25
  c.noise = 0.08         # pixel noise (std, on [0, 1])
  c.seed = 0
  return c


def load(config):
  """The corpus that config.dataset names ("raf_db" or "synthetic"; config.faces for the latter)."""
  if config.dataset == "synthetic":
    s = config.faces
    return synthetic(size=s.size, per_class=s.per_class, test_fraction=s.test_fraction,
                     noise=s.noise, seed=s.seed)
  if config.dataset == "raf_db":
    return raf_db(config.data_dir or None)
  raise ValueError(f"dataset: unknown {config.dataset!r}; use raf_db or synthetic")


# ---------------------------------------------------------------------------- RAF-DB


def raf_db(data_dir=None):
  """RAF-DB basic from its built TFDS dataset: split "official" = its train/test partition."""
  from aan_jax.data.corpora import DatasetMissing  # pylint: disable=g-import-not-at-top
  shown = data_dir
  data_dir = os.path.expanduser(data_dir) if data_dir else tfds_reader.default_data_dir()
  try:
    version_dir, _ = tfds_reader.find("raf_db", data_dir, None)
    tfds_reader.import_tfds()
  except (ImportError, FileNotFoundError) as e:
    raise DatasetMissing(BUILD_HINT.format(
        data_dir=shown, error=str(e).split(" Build it first")[0],
        data_dir_or_default=shown or "~/tensorflow_datasets")) from None
  builder = tfds_reader.open_builder(version_dir)
  features = builder.info.features
  for k in ("image", "label", "file_name"):
    if k not in features:
      raise ValueError(f"{version_dir}: not a raf_db dataset (no feature {k!r}; has "
                       f"{sorted(features.keys())})")
  classes = tuple(features["label"].names)
  if classes != FER_EMOTIONS:
    raise ValueError(f"{version_dir}: classes {classes}, expected {FER_EMOTIONS}; rebuild it "
                     "with this version of datasets/raf_db")
  images, labels, ids, split_of = [], [], [], []
  for split in ("train", "test"):
    if split not in builder.info.splits:
      raise ValueError(f"{version_dir}: no {split!r} split (has {sorted(builder.info.splits)})")
    for ex in tfds_reader.read_split(builder, split):
      name = ex["file_name"].decode()
      if images and ex["image"].shape != images[0].shape:
        raise ValueError(f"{version_dir}: {name} is {ex['image'].shape}, the others "
                         f"{images[0].shape}; RAF-DB's aligned faces are all 100x100")
      images.append(ex["image"])
      labels.append(int(ex["label"]))
      ids.append(name)
      split_of.append(split == "test")
  test = np.asarray(split_of)
  idx = np.arange(len(test))
  return _clip_corpus(
      name="raf_db", inputs={FACES: still_buffers(np.stack(images))},
      labels=np.asarray(labels, np.int32), classes=classes,
      splits=((idx[~test], idx[test]),), split_names=("official",), ids=tuple(ids),
      info={"data_dir": data_dir, "version_dir": str(version_dir),
            "version": str(builder.info.version)})


# ------------------------------------------------------------------------- synthetic

# Per class (FER_EMOTIONS order): brow height, brow slope (+: inner ends down, a frown),
# mouth curve (+: corners up), mouth opening (height of an open mouth, 0: closed), mouth
# half-width, mouth tilt (one corner up: disgust's sneer). Face coordinates: x right, y
# down, the face's radius = 1.
_SHAPES = np.array([
    # brow_y slope  curve  open  width  tilt
    [-0.40, 0.55, -0.10, 0.00, 0.25, 0.00],   # angry: brows down and in, tight mouth
    [-0.45, 0.25, -0.20, 0.00, 0.30, 0.45],   # disgust: one-sided sneer
    [-0.58, -0.45, 0.00, 0.10, 0.35, 0.00],   # fear: brows up and in, wide open mouth
    [-0.50, 0.00, 0.90, 0.00, 0.40, 0.00],    # happy: smile
    [-0.50, -0.55, -0.80, 0.00, 0.32, 0.00],  # sad: brows up in the middle, corners down
    [-0.68, 0.00, 0.00, 0.22, 0.16, 0.00],    # surprise: brows high, round open mouth
    [-0.50, 0.00, 0.00, 0.00, 0.32, 0.00],    # neutral
], np.float32)


def synthetic_faces(labels: np.ndarray, size: int = 32, noise: float = 0.08, seed: int = 0
                    ) -> np.ndarray:
  """(N, size, size, 3) uint8 cartoon faces whose brows and mouth show the class, randomly
  placed, scaled, coloured and perturbed, over a noisy background, with pixel noise."""
  rng = np.random.default_rng(seed)
  labels = np.asarray(labels)
  n = len(labels)
  spread = np.array([0.04, 0.12, 0.15, 0.02, 0.04, 0.08], np.float32)
  p = _SHAPES[labels] + rng.normal(0, 1, (n, 6)).astype(np.float32) * spread
  p[:, 3] = np.maximum(p[:, 3], 0.0)
  r = size * rng.uniform(0.34, 0.44, n)                     # face radius in pixels
  cx = size / 2 + rng.uniform(-0.08, 0.08, n) * size
  cy = size / 2 + rng.uniform(-0.08, 0.08, n) * size
  g = np.arange(size, dtype=np.float32) + 0.5
  x = (g[None, None, :] - cx[:, None, None]) / r[:, None, None]     # (N, 1, S)
  y = (g[None, :, None] - cy[:, None, None]) / r[:, None, None]     # (N, S, 1)
  x, y = np.broadcast_arrays(x, y)
  col = lambda v: np.asarray(v, np.float32)[:, None, None]
  brow_y, slope, curve, opening, width, tilt = (col(p[:, k]) for k in range(6))
  stroke = 1.2 / r[:, None, None]                              # ~1.2 px lines at any size
  ax = np.abs(x)
  face = (x / 0.85) ** 2 + y ** 2 < 1.0
  eyes = (ax - 0.35) ** 2 + (y + 0.2) ** 2 < (0.11 + stroke / 3) ** 2
  brows = (np.abs(y - (brow_y - slope * (ax - 0.35))) < stroke) & (ax > 0.15) & (ax < 0.58)
  mouth_line = brow_y * 0 + 0.45 - curve * (x ** 2 - width ** 2 / 3) - tilt * x
  closed = (np.abs(y - mouth_line) < stroke) & (ax < width)
  open_ = (x / np.maximum(width, 0.05)) ** 2 + ((y - 0.45) / np.maximum(opening, 1e-3)) ** 2 < 1
  mouth = np.where(opening > 0.03, open_, closed)
  skin = rng.uniform(0.45, 0.95, (n, 1, 1, 1)) * np.array([1.0, 0.8, 0.65], np.float32)
  background = rng.uniform(0.0, 1.0, (n, 1, 1, 3)).astype(np.float32)
  img = np.where(face[..., None], skin, background)
  dark = (eyes | brows | mouth) & face
  img = np.where(dark[..., None], 0.1 * skin, img)
  img = img + rng.normal(0, noise, img.shape)
  return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
  """(train_idx, test_idx), sorted: each class's examples split test_fraction to test."""
  rng = np.random.default_rng(seed)
  train, test = [], []
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    k = int(round(test_fraction * len(idx)))
    test.append(idx[:k])
    train.append(idx[k:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def synthetic(size: int = 32, per_class: int = 60, test_fraction: float = 0.25,
              noise: float = 0.08, seed: int = 0):
  """A synthetic 7-class face-expression corpus: stills as 4-copy buffers, a stratified split."""
  if size < 12:
    raise ValueError(f"synthetic faces: size {size} is too small to draw a face (use >= 12)")
  if not 0 < test_fraction < 1:
    raise ValueError(f"synthetic faces: test_fraction {test_fraction} must be in (0, 1)")
  k = len(FER_EMOTIONS)
  labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(k), per_class))
  images = synthetic_faces(labels, size, noise, seed + 1)
  train, test = stratified_split(labels, test_fraction, seed + 2)
  return _clip_corpus(
      name="synthetic_faces", inputs={FACES: still_buffers(images)},
      labels=labels.astype(np.int32), classes=FER_EMOTIONS, splits=((train, test),),
      split_names=("stratified",), ids=tuple(f"face_{i:05d}" for i in range(len(labels))),
      info={"synthetic": True, "size": size, "noise": noise, "seed": seed})
