"""An exported model folder is untrusted input: `model.json` checked field by field, and
`params.npz` checked from its headers (sizes, dtypes) before any array is read, then against
the shapes the model's settings build.

Every refusal is an `ExportError` (a ValueError) of one line naming the file and the field.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from typing import Any, Mapping

import numpy as np

from aan_jax.data import featfile
from aan_jax.data.featfile import SEGMENTATION_RE
from aan_jax.data.features import FEATURE_DIMS

# Exported models are a few MB (the authors' Feature AAN: about 4 MB); a larger declaration
# is a zip bomb or a hostile header. Checked from the headers, before anything is inflated.
MAX_ARRAY_BYTES = 256 << 20
MAX_TOTAL_BYTES = 512 << 20
TASKS = ("regression", "binary")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


class ExportError(ValueError):
  """A models folder that cannot be read; the message names the file."""


def _kind(v: Any) -> str:
  return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
          type(None): "null", int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


def _int(lo: int, hi: int):
  def check(v):
    if isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi:
      return None
    return f"an integer in [{lo}, {hi}], got {v!r}" if isinstance(v, int) else \
        f"an integer in [{lo}, {hi}], got {_kind(v)}"
  return check


def _rate(v):
  ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1
  return None if ok else f"a number in [0, 1), got {v!r}"[:80]


def _name(v):
  if not isinstance(v, str) or not v or len(v) > 200 or _CONTROL.search(v):
    return f"a non-empty one-line string of at most 200 characters, got {_kind(v)}"
  return None


def _output_range(v):
  """The engine's "lo,hi" string ("" = (-1, 1)), as aan_jax.engine.zoo.output_range reads it."""
  if v in ("", None):
    return None
  bad = f"\"\" or \"low,high\" with finite low < high, got {str(v)[:40]!r}"
  if not isinstance(v, str):
    return bad
  try:
    lo, hi = (float(x) for x in v.split(","))
  except ValueError:
    return bad
  return None if math.isfinite(lo) and math.isfinite(hi) and lo < hi else bad


def _modalities(v):
  return featfile.feature_names_problem(v, nonempty=True)


def _typed(types, what):
  return lambda v: None if isinstance(v, types) and not (
      isinstance(v, bool) and bool not in types) else f"{what}, got {_kind(v)}"


MODEL_FIELDS = {  # model.json of a regression/binary model: field -> check (None: fine)
    "name": _name, "target": _name,
    "task": lambda v: None if v in TASKS else f"one of {list(TASKS)}, got {str(v)[:40]!r}",
    "fold": lambda v: None if (isinstance(v, (str, int)) and not isinstance(v, bool)
                               and len(str(v)) <= 200 and not _CONTROL.search(str(v)))
    else f"a one-line string, got {_kind(v)}",
    "modalities": _modalities,
    "segmentation": lambda v: None if isinstance(v, str) and SEGMENTATION_RE.match(v) else
    f"fixed:SECONDS, sliding:WINDOW:HOP, excerpt:FRAMES or subsegments:PxF, got {str(v)[:40]!r}",
    "normalize": _typed((bool,), "true or false"),
    "encoder_impl": _typed((str,), "a string"),
    "build": _typed((dict,), "an object"),
    "test_error": lambda v: None if v is None or (
        isinstance(v, dict) and isinstance(v.get("rmse"), (int, float))
        and not isinstance(v.get("rmse"), bool) and math.isfinite(v["rmse"]) and v["rmse"] >= 0)
    else "null or an object whose 'rmse' is a finite number >= 0",
}
BUILD_FIELDS = {  # model.json's "build": the settings the engine builds the module from
    "model": _typed((str,), "a model kind"),
    "modalities": lambda v: None if isinstance(v, str) and len(v) < 200 else _modalities(v),
    "d_model": _int(1, 4096), "num_heads": _int(1, 64), "num_layers": _int(1, 64),
    "window": _int(1, 1024), "hidden": _int(1, 16384), "projection": _int(1, 4096),
    "lstm_layers": _int(1, 16),
    "ffn": _typed((str,), "a string"), "norm_first": _typed((bool,), "true or false"),
    "feature_dropout": _rate, "dropout": _rate, "output_range": _output_range,
    "_task": lambda v: None if v in TASKS else f"one of {list(TASKS)}, got {str(v)[:40]!r}",
}
CLASSIFIER_FIELDS = {
    "name": _name,
    "classes": lambda v: None if (isinstance(v, list) and 2 <= len(v) <= 10000
                                  and all(_name(c) is None for c in v)
                                  and len(set(v)) == len(v))
    else "a list of at least 2 distinct one-line class names",
    "inputs": lambda v: None if (isinstance(v, dict) and all(
        isinstance(s, list) and len(s) <= 8 and all(
            isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 20 for d in s)
        for s in v.values())) else "an object {input: [per-example dims]}",
    "build": _typed((dict,), "an object"),
}


def check_fields(path: str, spec: Mapping, fields: Mapping, prefix: str = "") -> None:
  for k, check in fields.items():
    if k in spec:
      why = check(spec[k])
      if why:
        raise ExportError(f"{path}: field '{prefix}{k}' must be {why}")


def check_model_json(path: str, spec: Mapping) -> None:
  """A regression/binary model.json: every field's type and range, and their agreement."""
  for k in ("target", "modalities", "build"):
    if k not in spec:
      raise ExportError(f"{path}: field {k!r} is missing")
  check_fields(path, spec, MODEL_FIELDS)
  build = spec["build"]
  check_fields(path, build, BUILD_FIELDS, "build.")
  d_model, heads = build.get("d_model", 8), build.get("num_heads", 2)  # the loader's defaults
  if d_model % heads:
    raise ExportError(f"{path}: field 'build.num_heads' ({heads}) must divide "
                      f"'build.d_model' ({d_model})")
  task = spec.get("task", "regression")
  if "_task" in build and build["_task"] != task:
    raise ExportError(f"{path}: field 'task' is {task!r} but the model was built for "
                      f"{build['_task']!r} ('build._task')")
  if "modalities" in build:
    from aan_jax.data.features import canonical_modalities  # pylint: disable=g-import-not-at-top
    try:
      built = canonical_modalities(build["modalities"])
    except ValueError as e:
      raise ExportError(f"{path}: field 'build.modalities': {e}") from None
    if set(built) != set(spec["modalities"]):
      raise ExportError(f"{path}: field 'modalities' {spec['modalities']} differs from "
                        f"'build.modalities' {list(built)}")


def check_classifier_json(path: str, spec: Mapping) -> None:
  for k in ("classes", "build"):
    if k not in spec:
      raise ExportError(f"{path}: field {k!r} is missing")
  check_fields(path, spec, CLASSIFIER_FIELDS)


def read_params(path: str, *, max_array_bytes: int = MAX_ARRAY_BYTES,
                max_total_bytes: int = MAX_TOTAL_BYTES) -> dict[str, np.ndarray]:
  """params.npz's float32 arrays, each header checked (dtype, size, the entry's declared
  length) before the array is read, and every value finite."""
  try:
    zf = zipfile.ZipFile(path)
  except (OSError, zipfile.BadZipFile, ValueError) as e:
    raise ExportError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
  out, total = {}, 0
  with zf:
    infos = zf.infolist()
    if len(infos) > 100000:
      raise ExportError(f"{path}: holds {len(infos)} entries; not an exported model")
    for info in infos:
      name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
      where = f"{path}: array {name[:80]!r}"
      try:
        with zf.open(info) as f:
          version = np.lib.format.read_magic(f)
          if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
          elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
          else:
            raise ValueError(f"npy format {version}")
          header = f.tell()
          if dtype != np.float32:
            raise ExportError(f"{where} is {dtype}; parameters are float32")
          if len(shape) > 8:
            raise ExportError(f"{where} has {len(shape)} dimensions")
          nbytes = 4 * math.prod(shape)
          if nbytes > max_array_bytes:
            raise ExportError(f"{where} declares {shape}, {nbytes / 2**20:.0f} MiB; an exported "
                              f"model's arrays are far smaller (cap {max_array_bytes >> 20} MiB)")
          total += nbytes
          if total > max_total_bytes:
            raise ExportError(f"{path}: declares over {max_total_bytes >> 20} MiB of arrays; "
                              "an exported model is far smaller")
          if info.file_size != header + nbytes:
            raise ExportError(f"{where}: its entry holds {info.file_size - header} bytes, its "
                              f"header declares {nbytes} (truncated or padded)")
          a = np.frombuffer(f.read(nbytes), np.float32)
          if a.size * 4 != nbytes:
            raise ExportError(f"{where} is truncated")
          a = a.reshape(shape, order="F" if fortran else "C")
      except ExportError:
        raise
      except Exception as e:  # zipfile/numpy raise several kinds for a damaged file
        raise ExportError(f"{where}: cannot read ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]})") from None
      if not np.isfinite(a).all():
        raise ExportError(f"{where} holds NaN or infinite values")
      out[name] = np.array(a)
  return out


def check_shapes(path: str, got: Mapping, want: Mapping, prefix: str = "") -> None:
  """`got` (flat name -> array) holds exactly `want`'s (flat name -> shape) arrays."""
  missing = [k for k in want if f"{prefix}{k}" not in got]
  if missing:
    raise ExportError(f"{path}: parameter {prefix}{missing[0]} is missing (the settings in "
                      "model.json build a different model)")
  for k, shape in want.items():
    if tuple(got[f"{prefix}{k}"].shape) != tuple(shape):
      raise ExportError(f"{path}: parameter {prefix}{k} is {tuple(got[prefix + k].shape)}; the "
                        f"settings in model.json need {tuple(shape)}")
  extra = [k for k in got if k.startswith(prefix) and k[len(prefix):] not in want]
  if extra:
    raise ExportError(f"{path}: parameter {extra[0][:80]} is not one of the model's")


def check_norm(path: str, flat: Mapping, modalities, normalize: bool) -> None:
  """norm_mean/<m>, norm_std/<m>: (dim,) each, finite, std > 0 (a 0 would divide by zero)."""
  for m in modalities:
    for k in ("norm_mean", "norm_std"):
      a = flat.get(f"{k}/{m}")
      if a is None:
        if normalize:
          raise ExportError(f"{path}: array {k}/{m} is missing (the model normalises {m})")
        continue
      if a.shape != (FEATURE_DIMS[m],):
        raise ExportError(f"{path}: array {k}/{m} is {a.shape}; expected ({FEATURE_DIMS[m]},)")
      if k == "norm_std" and normalize and not (a > 0).all():
        raise ExportError(f"{path}: array norm_std/{m} has a zero or negative entry "
                          f"(index {int(np.flatnonzero(~(a > 0))[0])}); it divides the features")
  extra = [k for k in flat if k.split("/")[0] in ("norm_mean", "norm_std")
           and k.split("/", 1)[1] not in modalities]
  if extra:
    raise ExportError(f"{path}: array {extra[0][:80]} is not for one of the model's modalities")
  other = [k for k in flat if k.split("/")[0] not in ("params", "norm_mean", "norm_std")]
  if other:
    raise ExportError(f"{path}: array {other[0][:80]} is not part of an exported model")


def flatten(tree, leaf=np.asarray, prefix: str = "") -> dict:
  """{"a/b/c": leaf(value)} of a nested mapping (the keys of params.npz)."""
  out = {}
  for k, v in tree.items():
    key = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out.update(flatten(v, leaf, key))
    else:
      out[key] = leaf(v)
  return out


def flat_shapes(tree) -> dict[str, tuple]:
  return flatten(tree, lambda v: tuple(v.shape))


def contained(root: str, rel: Any, index: str) -> str:
  """The model folder `rel` names, symlinks resolved, refused unless inside `root`."""
  if not isinstance(rel, str) or not rel:
    raise ExportError(f"{index}: a model entry's 'path' must be a non-empty string, got "
                      f"{_kind(rel)}")
  real_root = os.path.realpath(root)
  sub = os.path.realpath(os.path.join(root, rel))
  if os.path.commonpath([sub, real_root]) != real_root:
    raise ExportError(f"{index}: model path {rel[:100]!r} leaves the models folder (symlinks "
                      "resolved)")
  return sub
