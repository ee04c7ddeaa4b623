"""Predictions for any film: features + model sources -> curves (fold mean and band) and events.

    from aan_jax.inference import predict
    src = predict.load_source("released:shared/reference/attendaffectnet")
    curves = predict.predict_curves(features, [src])   # features: extract.load_npz(...)
    curves[0].mean, curves[0].low, curves[0].high       # (segments,) each

A model is anything with the fields of an exported model (`name`, `target`, `task`, `fold`,
`modalities`, `segmentation`, `metadata`) and `predict(features) -> (segments,)`: the
engine's `aan_jax.export.core.ExportedModel`, or `ReleasedModel` for the authors' checkpoints.
Pure numpy/JAX, no torch; the only files read are the models a source names and a faces
events file.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from aan_jax.data.features import AUDIO_FEATURES, FEATURE_DIMS, FEATURES, VIDEO_FEATURES
from aan_jax.util.hashing import file_sha256

# The authors' six files: <fold>_<target>_COGNIMUSE_attention_model_Feature_AAN_<variant>.pth
_RELEASED = re.compile(r"^(?P<fold>[A-Z]+)_(?P<target>arousal|valence)_COGNIMUSE_attention_model_"
                       r"Feature_AAN_(?P<tag>video_audio|only_audio|only_video)\.pth$")
RELEASED_VARIANTS = {"audio+video": "video_audio", "audio": "only_audio", "video": "only_video"}
_VARIANT_FEATURES = {"audio+video": FEATURES, "audio": AUDIO_FEATURES, "video": VIDEO_FEATURES}
# The released models were trained on COGNIMUSE's 5-s segments (DESIGN.md).
RELEASED_SEGMENTATION = "fixed:5"


class Model(Protocol):
  """What `predict_curves` needs of a model (the engine's export API)."""
  name: str
  target: str
  task: str
  fold: str
  modalities: tuple
  segmentation: str
  metadata: dict

  def predict(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
    ...


class SourceError(ValueError):
  """A model source that cannot be used; the message names it and says what to do."""


@dataclasses.dataclass
class ReleasedModel:
  """One of the authors' released Feature AAN checkpoints, read by `aan_jax.convert.attendaffectnet`."""
  name: str
  target: str
  task: str
  fold: str
  modalities: tuple
  segmentation: str
  metadata: dict
  module: Any = dataclasses.field(repr=False, default=None)
  variables: Any = dataclasses.field(repr=False, default=None)

  def predict(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
    # Not padded to a few fixed lengths (which would save a compile per film): XLA's CPU
    # matmuls round differently with the batch size, and these outputs are meant to be
    # bit for bit those of the Flax model on the film's segments.
    feats = {m: np.asarray(features[m], np.float32) for m in self.modalities}
    return np.asarray(_jitted_apply(self.module)(self.variables, feats), np.float64)


@functools.lru_cache(maxsize=16)
def _jitted_apply(module):
  """One compiled forward per architecture (modules are hashable): a model pair of one
  variant, or a re-run in the same process, does not compile again."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.jit(functools.partial(module.apply, deterministic=True))


@dataclasses.dataclass
class Source:
  """A named set of models: the authors' release, or a workdir's exported fold models."""
  name: str
  spec: str
  models: list

  @property
  def targets(self) -> list[str]:
    return list(dict.fromkeys(m.target for m in self.models))

  @property
  def segmentations(self) -> list[str]:
    return list(dict.fromkeys(m.segmentation for m in self.models))

  def features(self, segmentation: str | None = None) -> tuple[str, ...]:
    """The features its models read (for one segmentation, or all), in canonical order."""
    need = {f for m in self.models for f in m.modalities
            if segmentation is None or m.segmentation == segmentation}
    return tuple(f for f in FEATURE_DIMS if f in need)  # faces too, last

  def describe(self) -> dict:
    return {"name": self.name, "spec": self.spec, "models": [
        {"name": m.name, "target": m.target, "task": m.task, "fold": m.fold,
         "modalities": list(m.modalities), "segmentation": m.segmentation,
         "metadata": _jsonable(m.metadata)} for m in self.models]}


def _jsonable(x):
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.generic,)):
    return x.item()
  if x is None or isinstance(x, (str, int, float, bool)):
    return x
  return str(x)


def released_files(directory: str | os.PathLike) -> dict[str, dict[str, str]]:
  """{variant: {target: path}} for the released .pth files in `directory` (or its
  `trained_models/` folder, as the authors' repository lays them out)."""
  d = os.fspath(directory)
  if os.path.isdir(os.path.join(d, "trained_models")):
    d = os.path.join(d, "trained_models")
  if not os.path.isdir(d):
    raise SourceError(f"released:{directory}: no such folder (it should hold the authors' six "
                      "*_COGNIMUSE_attention_model_Feature_AAN_*.pth files)")
  tags = {v: k for k, v in RELEASED_VARIANTS.items()}
  out: dict[str, dict[str, str]] = {}
  for f in sorted(os.listdir(d)):
    m = _RELEASED.match(f)
    if m:
      out.setdefault(tags[m["tag"]], {})[m["target"]] = os.path.join(d, f)
  if not out:
    raise SourceError(f"released:{directory}: holds none of the authors' checkpoints "
                      "(<FOLD>_<arousal|valence>_COGNIMUSE_attention_model_Feature_AAN_"
                      "<video_audio|only_audio|only_video>.pth)")
  return out


def choose_released_variant(files: Mapping[str, Mapping[str, str]], variant: str,
                            available: Sequence[str] | None, where: str) -> str:
  """The variant to run: `variant` if given, else audio+video when every feature can be
  computed, else a SourceError that names what is missing and which pair would run."""
  if variant != "auto":
    if variant not in RELEASED_VARIANTS:
      raise SourceError(f"{where}: unknown variant {variant!r}; expected one of "
                        f"{['auto', *RELEASED_VARIANTS]}")
    if variant not in files:
      raise SourceError(f"{where}: has no {variant} checkpoints (found {sorted(files)})")
    return variant
  avail = set(FEATURES if available is None else available)
  if "audio+video" in files and avail >= set(FEATURES):
    return "audio+video"
  missing = [f for f in FEATURES if f not in avail]
  offers = [v for v in ("audio", "video") if v in files and avail >= set(_VARIANT_FEATURES[v])]
  msg = (f"{where}: the audio+video models need all five features, but "
         f"{', '.join(missing)} cannot be computed (their pretrained weights are missing)")
  if offers:
    alt = " or ".join(f"released-{v}:{where.split(':', 1)[1]}" for v in offers)
    raise SourceError(f"{msg}; the {' or '.join(offers)}-only pair can run: use {alt}")
  need = {v: [f for f in _VARIANT_FEATURES[v] if f not in avail] for v in ("audio", "video")}
  raise SourceError(f"{msg}; the audio-only pair also needs {', '.join(need['audio'])} and the "
                    f"video-only pair {', '.join(need['video'])}: get those weights (see the "
                    "extractor's message) or run with --weights random for a test")


def released_models(directory: str | os.PathLike, variant: str = "auto",
                    available: Sequence[str] | None = None) -> list[ReleasedModel]:
  """The authors' released models of one variant (one per target), read without torch."""
  from aan_jax.convert import attendaffectnet as convert  # pylint: disable=g-import-not-at-top
  files = released_files(directory)
  where = f"released:{os.fspath(directory)}"
  variant = choose_released_variant(files, variant, available, where)
  out = []
  for target, path in sorted(files[variant].items()):
    fold = _RELEASED.match(os.path.basename(path))["fold"]
    try:
      module, variables = convert.from_attendaffectnet(path)
    except Exception as e:  # pylint: disable=broad-except
      # CheckpointError and ConversionError are ValueErrors; anything else is one line too.
      why = str(e) if isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: {e}"
      raise SourceError(f"{path}: cannot be read as a released Feature AAN "
                        f"({' '.join(why.split())[:300]})") from None
    out.append(ReleasedModel(
        name=f"{fold}_{target}_{RELEASED_VARIANTS[variant]}", target=target, task="regression",
        fold=fold, modalities=tuple(module.modalities), segmentation=RELEASED_SEGMENTATION,
        metadata={"corpus": "COGNIMUSE", "kind": "feature_aan", "variant": variant,
                  "file": os.path.basename(path), "sha256": file_sha256(path),
                  "held_out": fold, "origin": "the authors' release (Thao et al. 2020)"},
        module=module, variables=variables))
  return out


def parse_source(spec: str) -> tuple[str | None, str, str, str]:
  """"[NAME=]released[-VARIANT]:DIR" or "[NAME=]PATH" -> (name, kind, variant, path)."""
  name = None
  m = re.match(r"^([A-Za-z0-9_.+-]+)=(.+)$", spec)
  if m and not os.path.exists(spec):
    name, spec = m[1], m[2]
  m = re.match(r"^released(?:-(audio\+video|audio|video))?:(.+)$", spec)
  if m:
    return name, "released", m[1] or "auto", m[2]
  return name, "workdir", "", spec


def load_source(spec: str, *, available: Sequence[str] | None = None) -> Source:
  """A model source from its command-line form (see `parse_source`).

  `available`: the features that can be computed (for the released models' choice of
  variant); None means all.
  """
  name, kind, variant, path = parse_source(spec)
  if kind == "released":
    return Source(name or ("released" if variant == "auto" else f"released-{variant}"), spec,
                  released_models(path, variant, available))
  if not os.path.exists(path):
    raise SourceError(f"{path}: no such workdir or model folder (a source is a training "
                      "workdir, its models/ folder, one exported model, or released:DIR)")
  try:
    from aan_jax.export import core as export  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SourceError(f"{path}: this aan_jax has no export module (aan_jax.export.core), so "
                      "workdir models cannot be read; update aan-jax") from None
  try:
    models = list(export.load_models(path))
  except (ValueError, OSError) as e:  # ExportError names the file and the field
    raise SourceError(str(e) if str(e).startswith(path) or "/" in str(e).split(":")[0]
                      else f"{path}: cannot load its exported models ({e})") from None
  except Exception as e:  # pylint: disable=broad-except
    # Any other failure of an untrusted folder is still one line naming it.
    raise SourceError(f"{path}: cannot load its exported models ({type(e).__name__}: "
                      f"{' '.join(str(e).split())[:300]})") from None
  if not models:
    raise SourceError(f"{path}: holds no exported model (train with a workdir first)")
  label = name or os.path.basename(os.path.normpath(path))
  if label == "models":
    label = os.path.basename(os.path.dirname(os.path.normpath(path))) or label
  return Source(label, spec, models)


@dataclasses.dataclass
class Curve:
  """One source's prediction of one target over a film: the fold mean and its band."""
  source: str
  target: str
  task: str               # "regression" or "binary" (then the values are probabilities)
  segmentation: str
  start_s: np.ndarray     # (S,)
  end_s: np.ndarray
  folds: np.ndarray       # (F, S): each fold model's output
  fold_names: list

  @property
  def mean(self) -> np.ndarray:
    return self.folds.mean(axis=0)

  @property
  def low(self) -> np.ndarray:
    """The band's lower edge: the lowest fold (the band holds every fold's curve)."""
    return self.folds.min(axis=0)

  @property
  def high(self) -> np.ndarray:
    return self.folds.max(axis=0)

  @property
  def std(self) -> np.ndarray:
    return self.folds.std(axis=0)

  @property
  def has_band(self) -> bool:
    return len(self.fold_names) > 1

  @property
  def label(self) -> str:
    return f"{self.source}/{self.target}"


def _features_for(features: Mapping[str, Any], segmentation: str) -> Mapping[str, np.ndarray]:
  """`features` is one mapping (used for every segmentation) or {segmentation: mapping}."""
  if "start_s" in features:
    return features
  if segmentation not in features:
    raise ValueError(f"no features for segmentation {segmentation!r}; got "
                     f"{sorted(features)}")
  return features[segmentation]


def _target_order(target: str) -> tuple:
  known = ("arousal", "valence", "fear")
  return (known.index(target), "") if target in known else (len(known), target)


def predict_curves(features: Mapping[str, Any], sources: Sequence[Source]) -> list[Curve]:
  """Runs every model of every source; one Curve per (source, target), folds stacked.

  features: a mapping like `extract.load_npz` returns (feature arrays (S, dim), `start_s`,
  `end_s`), or {segmentation: such a mapping} when the sources differ in segmentation.
  A missing or misshapen feature raises a ValueError naming the model and the feature.
  """
  curves = []
  for src in sources:
    groups: dict[tuple[str, str], list] = {}
    for m in src.models:
      groups.setdefault((m.target, m.segmentation), []).append(m)
    for (target, seg), models in sorted(groups.items(), key=lambda kv: _target_order(kv[0][0])):
      feats = _features_for(features, seg)
      n = len(feats["start_s"])
      outs = []
      for m in models:
        missing = [f for f in m.modalities if f not in feats]
        if missing:
          raise ValueError(f"{src.name}/{m.name} needs the {', '.join(missing)} feature(s), "
                           f"which the features given do not hold")
        y = np.asarray(m.predict({f: feats[f] for f in m.modalities}), np.float64).reshape(-1)
        if y.shape != (n,):
          raise ValueError(f"{src.name}/{m.name} returned {y.shape[0]} values for {n} segments")
        outs.append(y)
      tasks = {m.task for m in models}
      if len(tasks) > 1:
        raise ValueError(f"{src.name}: the {target} models mix tasks {sorted(tasks)}")
      curves.append(Curve(src.name, target, tasks.pop(), seg,
                          np.asarray(feats["start_s"], np.float64),
                          np.asarray(feats["end_s"], np.float64), np.stack(outs),
                          [str(m.fold) for m in models]))
  return curves


# ---- Events: the film's notable moments, in the VTT seed's JSON form. -----------------------

FEAR_THRESHOLD = 0.5  # a binary model's probability above which a stretch counts as fear


def _event(cls: str, seconds: float, curve: Curve, start: float, end: float, value: float,
           evidence: str, **extra) -> dict:
  obj = {"source": curve.source, "target": curve.target, "start_s": round(float(start), 3),
         "end_s": round(float(end), 3), "value": round(float(value), 4), "evidence": evidence}
  obj.update(extra)
  return {"type": "emotion", "class": cls, "seconds": round(float(seconds), 3), "object": obj}


def _peaks(x: np.ndarray, min_gap: int, k: int) -> list[int]:
  """Up to k local maxima of x, highest first, at least min_gap segments apart."""
  order = np.argsort(-x, kind="stable")
  chosen: list[int] = []
  for i in order:
    if len(chosen) >= k:
      break
    lo, hi = max(0, i - 1), min(len(x), i + 2)
    if x[i] < x[lo:hi].max():  # not a local maximum
      continue
    if all(abs(int(i) - j) >= min_gap for j in chosen):
      chosen.append(int(i))
  return chosen


def curve_events(curve: Curve, *, max_peaks: int | None = None,
                 stretch_s: float = 30.0, peak_gap_s: float = 60.0) -> list[dict]:
  """Notable moments of one curve, each with its evidence.

  arousal: the highest peaks (local maxima at least `peak_gap_s` apart that stand out
  by more than half a standard deviation of the film's curve); valence: the most
  positive and the most negative stretch of `stretch_s` (moving mean); a binary target
  (fear): each stretch whose probability stays above FEAR_THRESHOLD, at its peak.
  """
  x, s, e = curve.mean, curve.start_s, curve.end_s
  n = len(x)
  ok = np.isfinite(x)  # a segment the input declared missing is a gap: no event there
  if n == 0 or not ok.any():
    return []
  hop = float(np.median(np.diff(s))) if n > 1 else float(e[0] - s[0])
  hop = hop if hop > 0 else 1.0
  duration_min = (float(e[-1]) - float(s[0])) / 60.0
  events = []
  band = lambda i: ({"band": [round(float(curve.low[i]), 4), round(float(curve.high[i]), 4)]}
                    if curve.has_band else {})
  if curve.task == "binary":
    above = np.where(ok, x, -np.inf) >= FEAR_THRESHOLD
    i = 0
    while i < n:
      if not above[i]:
        i += 1
        continue
      j = i
      while j + 1 < n and above[j + 1]:
        j += 1
      p = i + int(np.argmax(x[i:j + 1]))
      events.append(_event(
          curve.target, (s[p] + e[p]) / 2, curve, s[i], e[j], x[p],
          f"{curve.target} probability {x[p]:.2f} (>= {FEAR_THRESHOLD}) from {s[i]:.0f} s to "
          f"{e[j]:.0f} s", **band(p)))
      i = j + 1
    return events
  mu, sd = float(x[ok].mean()), float(x[ok].std())
  if curve.target == "valence":
    # A stretch is at most a third of the film, so that the two can differ.
    w = max(1, min(int(round(stretch_s / hop)), n // 3))
    moving = np.convolve(x, np.ones(w) / w, mode="valid")  # moving[i]: segments i..i+w-1
    full = np.isfinite(moving)  # a stretch over a gap does not count
    if not full.any():
      return events
    best = int(np.argmax(np.where(full, moving, -np.inf)))
    worst = int(np.argmin(np.where(full, moving, np.inf)))
    if best == worst:
      return events  # a flat curve (or one segment) has no most positive stretch
    for cls, i in (("most_positive", best), ("most_negative", worst)):
      j = i + w - 1
      events.append(_event(
          cls, (s[i] + e[j]) / 2, curve, s[i], e[j], moving[i],
          f"mean valence {moving[i]:+.3f} over {s[i]:.0f}-{e[j]:.0f} s "
          f"(film mean {mu:+.3f}, sd {sd:.3f})"))
    return events
  # arousal, or any other regression target: the peaks.
  k = max_peaks or int(np.clip(round(duration_min / 2), 1, 10))
  gap = max(1, int(round(peak_gap_s / hop)))
  for i in _peaks(np.where(ok, x, -np.inf), gap, k):
    if not ok[i]:
      continue
    z = (x[i] - mu) / sd if sd > 0 else 0.0
    if sd > 0 and z < 0.5:
      continue
    events.append(_event(
        f"{curve.target}_peak", (s[i] + e[i]) / 2, curve, s[i], e[i], x[i],
        f"{curve.target} {x[i]:+.3f} at {s[i]:.0f}-{e[i]:.0f} s, {z:+.1f} sd above the film's "
        f"mean {mu:+.3f}", z=round(float(z), 2), **band(i)))
  return events


def events(curves: Sequence[Curve]) -> list[dict]:
  """Every curve's notable moments, in time order."""
  out = [ev for c in curves for ev in curve_events(c)]
  return sorted(out, key=lambda ev: (ev["seconds"], ev["class"]))


def load_face_events(path: str | os.PathLike) -> list[dict]:
  """Reads a `<stem>.events.json` from the faces extractor: VTT-form events, validated.

  Raises ValueError naming the file when it is not a JSON list of such events.
  """
  import json  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  def no_constant(name):  # NaN / Infinity are not JSON, and the report could not hold them
    raise ValueError(f"holds {name}")
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f, parse_constant=no_constant)
  except (OSError, UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
    raise ValueError(f"{path}: not a readable events file ({e})") from None
  if not isinstance(data, list):
    raise ValueError(f"{path}: expected a JSON list of events, got {type(data).__name__}")
  out = []
  for i, ev in enumerate(data):
    ok = (isinstance(ev, dict) and isinstance(ev.get("class"), str)
          and isinstance(ev.get("seconds"), (int, float)) and not isinstance(ev["seconds"], bool)
          and np.isfinite(ev["seconds"]) and isinstance(ev.get("object", {}), dict))
    if not ok:
      raise ValueError(f"{path}: event {i} is not {{\"type\", \"class\": str, \"seconds\": "
                       f"number, \"object\": {{...}}}}: {str(ev)[:120]}")
    out.append({"type": str(ev.get("type", "emotion")), "class": ev["class"],
                "seconds": float(ev["seconds"]), "object": ev.get("object", {})})
  return sorted(out, key=lambda ev: ev["seconds"])
