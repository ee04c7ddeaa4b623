"""Writes the tiny dummy_data/ of the Ekman-6 builder: one split, lower-case class folders,
no classInd.txt (labels then follow the default order)."""

from __future__ import annotations

import json
import pathlib

import numpy as np

CLASSES = ("Anger", "Disgust", "Fear", "Joy", "Sadness", "Surprise")
TRAIN = ["anger/v01", "joy/v02", "surprise/v03", "fear/v04"]
TEST = ["sadness/v05", "disgust/v06", "joy/v07"]


def write_features(path, seed: int, dim: int = 2048):
  visual = (seed + np.arange(12)[:, None, None] / 16 + np.arange(16)[None, :, None] / 64
            + (np.arange(dim) % 4)[None, None] / 4).astype(np.float32)
  mfcc = (np.broadcast_to(np.arange(32, dtype=np.float32), (4096, 32)) - seed).astype(np.float32)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(path, resnet101=visual, mfcc=mfcc,
                      metadata=np.array(json.dumps({"backbone": "resnet101"})))


def make(root):
  root = pathlib.Path(root)
  (root / "split").mkdir(parents=True, exist_ok=True)
  lower = [c.lower() for c in CLASSES]
  (root / "split" / "trainlist01.txt").write_text(
      "".join(f"{v} {lower.index(v.split('/')[0]) + 1}\n" for v in TRAIN))
  (root / "split" / "testlist01.txt").write_text("".join(f"{v}\n" for v in TEST))
  for seed, key in enumerate(TRAIN + TEST):
    write_features(root / "features" / "resnet101" / f"{key}.npz", seed)


if __name__ == "__main__":
  make(pathlib.Path(__file__).parent / "dummy_data")
