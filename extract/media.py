"""Decoding a media file once into the frames and audio every extractor needs (PyAV)."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import os
import queue
import re
import threading
from typing import Callable, Iterator, Sequence

import av
from av.video.reformatter import VideoReformatter
import numpy as np

AUDIO_RATE = 16000  # VGGish wants 16 kHz mono; openSMILE's IS10 set is run on the same signal.
CROP = 224
RESIZE_SHORT = 256  # ImageNet/Kinetics evaluation recipe: short side to 256, centre crop 224.
# Frame times are compared with this slack so that a frame at exactly k/25 s is not lost to
# floating point when segment bounds are multiples of 5 s.
_EPS = 1e-6
# Decoding runs in a background thread this many segments ahead of the models, and frames are
# resized by a small pool of threads (swscale runs without the GIL), so that decoding, resizing
# and the models overlap instead of taking turns.
SEGMENTS_AHEAD = 2
RESIZE_THREADS = max(1, min(4, os.cpu_count() or 1))
# Frames handed to the pool and not yet resized; bounds the full-size frames held in memory
# when decoding runs faster than resizing.
_RESIZE_BACKLOG = 4 * RESIZE_THREADS
_local = threading.local()


# FFmpeg's names of the containers whose declared duration and frame count are read from an
# index or header, not estimated.
_INDEXED_FORMATS = {"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", "flv", "asf", "ogg",
                    "wav", "nut"}


class MediaError(ValueError):
  """A file that cannot be decoded or segmented; the message names the file and the reason."""


@dataclasses.dataclass(frozen=True)
class Segmentation:
  """A parsed segmentation string (see `parse_segmentation`)."""
  spec: str
  kind: str  # "fixed", "sliding", "excerpt" or "subsegments"
  length_s: float = 0.0
  hop_s: float = 0.0
  num_parts: int = 1
  frames_per_part: int = 0  # 0: every frame of the span at the file's rate


def parse_segmentation(spec: str) -> Segmentation:
  """Parses "fixed:5", "sliding:10:5", "excerpt:64" or "subsegments:4x16"."""
  s = spec.strip()
  num = r"(\d+(?:\.\d+)?)"
  if m := re.fullmatch(rf"fixed:{num}", s):
    length = float(m[1])
    if length > 0:
      return Segmentation(s, "fixed", length_s=length, hop_s=length)
  elif m := re.fullmatch(rf"sliding:{num}:{num}", s):
    length, hop = float(m[1]), float(m[2])
    if length > 0 and hop > 0:
      return Segmentation(s, "sliding", length_s=length, hop_s=hop)
  elif m := re.fullmatch(r"excerpt:(\d+)", s):
    if int(m[1]) > 0:
      return Segmentation(s, "excerpt", frames_per_part=int(m[1]))
  elif m := re.fullmatch(r"subsegments:(\d+)x(\d+)", s):
    if int(m[1]) > 0 and int(m[2]) > 0:
      return Segmentation(s, "subsegments", num_parts=int(m[1]), frames_per_part=int(m[2]))
  raise ValueError(
      f"bad segmentation {spec!r}; expected fixed:SECONDS, sliding:WINDOW:HOP, "
      "excerpt:FRAMES or subsegments:PARTSxFRAMES (e.g. fixed:5, sliding:10:5, excerpt:64, "
      "subsegments:4x16)")


@dataclasses.dataclass
class SegmentPlan:
  """Segment bounds in seconds, and what was left out at the end of the file."""
  start_s: np.ndarray
  end_s: np.ndarray
  frames_per_segment: int  # 0: all frames in [start, end)
  dropped_tail_s: float


def plan_segments(seg: Segmentation, duration_s: float, name: str = "input") -> SegmentPlan:
  """Segment bounds for a file of `duration_s` seconds; fails clearly if none fits."""
  if not duration_s > 0:
    raise MediaError(f"{name}: has no duration (no frame or sample decoded)")
  if seg.kind in ("fixed", "sliding"):
    n = int(math.floor((duration_s - seg.length_s) / seg.hop_s + _EPS)) + 1
    if duration_s + _EPS < seg.length_s or n <= 0:
      raise MediaError(
          f"{name}: is {duration_s:.2f} s long, shorter than one {seg.length_s:g} s segment "
          f"of {seg.spec!r}; nothing to extract (use excerpt:N for short clips)")
    start = np.arange(n) * seg.hop_s
    end = start + seg.length_s
    dropped = max(0.0, duration_s - float(end[-1]))
    return SegmentPlan(start, end, 0, dropped if dropped > 1e-3 else 0.0)
  parts = seg.num_parts
  bounds = np.linspace(0.0, duration_s, parts + 1)
  return SegmentPlan(bounds[:-1].copy(), bounds[1:].copy(), seg.frames_per_part, 0.0)


def frame_indices(plan: SegmentPlan, times: np.ndarray) -> list[np.ndarray]:
  """Indices into the (sorted) frame `times` that each segment uses."""
  out = []
  for s, e in zip(plan.start_s, plan.end_s):
    if plan.frames_per_segment:
      n = plan.frames_per_segment
      # N frames spread uniformly: the frame shown at the centre of each of N equal slices.
      targets = s + (np.arange(n) + 0.5) * (e - s) / n
      idx = np.searchsorted(times, targets + _EPS, side="right") - 1
      out.append(np.clip(idx, 0, len(times) - 1))
    else:
      out.append(np.nonzero((times >= s - _EPS) & (times < e - _EPS))[0])
  return out


@dataclasses.dataclass
class MediaInfo:
  """What a cheap demux pass (no decoding) tells about a file."""
  path: str
  has_video: bool
  has_audio: bool
  frame_times: np.ndarray  # presentation times of all video frames, sorted, seconds
  frame_pts: np.ndarray
  width: int = 0
  height: int = 0
  fps: float = 0.0  # average rate (frames / duration); VFR files have no single rate
  video_duration_s: float = 0.0
  audio_duration_s: float = 0.0
  start_s: float = 0.0  # presentation time of the first video frame: t=0 of every segment
  # What the container's header or index declares (0: nothing trustworthy declared), and
  # where the last packet actually found ends, in the file's own clock.
  declared_end_s: float = 0.0
  declared_frames: int = 0
  found_end_s: float = 0.0
  max_frame_interval_s: float = 0.0

  def shortfall(self) -> dict | None:
    """What is missing when the file holds less than its container declares (a cut download).

    Tolerance: 0.5 s, 0.2% of the duration, or one frame interval (a variable-rate file's
    last frame), whichever is largest; frames: 2 or 0.2%.
    """
    missing_s = self.declared_end_s - self.found_end_s if self.declared_end_s else 0.0
    tol_s = max(0.5, 0.002 * self.declared_end_s, self.max_frame_interval_s + 0.05)
    found_frames = int(len(self.frame_times))
    missing_frames = self.declared_frames - found_frames if self.declared_frames else 0
    if missing_s <= tol_s and missing_frames <= max(2, 0.002 * self.declared_frames):
      return None
    return {"declared_end_s": round(self.declared_end_s, 4),
            "found_end_s": round(self.found_end_s, 4),
            "missing_s": round(max(missing_s, 0.0), 4),
            "declared_frames": self.declared_frames or None,
            "found_frames": found_frames if self.has_video else None}

  @property
  def duration_s(self) -> float:
    return self.video_duration_s if self.has_video else self.audio_duration_s

  def as_dict(self) -> dict:
    return {"has_video": self.has_video, "has_audio": self.has_audio, "width": self.width,
            "height": self.height, "num_frames": int(len(self.frame_times)),
            "fps": round(self.fps, 4), "duration_s": round(self.duration_s, 4),
            "variable_frame_rate": bool(_is_vfr(self.frame_times))}


def _is_vfr(times: np.ndarray) -> bool:
  if len(times) < 3:
    return False
  d = np.diff(times)
  return float(d.max() - d.min()) > 0.1 * float(np.median(d))


def _open(path: str):
  try:
    return av.open(str(path))
  except FileNotFoundError:
    raise MediaError(f"{path}: no such file") from None
  except (av.error.FFmpegError, UnicodeDecodeError) as e:
    raise MediaError(f"{path}: not a readable media file ({_reason(e)})") from None


def _reason(e: Exception) -> str:
  return getattr(e, "strerror", None) or str(e) or type(e).__name__


def probe(path: str) -> MediaInfo:
  """Reads packet timestamps of the first video stream (and the audio duration) without decoding."""
  with _open(path) as c:
    vs = c.streams.video[0] if c.streams.video else None
    as_ = c.streams.audio[0] if c.streams.audio else None
    if vs is None and as_ is None:
      raise MediaError(f"{path}: has neither a video nor an audio stream")
    pts, audio_end = [], 0.0
    streams = [s for s in (vs, as_) if s is not None]
    try:
      for packet in c.demux(*streams):
        if packet.pts is None and packet.dts is None:
          continue  # flush packet
        t = packet.pts if packet.pts is not None else packet.dts
        if packet.stream is vs:
          pts.append(t)
        else:
          audio_end = max(audio_end, float((t + (packet.duration or 0)) * packet.time_base))
    except av.error.FFmpegError as e:
      raise MediaError(f"{path}: corrupt or truncated ({_reason(e)})") from None
    info = MediaInfo(str(path), vs is not None, as_ is not None, np.zeros(0), np.zeros(0, np.int64),
                     audio_duration_s=audio_end)
    # A container with an index or header (mp4's moov, Matroska's segment info, AVI's
    # header) declares its length even when the bytes after some point are missing, as
    # in a download cut short. Raw streams only have a duration guessed from the bitrate.
    if c.duration and (c.format.name or "") in _INDEXED_FORMATS:
      info.declared_end_s = float((c.start_time or 0) + c.duration) / 1e6
    if vs is not None and vs.frames and (c.format.name or "") in _INDEXED_FORMATS:
      info.declared_frames = int(vs.frames)
    info.found_end_s = audio_end
    if vs is not None:
      if not pts:
        raise MediaError(f"{path}: its video stream holds no frame (corrupt or truncated)")
      pts = np.unique(np.asarray(pts, np.int64))  # presentation order
      tb = float(vs.time_base)
      times = pts * tb
      d = np.diff(times)
      rate = float(vs.average_rate or vs.guessed_rate or 0) or 25.0
      last = float(np.median(d)) if len(d) else 1.0 / rate
      info.frame_times, info.frame_pts, info.start_s = times - times[0], pts, float(times[0])
      info.width, info.height = vs.codec_context.width, vs.codec_context.height
      info.video_duration_s = float(times[-1] - times[0] + last)
      info.fps = len(times) / info.video_duration_s
      info.found_end_s = max(info.found_end_s, float(times[-1] + last))
      info.max_frame_interval_s = float(d.max()) if len(d) else 0.0
    return info


def _resize_crop(frame: av.VideoFrame, crop: int, short: int) -> np.ndarray:
  """RGB uint8 (crop, crop, 3): short side resized to `short`, then the centre crop."""
  w, h = frame.width, frame.height
  scale = short / min(w, h)
  nw, nh = max(crop, round(w * scale)), max(crop, round(h * scale))
  # swscale does the resize and the pixel-format conversion (grayscale, yuv, rgb) in one C pass.
  # One swscale context per thread, reused: frame.reformat makes a new one (with its own worker
  # threads) for every frame, about 40% of a 720p frame's time on a 2-core machine. One swscale
  # thread per call, since several frames are resized at once. Neither changes the output
  # (tests compare it bitwise with frame.reformat).
  reformatter = getattr(_local, "reformatter", None)
  if reformatter is None:
    reformatter = _local.reformatter = VideoReformatter()
  rgb = reformatter.reformat(frame, width=nw, height=nh, format="rgb24", interpolation="BILINEAR",
                             threads=1).to_ndarray()
  y, x = (nh - crop) // 2, (nw - crop) // 2
  return np.ascontiguousarray(rgb[y:y + crop, x:x + crop])


class Decoder:
  """Decodes a file once: yields each segment's frames when complete; keeps or passes on audio."""

  def __init__(self, path: str, info: MediaInfo, plan: SegmentPlan, *, video: bool, audio: bool,
               crop: int = CROP, resize_short: int = RESIZE_SHORT,
               tolerate_errors: bool = False,
               on_audio: Callable[[np.ndarray], None] | None = None,
               indices: Sequence[np.ndarray] | None = None):
    self.path, self.info, self.plan = str(path), info, plan
    # A file known to be cut short: its last packet is usually partial. An error then
    # ends the decoding (recorded in stopped_early) instead of failing the file.
    self.tolerate_errors = tolerate_errors
    self.stopped_early: str | None = None
    self.want_video, self.want_audio = video and info.has_video, audio and info.has_audio
    self.crop, self.resize_short = crop, resize_short
    self.audio: np.ndarray | None = None  # float32 mono at AUDIO_RATE, t=0 at the first frame
    # With on_audio, the aligned audio is handed to it piece by piece, in the decoding
    # thread, instead of kept in self.audio (a 2-hour track is 460 MB of float32).
    self.on_audio = on_audio
    self.audio_samples = 0  # samples of the aligned track so far
    self._done = False  # the whole file was decoded
    # The frames each segment yields (indices into info.frame_times): by default every frame
    # the plan gives it; a preset that samples frames passes its own (only those are resized).
    if not self.want_video:
      self.indices = []
    elif indices is not None:
      self.indices = [np.asarray(i, np.int64) for i in indices]
    else:
      self.indices = frame_indices(plan, info.frame_times)

  def segments(self) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (segment index, uint8 frames (n, crop, crop, 3)) in segment order.

    A background thread decodes up to SEGMENTS_AHEAD segments ahead; its errors (MediaError)
    are raised here. Closing the generator early stops and joins that thread.
    """
    q: queue.Queue = queue.Queue(maxsize=SEGMENTS_AHEAD)
    stop = threading.Event()
    thread = threading.Thread(target=self._produce, args=(q, stop), daemon=True,
                              name=f"extract-decode {os.path.basename(self.path)}")
    thread.start()
    try:
      while True:
        kind, item = q.get()
        if kind == "segment":
          yield item
        elif kind == "error":
          raise item
        else:
          return
    finally:
      stop.set()
      while thread.is_alive():  # a producer blocked on a full queue sees `stop` within 0.1 s
        thread.join(0.1)
      while not q.empty():  # segments decoded ahead and not used: free them now
        q.get_nowait()

  def _produce(self, q: queue.Queue, stop: threading.Event) -> None:
    """Runs `_decode` in the background thread.

    Sends ("segment", (i, frames)) for each segment, then ("done", None) or ("error", e).
    """
    def put(msg) -> bool:
      while not stop.is_set():
        try:
          q.put(msg, timeout=0.1)
          return True
        except queue.Full:
          pass
      return False

    gen = self._decode(stop)
    try:
      for item in gen:
        if not put(("segment", item)):
          return
    except BaseException as e:  # handed to the consumer, which raises it
      put(("error", e))
      return
    finally:
      gen.close()
    put(("done", None))

  def _decode(self, stop: threading.Event) -> Iterator[tuple[int, np.ndarray]]:
    """The decoding loop behind `segments`: stops early when `stop` is set."""
    pool = concurrent.futures.ThreadPoolExecutor(RESIZE_THREADS, "extract-resize")
    try:
      yield from self._decode_with(pool, stop)
    finally:
      pool.shutdown(wait=True, cancel_futures=True)

  def _decode_with(self, pool, stop: threading.Event) -> Iterator[tuple[int, np.ndarray]]:
    """Decodes the file; the frames that segments use are resized in `pool`."""
    path, info = self.path, self.info
    need: dict[int, int] = {}  # frame index -> how many pending segments still use it
    for idx in self.indices:
      for k in np.unique(idx):
        need[int(k)] = need.get(int(k), 0) + 1
    last_needed = [int(idx.max()) if len(idx) else -1 for idx in self.indices]
    pts_to_index = {int(p): i for i, p in enumerate(info.frame_pts)}
    t0, offset = info.start_s, None
    frames: dict[int, np.ndarray | concurrent.futures.Future] = {}
    backlog: collections.deque = collections.deque()  # resizes submitted, oldest first
    chunks, next_seg, seen = [], 0, -1
    skip = 0  # samples still to drop: audio that starts before the first video frame

    def emit(x: np.ndarray) -> None:
      nonlocal skip
      if skip:
        drop = min(skip, len(x))
        x, skip = x[drop:], skip - drop
      if len(x):
        self.audio_samples += len(x)
        (self.on_audio or chunks.append)(x)

    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    with _open(path) as c:
      vs = c.streams.video[0] if self.want_video else None
      as_ = c.streams.audio[0] if self.want_audio else None
      if vs is not None:
        vs.thread_type = "AUTO"
      streams = [s for s in (vs, as_) if s is not None]
      if not streams:
        return
      try:
        for packet in self._packets(c, streams):
          if stop.is_set():
            return
          decoded = self._decode_packet(packet)
          if decoded is None:
            break
          for frame in decoded:
            if packet.stream is as_:
              if offset is None:  # align the audio with the first video frame
                offset = int(round(((frame.time or 0.0) - t0) * AUDIO_RATE))
                if offset > 0:
                  emit(np.zeros(offset, np.float32))
                skip = max(0, -offset)
              for r in resampler.resample(frame):
                emit(r.to_ndarray().reshape(-1))
              continue
            k = pts_to_index.get(frame.pts, seen + 1) if frame.pts is not None else seen + 1
            seen = max(seen, k)
            if k in need:
              backlog.append(pool.submit(_resize_crop, frame, self.crop, self.resize_short))
              frames[k] = backlog[-1]
              while len(backlog) > _RESIZE_BACKLOG:
                backlog.popleft().result()
            while next_seg < len(self.indices) and last_needed[next_seg] <= seen:
              yield next_seg, self._take(next_seg, frames, need)
              next_seg += 1
        if as_ is not None:
          for r in resampler.resample(None):
            emit(r.to_ndarray().reshape(-1))
        for k, x in frames.items():  # resizing errors are decoding errors
          if isinstance(x, concurrent.futures.Future):
            frames[k] = x.result()
      except av.error.FFmpegError as e:
        raise MediaError(f"{path}: corrupt or truncated, decoding failed near frame {seen + 1} "
                         f"({_reason(e)})") from None
    if next_seg < len(self.indices):
      missing = [k for k in self.indices[next_seg] if int(k) not in frames]
      if missing:
        raise MediaError(
            f"{path}: corrupt or truncated, frame {missing[0]} of {len(info.frame_times)} "
            f"(t={info.frame_times[missing[0]]:.2f} s) could not be decoded")
      while next_seg < len(self.indices):  # frames whose pts did not map (e.g. no pts at all)
        yield next_seg, self._take(next_seg, frames, need)
        next_seg += 1
    if as_ is not None and self.on_audio is None:
      self.audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    self._done = True

  def _decode_packet(self, packet) -> list | None:
    """The packet's frames; with tolerate_errors, None at a decode error (the end, then)."""
    try:
      return packet.decode()
    except av.error.FFmpegError as e:
      if not self.tolerate_errors:
        raise
      self.stopped_early = _reason(e)
      return None

  def _packets(self, c, streams) -> Iterator:
    """Demuxes; with tolerate_errors, a read or decode error ends the stream instead."""
    demux = c.demux(*streams)
    while True:
      try:
        packet = next(demux)
      except StopIteration:
        return
      except av.error.FFmpegError as e:
        if not self.tolerate_errors:
          raise
        self.stopped_early = _reason(e)
        return
      yield packet

  def _take(self, i: int, frames: dict, need: dict) -> np.ndarray:
    idx = self.indices[i]
    if not len(idx):
      return np.zeros((0, self.crop, self.crop, 3), np.uint8)
    for k in np.unique(idx):
      if isinstance(frames[int(k)], concurrent.futures.Future):
        frames[int(k)] = frames[int(k)].result()
    out = np.stack([frames[int(k)] for k in idx])
    for k in np.unique(idx):
      need[int(k)] -= 1
      if need[int(k)] == 0:
        frames.pop(int(k), None)  # no later segment uses it: free the memory
    return out

  def decode_audio(self) -> np.ndarray | None:
    """Decodes the audio alone (when no video feature is asked for); None with on_audio."""
    if not self._done:
      for _ in self.segments():
        pass
    return self.audio


class AudioSlicer:
  """`segment_audio` on a track that arrives in pieces: each segment's slice once complete.

  Keeps only the samples from the earliest segment not yet complete, so memory holds about
  one segment's audio, not the track's.
  """

  def __init__(self, start_s: Sequence[float], end_s: Sequence[float]):
    self.bounds = [(int(round(s * AUDIO_RATE)), int(round(e * AUDIO_RATE)))
                   for s, e in zip(start_s, end_s)]
    # first_needed[i]: the earliest sample that segment i or a later one starts at.
    starts = np.array([a for a, _ in self.bounds] + [np.iinfo(np.int64).max], np.int64)
    self.first_needed = np.minimum.accumulate(starts[::-1])[::-1]
    self.next = 0  # the first segment not yet handed out
    self.base = 0  # track index of self.chunks' first sample
    self.total = 0  # samples received
    self.chunks: list[np.ndarray] = []

  def push(self, x: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Adds samples; returns the (index, audio) of the segments completed by them."""
    self.chunks.append(np.asarray(x, np.float32))
    self.total += len(x)
    return self._ready(final=False)

  def finish(self) -> list[tuple[int, np.ndarray]]:
    """The remaining segments, cut short (or empty) where the track ends before them."""
    return self._ready(final=True)

  def _ready(self, final: bool) -> list[tuple[int, np.ndarray]]:
    out = []
    while self.next < len(self.bounds) and (final or self.bounds[self.next][1] <= self.total):
      if len(self.chunks) > 1:
        self.chunks = [np.concatenate(self.chunks)]
      buf = self.chunks[0] if self.chunks else np.zeros(0, np.float32)
      a, b = self.bounds[self.next]
      out.append((self.next, buf[max(a - self.base, 0):max(b - self.base, 0)].copy()))
      self.next += 1
    # Drop what no remaining segment starts after (all of it once none remains).
    keep = min(int(self.first_needed[self.next]), self.total)
    if keep > self.base and self.chunks:
      if len(self.chunks) > 1:
        self.chunks = [np.concatenate(self.chunks)]
      self.chunks = [self.chunks[0][keep - self.base:]]
      self.base = keep
    return out


def segment_audio(audio: np.ndarray, start_s: Sequence[float], end_s: Sequence[float]
                  ) -> list[np.ndarray]:
  """Slices 16 kHz audio into segments; past the end of the track the slice is shorter or empty."""
  return [audio[int(round(s * AUDIO_RATE)):int(round(e * AUDIO_RATE))]
          for s, e in zip(start_s, end_s)]
