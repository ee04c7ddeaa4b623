"""Saves and restores a model with its variables: orbax for the arrays, JSON for the model.

    checkpoint.save("runs/mdb_arousal", model, variables)
    model, variables = checkpoint.restore("runs/mdb_arousal")

The directory holds `model.json` (the module's class name and fields, no code) and
`variables/` (an orbax PyTree checkpoint). Restoring builds the module only from the
classes in `aan_jax.models.aan`, so a checkpoint cannot name arbitrary code.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

FORMAT_VERSION = 1


def _model_fields(model) -> dict[str, Any]:
  out = {}
  for f in dataclasses.fields(model):
    if f.name in ("parent", "name") or not f.init:
      continue
    value = getattr(model, f.name)
    out[f.name] = list(value) if isinstance(value, tuple) else value
  return out


def save(directory: str | os.PathLike, model, variables, **metadata) -> str:
  """Writes `model` and `variables` to a new `directory`; returns its absolute path."""
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(directory) and os.listdir(directory):
    raise FileExistsError(f"{directory} exists and is not empty; choose a new directory")
  os.makedirs(directory, exist_ok=True)
  spec = {"format_version": FORMAT_VERSION, "class": type(model).__name__,
          "fields": _model_fields(model), "metadata": metadata}
  arrays = jax.tree_util.tree_map(np.asarray, variables)
  with ocp.PyTreeCheckpointer() as ckptr:
    ckptr.save(os.path.join(directory, "variables"), arrays)
  # model.json last: its presence marks a complete checkpoint.
  tmp = os.path.join(directory, "model.json.tmp")
  with open(tmp, "w") as f:
    json.dump(spec, f, indent=2)
  os.replace(tmp, os.path.join(directory, "model.json"))
  return directory


def restore(directory: str | os.PathLike):
  """Reads a directory written by `save`; returns `(model, variables)`."""
  from aan_jax.models import aan as models  # pylint: disable=g-import-not-at-top

  directory = os.path.abspath(os.fspath(directory))
  spec_path = os.path.join(directory, "model.json")
  if not os.path.exists(spec_path):
    raise FileNotFoundError(
        f"{spec_path} not found: {directory} is not a complete aan_jax checkpoint "
        "(write one with aan_jax.convert.checkpoint.save or `python -m aan_jax.convert`)")
  with open(spec_path) as f:
    spec = json.load(f)
  cls = getattr(models, str(spec.get("class")), None)
  if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
    raise ValueError(f"{spec_path}: unknown model class {spec.get('class')!r}")
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["fields"].items()}
  model = cls(**fields)
  with ocp.PyTreeCheckpointer() as ckptr:
    variables = ckptr.restore(os.path.join(directory, "variables"))
  return model, jax.tree_util.tree_map(jax.numpy.asarray, variables)


def metadata(directory: str | os.PathLike) -> dict:
  """The metadata dict given to `save`."""
  with open(os.path.join(os.fspath(directory), "model.json")) as f:
    return json.load(f).get("metadata", {})
