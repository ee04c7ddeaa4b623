"""Writes the tiny dummy_data/ of the VideoEmotion-8 builder: two splits, seven listed videos.

Split 01 lists the video that VideoEmotion-8 files under two classes (Disgust and Fear),
a name with a comma, brackets and an embedded .avi, and one video (Sadness/s1) whose
features are missing (skipped by the build).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

CLASSES = ("Anger", "Anticipation", "Disgust", "Fear", "Joy", "Sadness", "Surprise", "Trust")
DUP = "3527012618_7ceb8fb27b_700"
ODD = "t,1 (x).avi"
TRAIN = {1: ["Anger/a1", f"Disgust/{DUP}", f"Fear/{DUP}", "Joy/j1", f"Trust/{ODD}"],
         2: ["Anger/a2", f"Disgust/{DUP}", "Joy/j2", "Sadness/s1"]}
TEST = {1: ["Anger/a2", "Joy/j2", "Sadness/s1"],
        2: ["Anger/a1", "Joy/j1", f"Trust/{ODD}"]}
MISSING = ("Sadness/s1",)


def write_features(path, seed: int, dim: int = 2048):
  """A VAANet .npz (low-entropy values: a few KB compressed)."""
  # Position p, channel c of snippet s: seed + s / 16 + (c % 4) / 4 + p / 64.
  visual = (seed + np.arange(12)[:, None, None] / 16 + np.arange(16)[None, :, None] / 64
            + (np.arange(dim) % 4)[None, None] / 4)
  mfcc = np.broadcast_to(np.arange(32, dtype=np.float32), (4096, 32)) - seed
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  backbone = "resnet101" if dim == 2048 else "i3d"
  np.savez_compressed(path, **{backbone: visual.astype(np.float32), "mfcc": mfcc,
                               "metadata": np.array(json.dumps({"backbone": backbone}))})


def write_lists(root, classes=CLASSES, train=None, test=None):
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  train, test = train or TRAIN, test or TEST
  (root / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)))
  for k in train:
    (root / f"trainlist{k:02d}.txt").write_text("".join(
        f"{v} {classes.index(v.split('/')[0]) + 1}\n" for v in train[k]))
    (root / f"testlist{k:02d}.txt").write_text("".join(f"{v}\n" for v in test[k]))


def all_videos(train=None, test=None) -> list[str]:
  train, test = train or TRAIN, test or TEST
  return sorted({v for d in (train, test) for vs in d.values() for v in vs})


def make(root, classes=CLASSES, train=None, test=None, missing=MISSING):
  root = pathlib.Path(root)
  write_lists(root / "lists", classes, train, test)
  for seed, key in enumerate(all_videos(train, test)):
    if key not in missing:
      write_features(root / "features" / "resnet101" / f"{key}.npz", seed)


if __name__ == "__main__":
  make(pathlib.Path(__file__).parent / "dummy_data")
