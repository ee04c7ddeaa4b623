"""The feature file (`.npz` from `python -m extract`, or written by hand): its one reader,
validator and writer.

Both the extractor (`extract.load_npz`, resume checks) and the dataset builders (reading
features given instead of videos) read feature files through `read`, so the format has one
set of rules: a zip of plain arrays (never pickles), its declared size capped before
anything is inflated, `start_s`/`end_s` of finite, increasing spans, float32 (segments, dim)
arrays of known features, and an optional `metadata` JSON string whose fields, where
present, have the types of `schemas/featfile-metadata.schema.json` (checked here field by
field, without the jsonschema package). NaN is allowed only in the features the metadata
lists as `nan_features` (audio of a file without an audio stream), and nowhere when the
caller needs finite values (training data). `write` makes a valid file from arrays (a user's
own features); `segmentation_of` says which segmentation a file's segments follow (declared,
or inferred from `start_s`/`end_s`).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from typing import Any, Mapping, Sequence

import numpy as np

from aan_jax.data.features import FEATURE_DIMS, FEATURES
from aan_jax.util import atomic

MAX_BYTES = 4 << 30  # feature files are far smaller; a larger declaration is a zip bomb
SEGMENTATION_RE = re.compile(r"^(fixed:\d+(\.\d+)?|sliding:\d+(\.\d+)?:\d+(\.\d+)?|"
                             r"excerpt:\d+|subsegments:\d+x\d+)$")
_ARRAYS = ("start_s", "end_s", "metadata")
# Extraction presets (extract/presets.py): what a file's metadata "preset" may name.
PRESETS = ("full", "fast")


class FeatureFileError(ValueError):
  """A feature file that cannot be used; the message names the file and the fix."""


def _fix(features) -> str:
  return (f"Re-extract it: `python -m extract VIDEO --out DIR --features "
          f"{','.join(features or FEATURES)}`, or write it with aan_jax.data.featfile.write.")


def _kind(v: Any) -> str:
  return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
          type(None): "null", int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
  return (isinstance(v, (int, float)) and not isinstance(v, bool)
          and bool(np.isfinite(float(v))))


def feature_names_problem(v, nonempty: bool = False) -> str | None:
  """What is wrong with `v` as a list of distinct feature names (None: nothing); also what
  an exported model's `modalities` must be (aan_jax.export.checks, nonempty)."""
  what = "a non-empty list" if nonempty else "a list"
  if not isinstance(v, list) or not all(isinstance(f, str) for f in v) or (nonempty and not v):
    return f"{what} of feature names, got {_kind(v)}"
  unknown = [f for f in v if f not in FEATURE_DIMS]
  if unknown:
    return f"{what} of feature names (some of {list(FEATURE_DIMS)}), got {unknown[0][:40]!r}"
  if len(set(v)) != len(v):
    return f"{what} of distinct feature names, got a repeated one"
  return None



def _source(v) -> str | None:
  if not isinstance(v, dict):
    return f"an object {{\"name\": str, \"sha256\": str, \"size_bytes\": int}}, got {_kind(v)}"
  if "name" in v and not isinstance(v["name"], str):
    return f"an object whose 'name' is a string, got {_kind(v['name'])}"
  if "sha256" in v and not (isinstance(v["sha256"], str)
                            and re.fullmatch(r"[0-9a-f]{64}", v["sha256"])):
    return "an object whose 'sha256' is 64 lowercase hex digits"
  if "size_bytes" in v and not (_is_int(v["size_bytes"]) and v["size_bytes"] >= 0):
    return "an object whose 'size_bytes' is a non-negative integer"
  return None


def _weights(v) -> str | None:
  if not isinstance(v, dict):
    return f"an object {{feature: {{\"mode\": ...}}}}, got {_kind(v)}"
  for f, w in v.items():
    if f not in FEATURE_DIMS:
      return f"an object keyed by feature names, got {f!r}"
    if not isinstance(w, (dict, str)):
      return f"an object whose {f!r} is an object or a string, got {_kind(w)}"
  return None


def _dims(v) -> str | None:
  if not isinstance(v, dict):
    return f"an object {{feature: dim}}, got {_kind(v)}"
  for f, d in v.items():
    if f not in FEATURE_DIMS or d != FEATURE_DIMS[f] or not _is_int(d):
      return f"an object {{feature: its dim}}, got {f!r}: {d!r}"
  return None


def _typed(pred, what):
  return lambda v: None if pred(v) else f"{what}, got {_kind(v)}"


# Each field a metadata may hold: a check returning None or what the field should be.
# Kept in step with schemas/featfile-metadata.schema.json (tests/test_featfile.py checks both).
FIELDS = {
    "format_version": _typed(lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "source": _source,
    "media": _typed(lambda v: isinstance(v, dict), "an object"),
    "segmentation": lambda v: (None if isinstance(v, str) and SEGMENTATION_RE.match(v) else
                               f"fixed:SECONDS, sliding:WINDOW:HOP, excerpt:FRAMES or "
                               f"subsegments:PARTSxFRAMES, got {str(v)[:40]!r}"),
    "num_segments": _typed(lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "frames_per_segment": _typed(lambda v: _is_int(v) or isinstance(v, str),
                                 "an integer or a string"),
    "dropped_tail_s": _typed(lambda v: _is_num(v) and v >= 0, "a non-negative number"),
    "features": feature_names_problem,
    "dims": _dims,
    "weights": _weights,
    "nan_features": feature_names_problem,
    "truncated": _typed(lambda v: v is None or isinstance(v, dict), "null or an object"),
    "options": _typed(lambda v: isinstance(v, dict), "an object"),
    "preprocessing": _typed(lambda v: isinstance(v, dict), "an object"),
    "device": _typed(lambda v: v is None or isinstance(v, str), "null or a string"),
    "versions": _typed(lambda v: isinstance(v, dict), "an object"),
    "faces": _typed(lambda v: isinstance(v, dict), "an object"),
    "preset": _typed(lambda v: isinstance(v, dict) and v.get("name") in PRESETS,
                     "an object whose name is full or fast"),
}


def preset_of(meta: Mapping) -> str:
  """The extraction preset a file's metadata records ("full" when it records none: files made
  before presets existed, and hand-made ones)."""
  p = meta.get("preset") if isinstance(meta, Mapping) else None
  return p["name"] if isinstance(p, dict) and p.get("name") in PRESETS else "full"


def check_metadata(meta: Any, where: str = "metadata", *, error=FeatureFileError) -> dict:
  """The metadata if every field present has its type (unknown fields are kept as notes);
  else `error` naming `where` and the field."""
  if not isinstance(meta, dict):
    raise error(f"{where}: metadata must be a JSON object, got {_kind(meta)}")
  for k, check in FIELDS.items():
    if k in meta:
      why = check(meta[k])
      if why:
        raise error(f"{where}: metadata field {k!r} must be {why}")
  return meta


def infer_segmentation(start_s, end_s) -> str | None:
  """fixed:L or sliding:L:H when the spans are of one length L every H seconds; else None."""
  start, end = np.asarray(start_s, np.float64), np.asarray(end_s, np.float64)
  if not len(start):
    return None
  length = end - start
  L = float(length[0])
  if not np.allclose(length, L, rtol=1e-6, atol=1e-6):
    return None
  hops = np.diff(start)
  H = float(hops[0]) if len(hops) else L
  if len(hops) and not np.allclose(hops, H, rtol=1e-6, atol=1e-6):
    return None
  fmt = lambda x: f"{round(x, 6):g}"
  if not (SEGMENTATION_RE.match(f"fixed:{fmt(L)}") and L > 0 and H > 0):
    return None
  return f"fixed:{fmt(L)}" if abs(H - L) <= 1e-6 else f"sliding:{fmt(L)}:{fmt(H)}"


def segmentation_of(data: Mapping, where: str = "feature file") -> str | None:
  """The segmentation a feature file declares, else the one its spans follow (None if none)."""
  meta = json.loads(data["metadata"]) if isinstance(data.get("metadata"), str) else {}
  return meta.get("segmentation") or infer_segmentation(data["start_s"], data["end_s"])


def _check(path: str, data: dict, meta: dict, features, finite: bool, error) -> None:
  fix = _fix(features)
  check_metadata(meta, path, error=error)
  for k in ("start_s", "end_s"):
    if k not in data or data[k].ndim != 1 or data[k].dtype.kind not in "fiu":
      raise error(f"{path}: array {k!r} is missing or not (num_segments,) numbers. {fix}")
  n = len(data["start_s"])
  if len(data["end_s"]) != n:
    raise error(f"{path}: start_s has {n} entries but end_s {len(data['end_s'])}. {fix}")
  if n and not (np.all(np.isfinite(data["start_s"])) and np.all(np.isfinite(data["end_s"]))
                and np.all(data["end_s"] > data["start_s"])):
    raise error(f"{path}: segment times are not finite, increasing spans. {fix}")
  if "num_segments" in meta and meta["num_segments"] != n:
    raise error(f"{path}: metadata field 'num_segments' is {meta['num_segments']} but "
                f"start_s has {n} entries")
  feats = [k for k in data if k not in _ARRAYS]
  if not feats:
    raise error(f"{path}: holds no feature array (some of {list(FEATURE_DIMS)}). {fix}")
  missing = [f for f in (features or ()) if f not in data]
  if missing:
    raise error(f"{path}: feature {missing[0]!r} is missing (has {sorted(feats)}). {fix}")
  nan_ok = set() if finite else set(meta.get("nan_features", []))
  for f in feats:
    if f not in FEATURE_DIMS:
      raise error(f"{path}: unknown feature array {str(f)[:40]!r}; expected some of "
                  f"{list(FEATURE_DIMS)}")
    a = data[f]
    if a.dtype != np.float32 or a.shape != (n, FEATURE_DIMS[f]):
      raise error(f"{path}: feature {f!r} is {a.dtype} {a.shape}; expected float32 "
                  f"({n}, {FEATURE_DIMS[f]}). {fix}")
    if f not in nan_ok:
      bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
      if bad.size:
        raise error(f"{path}: feature {f!r} is NaN or infinite in segment {int(bad[0])} "
                    f"({bad.size} segments in all), and the metadata's 'nan_features' does "
                    f"not declare it missing. {fix}")


def read(path, features: Sequence[str] | None = None, *, finite: bool = False,
         error=FeatureFileError) -> dict:
  """Reads and validates one feature file; returns its arrays, `metadata` as a JSON str
  ("{}" when the file has none).

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
  if meta_arr is None:
    meta_text = "{}"  # a hand-written file: arrays only
  elif meta_arr.shape != () or meta_arr.dtype.kind != "U":
    raise error(f"{path}: array 'metadata' must be one JSON string (np.array(json.dumps(...)))"
                f", got {meta_arr.dtype} {meta_arr.shape}")
  else:
    meta_text = str(meta_arr)

  def no_constant(name):
    raise ValueError(f"holds {name}, which is not JSON")
  try:
    meta = json.loads(meta_text, parse_constant=no_constant)
  except (ValueError, RecursionError) as e:
    raise error(f"{path}: metadata is not valid JSON ({e}). {fix}") from None
  _check(path, data, meta, features, finite, error)
  data["metadata"] = meta_text
  return data


def write(path, features: Mapping[str, Any], start_s, end_s, **metadata) -> str:
  """Writes a valid feature file from arrays, atomically; returns its path.

  features: name -> (segments, dim) arrays (any of resnet50, flownet, i3d, vggish,
  emobase2010, faces; cast to float32). start_s, end_s: (segments,) seconds. metadata:
  optional fields (schemas/featfile-metadata.schema.json), e.g. segmentation="fixed:5",
  nan_features=["vggish"] (segments declared missing may then be NaN), source={"name":
  "film.mp4"}; `features`, `dims` and `num_segments` are filled in. Raises FeatureFileError
  naming the field when something is not valid; nothing is written then.
  """
  path = os.fspath(path)
  arrays = {}
  for f, a in features.items():
    try:
      arrays[str(f)] = np.asarray(a, np.float32)
    except (TypeError, ValueError) as e:
      raise FeatureFileError(f"{path}: feature {f!r} is not an array of numbers ({e})") from None
  try:
    arrays["start_s"] = np.asarray(start_s, np.float64)
    arrays["end_s"] = np.asarray(end_s, np.float64)
  except (TypeError, ValueError) as e:
    raise FeatureFileError(f"{path}: start_s / end_s are not arrays of numbers ({e})") from None
  meta = {"features": [f for f in FEATURE_DIMS if f in arrays],
          "dims": {f: FEATURE_DIMS[f] for f in FEATURE_DIMS if f in arrays},
          "num_segments": int(arrays["start_s"].shape[0]) if arrays["start_s"].ndim else 0,
          **metadata}
  try:
    text = json.dumps(meta, sort_keys=True, allow_nan=False)
  except (TypeError, ValueError) as e:
    raise FeatureFileError(f"{path}: metadata is not JSON ({e})") from None
  _check(path, arrays, meta, None, False, FeatureFileError)
  buf = io.BytesIO()
  np.savez(buf, **arrays, metadata=np.array(text))
  atomic.write_file(path, buf.getvalue())
  return path
