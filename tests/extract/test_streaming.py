"""The audio features stream (bounded memory) and equal the whole-track computation."""

from __future__ import annotations

import fractions
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import av
import numpy as np
import pytest

from extract import audio, core, media
from extract.media import AUDIO_RATE

ROOT = pathlib.Path(__file__).resolve().parents[2]


def write_film(path, seconds: float, *, fps: int = 5, rate: int = 48000,
               audio_delay_s: float = 0.0) -> pathlib.Path:
  """A tiny video whose tone drifts in pitch and loudness (so every window differs)."""
  rng = np.random.default_rng(0)
  with av.open(str(path), "w") as c:
    vs = c.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
    vs.options = {"preset": "ultrafast"}
    a = c.add_stream("aac", rate=rate)
    a.layout = "mono"
    block = rate // fps
    t_audio = int(audio_delay_s * rate)
    for i in range(int(seconds * fps)):
      img = np.broadcast_to(((np.arange(64) + 4 * i) % 256).astype(np.uint8), (48, 64))
      frame = av.VideoFrame.from_ndarray(np.stack([img, img[::-1], 255 - img], -1), "rgb24")
      frame.pts, frame.time_base = i, fractions.Fraction(1, fps)
      for p in vs.encode(frame):
        c.mux(p)
      ts = (t_audio + np.arange(block)) / rate
      level = 0.5 + 0.5 * np.sin(2 * np.pi * ts / 23.0)
      tone = (0.05 + 0.3 * level) * np.sin(2 * np.pi * (180 + 300 * level) * ts)
      tone += 0.02 * rng.standard_normal(block)
      af = av.AudioFrame.from_ndarray(tone.astype(np.float32)[None], format="flt", layout="mono")
      af.sample_rate, af.pts = rate, t_audio
      t_audio += block
      for p in a.encode(af):
        c.mux(p)
    for s in (vs, a):
      for p in s.encode():
        c.mux(p)
  return pathlib.Path(path)


def reduce_windows(ws, we, x, start_s, end_s):
  """The segment means of whole-input windows (what segments_from_track did)."""
  out = np.full((len(start_s), audio.EMOBASE_DIM), np.nan, np.float32)
  for i, (s, e) in enumerate(zip(start_s, end_s)):
    inside = (ws >= s - 1e-6) & (we <= e + 1e-6)
    if not inside.any():
      inside = (ws < e) & (we > s)
    if inside.any():
      out[i] = x[inside].mean(0)
  return out


def whole_track(path):
  """The track as the decoder kept it before streaming, and its every openSMILE window."""
  info = media.probe(str(path))
  plan = media.plan_segments(media.parse_segmentation("fixed:5"), info.duration_s)
  track = media.Decoder(str(path), info, plan, video=False, audio=True).decode_audio()
  return track, core._make("emobase2010", "random", "cpu").windows(track)


@pytest.fixture(scope="module")
def film(tmp_path_factory):
  """2 minutes, the audio starting 0.3 s after the first frame (so that the streamed track
  must be aligned as the kept one was), with its whole-track reference."""
  path = write_film(tmp_path_factory.mktemp("stream") / "film.mp4", 120.0, audio_delay_s=0.3)
  return path, *whole_track(path)


@pytest.mark.parametrize("segmentation,n", [("fixed:5", 24), ("sliding:10:5", 23)])
def test_streamed_emobase_equals_whole_track(film, segmentation, n):
  """One openSMILE run fed as the film decodes equals the whole track's windows, bit for bit."""
  path, track, windows = film
  calls = []
  got = core.extract_file(path, segmentation=segmentation, features=["emobase2010"],
                          weights="random", progress=lambda d, t: calls.append((d, t)))
  assert len(got["start_s"]) == n
  # Progress follows the decoded audio, segment by segment, then the end.
  assert [d for d, _ in calls] == list(range(1, n + 1)) and {t for _, t in calls} == {n}
  want = reduce_windows(*windows, got["start_s"], got["end_s"])
  assert np.isfinite(want).all() and np.array_equal(got["emobase2010"], want)
  assert json.loads(got["metadata"])["media"]["audio"]["samples_16k"] == len(track)
  assert abs(len(track) - 120.3 * AUDIO_RATE) < 0.05 * AUDIO_RATE


def test_streamed_vggish_equals_whole_track(tmp_path, monkeypatch):
  """VGGish on segments as they complete: the same batches of examples, the same numbers
  (small batches, so that batches span segments and segments span batches)."""
  clip = write_film(tmp_path / "clip.mp4", 24.0, audio_delay_s=0.3)
  ex = core._make("vggish", "random", "cpu")
  monkeypatch.setattr(ex, "batch_size", 7)
  got = core.extract_file(clip, segmentation="sliding:10:5", features=["vggish"],
                          weights="random")
  track, _ = whole_track(clip)
  want = ex.segments(media.segment_audio(track, got["start_s"], got["end_s"]))
  assert len(want) == 3 and np.isfinite(want).all()
  assert np.array_equal(got["vggish"], want)


def test_emobase_stream_segments_and_edges():
  """Windows reduced as they come equal the whole-input windows reduced at the end, for
  segments past the end of the track, overlapping ones and a track shorter than a window."""
  ex = core._make("emobase2010", "pretrained", "cpu")
  t = np.arange(12 * AUDIO_RATE) / AUDIO_RATE
  track = (0.2 * np.sin(2 * np.pi * (200 + 80 * np.sin(t)) * t)).astype(np.float32)
  start = np.array([0.0, 0.1, 2.0, 4.0, 11.9, 11.95])
  end = np.array([0.1, 0.2, 6.0, 5.0, 14.0, 17.0])
  want = reduce_windows(*ex.windows(track), start, end)
  assert np.isfinite(want).all()
  run = ex.stream(start, end)
  for i in range(0, len(track), 1234):  # odd pieces
    run.feed(track[i:i + 1234])
  assert np.array_equal(run.finish(), want)
  short = np.concatenate([track[:3000], np.zeros(3000, np.float32)])  # 0.375 s: one window
  for x in (short, track[:3000]):  # the second is padded to one window
    assert np.array_equal(ex.segments_from_track(x, [0.0], [0.2]),
                          reduce_windows(*ex.windows(x), [0.0], [0.2]), equal_nan=True)


def test_emobase_stream_closes_without_finishing():
  """A run given up half-way (another feature failed) ends its thread, before or after it
  started, instead of leaving openSMILE running (which crashes the interpreter at exit)."""
  ex = core._make("emobase2010", "pretrained", "cpu")
  for seconds in (0, 3, 9):
    run = ex.stream([0.0], [5.0])
    for _ in range(seconds):
      run.feed(np.full(AUDIO_RATE, 0.1, np.float32))
    run.close()
    assert not run._thread.is_alive()
    run.close()


def test_audio_slicer_equals_segment_audio():
  rng = np.random.default_rng(1)
  track = rng.standard_normal(23 * AUDIO_RATE + 77).astype(np.float32)
  edges = np.linspace(0, 30, 5)
  for start, end in [(np.arange(5) * 5.0, np.arange(5) * 5.0 + 5),
                     (np.arange(4) * 5.0, np.arange(4) * 5.0 + 10), (edges[:-1], edges[1:])]:
    slicer = media.AudioSlicer(start, end)
    got, held = [], 0
    for i in range(0, len(track), 1000):
      got += slicer.push(track[i:i + 1000])
      held = max(held, sum(len(c) for c in slicer.chunks))
    got += slicer.finish()
    assert [i for i, _ in got] == list(range(len(start)))
    for (_, x), y in zip(got, media.segment_audio(track, start, end)):
      assert np.array_equal(x, y)
    assert held <= (max(end - start) + 0.2) * AUDIO_RATE  # about one segment, not the track


_MEMORY_SCRIPT = textwrap.dedent("""
  import json, resource, sys, tracemalloc
  import numpy as np
  import torch
  from extract import audio, core
  from extract.media import AUDIO_RATE

  def signal(seconds):  # generated piece by piece: the test itself holds no track
    for k in range(int(seconds)):
      t = k + np.arange(AUDIO_RATE) / AUDIO_RATE
      yield (0.2 * np.sin(2 * np.pi * (200 + 80 * np.sin(t / 3)) * t)).astype(np.float32)

  vggish_ex = core._make("vggish", "random", "cpu")
  # A stand-in net: this measures the streaming, not VGGish's own (fixed) activations.
  vggish_ex.model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(96 * 64, 128))
  vggish_ex.batch_size = 8  # so that the 10-s warm-up already runs full batches

  def run(seconds):
    start = np.arange(0, seconds - 4.99, 5.0)
    emobase = core._make("emobase2010", "pretrained", "cpu").stream(start, start + 5)
    vggish = vggish_ex.stream(len(start))
    slicer = __import__("extract.media").media.AudioSlicer(start, start + 5)
    for x in signal(seconds):
      emobase.feed(x)
      for i, seg in slicer.push(x):
        vggish.push(i, seg)
    for i, seg in slicer.finish():
      vggish.push(i, seg)
    return emobase.finish(), vggish.finish()

  tracemalloc.start()
  run(10)  # loads and allocates what any length needs
  traced0 = tracemalloc.get_traced_memory()[1]
  tracemalloc.reset_peak()
  rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  e, v = run(float(sys.argv[1]))
  traced = tracemalloc.get_traced_memory()[1]
  rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  assert np.isfinite(e).all() and np.isfinite(v).all()
  print(json.dumps({"rss_growth_mib": (rss1 - rss0) / 1024,
                    "traced_growth_mib": (traced - traced0) / 2**20}))
""")


def test_audio_path_memory_is_bounded():
  """A 3-minute track raises the peak memory of the audio path (openSMILE + VGGish's
  streaming) over a 10-s one by a few MB at most (0 measured): resident (openSMILE's own
  memory included) and Python's allocations. Whole-track openSMILE grew by about 4 MB per
  second of audio (its data memory; 800 MB here), the Python side by ~0.6 MB per second
  (the per-window rows, pandas, the track)."""
  env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  res = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, "180"], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  m = json.loads(res.stdout.strip().splitlines()[-1])
  assert m["rss_growth_mib"] < 20, m
  assert m["traced_growth_mib"] < 4, m  # the track alone would be 11 MB
