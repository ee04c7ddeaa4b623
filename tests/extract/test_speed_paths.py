"""The speed paths of extraction give the same values as the plain ones (tiny inputs, CPU)."""

import threading
import time

import av
import jax
import numpy as np
import pytest

from extract import i3d, media

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@pytest.fixture
def compiles():
  """A list that gets one entry per XLA compilation while the test runs."""
  seen = []

  def listener(event, duration, **kwargs):
    if event == _COMPILE_EVENT:
      seen.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listener)
  yield seen
  jax.monitoring.unregister_event_duration_listener(listener)


def test_i3d_fixed_batches_compile_once_and_match_per_clip(compiles):
  ex = i3d.I3DExtractor("random")
  ex.frames_per_call = 6  # clips of 2 frames: batches of 3 clips
  assert i3d.clips_per_call(2, ex.frames_per_call) == 3
  rng = np.random.RandomState(0)
  clips = [rng.randint(0, 256, (2, 32, 32, 3)).astype(np.uint8) for _ in range(5)]
  two = ex.clips(clips[:2])  # one batch, one padding clip
  assert len(compiles) >= 1
  before = len(compiles)
  five = ex.clips(clips)  # two batches, the last one padded: the same program
  assert len(compiles) == before, "a different number of clips recompiled the I3D program"
  assert two.shape == (2, i3d.DIM) and five.shape == (5, i3d.DIM)
  for k, c in enumerate(clips):
    want, _ = i3d._apply_fn()(ex.variables, c[None].astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_allclose(five[k], np.asarray(want)[0], rtol=1e-5, atol=1e-5)
    if k < 2:
      np.testing.assert_allclose(two[k], five[k], rtol=1e-5, atol=1e-5)
  assert np.abs(five).max() > 0 and not np.allclose(five[0], five[1])  # not a constant output


def test_i3d_device_scaling_equals_host_scaling_bitwise():
  """uint8 clips scaled on the device give the bits of the float input scaled by numpy."""
  x = np.arange(256, dtype=np.uint8)
  np.testing.assert_array_equal(i3d._SCALE[x], x.astype(np.float32) / 127.5 - 1.0)
  assert [i3d.clips_per_call(t) for t in (1, 16, 64, 125, 1000)] == [64, 4, 1, 1, 1]
  ex = i3d.I3DExtractor("random")
  ex.frames_per_call = 6
  clips = np.random.RandomState(1).randint(0, 256, (3, 2, 32, 32, 3)).astype(np.uint8)
  got = ex.clips(list(clips))  # one full batch of 3: the same shapes as below
  want, _ = i3d._apply_fn()(ex.variables, clips.astype(np.float32) / 127.5 - 1.0)
  np.testing.assert_array_equal(got, np.asarray(want))


def _reference_segments(path, spec):
  """Segments decoded serially with a fresh frame.reformat per frame (the plain path)."""
  info = media.probe(path)
  plan = media.plan_segments(media.parse_segmentation(spec), info.duration_s, str(path))
  with av.open(str(path)) as c:
    decoded = sorted(c.decode(video=0), key=lambda f: f.pts)
  rgb = []
  for f in decoded:
    scale = media.RESIZE_SHORT / min(f.width, f.height)
    nw, nh = max(media.CROP, round(f.width * scale)), max(media.CROP, round(f.height * scale))
    x = f.reformat(width=nw, height=nh, format="rgb24", interpolation="BILINEAR").to_ndarray()
    y0, x0 = (nh - media.CROP) // 2, (nw - media.CROP) // 2
    rgb.append(x[y0:y0 + media.CROP, x0:x0 + media.CROP])
  return info, plan, [np.stack([rgb[k] for k in idx])
                      for idx in media.frame_indices(plan, info.frame_times)]


def _decode_threads():
  return [t for t in threading.enumerate() if t.name.startswith("extract-") and t.is_alive()]


@pytest.mark.parametrize("name,spec", [("av.mp4", "sliding:2:1"), ("gray.mkv", "excerpt:5"),
                                       ("odd.mkv", "fixed:1"), ("vfr.mkv", "subsegments:3x4")])
def test_background_decoding_gives_the_serial_frames(media_dir, monkeypatch, name, spec):
  monkeypatch.setattr(media, "_RESIZE_BACKLOG", 1)  # the producer waits on the pool often
  info, plan, want = _reference_segments(media_dir / name, spec)
  dec = media.Decoder(media_dir / name, info, plan, video=True, audio=True)
  got = list(dec.segments())
  assert [i for i, _ in got] == list(range(len(want)))
  for (_, x), w in zip(got, want):
    assert x.dtype == np.uint8
    np.testing.assert_array_equal(x, w)
  assert not _decode_threads()


def test_background_errors_reach_the_caller(media_dir, tmp_path):
  info = media.probe(media_dir / "odd.mkv")  # 50 frames; Matroska still opens when cut short
  plan = media.plan_segments(media.parse_segmentation("fixed:1"), info.duration_s, "odd.mkv")
  data = (media_dir / "odd.mkv").read_bytes()
  (tmp_path / "cut.mkv").write_bytes(data[:len(data) // 2])
  for name, msg in [("cut.mkv", r"cut.mkv: corrupt or truncated, frame \d+ of 50 \(t=1\.\d\d s\) "
                                r"could not be decoded$"),
                    ("absent.mkv", r"absent.mkv: no such file$")]:
    dec = media.Decoder(tmp_path / name, info, plan, video=True, audio=False)
    with pytest.raises(media.MediaError, match=msg):
      list(dec.segments())
    assert not _decode_threads()


def test_closing_the_generator_early_stops_the_threads(media_dir, monkeypatch):
  monkeypatch.setattr(media, "SEGMENTS_AHEAD", 1)
  info = media.probe(media_dir / "av.mp4")
  plan = media.plan_segments(media.parse_segmentation("sliding:1:0.5"), info.duration_s, "av")
  dec = media.Decoder(media_dir / "av.mp4", info, plan, video=True, audio=True)
  gen = dec.segments()
  assert next(gen)[0] == 0
  time.sleep(0.3)  # the producer fills the queue and waits on it
  assert _decode_threads()
  t = time.perf_counter()
  gen.close()
  assert time.perf_counter() - t < 2.0
  assert not _decode_threads()
