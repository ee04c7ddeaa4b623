"""Peak memory of the audio features (openSMILE emobase2010 + VGGish) against the track's length.

Generates a drifting tone piece by piece (the script itself holds no track), warms up on 10 s,
then reports how far the process's peak resident set (and Python's own allocations,
tracemalloc) rose while extracting a track of --seconds, in 5-s segments:

  python benchmarks/bench_audio_memory.py --seconds 180            # streaming (extract_file's path)
  python benchmarks/bench_audio_memory.py --seconds 180 --whole-track   # the whole-track path
  python benchmarks/bench_audio_memory.py --seconds 180 --only emobase2010

VGGish has random weights (the cost does not depend on their values). Not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from extract import core, media  # pylint: disable=wrong-import-position
from extract.media import AUDIO_RATE  # pylint: disable=wrong-import-position


def tone(seconds: float):
  """One second at a time: a tone whose pitch and loudness drift, and a little noise."""
  rng = np.random.default_rng(0)
  for k in range(int(seconds)):
    t = k + np.arange(AUDIO_RATE) / AUDIO_RATE
    level = 0.5 + 0.5 * np.sin(2 * np.pi * t / 97.0)
    x = (0.05 + 0.3 * level) * np.sin(2 * np.pi * (220 + 220 * level) * t)
    yield (x + 0.02 * rng.standard_normal(AUDIO_RATE)).astype(np.float32)


def streamed(seconds: float, features) -> dict:
  start = np.arange(0, seconds - 4.99, 5.0)
  # pylint: disable=protected-access
  run = core._AudioRun({f: core._make(f, "random", "cpu") for f in features},
                       media.SegmentPlan(start, start + 5.0, 0, 0.0))
  try:
    for x in tone(seconds):
      run.push(x)
    return run.finish()
  finally:
    run.close()


def whole_track(seconds: float, features) -> dict:
  """What extract_file did before streaming: keep the track, then each feature over it."""
  start = np.arange(0, seconds - 4.99, 5.0)
  track = np.concatenate(list(tone(seconds)))
  out = {}
  # pylint: disable=protected-access
  if "vggish" in features:
    out["vggish"] = core._make("vggish", "random", "cpu").segments(
        media.segment_audio(track, start, start + 5.0))
  if "emobase2010" in features:
    ex = core._make("emobase2010", "random", "cpu")
    ws, we, x = ex.windows(track)
    out["emobase2010"] = np.stack([x[(ws >= s - 1e-6) & (we <= s + 5 + 1e-6)].mean(0)
                                   for s in start])
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--seconds", type=float, default=180.0)
  p.add_argument("--whole-track", action="store_true", help="the path before streaming")
  p.add_argument("--only", choices=["vggish", "emobase2010"], default=None)
  args = p.parse_args()
  features = [args.only] if args.only else ["vggish", "emobase2010"]
  fn = whole_track if args.whole_track else streamed
  # Loads everything (VGGish: runs full batches of 64 examples, its largest activations).
  fn(70.0 if "vggish" in features else 10.0, features)
  rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  tracemalloc.start()
  t = time.perf_counter()
  out = fn(args.seconds, features)
  dt = time.perf_counter() - t
  traced = tracemalloc.get_traced_memory()[1] / 2**20
  rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  assert all(np.isfinite(v).all() for v in out.values())
  print(f"{'whole-track' if args.whole_track else 'streaming'} {', '.join(features)}: "
        f"{args.seconds:g} s of audio in {dt:.1f} s; peak RSS {rss1:.0f} MiB, "
        f"{rss1 - rss0:.0f} MiB above the warm-up's; Python's allocations peaked at "
        f"{traced:.1f} MiB")


if __name__ == "__main__":
  main()
