"""Writes the tiny dummy_data/ of the LIRIS-ACCEDE continuous builder (2017 and 2018 layouts)."""

from __future__ import annotations

import json
import pathlib

import numpy as np

from aan_jax.data.features import PAPER_FEATURE_DIMS


def write_windows(path, n: int, seed: int):
  """Extractor-style .npz of 10-s windows every 5 s (low-entropy values)."""
  rng = np.random.default_rng(seed)
  arrays = {f: rng.integers(0, 4, (1, d)).astype(np.float32) / 4
               * (1 + np.arange(n, dtype=np.float32))[:, None]
            for f, d in PAPER_FEATURE_DIMS.items()}
  arrays["start_s"] = np.arange(n, dtype=np.float32) * 5
  arrays["end_s"] = arrays["start_s"] + 10
  arrays["metadata"] = np.array(json.dumps({"segmentation": "sliding:10:5",
                                            "duration_s": 5.0 * n + 5}))
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(path, **arrays)


def make(root):
  root = pathlib.Path(root)
  ann = root / "annotations"
  ann.mkdir(parents=True, exist_ok=True)
  # 2017 dev movie: 3 windows labelled; test movie: the other file-name spelling.
  write_windows(root / "features" / "After_The_Rain.npz", 3, 0)
  (ann / "After_The_Rain-MEDIAEVAL2017-valence_arousal.txt").write_text(
      "Id\tTime\tMeanValence\tMeanArousal\n0\t0\t0.1\t-0.2\n1\t5\t0.3\t0.0\n2\t10\t-0.4\t0.5\n")
  (ann / "After_The_Rain-MEDIAEVAL2017-fear.txt").write_text(
      "Id\tTime\tFear\n0\t0\t0\n1\t5\t1\n2\t10\t0\n")
  write_windows(root / "features" / "MEDIAEVAL17_00.npz", 2, 1)
  (ann / "MEDIAEVAL17_00_Valence-Arousal.txt").write_text(
      "Id\tTime\tMeanValence\tMeanArousal\n0\t0\t0.2\t0.2\n1\t5\t-0.1\t0.3\n")
  # 2018: one row per second; fear as intervals.
  for name, n, seed in (("MEDIAEVAL18_00", 3, 2), ("MEDIAEVAL18_54", 2, 3)):
    write_windows(root / "features" / f"{name}.npz", n, seed)
    secs = 5 * n + 5
    rows = ["Time\tValence\tArousal"] + [
        f"{s}\t{0.05 * (s % 7) - 0.1:.3f}\t{0.5 - 0.04 * (s % 5):.3f}" for s in range(secs)]
    (ann / f"{name}_Valence-Arousal.txt").write_text("\n".join(rows) + "\n")
  (ann / "MEDIAEVAL18_54_Fear.txt").write_text("start end\n7.0 8.5\n")


if __name__ == "__main__":
  make(pathlib.Path(__file__).parent / "dummy_data")
