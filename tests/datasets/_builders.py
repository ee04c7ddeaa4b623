"""Loads the builders in datasets/<name>/ (not a package) as importable modules for tests.

Importing this module puts datasets/ on sys.path, as `tfds build` does while it imports a
builder: the builders' shared modules are then `from _common import annotations, ...`,
the very modules the builders use (so their CorpusFileError is the one a test expects).
"""

from __future__ import annotations

import importlib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATASETS = ROOT / "datasets"
if str(DATASETS) not in sys.path:
  sys.path.insert(0, str(DATASETS))  # <name>/ and _common/ are then importable, as for the CLI


def load_module(name: str, filename: str | None = None):
  """datasets/<name>/<filename> imported as `<name>.<stem>`, as `tfds build` imports it."""
  stem = (filename or f"{name}_dataset_builder.py").removesuffix(".py")
  if str(DATASETS) not in sys.path:
    sys.path.insert(0, str(DATASETS))  # <name>/ is then a namespace package, as for the CLI
  return importlib.import_module(f"{name}.{stem}")


def hide_gpus():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:
    pass


def write_video(path, seconds: float, fps: int = 25, width: int = 32, height: int = 32):
  """A tiny moving-gradient video with a 440 Hz tone (PyAV), for builds from video."""
  import fractions  # pylint: disable=import-outside-toplevel
  import av  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  rate = 16000
  with av.open(str(path), "w") as c:
    vs = c.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
    vs.options = {"threads": "1"}  # deterministic bytes, so cached features match
    aus = c.add_stream("aac", rate=rate)
    aus.layout = "mono"
    for i in range(int(round(seconds * fps))):
      x = ((np.arange(width)[None, :] + 5 * i) % 256).astype(np.uint8)
      img = np.broadcast_to(x, (height, width))
      y = ((np.arange(height)[:, None] + 5 * i) % 256).astype(np.uint8)
      img_v = np.broadcast_to(y, (height, width))  # vertical gradient (also for width != height)
      frame = av.VideoFrame.from_ndarray(np.stack([img, img_v, 255 - img], -1), format="rgb24")
      frame.pts = i
      frame.time_base = fractions.Fraction(1, fps)
      for p in vs.encode(frame):
        c.mux(p)
    for p in vs.encode():
      c.mux(p)
    n = int(seconds * rate)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
    for s in range(0, n, 1024):
      frame = av.AudioFrame.from_ndarray(tone[None, s:s + 1024], format="fltp", layout="mono")
      frame.sample_rate = rate
      frame.pts = s
      for p in aus.encode(frame):
        c.mux(p)
    for p in aus.encode():
      c.mux(p)
  return path
