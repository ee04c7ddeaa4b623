"""Extraction presets: `full` (the paper's protocol, every frame) and `fast` (frames sampled).

`full` runs ResNet-50 on every frame of a segment, FlowNetS on every consecutive pair and I3D
on one clip of all the segment's frames. `fast` gives each video model a few frames spread
evenly over the segment (the frame shown at the centre of each of k equal slices, as
`excerpt:N` samples an excerpt): the segment mean of ResNet-50 from `resnet50_frames`
frames, FlowNetS on `flownet_pairs` consecutive pairs, and I3D on one clip of `i3d_frames`
frames taken at an even stride across the segment. Only the frames some model uses are
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
  i3d_frames: int = 0

  @property
  def samples(self) -> bool:
    return bool(self.resnet50_frames or self.flownet_pairs or self.i3d_frames)

  def settings(self) -> dict:
    """What the metadata records (and an output's options must match)."""
    every = "all"
    return {"name": self.name,
            "resnet50_frames_per_segment": self.resnet50_frames or every,
            "flownet_pairs_per_segment": self.flownet_pairs or every,
            "i3d_frames_per_segment": self.i3d_frames or every,
            "audio": "unchanged (every 0.96-s VGGish example, every openSMILE window)"}


FULL = Preset("full")
# Chosen with benchmarks/bench_fast.py on a 72-s 720p film (docs/extraction.md, Fast extraction).
FAST = Preset("fast", resnet50_frames=2, flownet_pairs=2, i3d_frames=16)
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
  i3d: np.ndarray


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
  i = idx[spread(n, preset.i3d_frames)]
  frames = np.unique(np.concatenate([r, f1, f2, i]))
  pos = lambda x: np.searchsorted(frames, x)
  return Selection(frames, pos(r), pos(f1), pos(f2), pos(i))
