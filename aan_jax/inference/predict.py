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
import json
import math
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
# The authors' published test MSE of Feature AAN on COGNIMUSE (Thao et al. 2020, Table I: the
# twelve held-out movies pooled), per variant and target: a released model's uncertainty.
PUBLISHED_MSE = {("audio+video", "arousal"): 0.124, ("audio+video", "valence"): 0.178,
                 ("video", "arousal"): 0.152, ("video", "valence"): 0.204,
                 ("audio", "arousal"): 0.125, ("audio", "valence"): 0.185}
PUBLISHED_MSE_SOURCE = ("Thao et al. 2020, Table I: Feature AAN on COGNIMUSE, leave-one-movie-"
                        "out over the 12 movies pooled")


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
  # target -> (RMSE, where from) for models that record no test error (an older export):
  # the workdir's results.json, when the source has one.
  fallback_errors: dict = dataclasses.field(default_factory=dict)

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
                  "held_out": fold, "origin": "the authors' release (Thao et al. 2020)",
                  "published_mse": PUBLISHED_MSE.get((variant, target)),
                  "published_mse_source": PUBLISHED_MSE_SOURCE},
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
  fallback = {}
  if any(_recorded_error(m) is None for m in models):
    fallback = results_json_errors(path)
  return Source(label, spec, models, fallback)


def _finite(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _recorded_error(m) -> tuple[float, str, str] | None:
  """(RMSE, kind, where from) recorded with a model, or None."""
  meta = getattr(m, "metadata", None) or {}
  te = meta.get("test_error")
  if isinstance(te, Mapping) and _finite(te.get("rmse")):
    return (float(te["rmse"]), "test_rmse", f"the test RMSE {float(te['rmse']):.4f} recorded "
            f"with the exported model ({str(te.get('on', 'its test items'))[:200]})")
  if _finite(meta.get("published_mse")):
    mse = float(meta["published_mse"])
    return (math.sqrt(mse), "published_mse", f"the authors' published test MSE {mse:.3f} -> "
            f"RMSE {math.sqrt(mse):.4f} ({meta.get('published_mse_source', '')})")
  return None


def results_json_errors(path: str) -> dict[str, tuple[float, str, str]]:
  """Target -> (RMSE, kind, where from) out of the results.json of the workdir that holds
  `path` (a workdir, its models/ folder or one model's folder; up to three levels up): the
  fallback for models exported before their test error was recorded. Untrusted: a figure
  that is not a finite number >= 0 is ignored."""
  d = os.path.abspath(path)
  for _ in range(4):
    f = os.path.join(d, "results.json")
    if os.path.isfile(f) and os.path.isdir(os.path.join(d, "models")):
      try:
        with open(f, encoding="utf-8") as fh:
          doc = json.load(fh)
      except (OSError, ValueError, RecursionError):
        return {}
      out = {}
      for target, figs in (doc.items() if isinstance(doc, dict) else ()):
        if isinstance(figs, dict) and _finite(figs.get("mse")):
          mse = float(figs["mse"])
          out[str(target)] = (math.sqrt(mse), "results_json", (
              f"FALLBACK: its models record no test error (exported before aan-jax recorded "
              f"one); the pooled test MSE {mse:.4f} in {f} -> RMSE {math.sqrt(mse):.4f}"))
      return out
    d = os.path.dirname(d)
  return {}


NO_ERROR = ("FALLBACK: no test error is recorded with this model (exported before aan-jax "
            "recorded one) and no results.json was found beside it, so no moment is claimed "
            "from this curve; export it again with a current aan-jax")


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
  # A single model's uncertainty (its target's test RMSE) and where it comes from; a curve
  # with a band (several fold models) weighs its moments against the band instead.
  error: float | None = None
  error_kind: str = ""
  error_source: str = ""

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
      err = None
      if len(models) == 1:
        err = (_recorded_error(models[0]) or src.fallback_errors.get(target)
               or (None, "none", NO_ERROR))
      curves.append(Curve(src.name, target, tasks.pop(), seg,
                          np.asarray(feats["start_s"], np.float64),
                          np.asarray(feats["end_s"], np.float64), np.stack(outs),
                          [str(m.fold) for m in models], *(err or (None, "band", ""))))
  return curves


# ---- Events: the film's notable moments, in the VTT seed's JSON form. -----------------------

FEAR_THRESHOLD = 0.5  # a binary model's probability above which a stretch counts as fear
MOMENT_RULE = ("a moment is claimed only when its margin (how far the stretch or peak stands "
               "from the film's mean, in the target's units) exceeds its uncertainty (for a "
               "source with a band, the band's half-width there: half the spread of the fold "
               "models; for a single model, its target's test RMSE); never from one segment")


def _event(cls: str, seconds: float, curve: Curve, start: float, end: float, value: float,
           evidence: dict, **extra) -> dict:
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


def uncertainty(curve: Curve, i: int, j: int) -> tuple[float | None, str]:
  """The uncertainty of the curve's mean over segments i..j (inclusive), in its units, and
  its kind: the band's half-width there (each fold model's mean over the span; half the
  distance from the lowest to the highest), or a single model's test RMSE (None: unknown)."""
  if curve.has_band:
    f = curve.folds[:, i:j + 1].mean(axis=1)
    return float(f.max() - f.min()) / 2, "band"
  return curve.error, curve.error_kind


def curve_events(curve: Curve, *, max_peaks: int | None = None,
                 stretch_s: float = 30.0, peak_gap_s: float = 60.0) -> list[dict]:
  """Notable moments of one curve that the data can tell (MOMENT_RULE), each with its evidence
  (`object.evidence`: text, margin, uncertainty and its kind).

  arousal (any regression target but valence): the highest local maxima at least
  `peak_gap_s` apart (about one per two minutes, at most 10); valence: the most positive and
  the most negative stretch of `stretch_s` (moving mean); a binary target (fear): each stretch
  whose probability stays at or above FEAR_THRESHOLD, at its peak. Each is kept only when its
  margin from the film's mean exceeds its uncertainty.
  """
  x, s, e = curve.mean, curve.start_s, curve.end_s
  n = len(x)
  ok = np.isfinite(x)  # a segment the input declared missing is a gap: no event there
  if n < 2 or ok.sum() < 2:
    return []  # one segment stands out from nothing
  hop = float(np.median(np.diff(s)))
  hop = hop if hop > 0 else 1.0
  duration_min = (float(e[-1]) - float(s[0])) / 60.0
  mu = float(x[ok].mean())
  events = []
  band = lambda i: ({"band": [round(float(curve.low[i]), 4), round(float(curve.high[i]), 4)]}
                    if curve.has_band else {})

  def claim(cls, i, j, p, value, text, **extra):
    """The event over segments i..j (value at p, or the span's mean), if it stands out."""
    u, kind = uncertainty(curve, i, j) if p is None else uncertainty(curve, p, p)
    margin = abs(float(value) - mu)
    if u is None or not margin > u:
      return
    ev = {"text": f"{text}; stands {margin:.3f} from the film's mean {mu:+.3f}, beyond its "
                  f"uncertainty {u:.3f} ({'fold band half-width' if kind == 'band' else kind})",
          "margin": round(margin, 6), "uncertainty": round(float(u), 6), "uncertainty_kind": kind}
    at = (s[i] + e[j]) / 2 if p is None else (s[p] + e[p]) / 2
    events.append(_event(cls, at, curve, s[i], e[j], value, ev, **extra))

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
      claim(curve.target, i, j, p, x[p],
            f"{curve.target} probability {x[p]:.2f} (>= {FEAR_THRESHOLD}) from {s[i]:.0f} s "
            f"to {e[j]:.0f} s", **band(p))
      i = j + 1
    return events
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
      return events  # a flat curve has no most positive stretch
    for cls, i in (("most_positive", best), ("most_negative", worst)):
      j = i + w - 1
      claim(cls, i, j, None, moving[i], f"mean valence {moving[i]:+.3f} over {s[i]:.0f}-"
            f"{e[j]:.0f} s")
    return events
  # arousal, or any other regression target: the peaks.
  k = max_peaks or int(np.clip(round(duration_min / 2), 1, 10))
  gap = max(1, int(round(peak_gap_s / hop)))
  sd = float(x[ok].std())
  for i in _peaks(np.where(ok, x, -np.inf), gap, k):
    if ok[i] and x[i] > mu:
      z = (x[i] - mu) / sd if sd > 0 else 0.0
      claim(f"{curve.target}_peak", i, i, i, x[i],
            f"{curve.target} {x[i]:+.3f} at {s[i]:.0f}-{e[i]:.0f} s ({z:+.1f} sd)",
            z=round(float(z), 2), **band(i))
  return events


def events(curves: Sequence[Curve]) -> list[dict]:
  """Every curve's notable moments, in time order."""
  out = [ev for c in curves for ev in curve_events(c)]
  return sorted(out, key=lambda ev: (ev["seconds"], ev["class"]))


def moment_rules(curves: Sequence[Curve], evs: Sequence[dict]) -> dict:
  """The thresholds behind `events` and where each curve's uncertainty comes from (the JSON
  report's metadata["moments"])."""
  per = []
  for c in curves:
    n = sum(1 for ev in evs if ev["object"]["source"] == c.source
            and ev["object"]["target"] == c.target)
    if c.has_band:
      how = (f"the band's half-width at each moment: half the spread of the "
             f"{len(c.fold_names)} fold models' means there")
    else:
      how = c.error_source
    per.append({"source": c.source, "target": c.target, "events": n,
                "uncertainty_kind": "band" if c.has_band else c.error_kind,
                "uncertainty": None if c.has_band else c.error, "from": how})
  return {"rule": MOMENT_RULE, "stretch_s": 30.0, "peak_gap_s": 60.0,
          "fear_threshold": FEAR_THRESHOLD, "min_segments": 2, "curves": per,
          "none": None if evs else "no moment stands out beyond the models' disagreement"}


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
