"""The feature file (`.npz` from `python -m extract`): its one reader and validator.

Both the extractor (`extract.load_npz`, resume checks) and the dataset builders (reading
features given instead of videos) read feature files through `read`, so the format has one
set of rules: a zip of plain arrays (never pickles), its declared size capped before
anything is inflated, a `metadata` JSON string, `start_s`/`end_s` of finite, increasing
spans, and float32 (segments, dim) arrays of known features. NaN is allowed only in the
features the metadata lists as `nan_features` (audio of a file without an audio stream),
and nowhere when the caller needs finite values (training data).
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Sequence

import numpy as np

from aan_jax.data.features import FEATURE_DIMS, FEATURES

MAX_BYTES = 4 << 30  # feature files are far smaller; a larger declaration is a zip bomb


class FeatureFileError(ValueError):
  """A feature file that cannot be used; the message names the file and the fix."""


def _fix(features) -> str:
  return (f"Re-extract it: `python -m extract VIDEO --out DIR --features "
          f"{','.join(features or FEATURES)}`.")


def read(path, features: Sequence[str] | None = None, *, finite: bool = False,
         error=FeatureFileError) -> dict:
  """Reads and validates one feature file; returns its arrays, `metadata` as a JSON str.

  features: those that must be present (default: whatever it holds). finite: refuse NaN
  or inf in every feature (else allowed only where the metadata says so). error: the
  exception class raised (a ValueError subclass), so that callers keep their own type.
  """
  path = os.fspath(path)
  fix = _fix(features)
  try:
    with zipfile.ZipFile(path) as zf:  # declared sizes first: nothing is inflated yet
      declared = sum(i.file_size for i in zf.infolist())
    if declared > MAX_BYTES:
      raise error(f"{path}: declares {declared / 2**30:.2f} GiB of arrays; feature files "
                  f"are far smaller (cap {MAX_BYTES / 2**30:.0f} GiB)")
    # A file object, not the path: TFDS's test harness lets np.load read only those.
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
      data = {k: z[k] for k in z.files}
  except FileNotFoundError:
    raise error(f"{path}: no such file") from None
  except IsADirectoryError:
    raise error(f"{path}: is a directory, not an .npz") from None
  except error:
    raise
  except Exception as e:  # zipfile/numpy raise several kinds for a damaged file
    raise error(f"{path}: not a readable .npz of features ({type(e).__name__}: {e}). "
                f"{fix}") from None
  meta_arr = data.get("metadata")
  if meta_arr is None or meta_arr.shape != () or meta_arr.dtype.kind != "U":
    raise error(f"{path}: no 'metadata' string; not written by `python -m extract`. {fix}")
  try:
    meta = json.loads(str(meta_arr))
  except json.JSONDecodeError as e:
    raise error(f"{path}: metadata is not valid JSON ({e}). {fix}") from None
  for k in ("start_s", "end_s"):
    if k not in data or data[k].ndim != 1:
      raise error(f"{path}: array {k!r} is missing or not (num_segments,). {fix}")
  n = len(data["start_s"])
  if len(data["end_s"]) != n:
    raise error(f"{path}: start_s has {n} entries but end_s {len(data['end_s'])}. {fix}")
  if n and not (np.all(np.isfinite(data["start_s"])) and np.all(np.isfinite(data["end_s"]))
                and np.all(data["end_s"] > data["start_s"])):
    raise error(f"{path}: segment times are not finite, increasing spans. {fix}")
  feats = [k for k in data if k not in ("start_s", "end_s", "metadata")]
  if not feats:
    raise error(f"{path}: holds no feature array. {fix}")
  missing = [f for f in (features or ()) if f not in data]
  if missing:
    raise error(f"{path}: feature {missing[0]!r} is missing (has {sorted(feats)}). {fix}")
  nan_ok = set() if finite else set(meta.get("nan_features", []))
  for f in feats:
    if f not in FEATURE_DIMS:
      raise error(f"{path}: unknown feature array {f!r}; expected some of {list(FEATURE_DIMS)}")
    a = data[f]
    if a.dtype != np.float32 or a.shape != (n, FEATURE_DIMS[f]):
      raise error(f"{path}: feature {f!r} is {a.dtype} {a.shape}; expected float32 "
                  f"({n}, {FEATURE_DIMS[f]}). {fix}")
    if f not in nan_ok:
      bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
      if bad.size:
        raise error(f"{path}: feature {f!r} is NaN or infinite in segment {int(bad[0])} "
                    f"({bad.size} segments in all). {fix}")
  data["metadata"] = str(meta_arr)
  return data
