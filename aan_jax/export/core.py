"""Trained models out of the engine and back: `workdir/models/`, loadable in one call.

    from aan_jax.export import core as export
    models = export.load_models("workdir/cognimuse")       # a workdir, its models/, or one model
    curve = models[0].predict({"vggish": v, "emobase2010": e})   # (segments,)

Layout: `models/index.json` lists every model; each model is a folder with `model.json`
(the engine's model kind and the settings that build it, the target and task, the fold,
the segmentation it was trained on, the corpus) and `params.npz` (its parameters and the
fold's feature normalisation, plain arrays: read with allow_pickle=False, so a file cannot
run code). The module is rebuilt from the engine's registry of model kinds, never from a
class name the file chooses.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Mapping

import numpy as np

from aan_jax.export import checks
from aan_jax.export.checks import ExportError  # noqa: F401  (re-exported)
from aan_jax.util import atomic

FORMAT = "aan_jax.export/1"
# What `python -m extract --segmentation` must produce for a model trained on each corpus.
SEGMENTATION = {"cognimuse": "fixed:5", "liris_accede_continuous": "sliding:10:5",
                "synthetic": "fixed:5", "synthetic_excerpts": "excerpt:64"}
_BUILD_KEYS = ("model", "modalities", "d_model", "num_heads", "num_layers", "ffn", "window",
               "norm_first", "feature_dropout", "dropout", "hidden", "projection",
               "lstm_layers", "output_range", "_task")


def _flatten(tree) -> dict[str, np.ndarray]:
  return checks.flatten(tree)


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
  out: dict = {}
  for key, v in flat.items():
    node = out
    parts = key.split("/")
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = v
  return out


def segmentation_of(corpus) -> str:
  meta = corpus.info.get("metadata", {}) or {}
  if meta.get("segmentation"):
    return str(meta["segmentation"])
  return SEGMENTATION.get(corpus.name, "fixed:5")


def save_model(directory: str, *, config: Mapping, params, norm_mean: Mapping,
               norm_std: Mapping, meta: Mapping) -> str:
  """Writes one model folder (model.json last: its presence marks a complete model)."""
  os.makedirs(directory, exist_ok=True)
  arrays = {f"params/{k}": v for k, v in _flatten(params).items()}
  arrays.update({f"norm_mean/{m}": np.asarray(v, np.float32) for m, v in norm_mean.items()})
  arrays.update({f"norm_std/{m}": np.asarray(v, np.float32) for m, v in norm_std.items()})
  tmp = os.path.join(directory, "params.tmp.npz")
  np.savez(tmp, **arrays)
  os.replace(tmp, os.path.join(directory, "params.npz"))
  spec = {"format": FORMAT, "build": {k: config[k] for k in _BUILD_KEYS if k in config},
          **meta}
  atomic.write_file(os.path.join(directory, "model.json"), json.dumps(
      spec, indent=1, default=lambda x: list(x) if isinstance(x, tuple) else str(x)))
  return directory


def export_result(result, summary: dict, directory: str) -> list[str]:
  """Every run of each target's selected grid point, with its best parameters."""
  import jax  # pylint: disable=g-import-not-at-top
  c, runs = result.corpus, result.runs
  entries = []
  for ti, target in enumerate(result.targets):
    point = summary.get("sweep", {}).get("selected", {}).get(target, 0)
    test_error = _test_error(result, [r for r in range(len(runs))
                                      if runs.target[r] == ti and runs.point[r] == point])
    for r in range(len(runs)):
      if runs.target[r] != ti or runs.point[r] != point:
        continue
      fold = result.folds[runs.fold[r]].name
      rel = os.path.join(target, fold + (f"_seed{runs.seed[r]}" if runs.seed.max() else ""))
      cfg = dict(result.config)
      cfg.update({k: (int(v[r]) if k == "patience" else float(v[r]))
                  for k, v in runs.hparams.items()})
      cfg["_task"] = c.task(target)  # a sequential baseline's head (tanh or logit)
      params = jax.tree.map(lambda x, rr=r: np.asarray(x[rr]), result.best_params)
      mods = list(result.norm["mean"])
      meta = {"name": runs.names[r], "target": target, "task": c.task(target), "fold": fold,
              "seed": int(runs.seed[r]), "test_groups": [c.groups[g] for g, ok in zip(
                  runs.test_idx[r], runs.test_ok[r]) if ok][:50],
              "modalities": mods, "segmentation": segmentation_of(c), "corpus": c.name,
              "tfds_config": c.info.get("config"), "best_epoch": int(result.best_epoch[r]),
              "hparams": {k: float(v[r]) for k, v in runs.hparams.items()},
              "normalize": bool(result.config.get("normalize", True)),
              "encoder_impl": result.encoder_impl, "test_error": test_error}
      save_model(os.path.join(directory, rel), config=cfg, params=params,
                 norm_mean={m: result.norm["mean"][m][r] for m in mods},
                 norm_std={m: result.norm["std"][m][r] for m in mods}, meta=meta)
      entries.append({k: meta[k] for k in ("name", "target", "task", "fold", "seed")} | {"path": rel})
  atomic.write_file(os.path.join(directory, "index.json"),
                    json.dumps({"format": FORMAT, "models": entries}, indent=1))
  return [e["path"] for e in entries]


def _test_error(result, rows: list[int]) -> dict | None:
  """The target's test error, recorded with each of its models: the RMSE of every fold's
  held-out test predictions pooled (for a binary target, of its probabilities: the root of
  the Brier score), the uncertainty the predictor weighs a single model's moments against."""
  from aan_jax.evaluation import pooled as ev  # pylint: disable=g-import-not-at-top
  table = ev.prediction_table(result, rows)
  pred = np.asarray(table["prediction"], np.float64)
  truth = np.asarray(table["truth"], np.float64)
  ok = np.isfinite(pred) & np.isfinite(truth)
  if not ok.any():
    return None  # no test item (a fold without test groups): nothing to record
  mse = float(np.mean((pred[ok] - truth[ok]) ** 2))
  return {"rmse": float(np.sqrt(mse)), "mse": mse, "items": int(ok.sum()),
          "on": "every fold's held-out test items of this target, pooled (results.json's "
                "test figure)"}


@dataclasses.dataclass
class ExportedModel:
  """One trained model: `predict(features)` -> (segments,) values (probabilities for binary)."""
  name: str
  target: str
  task: str
  fold: str
  modalities: tuple[str, ...]
  segmentation: str
  metadata: dict
  module: object
  params: dict
  norm_mean: dict
  norm_std: dict
  encoder_impl: str = "xla"

  def predict(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
    """features: name -> (segments, dim), in film order; normalised here as in training."""
    from aan_jax.models.aan import check_features  # pylint: disable=g-import-not-at-top
    lead = check_features(features, self.modalities)
    if len(lead) != 1:
      raise ValueError(f"features must be (segments, dim) per modality; got leading shape {lead}")
    feats = {m: np.asarray(features[m], np.float32) for m in self.modalities}
    normalize = bool(self.metadata.get("normalize", True))
    raw = np.asarray(_predict_fn(self.metadata["build"]["model"], self.module, normalize,
                                 self.encoder_impl)(
        self.params, feats, np.ones(lead, bool), self.norm_mean, self.norm_std))
    return 1.0 / (1.0 + np.exp(-raw)) if self.task == "binary" else raw


@functools.lru_cache(maxsize=32)
def _predict_fn(kind: str, module, normalize: bool, impl: str = "xla"):
  """The engine's own evaluation of one group, normalisation inside the program as there,
  so that a reloaded model reproduces the engine's test predictions bit for bit."""
  import jax  # pylint: disable=g-import-not-at-top
  from aan_jax import engine  # pylint: disable=g-import-not-at-top
  from aan_jax.models import layers  # pylint: disable=g-import-not-at-top
  spec = engine.get_model_spec(kind)

  def run(p, f, v, mean, std):
    if normalize:
      f = {m: (x - mean[m]) / std[m] for m, x in f.items()}
    with layers.encoder_impl(impl):  # read while tracing
      return spec.eval_apply(module, p, f, v)
  return jax.jit(run)


def _read_model_json(path: str, fmt: str, what: str) -> dict:
  """An exported model's model.json, refused with the file's name unless it is `fmt`."""
  try:
    with open(path) as f:
      meta = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ExportError(f"{path}: cannot read an exported {what} ({e})") from None
  if not isinstance(meta, dict) or meta.get("format") != fmt:
    raise ExportError(f"{path}: not an aan_jax exported {what} (format {fmt!r})")
  return meta


def _load_one(directory: str) -> ExportedModel:
  """One model folder, untrusted: model.json field by field, params.npz from its headers
  (aan_jax.export.checks), the arrays' shapes against those the settings build."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from aan_jax import engine  # pylint: disable=g-import-not-at-top
  spec_path = os.path.join(directory, "model.json")
  spec = _read_model_json(spec_path, FORMAT, "model")
  checks.check_model_json(spec_path, spec)
  build = dict(spec["build"])
  kind = build.get("model")
  if kind not in engine.model_names(categorical=False):
    raise ExportError(f"{spec_path}: field 'build.model' is an unknown model kind "
                      f"{str(kind)[:40]!r}; expected one of "
                      f"{list(engine.model_names(categorical=False))}")
  defaults = {"ffn": "auto", "window": 5, "norm_first": True, "feature_dropout": 0.1,
              "dropout": 0.1, "d_model": 8, "num_heads": 2, "num_layers": 6, "hidden": 512,
              "projection": 8, "lstm_layers": 1, "output_range": "",
              "_task": spec.get("task", "regression")}
  # The encoder the engine evaluated the model with, where this machine has it (the fused
  # CPU kernel rounds differently from XLA's encoder, within float32 rounding).
  impl = "xla"
  if spec.get("encoder_impl") == "cpu_kernel":
    impl = engine.resolve_encoder_impl("auto")
  cfg = ml_collections.ConfigDict({**defaults, **build})
  model_spec = engine.get_model_spec(kind)
  try:
    module = model_spec.build(cfg)
    want = jax.eval_shape(lambda k: model_spec.init(module, k, None), jax.random.key(0))
  except Exception as e:  # pylint: disable=broad-except
    raise ExportError(f"{spec_path}: cannot build the model from its settings "
                      f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
  params_path = os.path.join(directory, "params.npz")
  flat = checks.read_params(params_path)
  checks.check_shapes(params_path, flat, checks.flat_shapes(want["params"]), "params/")
  mods = tuple(spec["modalities"])
  checks.check_norm(params_path, flat, mods, bool(spec.get("normalize", True)))
  tree = _unflatten(flat)
  return ExportedModel(
      name=spec.get("name", os.path.basename(directory)), target=spec["target"],
      task=spec.get("task", "regression"), fold=str(spec.get("fold", "")), modalities=mods,
      segmentation=spec.get("segmentation", "fixed:5"), metadata=spec, module=module,
      params=jax.tree.map(jnp.asarray, tree["params"]),
      norm_mean=tree.get("norm_mean", {}), norm_std=tree.get("norm_std", {}),
      encoder_impl=impl)


def _load_all(path: str | os.PathLike, load_one, what: str) -> list:
  """`load_one` of every model under `path`: a workdir, its models/ folder (index.json), or
  one model's folder; a path in the index that leaves the folder is refused."""
  path = os.fspath(path)
  if os.path.isfile(os.path.join(path, "model.json")):
    return [load_one(path)]
  root = path if os.path.isfile(os.path.join(path, "index.json")) else os.path.join(path, "models")
  index = os.path.join(root, "index.json")
  if not os.path.isfile(index):
    raise ExportError(f"{path}: no exported {what} (no models/index.json or model.json); "
                      "train with a launcher first (it writes workdir/models/)")
  try:
    with open(index) as f:
      entries = json.load(f)["models"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
      raise TypeError("'models' must be a list of objects")
  except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
    raise ExportError(f"{index}: cannot read the model index ({type(e).__name__}: "
                      f"{' '.join(str(e).split())[:200]})") from None
  out, seen = [], {}
  for e in entries:
    sub = checks.contained(root, e.get("path"), index)
    if sub in seen:
      raise ExportError(f"{index}: lists the model folder {e.get('path')!r} twice (as "
                        f"{seen[sub]!r}): each fold counts once")
    seen[sub] = e.get("path")
    out.append(load_one(sub))
  return out


def load_models(path: str | os.PathLike) -> list[ExportedModel]:
  """Every model under `path`: a workdir, its models/ folder, or one model's folder."""
  return _load_all(path, _load_one, "models")


# ----------------------------------------------------------- categorical classifiers

CLASSIFIER_FORMAT = "aan_jax.export.classifier/1"


def export_classifiers(result, directory: str) -> list[str]:
  """Every run of a categorical result (aan_jax.training.categorical): one folder per run with
  model.json (the classifier kind, its settings, classes, split) and params.npz (every
  variable collection, plain arrays)."""
  import jax  # pylint: disable=g-import-not-at-top
  c, runs = result.corpus, result.runs
  entries = []
  for r in range(len(runs)):
    rel = runs.names[r].replace("/", "_")
    sub = os.path.join(directory, rel)
    os.makedirs(sub, exist_ok=True)
    variables = jax.tree.map(lambda x, rr=r: np.asarray(x[rr]), result.variables)
    tmp = os.path.join(sub, "params.tmp.npz")
    np.savez(tmp, **_flatten(variables))
    os.replace(tmp, os.path.join(sub, "params.npz"))
    meta = {"format": CLASSIFIER_FORMAT, "name": runs.names[r], "task": "categorical",
            "build": dict(result.config), "classes": list(c.classes), "corpus": c.name,
            "tfds_config": c.info.get("config"), "split": c.split_names[runs.fold[r]],
            "seed": int(runs.seed[r]), "learning_rate": float(runs.hparams["learning_rate"][r]),
            "inputs": {k: list(v.shape[1:]) for k, v in c.inputs.items()},
            "test_ids": [c.ids[i] for i in runs.test_idx[r][runs.test_ok[r]]][:50]}
    atomic.write_file(os.path.join(sub, "model.json"), json.dumps(
        meta, indent=1, default=lambda x: list(x) if isinstance(x, tuple) else str(x)))
    entries.append({"name": runs.names[r], "split": meta["split"], "seed": meta["seed"],
                    "path": rel})
  atomic.write_file(os.path.join(directory, "index.json"), json.dumps(
      {"format": CLASSIFIER_FORMAT, "models": entries}, indent=1))
  return [e["path"] for e in entries]


@dataclasses.dataclass
class ExportedClassifier:
  """One trained classifier: `logits(inputs)` -> (N, classes), `predict(inputs)` -> probabilities."""
  name: str
  classes: tuple[str, ...]
  metadata: dict
  module: object
  variables: dict
  kind: str

  def logits(self, inputs: Mapping[str, np.ndarray], batch_size: int = 64) -> np.ndarray:
    """inputs: name -> (N, ...) per example, as in training; evaluation mode."""
    want = self.metadata.get("inputs", {})
    for k, shape in want.items():
      if k not in inputs:
        raise ValueError(f"{self.name}: input {k!r} is missing; expected {sorted(want)}")
      if tuple(np.shape(inputs[k])[1:]) != tuple(shape):
        raise ValueError(f"{self.name}: input {k!r} has per-example shape "
                         f"{tuple(np.shape(inputs[k])[1:])}; expected {tuple(shape)}")
    fn = _classifier_fn(self.kind, self.module)
    n = len(next(iter(inputs.values())))
    out = [np.asarray(fn(self.variables, {k: np.asarray(v[i:i + batch_size], np.float32)
                                          for k, v in inputs.items()}))
           for i in range(0, n, batch_size)]
    return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

  def predict(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    z = self.logits(inputs).astype(np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@functools.lru_cache(maxsize=32)
def _classifier_fn(kind: str, module):
  import jax  # pylint: disable=g-import-not-at-top
  from aan_jax import engine  # pylint: disable=g-import-not-at-top
  spec = engine.get_model_spec(kind)
  return jax.jit(lambda v, x: spec.eval_apply(module, v, x)[0])


def _load_classifier(directory: str) -> ExportedClassifier:
  """One classifier folder, untrusted: as `_load_one`, and its class names against its head."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from aan_jax import engine  # pylint: disable=g-import-not-at-top
  spec_path = os.path.join(directory, "model.json")
  meta = _read_model_json(spec_path, CLASSIFIER_FORMAT, "classifier")
  checks.check_classifier_json(spec_path, meta)
  build = meta.get("build")
  kind = build.get("model") if isinstance(build, dict) else None
  if kind not in engine.model_names(categorical=True):
    raise ExportError(f"{spec_path}: unknown classifier kind {str(kind)[:40]!r}")
  try:
    module = engine.get_model_spec(kind).build(ml_collections.ConfigDict(build))
  except Exception as e:  # pylint: disable=broad-except
    raise ExportError(f"{spec_path}: cannot build the classifier from its settings ({e})") from None
  path = os.path.join(directory, "params.npz")
  flat = checks.read_params(path)
  variables = _unflatten(flat)
  classes = tuple(meta["classes"])
  inputs = meta.get("inputs")
  if inputs:  # the head's width, from shapes only (nothing computed)
    spec = engine.get_model_spec(kind)
    x = {k: jax.ShapeDtypeStruct((1, *s), jnp.float32) for k, s in inputs.items()}
    try:
      want = jax.eval_shape(lambda k, x: spec.init(module, k, x), jax.random.key(0), x)
      checks.check_shapes(path, {k: v for k, v in flat.items()},
                          checks.flat_shapes(dict(want)))
      out = jax.eval_shape(lambda v, x: spec.eval_apply(module, v, x)[0],
                           jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                        variables), x)
    except ExportError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise ExportError(f"{spec_path}: its settings and params.npz do not make a classifier "
                        f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    if out.shape[-1] != len(classes):
      raise ExportError(f"{spec_path}: field 'classes' names {len(classes)} classes but the "
                        f"model's head has {out.shape[-1]} outputs")
  return ExportedClassifier(
      name=meta.get("name", os.path.basename(directory)), classes=classes,
      metadata=meta, module=module, variables=jax.tree.map(jnp.asarray, variables),
      kind=kind)


def load_classifiers(path: str | os.PathLike) -> list[ExportedClassifier]:
  """Every classifier under `path`: a workdir, its models/ folder, or one model's folder."""
  return _load_all(path, _load_classifier, "classifiers")
