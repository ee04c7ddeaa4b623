"""Writes the tiny dummy_data/ of the EIMT16 Global builder: 3 training and 2 test clips."""

from __future__ import annotations

import json
import pathlib

import numpy as np

from aan_jax.data.features import PAPER_FEATURE_DIMS

TRAIN = {"ACCEDE00000": (2.1, 3.0), "ACCEDE00001": (3.4, 1.9), "ACCEDE00002": (1.5, 4.2)}
TEST = {"MEDIAEVAL16_00000": (2.8, 2.2), "MEDIAEVAL16_00001": (3.1, 3.3)}


def write_features(path, parts: int, seed: int):
  """Extractor-style .npz of one excerpt (low-entropy values: compresses to a few KB)."""
  rng = np.random.default_rng(seed)
  arrays = {f: np.repeat(rng.integers(0, 4, (1, d)).astype(np.float32) / 4, parts, 0)
               * (1 + np.arange(parts, dtype=np.float32))[:, None]
            for f, d in PAPER_FEATURE_DIMS.items()}
  arrays["start_s"] = np.arange(parts, dtype=np.float32) * 8 / parts
  arrays["end_s"] = arrays["start_s"] + 8 / parts
  seg = "excerpt:64" if parts == 1 else f"subsegments:{parts}x16"
  arrays["metadata"] = np.array(json.dumps({"segmentation": seg, "duration_s": 8.0}))
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(path, **arrays)


def make(root):
  root = pathlib.Path(root)
  (root / "annotations").mkdir(parents=True, exist_ok=True)
  rows = ["id\tname\tvalenceRank\tarousalRank\tvalenceValue\tarousalValue\tvalenceVariance\tarousalVariance"]
  for i, (name, (v, a)) in enumerate(TRAIN.items()):
    rows.append(f"{i}\t{name}.mp4\t{i}\t{i}\t{v}\t{a}\t0.1\t0.1")
  (root / "annotations" / "ACCEDEranking.txt").write_text("\n".join(rows) + "\n")
  (root / "MEDIAEVAL16-Global_prediction.txt").write_text(
      "".join(f"{n}.mp4\t{v}\t{a}\n" for n, (v, a) in TEST.items()))
  for seed, name in enumerate([*TRAIN, *TEST]):
    write_features(root / "features" / f"{name}.npz", 1, seed)
    write_features(root / "features_4x16" / f"{name}.npz", 4, seed)


if __name__ == "__main__":
  make(pathlib.Path(__file__).parent / "dummy_data")
