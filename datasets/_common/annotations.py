"""Readers of the corpora's annotation and feature files, and per-segment labelling.

Pure numpy: the TFDS builders in datasets/ call these (as `_common.annotations`, see
__init__.py), and so can anything that must not import TensorFlow. What is known of each
file format is in ../shared/CORPORA.md; every reader is tolerant where sources disagree
and says in its errors what it expected. Untrusted files are parsed as text or as
pickle-free .npz, never executed.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import pathlib
import re
import subprocess
import sys
import tempfile
from typing import Iterable, Iterator, Sequence

import numpy as np

from aan_jax.data.corpus import COGNIMUSE_MOVIES  # noqa: F401  (re-exported for the builder)
from aan_jax.data.features import FEATURE_DIMS, FEATURES

log = logging.getLogger(__name__)

# Movie tokens in the official annotation file names (CORPORA.md).
COGNIMUSE_LONG_NAMES: dict[str, str] = {
    "ABE": "AmericanBeauty", "BMI": "BeautifulMind", "CHI": "Chicago", "CRA": "Crash",
    "FNE": "FindingNemo", "GLA": "Gladiator", "LOR": "LOTRReturn", "MDB": "MDB",
    "NCO": "NoCountry", "RAT": "Ratatouille", "SIL": "ShakespeareInLove",
    "DEP": "TheDeparted",
}
ANNOTATION_FPS = 25.0
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg")
# Annotation and video may differ in length by a few frames (CORPORA.md: up to ~2, and
# several hundred for DEP); beyond this the annotation is taken to belong to another file.
LENGTH_TOLERANCE_S = 2.0
LENGTH_TOLERANCE_FRACTION = 0.03


class CorpusFileError(ValueError):
  """A corpus file is missing or malformed; the message names the file and the fix."""


@dataclasses.dataclass
class Trace:
  """A frame-level annotation: times (s) of frames and arousal/valence per frame."""
  time_s: np.ndarray
  arousal: np.ndarray
  valence: np.ndarray
  source: str

  def __len__(self) -> int:
    return len(self.time_s)

  @property
  def duration_s(self) -> float:
    return len(self) / ANNOTATION_FPS


def _finite_or_raise(arr: np.ndarray, what: str, path, fix: str, row_offset: int = 1):
  bad = np.flatnonzero(~np.isfinite(arr))
  if bad.size:
    raise CorpusFileError(
        f"{path}: {what} is NaN or infinite at row {int(bad[0]) + row_offset} "
        f"({bad.size} rows in all). {fix}")


def read_trace_csv(path) -> Trace:
  """Reads `<MOVIE>.csv` with a header `frame,arousal,valence` at 25 fps."""
  path = pathlib.Path(path)
  fix = "Expected a header `frame,arousal,valence` and one row per 25-fps frame."
  try:
    with open(path, newline="") as f:
      rows = list(csv.reader(f))
  except UnicodeDecodeError as e:
    raise CorpusFileError(f"{path}: not a text CSV ({e}). {fix}") from None
  if not rows:
    raise CorpusFileError(f"{path}: empty file. {fix}")
  header = [h.strip().lower() for h in rows[0]]
  if not {"frame", "arousal", "valence"} <= set(header):
    raise CorpusFileError(f"{path}: header is {rows[0]}. {fix}")
  cols = {name: header.index(name) for name in ("frame", "arousal", "valence")}
  body = [r for r in rows[1:] if any(c.strip() for c in r)]
  if not body:
    raise CorpusFileError(f"{path}: no data rows. {fix}")
  try:
    data = {k: np.array([float(r[i]) for r in body], np.float64) for k, i in cols.items()}
  except (ValueError, IndexError) as e:
    raise CorpusFileError(f"{path}: unreadable row ({e}). {fix}") from None
  for k in ("arousal", "valence"):
    _finite_or_raise(data[k], k, path, "Fix or remove that row.", row_offset=2)
  frame = data["frame"]
  if np.any(frame != np.round(frame)) or np.any(np.diff(frame) != 1):
    raise CorpusFileError(
        f"{path}: the frame column must count up by 1 (0, 1, 2, ...). {fix}")
  return Trace(frame / ANNOTATION_FPS, data["arousal"], data["valence"], str(path))


def read_cognimuse_dat(path) -> Trace:
  """Reads an official COGNIMUSE `.dat`: rows `time valence arousal` every 0.04 s.

  Note the column order of the official files: VALENCE before AROUSAL (CORPORA.md).
  """
  path = pathlib.Path(path)
  fix = ("Expected the COGNIMUSE format: no header, three whitespace-separated columns "
         "`time_s valence arousal`, one row every 0.04 s.")
  rows = []
  with open(path, "rb") as f:
    for n, line in enumerate(f, 1):
      parts = line.replace(b",", b" ").split()
      if not parts:
        continue
      if len(parts) < 3:
        raise CorpusFileError(f"{path}: line {n} has {len(parts)} columns. {fix}")
      try:
        rows.append([float(p) for p in parts[:3]])
      except ValueError:
        raise CorpusFileError(f"{path}: line {n} is not numeric: {line[:60]!r}. {fix}") from None
  if not rows:
    raise CorpusFileError(f"{path}: no data rows. {fix}")
  data = np.asarray(rows, np.float64)
  for j, what in ((0, "time"), (1, "valence"), (2, "arousal")):
    _finite_or_raise(data[:, j], what, path, "Fix or remove that line.")
  t = data[:, 0]
  if len(t) > 1:
    step = np.diff(t)
    if np.any(np.abs(step - 1 / ANNOTATION_FPS) > 0.5 / ANNOTATION_FPS):
      k = int(np.flatnonzero(np.abs(step - 1 / ANNOTATION_FPS) > 0.5 / ANNOTATION_FPS)[0])
      raise CorpusFileError(
          f"{path}: time jumps from {t[k]} to {t[k + 1]} at line {k + 2}; {fix}")
  return Trace(t, data[:, 2], data[:, 1], str(path))


def read_trace(path) -> Trace:
  """Reads a frame-level trace, choosing the parser by suffix (.csv or .dat/.txt)."""
  return read_trace_csv(path) if str(path).lower().endswith(".csv") else read_cognimuse_dat(path)


def mean_trace(traces: Sequence[Trace]) -> Trace:
  """Averages traces of one movie (several annotators), truncated to the shortest."""
  if len(traces) == 1:
    return traces[0]
  n = min(len(t) for t in traces)
  longest = max(len(t) for t in traces)
  if longest - n > 0:
    log.warning("averaging %d traces of lengths %d..%d: truncated to %d frames",
                len(traces), n, longest, n)
  return Trace(traces[0].time_s[:n],
               np.mean([t.arousal[:n] for t in traces], axis=0),
               np.mean([t.valence[:n] for t in traces], axis=0),
               " + ".join(t.source for t in traces))


def _walk_files(root: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def find_cognimuse_annotations(root, movie: str, kind: str = "intended") -> list[pathlib.Path]:
  """Annotation files of one movie and kind ("intended" or "experienced") under root.

  Accepted, in order of preference:
  `annotations/<kind>/<MOVIE>.csv`, then for "intended" `annotations/<MOVIE>.csv`;
  otherwise the official files anywhere under root: `intended_<k>_<LongName>.dat` or
  `subj<S>_<I>_<LongName>.dat` (all traces of a movie are averaged).
  """
  root = pathlib.Path(root)
  for cand in [root / "annotations" / kind / f"{movie}.csv"] + (
      [root / "annotations" / f"{movie}.csv"] if kind == "intended" else []):
    if cand.is_file():
      return [cand]
  long = re.escape(COGNIMUSE_LONG_NAMES.get(movie, movie))
  pattern = (rf"intended_\d+_({long}|{movie})\.(dat|txt)" if kind == "intended"
             else rf"subj\d+_\d+_({long}|{movie})\.(dat|txt)")
  rx = re.compile(pattern, re.IGNORECASE)
  return [p for p in _walk_files(root) if rx.fullmatch(p.name)]


def find_video(root, stem: str) -> pathlib.Path | None:
  """A video whose file name (without suffix) is `stem`, e.g. `2001GLA/GLA.avi`."""
  root = pathlib.Path(root)
  hits = [p for p in _walk_files(root)
          if p.suffix.lower() in VIDEO_SUFFIXES and p.stem.lower() == stem.lower()]
  if len(hits) > 1:
    raise CorpusFileError(
        f"{root}: several videos for {stem}: {[str(h) for h in hits]}. Keep only one.")
  return hits[0] if hits else None


def read_features_npz(path, features: Sequence[str] = FEATURES) -> dict:
  """Reads one `.npz` from `python -m extract` for a build (aan_jax.data.featfile's rules; every
  feature finite): float32 arrays, start_s/end_s and the metadata as a dict."""
  from aan_jax.data import featfile  # pylint: disable=g-import-not-at-top
  data = featfile.read(path, features, finite=True, error=CorpusFileError)
  out = {k: data[k] for k in (*features, "start_s", "end_s")}
  out["metadata"] = json.loads(data["metadata"])
  return out


def duration_of(feats: dict) -> float:
  """The video's duration: from extractor metadata when given, else the last segment end."""
  meta = feats.get("metadata") or {}
  # The extractor's metadata may nest the media description one level down.
  for d in [meta] + [v for v in meta.values() if isinstance(v, dict)]:
    for key in ("video_duration_s", "duration_s"):
      v = d.get(key)
      if isinstance(v, (int, float)) and math.isfinite(v) and v > 0:
        return float(v)
  return float(feats["end_s"][-1]) if len(feats["end_s"]) else 0.0


def check_lengths(trace: Trace, video_duration_s: float, video_source: str) -> float:
  """Fails if annotation and video lengths differ beyond the tolerance; returns the difference.

  A positive result means the annotation is longer than the video (its tail is unused);
  negative means the video is longer (its tail has no labels and is dropped).
  """
  diff = trace.duration_s - video_duration_s
  tol = max(LENGTH_TOLERANCE_S, LENGTH_TOLERANCE_FRACTION * video_duration_s)
  if abs(diff) > tol:
    raise CorpusFileError(
        f"{trace.source}: the annotation covers {trace.duration_s:.2f} s but the video "
        f"{video_source} lasts {video_duration_s:.2f} s (difference {diff:+.2f} s, "
        f"tolerance {tol:.2f} s). The annotation probably belongs to another movie or "
        f"cut; check that both files are of the same movie.")
  if abs(diff) >= 1 / ANNOTATION_FPS:
    log.info("%s vs %s: lengths differ by %+.2f s (%+d frames); truncated to the shorter",
             trace.source, video_source, diff, round(diff * ANNOTATION_FPS))
  return diff


def segment_means(trace: Trace, start_s: np.ndarray, end_s: np.ndarray):
  """Mean arousal/valence over the annotation frames of each segment [start, end).

  Returns (arousal, valence, keep): keep is False for segments the annotation does not
  fully cover (they are dropped, never labelled from a partial window).
  """
  n = len(trace)
  half = 0.5 / ANNOTATION_FPS
  # Frame k covers [k/fps, (k+1)/fps); a segment owns the frames whose start lies in it.
  first = np.ceil(np.asarray(start_s, np.float64) * ANNOTATION_FPS - 1e-6).astype(np.int64)
  last = np.ceil(np.asarray(end_s, np.float64) * ANNOTATION_FPS - 1e-6).astype(np.int64)
  keep = (first >= 0) & (last <= n) & (last > first)
  keep &= np.asarray(end_s) <= trace.duration_s + half
  ca = np.concatenate([[0.0], np.cumsum(trace.arousal)])
  cv = np.concatenate([[0.0], np.cumsum(trace.valence)])
  f, l = np.clip(first, 0, n), np.clip(last, 0, n)
  cnt = np.maximum(l - f, 1)
  arousal = ((ca[l] - ca[f]) / cnt).astype(np.float32)
  valence = ((cv[l] - cv[f]) / cnt).astype(np.float32)
  return arousal, valence, keep


def label_segments(trace: Trace, feats: dict, video_source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Checks lengths, then labels each segment with its mean annotation; logs drops."""
  check_lengths(trace, duration_of(feats), video_source)
  arousal, valence, keep = segment_means(trace, feats["start_s"], feats["end_s"])
  if not keep.all():
    log.warning("%s: %d of %d segments extend past the annotation's end (%.2f s) and are "
                "skipped", video_source, int((~keep).sum()), len(keep), trace.duration_s)
  return arousal, valence, keep


def iter_segment_examples(movie: str, feats: dict, arousal: np.ndarray, valence: np.ndarray,
                          keep: np.ndarray, features: Sequence[str] = FEATURES
                          ) -> Iterator[tuple[int, dict]]:
  """(key, example) per kept segment; key = segment_index, counting kept segments from 0.

  Integer keys: with shuffling disabled, TFDS's Beam writer orders examples by key.
  """
  idx = 0
  for i in np.flatnonzero(keep):
    ex = {f: feats[f][i] for f in features}
    ex.update(arousal=float(arousal[i]), valence=float(valence[i]), movie=movie,
              segment_index=idx, start_s=float(feats["start_s"][i]),
              end_s=float(feats["end_s"][i]))
    yield idx, ex
    idx += 1


# ---- LIRIS-ACCEDE / MediaEval 2016 Global ----

def _read_table(path, header: bool, min_cols: int, fix: str) -> tuple[list[str], list[list[str]]]:
  path = pathlib.Path(path)
  with open(path, newline="", encoding="utf-8", errors="replace") as f:
    lines = [ln.rstrip("\r\n") for ln in f if ln.strip()]
  if not lines:
    raise CorpusFileError(f"{path}: empty file. {fix}")
  split = (lambda ln: ln.split("\t")) if "\t" in lines[0] else (lambda ln: ln.replace(",", " ").split())
  rows = [split(ln) for ln in lines]
  head = [h.strip() for h in rows[0]] if header else []
  body = rows[1:] if header else rows
  for n, r in enumerate(body, 2 if header else 1):
    if len(r) < min_cols:
      raise CorpusFileError(f"{path}: line {n} has {len(r)} columns, expected {min_cols}. {fix}")
  return head, body


def read_accede_ranking(path) -> dict[str, tuple[float, float]]:
  """ACCEDEranking.txt -> {clip name without suffix: (valenceValue, arousalValue)}."""
  fix = ("Expected LIRIS-ACCEDE's annotations/ACCEDEranking.txt: tab-separated, header "
         "`id name valenceRank arousalRank valenceValue arousalValue ...`.")
  head, body = _read_table(path, True, 6, fix)
  try:
    ni, vi, ai = head.index("name"), head.index("valenceValue"), head.index("arousalValue")
  except ValueError:
    raise CorpusFileError(f"{path}: header is {head}. {fix}") from None
  out = {}
  for n, r in enumerate(body, 2):
    try:
      v, a = float(r[vi]), float(r[ai])
    except ValueError:
      raise CorpusFileError(f"{path}: line {n} has non-numeric values. {fix}") from None
    if not (math.isfinite(v) and math.isfinite(a)):
      raise CorpusFileError(f"{path}: line {n} has a NaN or infinite value. {fix}")
    out[pathlib.Path(r[ni].strip()).stem] = (v, a)
  return out


def read_mediaeval16_global_labels(path) -> dict[str, tuple[float, float]]:
  """MEDIAEVAL16-Global_prediction.txt (no header: clip name, valence, arousal)."""
  fix = ("Expected the MediaEval 2016 Global test ground truth: tab-separated, no header, "
         "columns `clip_name valence arousal`.")
  _, body = _read_table(path, False, 3, fix)
  out = {}
  for n, r in enumerate(body, 1):
    try:
      v, a = float(r[1]), float(r[2])
    except ValueError:
      if n == 1:  # tolerate a header line, which some copies carry
        continue
      raise CorpusFileError(f"{path}: line {n} has non-numeric values. {fix}") from None
    if not (math.isfinite(v) and math.isfinite(a)):
      raise CorpusFileError(f"{path}: line {n} has a NaN or infinite value. {fix}")
    out[pathlib.Path(r[0].strip()).stem] = (v, a)
  return out


# ---- MediaEval 2017/2018 continuous (LIRIS-ACCEDE long movies) ----

def _numeric_table(path, ncols: int, fix: str) -> np.ndarray:
  """A headed table's first `ncols` columns as float64; a clear error on a bad row."""
  _, body = _read_table(path, True, ncols, fix)
  try:
    return np.array([[float(x) for x in r[:ncols]] for r in body], np.float64)
  except ValueError:
    raise CorpusFileError(f"{path}: a row is not numeric. {fix}") from None


def read_mediaeval_windows(path) -> dict[str, np.ndarray]:
  """<Movie>-MEDIAEVAL2017-valence_arousal.txt: header, rows `id start valence arousal`."""
  fix = ("Expected a MediaEval 2017 valence/arousal file: a header, then tab-separated "
         "rows `segment_id start_s valence arousal` for 10-s windows every 5 s.")
  data = _numeric_table(path, 4, fix)
  for j, what in ((1, "start"), (2, "valence"), (3, "arousal")):
    _finite_or_raise(data[:, j], what, path, "Fix that row.", row_offset=2)
  return {"index": data[:, 0].astype(np.int64), "start_s": data[:, 1],
          "valence": data[:, 2], "arousal": data[:, 3]}


def read_mediaeval_fear(path) -> dict[str, np.ndarray]:
  """<Movie>-MEDIAEVAL2017-fear.txt: header, rows `id start fear(0/1)`."""
  fix = "Expected a MediaEval 2017 fear file: a header, then rows `segment_id start_s fear`."
  data = _numeric_table(path, 3, fix)
  if not np.isin(data[:, 2], (0, 1)).all():
    raise CorpusFileError(f"{path}: fear must be 0 or 1. {fix}")
  return {"index": data[:, 0].astype(np.int64), "start_s": data[:, 1],
          "fear": data[:, 2].astype(np.int64)}


def read_mediaeval18_seconds(path) -> Trace:
  """MEDIAEVAL18_<NN>_Valence-Arousal.txt: header, rows `second valence arousal` (1 Hz)."""
  fix = ("Expected a MediaEval 2018 valence/arousal file: a header, then tab-separated "
         "rows `second valence arousal`, one per second.")
  data = _numeric_table(path, 3, fix)
  for j, what in ((1, "valence"), (2, "arousal")):
    _finite_or_raise(data[:, j], what, path, "Fix that row.", row_offset=2)
  return Trace(data[:, 0], data[:, 2], data[:, 1], str(path))


def read_fear_intervals(path) -> np.ndarray:
  """Fear sequences as rows `start_s end_s` (header optional) -> (n, 2) float array."""
  fix = ("Expected one fear sequence per line as `start_s end_s` (seconds; a header line "
         "is allowed).")
  _, body = _read_table(path, False, 2, fix)
  out = []
  for n, r in enumerate(body, 1):
    try:
      out.append([float(r[-2]), float(r[-1])])
    except ValueError:
      if n == 1:
        continue
      raise CorpusFileError(f"{path}: line {n} is not numeric. {fix}") from None
  arr = np.asarray(out, np.float64).reshape(-1, 2)
  if not np.isfinite(arr).all() or np.any(arr[:, 1] < arr[:, 0]):
    raise CorpusFileError(f"{path}: intervals must be finite with end >= start. {fix}")
  return arr


def split_name(name: str) -> str:
  """A TFDS-safe split name from a movie name (letters, digits, underscores)."""
  s = re.sub(r"\W+", "_", name).strip("_")
  if not s or s.lower() == "all":
    raise CorpusFileError(f"movie name {name!r} cannot be used as a split name; rename it")
  return s


def ordered_movies(names: Iterable[str], canonical: Sequence[str] = COGNIMUSE_MOVIES) -> list[str]:
  """Movies in the canonical order; unknown names after them, sorted."""
  names = list(names)
  known = [m for m in canonical if m in names]
  return known + sorted(n for n in names if n not in canonical)


def list_stems(folder, suffixes: Sequence[str]) -> dict[str, pathlib.Path]:
  """{stem: path} of the files directly in folder with one of the suffixes."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    return {}
  return {p.stem: p for p in sorted(folder.iterdir())
          if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")}


def weights_mode() -> str:
  """Extractor weights for builds from video: AAN_JAX_EXTRACT_WEIGHTS (tests: "random")."""
  mode = os.environ.get("AAN_JAX_EXTRACT_WEIGHTS", "pretrained")
  if mode not in ("pretrained", "random"):
    raise ValueError(f"AAN_JAX_EXTRACT_WEIGHTS={mode!r}; expected 'pretrained' or 'random'")
  return mode


# ---- feature sources and per-movie example generation (also run by Beam workers) ----

def load_or_extract(source, segmentation: str, features: Sequence[str] = FEATURES,
                    cache_dir=None) -> dict:
  """Features of one video: read from an extractor `.npz`, or extracted from the video.

  Extraction runs `python -m extract` in a child process: torch (via triton) crashes when
  loaded into a process that already holds TensorFlow, as `tfds build` does. Its output
  stays in cache_dir/<segmentation>/<stem>.npz, which the extractor reuses when the
  video's sha256 and the options match, so other configs and re-builds do not extract again.
  """
  path = pathlib.Path(source)
  if path.suffix.lower() == ".npz":
    return read_features_npz(path, features)
  weights = weights_mode()
  if cache_dir is None:
    cache_dir = tempfile.mkdtemp(prefix="aan_jax_features_")
  out = pathlib.Path(cache_dir) / re.sub(r"\W+", "_", segmentation)
  cmd = [sys.executable, "-m", "extract", str(path), "--out", str(out),
         "--segmentation", segmentation, "--features", ",".join(features),
         "--weights", weights, "--no-progress"]
  log.info("extracting %s: %s", path, " ".join(cmd))
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  target = out / f"{path.stem}.npz"
  if proc.returncode != 0 or not target.is_file():
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    raise CorpusFileError(
        f"{path}: feature extraction failed (exit {proc.returncode}): {' | '.join(tail)}. "
        f"Run `{' '.join(cmd)}` to see the full error; the extractor needs "
        f"`pip install 'aan-jax[extract]'`.")
  feats = read_features_npz(target, features)
  meta = feats.get("metadata") or {}
  got = {f: (meta.get("weights", {}).get(f) or {}).get("mode") for f in features}
  # openSMILE has no weights ("none"); every learned extractor must match the request.
  if any(m in ("pretrained", "random") and m != weights for m in got.values()):
    raise CorpusFileError(f"{target}: extracted with weights {got}, expected {weights}; "
                          f"delete it and build again")
  return feats


def cognimuse_movie_examples(task: dict) -> Iterator[tuple[int, dict]]:
  """All 5-s segment examples of one movie; extraction runs once per video.

  task: movie, source (.npz or video), annotations (list of trace files), features.
  """
  feats = load_or_extract(task["source"], "fixed:5", task["features"], task.get("cache_dir"))
  traces = [read_trace(p) for p in task["annotations"]]
  trace = mean_trace(traces)
  arousal, valence, keep = label_segments(trace, feats, task["source"])
  if not keep.any():
    raise CorpusFileError(
        f"{task['source']}: no 5-s segment is covered by the annotation {trace.source}.")
  yield from iter_segment_examples(task["movie"], feats, arousal, valence, keep,
                                   task["features"])


def excerpt_examples(task: dict) -> Iterator[tuple[int, dict]]:
  """One example per LIRIS-ACCEDE excerpt: features (dim,) or (parts, dim), its labels."""
  feats = load_or_extract(task["source"], task["segmentation"], task["features"],
                          task.get("cache_dir"))
  parts = task["parts"]
  n = len(feats["start_s"])
  if n != parts:
    raise CorpusFileError(
        f"{task['source']}: has {n} segments; this config expects {parts} "
        f"(extract it with --segmentation {task['segmentation']}).")
  ex = {f: (feats[f][0] if parts == 1 else feats[f]) for f in task["features"]}
  ex.update(valence=float(task["valence"]), arousal=float(task["arousal"]),
            excerpt=task["name"])
  yield task["key"], ex


def window_examples(task: dict) -> Iterator[tuple[int, dict]]:
  """10-s windows every 5 s of one long movie (MediaEval 2017/2018) with their labels."""
  feats = load_or_extract(task["source"], "sliding:10:5", task["features"],
                          task.get("cache_dir"))
  start = feats["start_s"].astype(np.float64)
  end = feats["end_s"].astype(np.float64)
  if task["kind"] == "mediaeval2017":
    va = read_mediaeval_windows(task["valence_arousal"])
    by_start = {round(float(s), 1): i for i, s in enumerate(va["start_s"])}
    fear = read_mediaeval_fear(task["fear"]) if task.get("fear") else None
    fear_by_start = ({round(float(s), 1): int(v) for s, v in zip(fear["start_s"], fear["fear"])}
                     if fear is not None else {})
    rows = [by_start.get(round(float(s), 1)) for s in start]
    missing = sum(r is None for r in rows)
    if missing:
      log.warning("%s: %d of %d windows have no annotation row (by start time) and are "
                  "skipped", task["source"], missing, len(rows))
    arousal = np.array([va["arousal"][r] if r is not None else np.nan for r in rows])
    valence = np.array([va["valence"][r] if r is not None else np.nan for r in rows])
    keep = np.array([r is not None for r in rows])
    fear_lab = np.array([fear_by_start.get(round(float(s), 1), -1) for s in start])
  else:
    trace = read_mediaeval18_seconds(task["valence_arousal"])
    secs = trace.time_s
    keep = end <= secs[-1] + 1 + 1e-6
    arousal = np.array([trace.arousal[(secs >= s) & (secs < e)].mean() if k else np.nan
                        for s, e, k in zip(start, end, keep)])
    valence = np.array([trace.valence[(secs >= s) & (secs < e)].mean() if k else np.nan
                        for s, e, k in zip(start, end, keep)])
    if task.get("fear"):
      iv = read_fear_intervals(task["fear"])
      fear_lab = np.array([int(np.any((iv[:, 0] < e) & (iv[:, 1] > s))) for s, e in zip(start, end)])
    else:
      fear_lab = np.full(len(start), -1)
  keep &= np.isfinite(arousal) & np.isfinite(valence)
  idx = 0
  for i in np.flatnonzero(keep):
    ex = {f: feats[f][i] for f in task["features"]}
    ex.update(arousal=float(arousal[i]), valence=float(valence[i]), fear=int(fear_lab[i]),
              movie=task["movie"], segment_index=idx, start_s=float(start[i]),
              end_s=float(end[i]))
    yield idx, ex
    idx += 1


def index_files(root, suffixes: Sequence[str]) -> dict[str, pathlib.Path]:
  """{stem: path} of every file under root with one of the suffixes (first found wins)."""
  out: dict[str, pathlib.Path] = {}
  for p in _walk_files(pathlib.Path(root)):
    if p.suffix.lower() in suffixes:
      out.setdefault(p.stem, p)
  return out
