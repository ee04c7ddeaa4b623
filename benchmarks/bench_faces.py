"""Seconds of face-track compute per minute of 720p video at 2 samples per second (not a test).

Writes a synthetic 25 fps 1280x720 clip (default 20 s) in which two real faces (scikit-image's
astronaut photograph, one mirrored) drift across a textured background, so that MTCNN's three
stages and the FER classifier all run on every sample, then times `extract_file(features=
"faces")` on it after a warm-up run on a short clip (model load, JIT), and scales to a
minute. Decoding the whole stream (every frame, as H.264 needs) is part of the time; the
share of each stage is printed from a second, instrumented pass.

  python benchmarks/bench_faces.py [--seconds 20] [--device cpu|cuda] [--face-fps 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import av
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from extract import core, faces, media  # noqa: E402


def write_clip(path, seconds: float, width: int = 1280, height: int = 720, fps: int = 25):
  """Two astronaut faces drifting over a noisy background."""
  from PIL import Image
  from skimage import data
  head = np.asarray(Image.fromarray(data.astronaut()).resize((360, 360)))[20:250, 90:330]
  rng = np.random.default_rng(0)
  bg = rng.integers(40, 200, (height // 8, width // 8, 3), dtype=np.uint8)
  bg = np.asarray(Image.fromarray(bg).resize((width, height), Image.BILINEAR))
  with av.open(str(path), "w") as c:
    vs = c.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
    hh, hw = head.shape[:2]
    for i in range(int(seconds * fps)):
      img = bg.copy()
      for k, h in enumerate((head, head[:, ::-1])):
        x = int((width - hw) * (0.5 + 0.4 * np.sin(i / 50 + 2 * k)))
        y = int((height - hh) * (0.5 + 0.3 * np.cos(i / 70 + k)))
        img[y:y + hh, x:x + hw] = h
      for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
        c.mux(p)
    for p in vs.encode():
      c.mux(p)
  return path


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--seconds", type=float, default=20.0)
  p.add_argument("--device", default="cpu")
  p.add_argument("--face-fps", type=float, default=2.0)
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as d:
    clip = write_clip(os.path.join(d, "clip.mp4"), args.seconds)
    warm = write_clip(os.path.join(d, "warm.mp4"), 5.0)
    kw = dict(segmentation="fixed:5", features="faces", device=args.device,
              face_fps=args.face_fps)
    core.extract_file(warm, **kw)
    scale = 60.0 / args.seconds
    # Twice: MTCNN's later stages see a new batch shape for each new number of candidate
    # boxes, and torch's CPU kernels set up each new shape once; the second pass is the
    # steady state of a long film.
    for run in ("first pass", "second pass"):
      t = time.perf_counter()
      r = core.extract_file(clip, **kw)
      dt = time.perf_counter() - t
      if run == "first pass":
        print(f"clip: {args.seconds:g} s, 25 fps, 1280x720, {args.face_fps:g} samples/s, "
              f"device {args.device}, {os.cpu_count()} CPU cores; {len(r['events'])} face events")
      print(f"faces, {run}: {dt:8.2f} s for the clip -> {dt * scale:8.1f} s per minute of video "
            f"({dt * scale / 60:.3f}x real time)", flush=True)
    # Where the time goes: the same steps, timed one by one.
    fx = core._make("faces", "pretrained", args.device)  # pylint: disable=protected-access
    info = media.probe(str(clip))
    times = faces.sample_times(info.duration_s, args.face_fps)
    t = time.perf_counter()
    frames = [f for _, f in fx.frames_at(str(clip), info, times)]
    t_dec = time.perf_counter() - t
    t = time.perf_counter()
    dets = [b for i in range(0, len(frames), 8) for b in fx.detect(np.stack(frames[i:i + 8]))]
    t_det = time.perf_counter() - t
    t = time.perf_counter()
    crops = [faces.crop_faces(faces._to_gray(f), b[:, :4]) for f, b in zip(frames, dets)]  # pylint: disable=protected-access
    fx.classify(np.concatenate(crops))
    t_cls = time.perf_counter() - t
    for name, s in (("decode", t_dec), ("MTCNN", t_det), ("crop+FER", t_cls)):
      print(f"  {name:9s} {s * scale:8.1f} s per minute")


if __name__ == "__main__":
  main()
