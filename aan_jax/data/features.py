"""The canonical features: names, dimensions and order (DESIGN.md), and `faces`."""

from __future__ import annotations

from typing import Iterable, Sequence

# Order = order of the authors' input projections (linear1..linear5).
PAPER_FEATURE_DIMS: dict[str, int] = {
    "resnet50": 2048,
    "flownet": 1024,
    "i3d": 1024,
    "vggish": 128,
    "emobase2010": 1582,
}
# Every modality a model can take: the paper's five, then what the characters show
# (extract/faces.py: 7 mean expression probabilities, face fraction, largest face share).
FEATURE_DIMS: dict[str, int] = {**PAPER_FEATURE_DIMS, "faces": 9}
# "all" is the paper's five: `faces` is asked for by name.
FEATURES: tuple[str, ...] = tuple(PAPER_FEATURE_DIMS)
VIDEO_FEATURES: tuple[str, ...] = ("resnet50", "flownet", "i3d")
AUDIO_FEATURES: tuple[str, ...] = ("vggish", "emobase2010")


def canonical_modalities(modalities: Iterable[str] | str) -> tuple[str, ...]:
  """Validates a modality subset and returns it in canonical order.

  Accepts a sequence of names, a comma-separated string, or one of the shorthands
  "all", "video", "audio".
  """
  if isinstance(modalities, str):
    shorthand = {"all": FEATURES, "video": VIDEO_FEATURES, "audio": AUDIO_FEATURES}
    if modalities in shorthand:
      return shorthand[modalities]
    modalities = [m.strip() for m in modalities.split(",") if m.strip()]
  names = list(modalities)
  unknown = [m for m in names if m not in FEATURE_DIMS]
  if unknown:
    raise ValueError(
        f"unknown modality {unknown[0]!r}; expected a subset of {list(FEATURE_DIMS)}")
  if not names:
    raise ValueError(f"no modality given; expected a subset of {list(FEATURE_DIMS)}")
  if len(set(names)) != len(names):
    raise ValueError(f"modality listed twice in {names}")
  return tuple(m for m in FEATURE_DIMS if m in names)


def feature_dims(modalities: Sequence[str]) -> tuple[int, ...]:
  return tuple(FEATURE_DIMS[m] for m in modalities)
