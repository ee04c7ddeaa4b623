"""Writes the tiny dummy_data/ of the RAF-DB builder: 4 training and 3 test faces."""

from __future__ import annotations

import pathlib

import numpy as np

TRAIN = {"train_00001.jpg": 4, "train_00002.jpg": 1, "train_00003.jpg": 6, "train_00004.jpg": 7}
TEST = {"test_0001.jpg": 5, "test_0002.jpg": 2, "test_0003.jpg": 3}


def make(root, size: int = 100):
  """basic/EmoLabel/list_patition_label.txt and basic/Image/aligned/*_aligned.jpg (flat colours)."""
  from PIL import Image
  root = pathlib.Path(root)
  (root / "basic" / "EmoLabel").mkdir(parents=True, exist_ok=True)
  aligned = root / "basic" / "Image" / "aligned"
  aligned.mkdir(parents=True, exist_ok=True)
  rows = {**TRAIN, **TEST}
  (root / "basic" / "EmoLabel" / "list_patition_label.txt").write_text(
      "".join(f"{n} {lab}\n" for n, lab in rows.items()))
  for i, name in enumerate(rows):
    img = np.full((size, size, 3), (30 * i, 255 - 30 * i, 100), np.uint8)
    Image.fromarray(img).save(aligned / name.replace(".jpg", "_aligned.jpg"), quality=75)


if __name__ == "__main__":
  make(pathlib.Path(__file__).parent / "dummy_data")
