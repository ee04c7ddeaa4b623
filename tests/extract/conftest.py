"""Tiny media files written with PyAV, so the extractor tests need no data."""

from __future__ import annotations

import fractions
import pathlib

import av
import numpy as np
import pytest


def write_video(path, *, seconds=3.0, fps=25, width=64, height=48, audio=True, gray=False,
                vfr_times=None, codec=None, sample_rate=44100, channels=2):
  """Writes a moving-gradient video (and a 440 Hz tone) to `path`; returns the path."""
  path = pathlib.Path(path)
  rng = np.random.RandomState(0)
  times = (np.asarray(vfr_times, float) if vfr_times is not None
           else np.arange(int(round(seconds * fps))) / fps)
  with av.open(str(path), "w") as c:
    codec = codec or ("ffv1" if gray or width % 2 or height % 2 else "libx264")
    vs = c.add_stream(codec, rate=fps)
    vs.width, vs.height = width, height
    vs.pix_fmt = "gray" if gray else ("yuv444p" if codec == "ffv1" else "yuv420p")
    tb = fractions.Fraction(1, 1000)
    vs.time_base = tb
    if audio:
      as_ = c.add_stream("aac", rate=sample_rate)
      as_.layout = "stereo" if channels == 2 else "mono"
    for i, t in enumerate(times):
      x = (np.arange(width)[None, :] + 4 * i) % 256
      img = np.broadcast_to(x, (height, width)).astype(np.uint8)
      img = (img + rng.randint(0, 8, img.shape)).astype(np.uint8)
      if gray:
        frame = av.VideoFrame.from_ndarray(img, format="gray")
      else:
        frame = av.VideoFrame.from_ndarray(np.stack([img, img[::-1], 255 - img], -1), format="rgb24")
      frame.pts = int(round(t * 1000))
      frame.time_base = tb
      for p in vs.encode(frame):
        c.mux(p)
    for p in vs.encode():
      c.mux(p)
    if audio:
      n = int(seconds * sample_rate)
      tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / sample_rate)).astype(np.float32)
      block = 1024
      for s in range(0, n, block):
        chunk = np.tile(tone[s:s + block][None], (channels, 1))
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=as_.layout.name)
        frame.sample_rate = sample_rate
        frame.pts = s
        for p in as_.encode(frame):
          c.mux(p)
      for p in as_.encode():
        c.mux(p)
  return path


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory):
  """A folder of tiny test files, written once per session."""
  d = tmp_path_factory.mktemp("media")
  write_video(d / "av.mp4", seconds=6.0)  # 150 frames, 25 fps, with audio
  write_video(d / "silent.mp4", seconds=3.0, audio=False)
  write_video(d / "gray.mkv", seconds=2.0, gray=True, audio=False)
  write_video(d / "odd.mkv", seconds=2.0, width=65, height=49)
  # Variable frame rate: 20 frames over 2 s at uneven intervals.
  vfr = np.cumsum(np.r_[0, np.tile([0.04, 0.16], 10)[:19]])
  write_video(d / "vfr.mkv", vfr_times=vfr, seconds=float(vfr[-1]) + 0.16)
  write_video(d / "short.mp4", seconds=2.0)
  data = (d / "av.mp4").read_bytes()
  (d / "truncated.mp4").write_bytes(data[:len(data) // 2])
  (d / "corrupt.mp4").write_bytes(np.random.RandomState(1).bytes(20000))
  (d / "notes.txt").write_text("this is not a video\n")
  return d
