"""Extraction presets: `full` (the paper's protocol, every frame) and `fast` (frames sampled).

`full` runs ResNet-50 on every frame of a segment, FlowNetS on every consecutive pair and I3D
on one clip of all the segment's frames. `fast` gives ResNet-50 and FlowNetS a few frames
spread evenly over the segment (at the centre of each of k equal slices, as `excerpt:N`
samples an excerpt): the segment mean of ResNet-50 from `resnet50_frames` frames and of
FlowNetS from `flownet_pairs` consecutive pairs; I3D keeps every frame. A preset may give
I3D `i3d_clips` clips of `i3d_frames` frames `i3d_stride` apart (their vectors averaged), but
no such choice kept I3D's features: on a 72-s 720p film of real footage, clips of 8 to 32
frames (spread over the segment or consecutive) gave R^2 between -3.4 and -0.86 against the
full features across segments (the pooled Mixed_5c of a short clip is dominated by its
temporal padding), so `fast` leaves I3D alone (docs/extraction.md, Fast extraction). Only the frames some model uses are
converted and resized; the audio features are the same in both presets (they cost little).
Segments, their times and the features' dims are the same in both. The price in fidelity is
measured by benchmarks/bench_fast.py and published in docs/extraction.md.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PRESET_NAMES = ("full", "fast")


@dataclasses.dataclass(frozen=True)
class Preset:
  """Frames each video model sees per segment (0: all of the segment's frames)."""
  name: str
  resnet50_frames: int = 0
  flownet_pairs: int = 0
  i3d_frames: int = 0  # frames per I3D clip
  i3d_clips: int = 1  # I3D clips per segment (their vectors averaged)
  i3d_stride: int = 1  # frames between a clip's frames (0: spread over the clip's slice)

  @property
  def samples(self) -> bool:
    return bool(self.resnet50_frames or self.flownet_pairs or self.i3d_frames)

  def settings(self) -> dict:
    """What the metadata records (and an output's options must match)."""
    every = "all"
    return {"name": self.name,
            "resnet50_frames_per_segment": self.resnet50_frames or every,
            "flownet_pairs_per_segment": self.flownet_pairs or every,
            "i3d_clips_per_segment": self.i3d_clips if self.i3d_frames else 1,
            "i3d_frames_per_clip": self.i3d_frames or every,
            "i3d_frame_stride": (self.i3d_stride or "spread over the slice")
                                if self.i3d_frames else 1,
            "i3d_sampling": ("each clip centred in one of equal slices of the segment"
                             if self.i3d_frames else "one clip of every frame"),
            "audio": "unchanged (every 0.96-s VGGish example, every openSMILE window)"}


FULL = Preset("full")
# Chosen with benchmarks/bench_fast.py on a 72-s 720p film (docs/extraction.md, Fast extraction).
FAST = Preset("fast", resnet50_frames=2, flownet_pairs=2)
PRESETS = {"full": FULL, "fast": FAST}


def get(name: "str | Preset") -> Preset:
  if isinstance(name, Preset):
    return name
  if name not in PRESETS:
    raise ValueError(f"preset {name!r}; expected one of {', '.join(PRESET_NAMES)}")
  return PRESETS[name]


def spread(n: int, k: int) -> np.ndarray:
  """Positions of k of n items, the one at the centre of each of k equal slices (all if k >= n
  or k == 0)."""
  if k <= 0 or k >= n:
    return np.arange(n)
  return np.minimum(((np.arange(k) + 0.5) * n / k).astype(np.int64), n - 1)


@dataclasses.dataclass
class Selection:
  """One segment's frames as decoded (`frames`: indices into the file's frames, sorted,
  unique) and, per model, positions into them."""
  frames: np.ndarray
  resnet50: np.ndarray
  flow_first: np.ndarray
  flow_second: np.ndarray
  i3d: list  # one array of positions per I3D clip


def select(segment_frames: np.ndarray, preset: Preset) -> Selection:
  """Which of a segment's frames (file frame indices, in time order) each model uses."""
  idx = np.asarray(segment_frames, np.int64)
  n = len(idx)
  r = idx[spread(n, preset.resnet50_frames)]
  if n >= 2:
    first = spread(n - 1, preset.flownet_pairs)
    f1, f2 = idx[first], idx[first + 1]
  else:  # one frame: paired with itself, as the full path does
    f1 = f2 = idx[:1]
  clips = [idx[c] for c in clip_positions(n, preset.i3d_frames, preset.i3d_clips,
                                          preset.i3d_stride)]
  frames = np.unique(np.concatenate([r, f1, f2, *clips]))
  pos = lambda x: np.searchsorted(frames, x)
  return Selection(frames, pos(r), pos(f1), pos(f2), [pos(c) for c in clips])


def clip_positions(n: int, frames: int, clips: int, stride: int = 1) -> list[np.ndarray]:
  """`clips` clips of `frames` positions of n, `stride` apart (0: spread over the slice),
  each centred in one of `clips` equal slices (one clip of all n when they would cover it, or
  frames == 0)."""
  if frames <= 0 or frames * clips >= n:
    return [np.arange(n)]
  if stride > 1:  # a stride too long for the slice shrinks to fit
    stride = max(1, min(stride, (n // clips - 1) // max(frames - 1, 1)))
  out = []
  for c in range(clips):
    lo, hi = c * n / clips, (c + 1) * n / clips
    if stride == 0:
      sub = spread(int(round(hi - lo)), frames) + int(round(lo))
      out.append(np.minimum(sub, n - 1))
      continue
    span = (frames - 1) * stride + 1
    start = int(round((lo + hi) / 2 - span / 2))
    start = min(max(start, 0), n - span)
    out.append(np.arange(start, start + span, stride))
  return out
