"""What the film's faces show, for the report: the face track on the input (`--face-track`),
cached as the features are, its moments and a thumbnail of the face at each.

- `run`: the face track of `python -m extract --features faces` (MTCNN, then the FER-2013
  classifier; `extract.faces`) on one video, or its cached result. The cache holds
  `<stem>.<sha12>.events.json` (VTT's events, one per face and sample) and
  `<stem>.<sha12>.faces.json` (the options and the extractor's summary and weights), keyed by
  the file's sha256 as the feature cache is; a model that reads the `faces` feature saves its
  events there too (`save`).
- `find`: face events made earlier (next to the input, in --faces DIR, the cache, --out).
- `moments`: per face track, each stretch of one expression (at least two samples, or a
  track's only stretch), the longest `MAX_MOMENTS` kept; VTT's form, at the stretch's most
  confident sample.
- `thumbnails`: the face at each moment, cut from its frame (PyAV, one seek per moment) as a
  small JPEG data URI, so the page stays one self-contained file.

`extract` (torch) and PyAV are imported inside the functions that use them.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import pathlib
import re
from typing import Callable, Sequence

import numpy as np

from aan_jax.inference import predict
from aan_jax.util import atomic
from aan_jax.util.hashing import file_sha256

FACE_FPS = 2.0  # samples per second, as `python -m extract --features faces` by default
MAX_MOMENTS = 40  # face moments listed (and thumbnails inlined) per film
THUMB_PX = 64  # a thumbnail's side in pixels (the page shows it at 48)


@dataclasses.dataclass
class Track:
  """A film's face events and where they came from."""
  events: list
  path: str | None          # the events file read or written
  info: dict                # the extractor's summary and weights ({} when read from elsewhere)
  extracted: bool = False   # the track ran now (else: from the cache or an earlier run)


def _paths(cache: pathlib.Path, video: str, sha: str) -> tuple[pathlib.Path, pathlib.Path]:
  if not re.fullmatch(r"[0-9a-f]{64}", str(sha)):
    raise ValueError(f"{video}: not a sha256 ({str(sha)[:20]!r}); the face track is keyed by one")
  stem = f"{pathlib.Path(video).stem}.{sha[:12]}"
  return cache / f"{stem}.events.json", cache / f"{stem}.faces.json"


def save(cache, video: str, sha: str, events: list, npz_metadata: str | dict) -> str:
  """Keeps one extraction's face events (and its options) in the cache; returns the path."""
  from extract.faces import save_events  # pylint: disable=g-import-not-at-top
  meta = json.loads(npz_metadata) if isinstance(npz_metadata, str) else dict(npz_metadata)
  events_path, info_path = _paths(pathlib.Path(cache), video, sha)
  save_events(events, events_path)
  info = {"source_sha256": sha, "faces": meta.get("faces"),
          "weights": {"faces": (meta.get("weights") or {}).get("faces")},
          "face_fps": (meta.get("options") or {}).get("face_fps", FACE_FPS)}
  atomic.write_file(info_path, json.dumps(info, indent=1))
  return str(events_path)


def cached(cache, video: str, sha: str, mode: str | None = None) -> Track | None:
  """The cached track of this file (None: absent, damaged, or made with other weights)."""
  try:
    events_path, info_path = _paths(pathlib.Path(cache), video, sha)
  except ValueError:
    return None
  if not (events_path.is_file() and info_path.is_file()):
    return None
  try:
    with open(info_path, encoding="utf-8") as f:
      info = json.load(f)
    if not isinstance(info, dict) or info.get("source_sha256") != sha:
      return None
    w = (info.get("weights") or {}).get("faces")
    if mode is not None and not (isinstance(w, dict) and w.get("mode") == mode):
      return None
    if info.get("face_fps") != FACE_FPS:
      return None
    return Track(predict.load_face_events(events_path), str(events_path), info)
  except (OSError, ValueError, AttributeError):
    return None  # a damaged entry is redone


def run(video: str, sha: str, mode: str, cache, device: str | None, progress=None) -> Track:
  """The face track of `video` (faces weights `mode`: pretrained or random), from the cache
  or run now and kept there."""
  hit = cached(cache, video, sha, mode)
  if hit is not None:
    return hit
  from extract import core  # pylint: disable=g-import-not-at-top
  r = core.extract_file(video, segmentation="fixed:5", features=["faces"], device=device or "cpu",
                        weights={"faces": mode}, sha256=sha, progress=progress,
                        face_fps=FACE_FPS)
  path = save(cache, video, sha, r["events"], r["metadata"])
  track = cached(cache, video, sha, mode)
  if track is None:
    raise OSError(f"{path}: the face track was written but cannot be read back")
  track.extracted = True
  return track


def find(inp: str, sha: str, dirs: Sequence) -> str | None:
  """<stem>.events.json next to the input, else in the first of `dirs` (None: skipped) that
  holds it (a cache folder: its sha-keyed file first)."""
  stem = pathlib.Path(inp).stem
  keyed = [f"{stem}.{sha[:12]}.events.json"] if re.fullmatch(r"[0-9a-f]{64}", str(sha)) else []
  for d in [pathlib.Path(inp).parent, *dirs]:
    if d is None:
      continue
    for name in (*keyed, f"{stem}.events.json"):
      if (pathlib.Path(d) / name).is_file():
        return str(pathlib.Path(d) / name)
  return None


def _step(events: Sequence[dict]) -> float:
  """The sampling interval of the track (the median gap between sample times)."""
  t = np.unique([float(e["seconds"]) for e in events])
  return float(np.median(np.diff(t))) if len(t) > 1 else 1.0 / FACE_FPS


def moments(events: Sequence[dict], max_moments: int = MAX_MOMENTS) -> list[dict]:
  """Each face track's stretches of one expression, as VTT events at their most confident
  sample: `object` holds the track id, the stretch (start_s, end_s), its samples, the mean
  probability of the class and the box at that sample. A stretch of one sample counts only
  when it is all its track shows; the `max_moments` with the most evidence (samples x mean
  probability) are kept, in time order."""
  step = _step(events)
  tracks: dict = {}
  for ev in events:
    obj = ev.get("object") or {}
    tracks.setdefault(obj.get("id", 0), []).append(ev)
  runs = []
  for tid, evs in tracks.items():
    evs = sorted(evs, key=lambda e: e["seconds"])
    cur: list = []
    track_runs = []
    for ev in evs:
      if cur and (ev["class"] != cur[-1]["class"]
                  or ev["seconds"] - cur[-1]["seconds"] > 2.5 * step):
        track_runs.append(cur)
        cur = []
      cur.append(ev)
    track_runs.append(cur)
    for r in track_runs:
      if len(r) < 2 and len(track_runs) > 1:
        continue  # a one-sample flicker inside a longer track
      scores = [float((e.get("object") or {}).get("score", 0.0)) for e in r]
      best = r[int(np.argmax(scores))]
      runs.append({"type": "emotion", "class": r[0]["class"], "seconds": float(best["seconds"]),
                   "object": {"id": tid, "start_s": round(float(r[0]["seconds"]), 3),
                              "end_s": round(float(r[-1]["seconds"]) + step, 3),
                              "samples": len(r), "score": round(float(np.mean(scores)), 4),
                              "box": (best.get("object") or {}).get("box")}})
  runs.sort(key=lambda m: -m["object"]["samples"] * m["object"]["score"])
  return sorted(runs[:max_moments], key=lambda m: (m["seconds"], str(m["object"]["id"])))


def _frames(video: str, times: Sequence[float]):
  """Yields (time, RGB frame shown at that time), one seek per time."""
  import av  # pylint: disable=g-import-not-at-top
  with av.open(video) as c:
    vs = c.streams.video[0]
    tb = float(vs.time_base)
    for t in times:
      c.seek(max(0, int(t / tb)), stream=vs, backward=True, any_frame=False)
      shown = None
      for frame in c.decode(vs):
        ft = frame.time if frame.time is not None else 0.0
        if shown is not None and ft > t + 1e-6:
          break
        shown = frame
        if ft > t + 1e-6:
          break
      if shown is not None:
        yield t, shown.to_ndarray(format="rgb24")


def thumbnails(video: str, face_moments: Sequence[dict], px: int = THUMB_PX) -> list:
  """A JPEG data URI of the face at each moment (its box with a margin, square), or None
  where its frame cannot be cut (an unreadable video: the page shows the moment without)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out: list = [None] * len(face_moments)
  want: dict = {}
  for k, m in enumerate(face_moments):
    want.setdefault(float(m["seconds"]), []).append(k)
  try:
    for t, rgb in _frames(video, sorted(want)):
      h, w = rgb.shape[:2]
      for k in want[t]:
        box = face_moments[k]["object"].get("box")
        if not (isinstance(box, list) and len(box) == 4):
          continue
        x0, y0, x1, y1 = (float(v) for v in box)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half = max(x1 - x0, y1 - y0) * 0.65  # the face and a little around it
        a, b = int(max(0, cx - half)), int(max(0, cy - half))
        c, d = int(min(w, cx + half)), int(min(h, cy + half))
        if c - a < 2 or d - b < 2:
          continue
        img = Image.fromarray(np.ascontiguousarray(rgb[b:d, a:c])).resize((px, px),
                                                                           Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
        out[k] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
  except Exception:  # pylint: disable=broad-except
    pass  # decoding failed: the moments stay, without pictures
  return out


@dataclasses.dataclass
class ForReport:
  """What the report shows of the faces."""
  events: list       # VTT's face events (the JSON's face_events)
  moments: list      # `moments` of them
  thumbs: list       # a data URI (or None) per moment
  path: str | None   # the events file
  metadata: dict     # metadata["face_track"]
  random: bool       # the expressions come from a classifier with random weights


def for_report(inp: str, sha: str, video: str | None, *, track: bool, mode: str,
               dirs: Sequence, cache, device: str | None,
               bar_factory: Callable | None = None) -> ForReport:
  """The faces of one input: with `track`, the face track on its video (from the cache or
  run now); else face events made earlier (`find`), as the report always showed them."""
  note, t = None, None
  if track and video:
    vsha = sha if os.path.abspath(video) == os.path.abspath(inp) else file_sha256(video)
    bar = bar_factory(f"{pathlib.Path(video).name} [faces]") if bar_factory else None

    def progress(done, total):
      if bar is not None:
        bar.total = total
        bar.update(done - bar.n)
    try:
      t = run(video, vsha, mode, cache, device, progress)
    except ValueError as e:  # extract's MediaError is one
      if "has no video stream" not in str(e):
        raise
      note = "--face-track not run: the input has no video stream"  # the curves still can be
    finally:
      if bar is not None:
        bar.close()
    path = t.path if t else None
  else:
    if track:
      note = ("--face-track not run: the input is a feature file and its video (metadata "
              "source.name) is not beside it")
    path = find(inp, sha, dirs)
    if path:
      t = Track(predict.load_face_events(path), path, {})
  evs = t.events if t else []
  ms = moments(evs)
  thumbs = thumbnails(video, ms) if (video and ms) else [None] * len(ms)
  w = ((t.info.get("weights") or {}).get("faces") if t else None) or {}
  meta = {"ran": bool(t and t.extracted), "events_file": os.path.basename(path) if path else None,
          "events": len(evs), "moments": len(ms), "thumbnails": sum(1 for x in thumbs if x),
          "moment_rule": (f"per face track, each stretch of one expression (two samples or "
                          f"more, or all a track shows); the {MAX_MOMENTS} with the most "
                          "evidence (samples x mean probability)"),
          **({"extractor": t.info} if t and t.info else {}), **({"note": note} if note else {})}
  return ForReport(evs, ms, thumbs, path, meta, isinstance(w, dict) and w.get("mode") == "random")
