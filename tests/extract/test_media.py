"""Decoding and segmentation on tiny generated files."""

import numpy as np
import pytest

from extract import media


def _decode(path, spec, audio=True):
  info = media.probe(path)
  plan = media.plan_segments(media.parse_segmentation(spec), info.duration_s, str(path))
  dec = media.Decoder(path, info, plan, video=True, audio=audio)
  segs = list(dec.segments())
  return info, plan, segs, dec


@pytest.mark.parametrize("spec,kind", [("fixed:5", "fixed"), ("excerpt:64", "excerpt"),
                                       ("subsegments:4x16", "subsegments"),
                                       ("sliding:10:5", "sliding")])
def test_parse_segmentation(spec, kind):
  assert media.parse_segmentation(spec).kind == kind


@pytest.mark.parametrize("spec", ["fixed", "fixed:0", "excerpt:x", "subsegments:4", "slide:1:2"])
def test_parse_segmentation_rejects(spec):
  with pytest.raises(ValueError, match="bad segmentation"):
    media.parse_segmentation(spec)


def test_fixed_segments_all_frames_and_dropped_tail(media_dir):
  info, plan, segs, dec = _decode(media_dir / "av.mp4", "fixed:4")
  assert info.fps == pytest.approx(25.0) and info.duration_s == pytest.approx(6.0)
  np.testing.assert_allclose(plan.start_s, [0.0])
  np.testing.assert_allclose(plan.end_s, [4.0])
  assert plan.dropped_tail_s == pytest.approx(2.0)
  assert [i for i, _ in segs] == [0]
  assert segs[0][1].shape == (100, 224, 224, 3) and segs[0][1].dtype == np.uint8
  # Audio: 16 kHz mono over the whole file (AAC may add a few ms of priming).
  assert abs(len(dec.audio) - 6 * media.AUDIO_RATE) < 0.05 * media.AUDIO_RATE


def test_sliding_windows(media_dir):
  _, plan, segs, _ = _decode(media_dir / "av.mp4", "sliding:2:1", audio=False)
  np.testing.assert_allclose(plan.start_s, [0, 1, 2, 3, 4])
  np.testing.assert_allclose(plan.end_s, [2, 3, 4, 5, 6])
  assert [len(x) for _, x in segs] == [50] * 5


def test_excerpt_and_subsegments_sample_uniformly(media_dir):
  info, plan, segs, _ = _decode(media_dir / "av.mp4", "excerpt:8", audio=False)
  assert len(segs) == 1 and segs[0][1].shape[0] == 8
  np.testing.assert_allclose([plan.start_s[0], plan.end_s[0]], [0, 6])
  # The frame shown at the centre of each of 8 slices of 6 s: t = 0.375 + 0.75 k.
  idx = media.frame_indices(plan, info.frame_times)[0]
  np.testing.assert_allclose(info.frame_times[idx], 0.36 + 0.75 * np.arange(8), atol=0.041)
  _, plan, segs, _ = _decode(media_dir / "av.mp4", "subsegments:4x16", audio=False)
  np.testing.assert_allclose(plan.start_s, [0, 1.5, 3, 4.5])
  assert [x.shape[0] for _, x in segs] == [16] * 4


def test_grayscale_odd_size_and_vfr(media_dir):
  _, _, segs, _ = _decode(media_dir / "gray.mkv", "excerpt:4")
  x = segs[0][1]
  assert x.shape == (4, 224, 224, 3)
  assert (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()
  _, _, segs, _ = _decode(media_dir / "odd.mkv", "fixed:1", audio=False)
  assert [x.shape for _, x in segs] == [(25, 224, 224, 3)] * 2
  info, plan, segs, _ = _decode(media_dir / "vfr.mkv", "fixed:1", audio=False)
  assert info.as_dict()["variable_frame_rate"]
  # Frames at 0, .04, .2, .24, ... : 10 of them fall in [0, 1); the rest (< 1 s) is dropped.
  assert [len(x) for _, x in segs] == [10]
  assert plan.dropped_tail_s > 0.5


def test_missing_audio_stream(media_dir):
  info, _, _, dec = _decode(media_dir / "silent.mp4", "fixed:1")
  assert not info.has_audio and dec.audio is None


def test_shorter_than_one_segment(media_dir):
  info = media.probe(media_dir / "short.mp4")
  with pytest.raises(media.MediaError, match=r"short.mp4: is 2.00 s long, shorter than one 5 s"):
    media.plan_segments(media.parse_segmentation("fixed:5"), info.duration_s,
                        str(media_dir / "short.mp4"))


@pytest.mark.parametrize("name", ["corrupt.mp4", "truncated.mp4", "notes.txt", "absent.mp4"])
def test_bad_files_fail_clearly(media_dir, name):
  with pytest.raises(media.MediaError, match=name):
    _decode(media_dir / name, "fixed:1")


def test_segment_audio():
  a = np.arange(3 * media.AUDIO_RATE, dtype=np.float32)
  parts = media.segment_audio(a, [0, 1, 2.5], [1, 2, 3.5])
  assert [len(p) for p in parts] == [16000, 16000, 8000]
  assert parts[1][0] == 16000
