"""How the engine builds, feeds and runs each kind of model: one `ModelSpec` type, found by name.

The built-in specs are found through a lazy name -> module table (scenic's _IMPORT_TABLE
idea): asking for "vaanet" imports the module that defines it, and nothing is registered
as the side effect of an import. A notebook that tries a new model calls `register_model`.

A spec names its *sampler*, the epoch body that feeds it (aan_jax.engine.groups,
aan_jax.engine.clips):

  "shared"      every run reads the same shuffled batch of items of a group corpus and
                weighs the rows it does not train on zero (the AAN models);
  "sequential"  batch rows are groups (films), each step a window of consecutive items,
                a carried state threaded between a row's windows (the LSTM baselines);
  "per_run"     each run draws its own batch from its own training list of a clip corpus,
                with BatchNorm state (VAANet, VTT's face model).

Fields used by each sampler:

  build(config) -> module; every sampler.
  init(module, key, example) -> variables {"params", other collections}; `example` is
    name -> (B, ...) inputs for "per_run" and None for the group samplers.
  dropout_fields: the module fields set to a run's dropout rate when the rates differ.
  "shared":
    batch_inputs(module, data, group, item) -> {"features": name -> (B, ..., dim), ...}, the
      inputs of rows (group[i], item[i]); shared by all runs, so it must not depend on the
      target (a temporal model gathers windows of features and of every target).
    train_apply(module, params, inputs, target, key) -> (B,) raw outputs, training mode.
    input_projections: the path in the parameters of the `proj_<feature>` Dense layers
      through which alone the features enter the model (the AAN family: ("tokens",)), or
      () if none. With it the engine trains on per-run normalised features by folding each
      run's normalisation into those layers (aan_jax.engine.groups), the same function
      computed on features every run shares.
  "shared" and "sequential":
    eval_apply(module, params, features, valid) -> (I,) raw outputs for every item of one
      group in evaluation mode (a temporal model runs its autoregressive loop here).
  "sequential":
    init_carry(module, batch) -> the carry before a group's first item.
    train_window(module, params, features, carry, mask, key) -> ((B, W) raw outputs, carry).
  "per_run":
    train_apply(module, variables, inputs, key) -> (logits (B, C), updated collections).
    eval_apply(module, variables, inputs) -> (logits (B, C), extras such as attention).
    fit(config, shapes) -> {setting: value}: sizes read from the inputs' per-example shapes
      for the settings left at 0; optional.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

SAMPLERS = ("shared", "sequential", "per_run")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One kind of model as the engine sees it (fields: the module docstring)."""
  build: Callable[..., Any]
  init: Callable[..., dict]
  train_apply: Callable[..., Any] | None = None
  eval_apply: Callable[..., Any] | None = None
  label: str = ""
  sampler: str = "shared"
  dropout_fields: tuple[str, ...] = ("dropout", "attention_dropout", "output_dropout")
  batch_inputs: Callable[..., Any] | None = None
  init_carry: Callable[..., Any] | None = None
  train_window: Callable[..., Any] | None = None
  fit: Callable[..., dict] | None = None
  input_projections: tuple[str, ...] = ()

  def __post_init__(self):
    if self.sampler not in SAMPLERS:
      raise ValueError(f"sampler {self.sampler!r}; expected one of {SAMPLERS}")

  @property
  def sequential(self) -> bool:
    return self.sampler == "sequential"

  @property
  def categorical(self) -> bool:
    """A clip classifier (trained on a ClipCorpus), rather than a model over group items."""
    return self.sampler == "per_run"


# name -> the module whose SPECS dict defines it; imported on first use only.
_TABLE = {
    "feature_aan": "aan_jax.engine.zoo",
    "temporal_aan": "aan_jax.engine.zoo",
    "feature_temporal_aan": "aan_jax.engine.zoo",
    "lstm": "aan_jax.engine.zoo",
    "lstm_late_fusion": "aan_jax.engine.zoo",
    "linear": "aan_jax.engine.zoo",
    "vaanet": "aan_jax.engine.zoo",
    "vtt": "aan_jax.engine.zoo",
}
_REGISTERED: dict[str, ModelSpec] = {}


def register_model(name: str, spec: ModelSpec) -> None:
  """Adds a model kind at run time (a notebook's new model, a test's tiny one)."""
  _REGISTERED[name] = spec


def model_names(categorical: bool | None = None) -> tuple[str, ...]:
  """Every known model kind (built in and registered); only clip classifiers, or only group
  models, when `categorical` says so."""
  names = sorted(set(_TABLE) | set(_REGISTERED))
  if categorical is None:
    return tuple(names)
  return tuple(n for n in names if get_model_spec(n).categorical == categorical)


def get_model_spec(name: str) -> ModelSpec:
  """The spec of model kind `name`; an unknown name fails with the known ones."""
  if name in _REGISTERED:
    return _REGISTERED[name]
  if name not in _TABLE:
    raise ValueError(f"unknown model {name!r}; expected one of {list(model_names())}")
  return importlib.import_module(_TABLE[name]).SPECS[name]
