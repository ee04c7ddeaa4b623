"""Writes the tiny dummy_data/ of the COGNIMUSE builder (and fake inputs for tests).

`python datasets/cognimuse/make_dummy_data.py` regenerates dummy_data/: features of
two movies (3 segments each, canonical dims) with a CSV annotation for BMI and the
official `.dat` layout for LOR, intended and experienced.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from aan_jax.data.features import PAPER_FEATURE_DIMS

FPS = 25


def write_features(path, n_segments: int, seed: int = 0, seg_s: float = 5.0,
                   duration_s: float | None = None, drop: str | None = None):
  """An extractor-style .npz; values are low-entropy so the file compresses to a few KB."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for name, dim in PAPER_FEATURE_DIMS.items():
    if name == drop:
      continue
    base = rng.integers(0, 4, size=(1, dim)).astype(np.float32)
    arrays[name] = base * (1 + np.arange(n_segments, dtype=np.float32)[:, None]) / 8
  arrays["start_s"] = np.arange(n_segments, dtype=np.float32) * seg_s
  arrays["end_s"] = arrays["start_s"] + seg_s
  # "weights" as the extractor writes it, {feature: ...} (a feature file's reader refuses any
  # other form); "dummy": made by no extractor.
  meta = {"duration_s": duration_s or n_segments * seg_s, "segmentation": f"fixed:{seg_s:g}",
          "weights": {name: "dummy" for name in PAPER_FEATURE_DIMS if name != drop}}
  arrays["metadata"] = np.array(json.dumps(meta))
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(path, **arrays)
  return path


def trace(n_frames: int, seed: int = 0):
  """Arousal and valence per frame: smooth, in [-1, 1], rounded to 3 decimals."""
  t = np.arange(n_frames) / FPS
  arousal = np.round(0.6 * np.sin(0.2 * t + seed), 3)
  valence = np.round(0.5 * np.cos(0.15 * t + 2 * seed), 3)
  return arousal, valence


def write_csv(path, n_frames: int, seed: int = 0):
  arousal, valence = trace(n_frames, seed)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  rows = ["frame,arousal,valence"] + [f"{i},{a},{v}" for i, (a, v) in enumerate(zip(arousal, valence))]
  path.write_text("\n".join(rows) + "\n")
  return path


def write_dat(path, n_frames: int, seed: int = 0):
  """Official layout: `time valence arousal` (valence first), no header."""
  arousal, valence = trace(n_frames, seed)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  rows = [f"{i / FPS:.2f} {v:.3f} {a:.3f}" for i, (a, v) in enumerate(zip(arousal, valence))]
  path.write_text("\n".join(rows) + "\n")
  return path


def make(root):
  root = pathlib.Path(root)
  write_features(root / "features" / "BMI.npz", 3, seed=1)
  write_features(root / "features" / "LOR.npz", 3, seed=2)
  # BMI: plain CSVs; one frame longer than the video (cut to the shorter, as in the corpus).
  write_csv(root / "annotations" / "BMI.csv", 376, seed=1)
  write_csv(root / "annotations" / "experienced" / "BMI.csv", 375, seed=3)
  # LOR: the official zip's layout and file names.
  ea = root / "COGNIMUSEdatabase_v0.1" / "Emotion Annotation"
  write_dat(ea / "intended" / "intended_1_LOTRReturn.dat", 375, seed=2)
  write_dat(ea / "experienced" / "subj1_1_LOTRReturn.dat", 375, seed=4)
  write_dat(ea / "experienced" / "subj2_1_LOTRReturn.dat", 374, seed=5)


if __name__ == "__main__":
  make(pathlib.Path(__file__).parent / "dummy_data")
