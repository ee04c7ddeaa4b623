"""Cheaper ways to run I3D over a segment, against the full clip: R^2 and CPU seconds.

    python benchmarks/i3d_variants.py --film film.mp4 [--full full.npz]

Each variant gives I3D the segment's frames (5-s segments, 224x224 as the extractor decodes
them) thinned in time (every 2nd or 3rd frame), in space (each 2x2 block of pixels averaged,
112x112), or both, and is scored as benchmarks/bench_fast.py scores a preset: R^2 of its
vectors against the full clip's across the film's segments, per dimension, variance-weighted.
`--full` reuses the full features of a bench_fast run (its .npz with an "i3d" array);
without it they are computed here. The fast preset (extract/presets.py) leaves I3D on every
frame because none of these keeps its features (docs/extraction.md, Fast extraction).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_fast import r2_per_dim  # pylint: disable=wrong-import-position
from extract import media  # pylint: disable=wrong-import-position
from extract.i3d import I3DExtractor  # pylint: disable=wrong-import-position


def half(x: np.ndarray) -> np.ndarray:
  """(T, H, W, 3) uint8 -> (T, H/2, W/2, 3): each 2x2 block's mean, rounded."""
  x = x.astype(np.float32)
  return ((x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2]) / 4
          + 0.5).astype(np.uint8)


VARIANTS = {"every 2nd frame": lambda x: x[::2], "every 3rd frame": lambda x: x[::3],
            "112x112": half, "112x112, every 2nd frame": lambda x: half(x[::2])}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--film", required=True)
  p.add_argument("--full", default="", help="a bench_fast .npz holding the full 'i3d' array")
  args = p.parse_args()
  info = media.probe(args.film)
  plan = media.plan_segments(media.parse_segmentation("fixed:5"), info.duration_s, args.film)
  segs = [x for _, x in media.Decoder(args.film, info, plan, video=True, audio=False).segments()]
  ex = I3DExtractor("pretrained")
  runs = ({} if args.full else {"full (every frame, 224x224)": lambda x: x}) | VARIANTS
  out = {}
  for name, thin in runs.items():
    ex.clips([thin(segs[0])])  # compiled before the clock starts
    t, w = time.process_time(), time.time()
    out[name] = ex.clips([thin(x) for x in segs])
    print(f"{name}: {time.process_time() - t:.1f} CPU s, {time.time() - w:.1f} s wall for "
          f"{len(segs)} segments", flush=True)
  full = np.load(args.full)["i3d"] if args.full else out.pop("full (every frame, 224x224)")
  for name, v in out.items():
    r = r2_per_dim(full[:len(v)], v)
    print(f"{name}: R^2 variance-weighted {r['r2_weighted']:.3f}, median dim "
          f"{r['r2_median']:.3f}", flush=True)


if __name__ == "__main__":
  main()
