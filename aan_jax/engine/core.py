"""The compiled core: every run of an experiment trained by one jit-compiled program.

A *run* is one model trained for one target on one fold, with one seed and one grid point
of a sweep. All runs are one leading array axis of the training state (vmap over runs,
lax.scan over the steps of an epoch, lax.while_loop over epochs; the run axis is sharded
over the local devices). The folds are per-run weights over the corpus's groups, never
copies of the data: every run reads the same shuffled batch of items, in which its
validation, test and unlabelled rows weigh zero, so the features are gathered once per step
for all runs. Per run: its own PRNG stream (initialisation and dropout, from a stable id of
its target, fold, seed and grid point), learning rate (optax.inject_hyperparams), dropout
rate, patience, loss weights, class weight and feature normalisation (from its training
rows only).

Models plug in through `MODELS` (a `ModelSpec` per config name); nothing below looks
inside a model. The driver (`aan_jax.training.regression`) builds the runs and writes the outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from aan_jax.models import layers
from aan_jax.tasks import losses as metrics
from aan_jax.data.corpus import Corpus
from aan_jax.data.features import AUDIO_FEATURES, VIDEO_FEATURES, canonical_modalities
from aan_jax.data.protocols import Fold

# Hyperparameters that may differ per run without recompiling (sweeps).
RUN_HPARAMS = ("learning_rate", "dropout", "patience", "mse_weight", "pcc_weight")


def resolve_encoder_impl(setting: str) -> str:
  """"xla" or "cpu_kernel" for config.encoder_impl (aan_jax.models.kernels.resolve)."""
  from aan_jax.models import kernels  # pylint: disable=g-import-not-at-top
  return kernels.resolve(setting)


# ----------------------------------------------------------------------------- models


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """How the engine builds, feeds and runs one kind of model.

  data: {"features": name -> (G, I, dim), "targets": (T, G, I), "label_mask": (T, G, I),
         "mask": (G, I)}.
  build(config) -> module.
  init(module, key) -> params.
  batch_inputs(module, data, group, item) -> {"features": name -> (B, ..., dim), ...}, the
    inputs of rows (group[i], item[i]); shared by all runs, so it must not depend on the
    target (a temporal model gathers windows of features and of every target). The engine
    normalises inputs["features"] per run.
  train_predict(module, params, inputs, target, key) -> (B,) raw outputs, training mode.
  predict_group(module, params, features, valid) -> (I,) raw outputs for every item of one
    group in evaluation mode; features name -> (I, dim), normalised; valid (I,) marks real
    items (a temporal model runs its autoregressive loop here).
  dropout_fields: the module fields set to a run's dropout rate.

  Sequential (stateful) models set `sequential`: the engine then trains them film by film
  (`_train_sequential`: batch rows are groups, each step a window of `config.window`
  consecutive items, the carry threaded between a row's windows) instead of on shuffled
  items, and `batch_inputs`/`train_predict` are not used. They also get one program per
  task (their head differs: tanh or logit), built with config["_task"].
  init_carry(module, batch) -> carry before a group's first item (a pytree, or None).
  train_window(module, params, features, carry, mask, key) -> ((B, W) raw outputs, carry),
    training mode; features name -> (B, W, dim) normalised, mask (B, W) real items.
  """
  build: Callable[[ml_collections.ConfigDict], nn.Module]
  init: Callable[[nn.Module, jax.Array], Any]
  batch_inputs: Callable[..., Any]
  train_predict: Callable[..., jax.Array]
  predict_group: Callable[..., jax.Array]
  label: str = ""
  dropout_fields: tuple[str, ...] = ("dropout", "attention_dropout", "output_dropout")
  sequential: bool = False
  init_carry: Callable[..., Any] | None = None
  train_window: Callable[..., Any] | None = None


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, spec: ModelSpec) -> None:
  MODELS[name] = spec


def get_model_spec(name: str) -> ModelSpec:
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
  return MODELS[name]


def _feature_aan_build(config):
  from aan_jax.models import aan as models  # pylint: disable=g-import-not-at-top
  mods = canonical_modalities(config.modalities)
  ffn, tanh = config.ffn, False
  if ffn == "auto":
    # The released single-stream (audio-only, video-only) models differ from audio+video.
    single = set(mods) <= set(AUDIO_FEATURES) or set(mods) <= set(VIDEO_FEATURES)
    ffn, tanh = ("tanh_residual", True) if single else ("relu", False)
  return models.FeatureAAN(
      modalities=mods, d_model=config.d_model, num_heads=config.num_heads,
      num_layers=config.num_layers, dropout=config.dropout,
      attention_dropout=config.dropout, output_dropout=config.dropout,
      ffn=ffn, output_tanh=tanh)


def _feature_aan_init(module, key):
  return module.init(key, module.dummy_features(1))["params"]


def _feature_aan_inputs(module, data, group, item):
  return {"features": {m: data["features"][m][group, item]
                       for m in canonical_modalities(module.modalities)}}


def _feature_aan_train(module, params, inputs, target, key):
  del target
  return module.apply({"params": params}, inputs["features"], deterministic=False,
                      rngs={"dropout": key})


def _feature_aan_predict(module, params, features, valid):
  del valid
  return module.apply({"params": params}, features, deterministic=True)


register_model("feature_aan", ModelSpec(
    _feature_aan_build, _feature_aan_init, _feature_aan_inputs, _feature_aan_train,
    _feature_aan_predict, label="Feature AAN"))


# Temporal AAN and Feature+Temporal AAN: each training example is the window of the last
# `window` items of a group ending at the target item (padded and masked at the group's
# start, never mixed across groups), trained sequence-to-one with teacher forcing (loss on
# the last position only); evaluation re-feeds the model's own outputs.


def _temporal_build(config, feature_layers: int):
  from aan_jax.models import aan as models  # pylint: disable=g-import-not-at-top
  return models.TemporalAAN(
      modalities=canonical_modalities(config.modalities), d_model=config.d_model,
      num_heads=config.num_heads, num_layers=config.num_layers, dropout=config.dropout,
      attention_dropout=config.dropout, output_dropout=config.dropout,
      ffn="relu" if config.ffn == "auto" else config.ffn, norm_first=config.norm_first,
      window=config.window, feature_layers=feature_layers,
      feature_dropout=config.feature_dropout)


def _temporal_init(module, key):
  return module.init(key, *module.dummy_inputs(1))["params"]


def _temporal_inputs(module, data, group, item):
  length = module.window
  idx = item[:, None] - (length - 1) + jnp.arange(length)[None]   # (B, L)
  pad = idx < 0
  idx = jnp.maximum(idx, 0)
  rows = group[:, None]
  valid = ~pad & data["mask"][rows, idx]
  feats = {m: data["features"][m][rows, idx] for m in canonical_modalities(module.modalities)}
  # Windows of every target: the inputs are shared by all runs; train_predict picks one.
  return {"features": feats, "targets": data["targets"][:, rows, idx], "mask": valid}


def _temporal_train(module, params, inputs, target, key):
  from aan_jax.models import aan as models  # pylint: disable=g-import-not-at-top
  mask = inputs["mask"]
  targets_in = models.shift_targets(inputs["targets"][target], mask, module.start_value)
  out = module.apply({"params": params}, inputs["features"], targets_in, mask,
                     deterministic=False, rngs={"dropout": key})
  return out[:, -1]


def _temporal_predict(module, params, features, valid):
  from aan_jax.models import aan as models  # pylint: disable=g-import-not-at-top
  return models.predict_movie(module, {"params": params}, features, module.window, valid=valid)


_TEMPORAL_DROPOUT = ("dropout", "attention_dropout", "output_dropout")
register_model("temporal_aan", ModelSpec(
    lambda c: _temporal_build(c, feature_layers=0), _temporal_init, _temporal_inputs,
    _temporal_train, _temporal_predict, label="Temporal AAN", dropout_fields=_TEMPORAL_DROPOUT))
# Feature+Temporal: the per-segment feature encoder has num_layers layers too.
register_model("feature_temporal_aan", ModelSpec(
    lambda c: _temporal_build(c, feature_layers=c.num_layers), _temporal_init,
    _temporal_inputs, _temporal_train, _temporal_predict, label="Feature+Temporal AAN",
    dropout_fields=_TEMPORAL_DROPOUT))


# The field's baselines (aan_jax.models.baselines): recurrent (or per-item) models over a group's
# sequence of items, trained statefully on consecutive windows (`_train_sequential`) and
# evaluated on the whole group at once from a zero state.


def output_range(config) -> tuple[float, float]:
  """config.output_range "lo,hi" ("" = (-1, 1)): where a regression tanh head maps to."""
  text = str(config.get("output_range", "") or "").strip()
  if not text:
    return (-1.0, 1.0)
  lo, hi = (float(x) for x in text.split(","))
  return (lo, hi)


def _baseline_build(kind: str):
  def build(config):
    from aan_jax.models import baselines  # pylint: disable=g-import-not-at-top
    mods = canonical_modalities(config.modalities)
    task = config.get("_task", "regression")
    if task not in baselines.TASKS:
      raise ValueError(f"unknown task {task!r}; expected one of {baselines.TASKS}")
    if kind == "linear":
      return baselines.LinearBaseline(mods, dropout=config.dropout, task=task,
                                      output_range=output_range(config))
    cls = baselines.LSTMBaseline if kind == "lstm" else baselines.LateFusionLSTM
    return cls(mods, projection=config.get("projection", 8), hidden=config.get("hidden", 512),
               num_layers=config.get("lstm_layers", 1), input_dropout=config.dropout,
               dropout=config.dropout, task=task, output_range=output_range(config))
  return build


def _baseline_init(module, key):
  return module.init(key, module.dummy_features(1, 1))["params"]


def _baseline_carry(module, batch):
  return module.initial_carry(batch)


def _baseline_window(module, params, features, carry, mask, key):
  return module.apply({"params": params}, features, carry, deterministic=False, mask=mask,
                      rngs={"dropout": key})


def _baseline_predict(module, params, features, valid):
  # The whole group in one call from the zero state; padding leaves the state untouched.
  out, _ = module.apply({"params": params}, {m: x[None] for m, x in features.items()},
                        None, True, valid[None])
  return out[0]


for _kind, _label, _fields in (("lstm", "LSTM", ("input_dropout", "dropout")),
                               ("lstm_late_fusion", "LSTM, late fusion",
                                ("input_dropout", "dropout")),
                               ("linear", "Linear", ("dropout",))):
  register_model(_kind, ModelSpec(
      _baseline_build(_kind), _baseline_init, None, None, _baseline_predict, label=_label,
      dropout_fields=_fields, sequential=True, init_carry=_baseline_carry,
      train_window=_baseline_window))


# ------------------------------------------------------------------------------- runs


def stable_id(*parts) -> int:
  """A 31-bit id from names: a run's PRNG stream does not depend on which runs train with it."""
  h = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
  return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


@dataclasses.dataclass(frozen=True)
class Runs:
  """The runs of an experiment: numpy arrays with a leading run axis R."""
  target: np.ndarray        # (R,) index into the experiment's targets
  fold: np.ndarray          # (R,) index into the folds
  seed: np.ndarray          # (R,) seed index (0 .. seeds-1)
  point: np.ndarray         # (R,) grid point index
  run_id: np.ndarray        # (R,) stable id for the run's PRNG stream
  train_weight: np.ndarray  # (R, G) 1 for training groups
  val_idx: np.ndarray       # (R, V) validation groups (padded)
  val_ok: np.ndarray        # (R, V)
  test_idx: np.ndarray      # (R, T) test groups (padded)
  test_ok: np.ndarray       # (R, T)
  hparams: dict             # name -> (R,) per-run hyperparameters (RUN_HPARAMS)
  names: tuple              # (R,) "target/fold/seedK/pN"

  def __len__(self):
    return len(self.target)

  def select(self, rows) -> "Runs":
    """The runs at `rows` (e.g. those of one batch size)."""
    rows = np.asarray(rows)
    kw = {}
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if f.name == "hparams":
        kw[f.name] = {k: a[rows] for k, a in v.items()}
      elif f.name == "names":
        kw[f.name] = tuple(v[i] for i in rows)
      else:
        kw[f.name] = v[rows]
    return Runs(**kw)


def pad_lists(lists: Sequence[Sequence[int]], width: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
  """(idx, ok): index lists as rows of one int32 array padded with 0 (to `width`, default the
  longest), and where the real entries are."""
  width = width or max(1, max((len(x) for x in lists), default=1))
  idx = np.zeros((len(lists), width), np.int32)
  ok = np.zeros((len(lists), width), bool)
  for r, x in enumerate(lists):
    idx[r, :len(x)] = x
    ok[r, :len(x)] = True
  return idx, ok


def make_runs(targets: Sequence[str], folds: Sequence[Fold], num_groups: int,
              points: Sequence[dict], seeds: int = 1) -> Runs:
  """Runs = targets x folds x seeds x grid points (in that nesting order)."""
  rows = []
  for t, target in enumerate(targets):
    for f, fold in enumerate(folds):
      for s in range(seeds):
        for p, point in enumerate(points):
          rows.append((t, f, s, p, f"{target}/{fold.name}/seed{s}/p{p}"))
  if not rows:
    raise ValueError("no runs: no target, fold or grid point")
  t, f, s, p, names = zip(*rows)
  i32 = lambda x: np.asarray(x, np.int32)
  val_idx, val_ok = pad_lists([folds[i].validation for i in f])
  test_idx, test_ok = pad_lists([folds[i].test for i in f])
  hp = {k: np.asarray([points[i][k] for i in p],
                      np.int32 if k == "patience" else np.float32) for k in RUN_HPARAMS}
  return Runs(i32(t), i32(f), i32(s), i32(p), i32([stable_id(n) for n in names]),
              np.stack([folds[i].weights(num_groups) for i in f]), val_idx, val_ok,
              test_idx, test_ok, hp, tuple(names))


def shared_batch_size(batch_size: int, n_rows: int, train_rows: np.ndarray) -> int:
  """Rows per shared batch, so that each run sees `batch_size` training rows on average.

  Every run reads the same batch of rows and weighs the rows it does not train on zero,
  so the batch is scaled up by all rows / a run's training rows (the runs' mean); the
  number of steps per epoch then matches a per-fold loop with `batch_size`.
  """
  mean_train = float(np.mean(train_rows))
  if mean_train < 1:
    raise ValueError("a run has no training row: check the protocol's training groups")
  return max(1, round(batch_size * n_rows / mean_train))


def normalisation(corpus: Corpus, mods: Sequence[str], train_weight: np.ndarray,
                  enabled: bool) -> dict:
  """Per-run feature mean and std from that run's training rows only: name -> (R, dim)."""
  out = {"mean": {}, "std": {}}
  folds, inverse = np.unique(train_weight, axis=0, return_inverse=True)
  inverse = np.asarray(inverse).reshape(-1)
  for m in mods:
    x = corpus.features[m]
    r, d = train_weight.shape[0], x.shape[-1]
    if not enabled:
      out["mean"][m] = np.zeros((r, d), np.float32)
      out["std"][m] = np.ones((r, d), np.float32)
      continue
    mean = np.zeros((len(folds), d), np.float32)
    std = np.ones((len(folds), d), np.float32)
    for i, w in enumerate(folds):
      rows = x[(w > 0)[:, None] & corpus.mask]
      mean[i] = rows.mean(0, dtype=np.float64)
      sd = rows.std(0, dtype=np.float64)
      # A constant feature (std 0) passes through centred, not blown up.
      std[i] = np.where(sd > 1e-6 * np.maximum(1.0, np.abs(mean[i])), sd, 1.0)
    out["mean"][m] = mean[inverse]
    out["std"][m] = std[inverse]
  return out


def class_weights(corpus: Corpus, target: str, train_weight: np.ndarray) -> np.ndarray:
  """(R,) negatives / positives among each run's training rows (1 where not binary)."""
  if corpus.task(target) != "binary":
    return np.ones(len(train_weight), np.float32)
  lab = corpus.label_mask[target]
  y = corpus.targets[target]
  out = []
  for w in train_weight:
    rows = (w > 0)[:, None] & lab
    pos = float((y[rows] > 0.5).sum())
    neg = float(rows.sum()) - pos
    out.append(neg / pos if pos > 0 and neg > 0 else 1.0)
  return np.asarray(out, np.float32)


# ------------------------------------------------------------------------------ state


def _tree_where(cond, new, old):
  """Per-run select: `cond` has the leading (run) axes of every leaf."""
  def pick(a, b):
    c = jnp.reshape(cond, jnp.shape(cond) + (1,) * (jnp.ndim(a) - jnp.ndim(cond)))
    return jnp.where(c, a, b)
  return jax.tree.map(pick, new, old)


@dataclasses.dataclass(frozen=True)
class Plan:
  """Everything static about the compiled program; equal plans share one compilation."""
  config_json: str
  num_groups: int
  num_items: int
  batch: int
  steps: int
  n_valid: int
  tasks: tuple[str, ...]     # per target: "regression" | "binary"
  dropout_traced: bool       # dropout differs per run: the modules get traced rates
  normalize: bool
  early_stopping: str        # "validation" | "held_out" | "off"
  num_devices: int = 1       # the run axis is split over this many local devices
  window: int = 0            # > 0: sequential epoch, items per window (steps = passes x windows)

  @functools.cached_property
  def config(self):
    return ml_collections.ConfigDict(json.loads(self.config_json))

  @functools.cached_property
  def parts(self):
    """(model spec, module, optimizer)."""
    spec = get_model_spec(self.config.model)
    # The learning rate lives in each run's optimizer state (set at init): one program
    # for every rate of a sweep.
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)
    return spec, spec.build(self.config), tx


def _per_run(plan: Plan, fn):
  """`jax.vmap(fn)` over the leading run axis of every argument and result.

  With several devices it runs inside shard_map, each device vmapping its own runs
  (closed-over arrays, such as the shared batch, are replicated): XLA's partitioner
  cannot split a custom call such as the fused CPU encoder (aan_jax.models.kernels) and would
  gather every run onto every device.
  """
  batched = jax.vmap(fn)
  if plan.num_devices == 1:
    return batched
  mesh = Mesh(np.array(jax.local_devices()[:plan.num_devices]), ("runs",))
  # check_vma off: a custom call's results carry no varying-axis types for the checker.
  return jax.shard_map(batched, mesh=mesh, in_specs=P("runs"), out_specs=P("runs"),
                       check_vma=False)


def _run_module(plan: Plan, spec: ModelSpec, module, run):
  """The module with this run's dropout rate (traced) when the rates differ per run."""
  if not plan.dropout_traced:
    return module
  rate = run["hparams"]["dropout"]
  return module.clone(**{f: rate for f in spec.dropout_fields})


def _normalize(plan: Plan, features: dict, run) -> dict:
  if not plan.normalize:
    return features
  return {m: (x - run["norm_mean"][m]) / run["norm_std"][m] for m, x in features.items()}


def binary_loss(logits, y, w, pos_weight):
  """Class-weighted binary cross-entropy: positives weigh `pos_weight` (negatives/positives
  of the training rows), so an imbalanced label cannot be fitted by one class."""
  c = w * jnp.where(y > 0.5, pos_weight, 1.0)
  nll = jnp.where(y > 0.5, jax.nn.softplus(-logits), jax.nn.softplus(logits))
  return jnp.sum(c * nll) / jnp.maximum(jnp.sum(c), 1e-6)


def _task_loss(plan: Plan, pred, y, w, run):
  hp = run["hparams"]
  losses = []
  if "regression" in plan.tasks:
    losses.append(hp["mse_weight"] * metrics.mse(pred, y, w)
                  + hp["pcc_weight"] * (1.0 - metrics.pearson(pred, y, w)))
  if "binary" in plan.tasks:
    losses.append(binary_loss(pred, y, w, run["pos_weight"]))
  if len(losses) == 1:
    return losses[0]
  return jnp.where(run["binary"], losses[1], losses[0])


def _predict_groups(plan: Plan, spec, module, params, data, run, idx):
  """(len(idx), I) raw outputs of one run on the groups `idx`."""
  def one(g):
    feats = {m: x[g] for m, x in data["features"].items()}
    return spec.predict_group(module, params, _normalize(plan, feats, run), data["mask"][g])
  return jax.vmap(one)(idx)


def _train_items(plan: Plan, state, data, runs, k_perm, k_drop, active):
  """The epoch's steps over shuffled items (every model but the sequential ones)."""
  spec, module, tx = plan.parts
  items, b, steps = plan.num_items, plan.batch, plan.steps
  valid = data["row_ok"]
  # Usable rows first, in random order; the others sort last and are never used.
  order = jnp.argsort(jnp.where(valid, jax.random.uniform(k_perm, valid.shape), 2.0))
  pad = steps * b - order.shape[0]
  if pad > 0:
    order = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)])
  order = order[:steps * b].reshape(steps, b)
  real = (jnp.arange(steps * b) < plan.n_valid).reshape(steps, b)

  # Parameters travel through the epoch as one flat vector per run, so that Adam and the
  # stopped-run select are a few ops on one array rather than a few per leaf (~100 leaves
  # of a few to a few thousand numbers); the optimizer state is kept flat throughout.
  _, unravel = ravel_pytree(jax.tree.map(lambda x: x[0], state["params"]))

  def step(carry, xs):
    flat, opt_state = carry
    rows, row_ok, i = xs
    group, item = rows // items, rows % items
    inputs = spec.batch_inputs(module, data, group, item)  # gathered once for all runs
    y_all = data["targets"][:, group, item]
    lab_all = data["label_mask"][:, group, item]

    def one(flat, opt_state, run, act):
      w = run["train_weight"][group] * row_ok * lab_all[run["target"]]
      y = y_all[run["target"]]
      k = jax.random.fold_in(jax.random.fold_in(k_drop, i), run["run_id"])
      mod = _run_module(plan, spec, module, run)
      x = dict(inputs, features=_normalize(plan, inputs["features"], run))
      loss_fn = lambda p: _task_loss(
          plan, spec.train_predict(mod, p, x, run["target"], k), y, w, run)
      loss, grads = jax.value_and_grad(loss_fn)(unravel(flat))
      grads = ravel_pytree(grads)[0]
      updates, new_opt = tx.update(grads, opt_state, flat)
      new_flat = optax.apply_updates(flat, updates)
      # A stopped run keeps its parameters and optimizer state untouched.
      return (jnp.where(act, new_flat, flat), _tree_where(act, new_opt, opt_state), loss)

    flat, opt_state, loss = _per_run(plan, one)(flat, opt_state, runs, active)
    return (flat, opt_state), loss

  flat = jax.vmap(lambda p: ravel_pytree(p)[0])(state["params"])
  (flat, opt_state), losses = jax.lax.scan(
      step, (flat, state["opt_state"]), (order, real, jnp.arange(steps)))
  params = jax.vmap(unravel)(flat)
  train_loss = jnp.mean(losses, axis=0)
  return params, opt_state, train_loss


def _train_sequential(plan: Plan, state, data, runs, k_perm, k_drop, active):
  """The epoch of a stateful model: batch rows are groups (films), each step a window.

  The usable groups are shuffled and taken `plan.batch` at a time (one pass each); a pass
  walks its groups from their first item in windows of `plan.window` consecutive items,
  one optimizer step per window. Each run keeps its own carry per row, passed from one
  window to the next through `jax.lax.stop_gradient` (truncated backpropagation through
  time), zeroed at the pass's start (each row starts a film) and left unchanged on padding
  past a group's end. A run's loss weighs its training groups' labelled items only, so
  its validation and test groups (run through for the carry's sake) weigh zero; a window
  in which a run has nothing to train on leaves its parameters and optimizer untouched
  (no Adam step on a zero gradient). The train loss is the mean over the windows trained.
  """
  spec, module, tx = plan.parts
  items, b, w = plan.num_items, plan.batch, plan.window
  per_pass = -(-items // w)
  passes = plan.steps // per_pass
  film_ok = data["film_ok"]
  order = jnp.argsort(jnp.where(film_ok, jax.random.uniform(k_perm, film_ok.shape), 2.0))
  pad = passes * b - order.shape[0]
  if pad > 0:
    order = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)])
  order = order[:passes * b].reshape(passes, b)
  real = (jnp.arange(passes * b) < plan.n_valid).reshape(passes, b)
  rows_at = jnp.repeat(order, per_pass, axis=0)                  # (steps, b)
  real_at = jnp.repeat(real, per_pass, axis=0)
  start_at = jnp.tile(jnp.arange(per_pass, dtype=jnp.int32) * w, passes)   # (steps,)
  mods = tuple(data["features"])

  _, unravel = ravel_pytree(jax.tree.map(lambda x: x[0], state["params"]))
  n_runs = active.shape[0]
  carry0 = jax.tree.map(lambda a: jnp.zeros((n_runs,) + a.shape, a.dtype),
                        jax.eval_shape(lambda: spec.init_carry(module, b)))

  def step(carry, xs):
    flat, opt_state, rnn = carry
    rows, row_ok, s0, i = xs
    idx = s0 + jnp.arange(w)
    inside = idx < items
    idx = jnp.minimum(idx, items - 1)
    at = (rows[:, None], idx[None, :])                            # (b, w) gathers
    feats = {m: data["features"][m][at] for m in mods}           # once for all runs
    seg_ok = data["mask"][at] & inside[None, :] & row_ok[:, None]
    y_all = data["targets"][(slice(None),) + at]
    lab_all = data["label_mask"][(slice(None),) + at]

    def one(flat, opt_state, rnn, run, act):
      wt = run["train_weight"][rows][:, None] * seg_ok * lab_all[run["target"]]
      y = y_all[run["target"]]
      k = jax.random.fold_in(jax.random.fold_in(k_drop, i), run["run_id"])
      mod = _run_module(plan, spec, module, run)
      x = _normalize(plan, feats, run)
      # Truncated BPTT: the carry enters as a constant; a pass's first window starts at zero.
      rnn_in = jax.tree.map(lambda c: jnp.where(s0 == 0, jnp.zeros_like(c), c),
                            jax.lax.stop_gradient(rnn))

      def loss_fn(p):
        out, new = spec.train_window(mod, p, x, rnn_in, seg_ok, k)
        return _task_loss(plan, out.reshape(-1), y.reshape(-1), wt.reshape(-1), run), new

      (loss, new_rnn), grads = jax.value_and_grad(loss_fn, has_aux=True)(unravel(flat))
      grads = ravel_pytree(grads)[0]
      updates, new_opt = tx.update(grads, opt_state, flat)
      new_flat = optax.apply_updates(flat, updates)
      trained = act & (jnp.sum(wt) > 0)
      return (jnp.where(trained, new_flat, flat), _tree_where(trained, new_opt, opt_state),
              new_rnn, jnp.where(trained, loss, 0.0), trained)

    flat, opt_state, rnn, loss, trained = _per_run(plan, one)(
        flat, opt_state, rnn, runs, active)
    return (flat, opt_state, rnn), (loss, trained)

  flat = jax.vmap(lambda p: ravel_pytree(p)[0])(state["params"])
  (flat, opt_state, _), (losses, trained) = jax.lax.scan(
      step, (flat, state["opt_state"], carry0),
      (rows_at, real_at, start_at, jnp.arange(plan.steps)))
  params = jax.vmap(unravel)(flat)
  n = jnp.sum(trained, axis=0)
  train_loss = jnp.where(n > 0, jnp.sum(losses, axis=0) / jnp.maximum(n, 1), jnp.nan)
  return params, opt_state, train_loss


def _epoch_impl(plan: Plan, state, data, runs, key):
  """One epoch for every run that has not stopped; then its early-stopping update."""
  spec, module, _ = plan.parts
  epoch = state["epoch"]
  k_perm, k_drop = jax.random.split(jax.random.fold_in(key, epoch))
  active = ~state["stopped"]
  train = _train_sequential if spec.sequential else _train_items
  params, opt_state, train_loss = train(plan, state, data, runs, k_perm, k_drop, active)

  if plan.early_stopping == "off":
    val = jnp.full_like(train_loss, jnp.nan)
    improved = active
  else:
    def evaluate(params, run):
      pred = _predict_groups(plan, spec, module, params, data, run, run["val_idx"])
      g = run["val_idx"]
      y = data["targets"][run["target"]][g]
      w = data["label_mask"][run["target"]][g] & run["val_ok"][:, None]
      return _task_loss(plan, pred.reshape(-1), y.reshape(-1), w.reshape(-1), run)
    val = _per_run(plan, evaluate)(params, runs)
    improved = active & (val < state["best_loss"])
  bad = jnp.where(improved, 0, state["bad_epochs"] + active.astype(jnp.int32))
  stopped = state["stopped"]
  if plan.early_stopping != "off":
    stopped = stopped | (bad >= runs["hparams"]["patience"])
  return {
      "params": params, "opt_state": opt_state,
      "best_params": _tree_where(improved, params, state["best_params"]),
      "best_loss": jnp.where(improved, val, state["best_loss"]),
      "best_epoch": jnp.where(improved, epoch, state["best_epoch"]),
      "bad_epochs": bad, "stopped": stopped,
      "epochs_trained": state["epochs_trained"] + active.astype(jnp.int32),
      "train_loss": state["train_loss"].at[:, epoch].set(jnp.where(active, train_loss, jnp.nan)),
      "val_loss": state["val_loss"].at[:, epoch].set(jnp.where(active, val, jnp.nan)),
      "epoch": epoch + 1,
  }


def _chunk_impl(plan: Plan, state, data, runs, key, end_epoch):
  """Epochs until `end_epoch` or until every run has stopped."""
  cond = lambda st: (st["epoch"] < end_epoch) & ~jnp.all(st["stopped"])
  # The encoder implementation is read while tracing: the block is inside the program.
  with layers.encoder_impl(plan.config.get("_encoder_impl", "xla")):
    return jax.lax.while_loop(cond, lambda st: _epoch_impl(plan, st, data, runs, key), state)


# Looked up at call time (not bound here) so that tests can count traces of _chunk_impl.
_chunk = jax.jit(lambda *a: _chunk_impl(*a), static_argnums=0, donate_argnums=1)


@functools.partial(jax.jit, static_argnums=0)
def _init(plan: Plan, key, runs):
  spec, module, tx = plan.parts
  def one(run):
    params = spec.init(module, jax.random.fold_in(key, run["run_id"]))
    opt = tx.init(ravel_pytree(params)[0])  # flat: see _epoch_impl
    lr = run["hparams"]["learning_rate"]
    opt = opt._replace(hyperparams={**opt.hyperparams, "learning_rate": lr})
    return params, opt
  return jax.vmap(one)(runs)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _predict(plan: Plan, params, data, runs, which: str):
  """(R, n, I) raw outputs of each run's `params` on its test or validation groups."""
  spec, module, _ = plan.parts
  with layers.encoder_impl(plan.config.get("_encoder_impl", "xla")):
    return _per_run(plan, lambda p, run: _predict_groups(
        plan, spec, module, p, data, run, run[f"{which}_idx"]))(params, runs)


def prng_impl(name: str):
  """jax.random's impl for config.prng_impl ("hash32": aan_jax.util.prng's counter hash)."""
  from aan_jax.util import prng  # pylint: disable=g-import-not-at-top
  return prng.HASH32 if name == "hash32" else name


# Config keys that do not change the compiled program or the results.
_NOT_IN_PLAN = ("checkpoint_every", "max_devices", "compilation_cache", "plots", "data_dir",
                "sweep", "seeds")


def run_mesh(num_runs: int, max_devices: int = 0) -> Mesh:
  """The mesh of the run axis: the most local devices (at most `max_devices`, 0 = all) that
  split `num_runs` evenly."""
  devices = jax.local_devices()
  if max_devices:
    devices = devices[:max_devices]
  n = max(d for d in range(1, len(devices) + 1) if num_runs % d == 0)
  return Mesh(np.array(devices[:n]), ("runs",))


class Engine:
  """Training of all runs over one corpus; the compiled programs are shared by plan."""

  def __init__(self, corpus: Corpus, config, targets: Sequence[str], runs: Runs,
               early_stopping: str):
    self.config = config
    spec = get_model_spec(config.model)  # an unknown model fails here, before any array moves
    self.targets = tuple(targets)
    for t in self.targets:
      if t not in corpus.targets:
        raise ValueError(f"corpus {corpus.name!r} has no target {t!r}; it has {sorted(corpus.targets)}")
    self.corpus = corpus
    self.runs = runs
    mods = canonical_modalities(config.modalities)
    missing = [m for m in mods if m not in corpus.features]
    if missing:
      raise ValueError(f"corpus {corpus.name!r} lacks feature {missing[0]!r}; "
                       f"it has {sorted(corpus.features)}")
    g, items = corpus.mask.shape
    label_mask = np.stack([corpus.label_mask[t] for t in self.targets])
    row_ok = (corpus.mask & label_mask.any(0)).reshape(-1)
    n_valid = int(row_ok.sum())
    tasks = tuple(corpus.task(t) for t in self.targets)
    window = 0
    if spec.sequential:
      # Batch rows are groups: `batch_size` training groups per run and step on average.
      film_ok = row_ok.reshape(g, items).any(1)
      n_valid = int(film_ok.sum())
      train_films = [float(((runs.train_weight[r] > 0) & label_mask[runs.target[r]].any(1)
                            ).sum()) for r in range(len(runs))]
      batch = min(n_valid, shared_batch_size(config.batch_size, n_valid,
                                             np.asarray(train_films)))
      window = max(1, min(int(config.window), items))
      steps = math.ceil(n_valid / batch) * math.ceil(items / window)
      run_tasks = sorted({tasks[t] for t in runs.target})
      if len(run_tasks) != 1:
        raise ValueError(f"model {config.model!r} trains one task per program; these runs "
                         f"mix {run_tasks} (aan_jax.training.regression.train groups them by task)")
    else:
      train_rows = [float(((runs.train_weight[r] > 0)[:, None]
                           & label_mask[runs.target[r]]).sum()) for r in range(len(runs))]
      batch = shared_batch_size(config.batch_size, n_valid, np.asarray(train_rows))
      steps = math.ceil(n_valid / batch)
    dropout_traced = len(set(runs.hparams["dropout"].tolist())) > 1
    # The fused CPU encoder takes per-run (traced) dropout rates too, with XLA's masks.
    impl = resolve_encoder_impl(config.encoder_impl)
    cfg = {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_PLAN}
    cfg["_encoder_impl"] = impl
    # Per-run values live in the run arrays, not in the program; the modules are built
    # with the first run's dropout (replaced by each run's own when the rates differ).
    for k in RUN_HPARAMS:
      cfg.pop(k, None)
    cfg["dropout"] = float(runs.hparams["dropout"][0])
    if spec.sequential:
      cfg["_task"] = run_tasks[0]  # the head: tanh for regression, a logit for binary
    self.mesh = self._mesh(len(runs))
    self.plan = Plan(json.dumps(cfg, sort_keys=True, default=list), g, items, batch,
                     steps, n_valid, tasks, dropout_traced,
                     bool(config.normalize), early_stopping, self.mesh.devices.size,
                     window)
    rep = NamedSharding(self.mesh, P())
    self.run_sharding = NamedSharding(self.mesh, P("runs"))
    targets_arr = np.stack([np.where(corpus.label_mask[t], corpus.targets[t], 0.0)
                            for t in self.targets]).astype(np.float32)
    self.data = jax.device_put({
        "features": {k: corpus.features[k] for k in mods},
        "targets": targets_arr, "label_mask": label_mask, "mask": corpus.mask,
        "row_ok": row_ok,
        **({"film_ok": row_ok.reshape(g, items).any(1)} if spec.sequential else {}),
    }, rep)
    self.norm = normalisation(corpus, mods, runs.train_weight, bool(config.normalize))
    pos_weight = np.ones(len(runs), np.float32)
    for ti, t in enumerate(self.targets):
      sel = runs.target == ti
      pos_weight[sel] = class_weights(corpus, t, runs.train_weight[sel])
    self.pos_weight = pos_weight
    self.run_arrays = jax.device_put({
        "target": runs.target, "run_id": runs.run_id, "train_weight": runs.train_weight,
        "val_idx": runs.val_idx, "val_ok": runs.val_ok, "test_idx": runs.test_idx,
        "test_ok": runs.test_ok, "hparams": runs.hparams, "pos_weight": pos_weight,
        "binary": np.asarray([tasks[t] == "binary" for t in runs.target]),
        "norm_mean": self.norm["mean"], "norm_std": self.norm["std"],
    }, self.run_sharding)
    self._init_key, self._train_key = jax.random.split(
        jax.random.key(config.seed, impl=prng_impl(config.prng_impl)))

  def _mesh(self, num_runs: int) -> Mesh:
    return run_mesh(num_runs, self.config.max_devices)

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size

  @property
  def batch(self) -> int:
    return self.plan.batch

  @property
  def steps(self) -> int:
    return self.plan.steps

  def init_state(self) -> dict:
    """Fresh parameters, optimizer and early-stopping state for every run."""
    r, e = len(self.runs), self.config.num_epochs
    params, opt = _init(self.plan, self._init_key, self.run_arrays)
    state = {
        # best_params is a copy: the state is donated, and a buffer may not be donated twice.
        "params": params, "opt_state": opt, "best_params": jax.tree.map(jnp.copy, params),
        "best_loss": jnp.full((r,), jnp.inf, jnp.float32),
        "best_epoch": jnp.full((r,), -1, jnp.int32),
        "bad_epochs": jnp.zeros((r,), jnp.int32),
        "stopped": jnp.zeros((r,), bool),
        "epochs_trained": jnp.zeros((r,), jnp.int32),
        "train_loss": jnp.full((r, e), jnp.nan, jnp.float32),
        "val_loss": jnp.full((r, e), jnp.nan, jnp.float32),
        "epoch": jnp.zeros((), jnp.int32),
    }
    return jax.device_put(state, self.state_sharding(state))

  def state_sharding(self, state):
    rep = NamedSharding(self.mesh, P())
    return {k: jax.tree.map(lambda _: rep if k == "epoch" else self.run_sharding, v)
            for k, v in state.items()}

  def precompile(self) -> list:
    """Starts compiling the training and prediction programs in background threads.

    XLA compiles without the GIL, so the two programs and the parameter initialization
    compile side by side on the cores; the jit caches then hold them. Returns futures;
    `.result()` re-raises their errors.
    """
    import concurrent.futures  # pylint: disable=g-import-not-at-top
    abstract = jax.eval_shape(self.init_state)
    abstract = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                            abstract, self.state_sharding(abstract))
    pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="aan-compile")
    futures = [
        pool.submit(lambda: _chunk.lower(self.plan, abstract, self.data, self.run_arrays,
                                         self._train_key, jnp.int32(0)).compile()),
        pool.submit(lambda: _predict.lower(self.plan, abstract["best_params"], self.data,
                                           self.run_arrays, "test").compile())]
    pool.shutdown(wait=False)
    return futures

  def run_chunk(self, state, end_epoch: int):
    """Trains from state["epoch"] to `end_epoch` (or until every run stopped)."""
    return _chunk(self.plan, state, self.data, self.run_arrays, self._train_key,
                  jnp.int32(end_epoch))

  def predict(self, params, which: str = "test") -> np.ndarray:
    """(R, n, I) raw outputs of each run's `params` on its test (or validation) groups."""
    return np.asarray(_predict(self.plan, params, self.data, self.run_arrays, which))


# ------------------------------------------------------------------------ checkpoints


def fingerprint(engine: Engine) -> dict:
  """What must match for a checkpoint to be resumed: config, data identity and runs."""
  c = engine.corpus
  h = hashlib.sha256()
  for k in sorted(engine.data["features"]):
    h.update(np.ascontiguousarray(c.features[k][:, :4]).tobytes())
  for t in engine.targets:
    h.update(np.ascontiguousarray(c.targets[t]).tobytes())
    h.update(c.label_mask[t].tobytes())
  h.update(c.mask.tobytes())
  cfg = {k: v for k, v in engine.config.to_dict().items()
         if k not in ("checkpoint_every", "max_devices", "compilation_cache", "plots")}
  return {"config": json.loads(json.dumps(cfg, default=str)), "corpus": c.name,
          "groups": len(c.groups), "data_sha256": h.hexdigest(),
          "runs": list(engine.runs.names),
          "hparams": {k: v.tolist() for k, v in engine.runs.hparams.items()}}


class Checkpointer:
  """Orbax checkpoints of a whole training state (every run); `fingerprint` (JSON) names the
  experiment, and a checkpoint of another is refused. The categorical trainer uses it too."""

  def __init__(self, directory: str, fingerprint: dict):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    self._ocp = ocp
    self.directory = os.path.abspath(directory)
    self.fingerprint = fingerprint
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))

  def restore(self, template):
    """The latest state, or None; refuses a checkpoint of a different experiment."""
    step = self.manager.latest_step()
    if step is None:
      return None
    ocp = self._ocp
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), template)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises several types for damaged or foreign files
      raise RuntimeError(
          f"cannot restore the checkpoint in {self.directory} (step {step}): {e}. "
          "Delete that folder or choose another --workdir to start afresh.") from e
    if restored["meta"] != self.fingerprint:
      raise RuntimeError(
          f"the checkpoint in {self.directory} belongs to a different experiment "
          "(config, data or runs differ). Choose another --workdir, or delete that "
          "folder to start afresh.")
    return restored["state"]

  def save(self, state, epoch: int):
    ocp = self._ocp
    self.manager.save(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(self.fingerprint)),
        force=True)
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()
