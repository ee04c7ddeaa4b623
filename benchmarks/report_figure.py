"""Redraws docs/report.png: the report of a generated film with a real face, taken in headless
chromium at 1280x800 (the first screen a film person sees).

    python -m experiments.cognimuse_loo --config.dataset=synthetic \
        --config.modalities=emobase2010 --workdir=/tmp/demo_emobase
    python benchmarks/report_figure.py --models /tmp/demo_emobase --out /tmp/report_figure

The film (`write_face_film`, also used by tests/test_predict_faces.py): a drifting colour
gradient with scikit-image's astronaut photograph (a real, smiling face) on screen for the
middle of the film, sliding slowly, and a tone whose pitch and loudness change scene by scene.
The command: `python -m experiments.predict FILM --models DIR --out OUT --face-track`, then
chromium --screenshot of OUT/<stem>.html#t=SECONDS.
"""

from __future__ import annotations

import argparse
import fractions
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np


def _astronaut(size: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from skimage import data as skimage_data  # pylint: disable=g-import-not-at-top
  return np.asarray(Image.fromarray(skimage_data.astronaut()).resize((size, size),
                                                                     Image.BILINEAR))


def write_face_film(path, *, seconds: float = 6.0, width: int = 320, height: int = 240,
                    fps: int = 10, face_from: float = 1.0, face_to: float = 4.5,
                    sample_rate: int = 44100) -> pathlib.Path:
  """An H.264 + AAC film: her face (about half the frame's height) on screen from `face_from`
  to `face_to` seconds over a drifting gradient; a tone that changes every 5 s."""
  import av  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  side = (height * 3 // 4) // 2 * 2
  face = _astronaut(side * 2)[: side, side // 2: side // 2 + side]  # her head and shoulders
  rng = np.random.RandomState(0)
  with av.open(str(path), "w") as c:
    vs = c.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
    tb = fractions.Fraction(1, 1000)
    vs.time_base = tb
    aus = c.add_stream("aac", rate=sample_rate)
    aus.layout = "stereo"
    for i in range(int(round(seconds * fps))):
      t = i / fps
      x = (np.arange(width)[None, :] + 3 * i) % 256
      img = np.broadcast_to(x, (height, width)).astype(np.uint8)
      frame = np.stack([img, img[::-1] // 2 + 60, 200 - img // 2], -1).astype(np.uint8)
      frame = (frame + rng.randint(0, 6, frame.shape)).astype(np.uint8)
      if face_from <= t < face_to:
        x0 = int((width - side) * (0.3 + 0.4 * (t - face_from) / max(face_to - face_from, 1e-6)))
        y0 = (height - side) // 2
        frame[y0:y0 + side, x0:x0 + side] = face
      vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
      vf.pts, vf.time_base = int(round(t * 1000)), tb
      for p in vs.encode(vf):
        c.mux(p)
    for p in vs.encode():
      c.mux(p)
    n = int(seconds * sample_rate)
    tt = np.arange(n) / sample_rate
    scene = np.floor(tt / 5.0)
    pitch = 220.0 * 2 ** ((scene % 4) / 3)
    loud = 0.05 + 0.25 * ((scene * 7) % 5) / 4
    tone = (loud * np.sin(2 * np.pi * pitch * tt) + 0.02 * rng.standard_normal(n)).astype(np.float32)
    for s in range(0, n, 1024):
      chunk = np.tile(tone[None, s:s + 1024], (2, 1))
      af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
      af.sample_rate, af.pts = sample_rate, s
      for p in aus.encode(af):
        c.mux(p)
    for p in aus.encode():
      c.mux(p)
  return path


def screenshot(page: pathlib.Path, png: pathlib.Path, size=(1280, 800), fragment: str = "",
               timeout: float = 120) -> None:
  """Headless chromium's screenshot of `page` at `size` (a window of that size)."""
  browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                  if shutil.which(b)), None)
  if browser is None:
    raise SystemExit("no chromium binary (apt-get install chromium)")
  profile = png.parent / ".chromium-profile"
  subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                  f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                  "--virtual-time-budget=5000", f"--screenshot={png}", page.as_uri() + fragment],
                 check=True, capture_output=True, timeout=timeout)
  shutil.rmtree(profile, ignore_errors=True)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--models", required=True, help="a workdir (the synthetic demo's)")
  p.add_argument("--out", required=True)
  p.add_argument("--seconds", type=float, default=60.0)
  p.add_argument("--png", default=str(pathlib.Path(__file__).parents[1] / "docs" / "report.png"))
  p.add_argument("--at", default="24", help="the moment the screenshot shows (seconds)")
  args = p.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  film = write_face_film(out / "astronaut_film.mp4", seconds=args.seconds, width=640, height=360,
                         fps=25, face_from=args.seconds / 6, face_to=args.seconds * 0.7)
  sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))
  from experiments import predict as cli  # pylint: disable=g-import-not-at-top
  rc = cli.main([str(film), "--models", args.models, "--out", str(out / "report"),
                 "--face-track", "--overwrite", "--no-progress"])
  if rc:
    return rc
  screenshot((out / "report" / "astronaut_film.html").resolve(), pathlib.Path(args.png).resolve(),
             fragment=f"#t={args.at}")
  print(f"{args.png}: written from {out / 'report' / 'astronaut_film.html'}")
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(main())
