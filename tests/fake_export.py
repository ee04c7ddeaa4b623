"""A small stand-in for the engine's `aan_jax.export` (same API), for the predict tests.

`write_workdir` writes `workdir/models/<name>/model.json` files; `load_models` reads them
back as models whose Feature AAN parameters come from the seed each file names, so folds
with the same seed are the same model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping

import jax
import numpy as np

from aan_jax.models import FeatureAAN


@dataclasses.dataclass
class ExportedModel:
  name: str
  target: str
  task: str
  fold: str
  modalities: tuple
  segmentation: str
  metadata: dict
  seed: int = 0

  def predict(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
    model = FeatureAAN(modalities=self.modalities, num_layers=2)
    variables = model.init(jax.random.key(self.seed), model.dummy_features(1))
    feats = {m: (np.asarray(features[m], np.float32) - 0.5) / 2.0 for m in self.modalities}
    y = np.asarray(model.apply(variables, feats, deterministic=True), np.float64)
    return 1 / (1 + np.exp(-4 * y)) if self.task == "binary" else y


def write_workdir(workdir, models: list[dict]) -> str:
  """models: dicts with name, target, fold, seed and optional task, modalities, segmentation."""
  for m in models:
    d = os.path.join(workdir, "models", m["name"])
    os.makedirs(d, exist_ok=True)
    spec = {"task": "regression", "modalities": ["vggish", "emobase2010"],
            "segmentation": "fixed:5", **m}
    with open(os.path.join(d, "model.json"), "w") as f:
      json.dump(spec, f)
  return str(workdir)


def load_models(path) -> list[ExportedModel]:
  path = os.fspath(path)
  if os.path.isfile(os.path.join(path, "model.json")):
    dirs = [path]
  else:
    root = os.path.join(path, "models") if os.path.isdir(os.path.join(path, "models")) else path
    dirs = [os.path.join(root, d) for d in sorted(os.listdir(root))]
  out = []
  for d in dirs:
    with open(os.path.join(d, "model.json")) as f:
      s = json.load(f)
    out.append(ExportedModel(s["name"], s["target"], s["task"], s["fold"],
                             tuple(s["modalities"]), s["segmentation"],
                             {"corpus": "synthetic", "kind": "feature_aan"}, s["seed"]))
  return out
