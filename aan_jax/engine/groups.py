"""The samplers of group corpora (films of segments, excerpts): "shared" and "sequential".

The folds are per-run weights over the corpus's groups, never copies of the data: every run
reads the same shuffled batch of items, in which its validation, test and unlabelled rows
weigh zero, so the features are gathered once per step for all runs. Per run: dropout rate,
loss weights, class weight and feature normalisation (from its training rows only).
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from aan_jax import tasks
from aan_jax.data.features import canonical_modalities
from aan_jax.engine import runs as runs_lib
from aan_jax.engine.program import Plan, adam_step, per_run, run_module


# Training a model whose features enter only through its `proj_<feature>` Dense layers
# (ModelSpec.input_projections) folds each run's normalisation into those layers instead of
# normalising the features per run: the same function, (x - mean) / std @ K + b =
# (x - c) @ (K / std) + (b - ((mean - c) / std) @ K), but the features centred on the mean
# c of the rows the experiment trains on are the same for every run, so that under the run
# axis's vmap each projection and its weight gradient are one matrix product for all runs
# rather than one small product per run (the README demo's compiled epochs, timed per
# chunk on the 2-core CPU: 17.7 s plain, 9.6 s folded, 7.7 s with normalisation off;
# docs/performance.md). The centre keeps the subtraction of large, nearly equal numbers
# out of float32. Equal to the plain path to float rounding
# (tests/test_train.py::test_folded_normalisation_equals_plain); set False for the plain one.
# What the rounding depends on changes: the one product's blocking depends on how many runs
# a program holds (results equal across splits to about 1e-5, not bit for bit), and in
# leave-one-out, where every movie trains some run, a run's held-out movie enters the
# centre (its parameters depend on that movie at float rounding, as before on nothing).
FOLD_NORMALISATION = True


def normalisation(corpus, mods: Sequence[str], train_weight: np.ndarray,
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
    # Each group's count, mean and sum of squared deviations (float64), once; a fold's
    # are combined from its groups' (Chan et al.'s pairwise update), rather than read from
    # its rows again: one pass over the features instead of one per fold.
    n = corpus.mask.sum(1).astype(np.float64)                              # (G,)
    g_mean = np.zeros((len(n), d))
    g_m2 = np.zeros((len(n), d))
    for g in np.flatnonzero(n):
      rows = x[g][corpus.mask[g]].astype(np.float64)
      g_mean[g] = rows.mean(0)
      g_m2[g] = np.square(rows - g_mean[g]).sum(0)
    member = (folds > 0) & (n > 0)[None]                                   # (F, G)
    count = member @ n
    f_mean = (member * n) @ g_mean / np.maximum(count, 1.0)[:, None]
    f_m2 = member @ g_m2
    for f, sel in enumerate(member):
      f_m2[f] += n[sel] @ np.square(g_mean[sel] - f_mean[f])
    sd = np.sqrt(f_m2 / np.maximum(count, 1.0)[:, None])
    mean = f_mean.astype(np.float32)
    # A constant feature (std 0) passes through centred, not blown up.
    std = np.where(sd > 1e-6 * np.maximum(1.0, np.abs(f_mean)), sd, 1.0).astype(np.float32)
    out["mean"][m] = mean[inverse]
    out["std"][m] = std[inverse]
  return out


def class_weights(corpus, target: str, train_weight: np.ndarray) -> np.ndarray:
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


def digest(corpus, mods) -> str:
  """The data's identity for a checkpoint's fingerprint (features' first columns, labels)."""
  h = hashlib.sha256()
  for k in sorted(mods):
    h.update(np.ascontiguousarray(corpus.features[k][:, :4]).tobytes())
  for t in sorted(corpus.targets):
    h.update(np.ascontiguousarray(corpus.targets[t]).tobytes())
    h.update(corpus.label_mask[t].tobytes())
  h.update(corpus.mask.tobytes())
  return h.hexdigest()


def setup(corpus, config, spec, targets, runs, early_stopping: str, num_devices: int,
          plan_config: dict, reference=None) -> dict:
  """The plan, the device inputs (data, per-run arrays) and what the outputs need.

  `reference` (default `runs`): the runs that fix what a program's runs share (the shared
  batch's size, the modules' dropout), all of the experiment's when `runs` is one program
  of several (aan_jax.engine.split), so that a run's figures do not depend on the split."""
  ref = runs if reference is None else reference
  for t in targets:
    if t not in corpus.targets:
      raise ValueError(f"corpus {corpus.name!r} has no target {t!r}; it has {sorted(corpus.targets)}")
  mods = canonical_modalities(config.modalities)
  missing = [m for m in mods if m not in corpus.features]
  if missing:
    raise ValueError(f"corpus {corpus.name!r} lacks feature {missing[0]!r}; "
                     f"it has {sorted(corpus.features)}")
  g, items = corpus.mask.shape
  label_mask = np.stack([corpus.label_mask[t] for t in targets])
  row_ok = (corpus.mask & label_mask.any(0)).reshape(-1)
  n_valid = int(row_ok.sum())
  target_tasks = tuple(corpus.task(t) for t in targets)
  window = 0
  if spec.sequential:
    # Batch rows are groups: `batch_size` training groups per run and step on average.
    film_ok = row_ok.reshape(g, items).any(1)
    n_valid = int(film_ok.sum())
    train_films = [float(((ref.train_weight[r] > 0) & label_mask[ref.target[r]].any(1)
                          ).sum()) for r in range(len(ref))]
    batch = min(n_valid, runs_lib.shared_batch_size(config.batch_size, n_valid,
                                                    np.asarray(train_films)))
    window = max(1, min(int(config.window), items))
    steps = math.ceil(n_valid / batch) * math.ceil(items / window)
    run_tasks = sorted({target_tasks[t] for t in ref.target})
    if len(run_tasks) != 1:
      raise ValueError(f"model {config.model!r} trains one task per program; these runs "
                       f"mix {run_tasks} (aan_jax.training.regression.train groups them by task)")
    plan_config["_task"] = run_tasks[0]  # the head: tanh for regression, a logit for binary
  else:
    train_rows = [float(((ref.train_weight[r] > 0)[:, None]
                         & label_mask[ref.target[r]]).sum()) for r in range(len(ref))]
    batch = runs_lib.shared_batch_size(config.batch_size, n_valid, np.asarray(train_rows))
    steps = math.ceil(n_valid / batch)
  # Per-run values live in the run arrays, not in the program; the modules are built
  # with the first run's dropout (replaced by each run's own when the rates differ).
  plan_config["dropout"] = float(ref.hparams["dropout"][0])
  plan = dict(sampler=spec.sampler, batch=batch, steps=steps, tasks=target_tasks,
              early_stopping=early_stopping, num_devices=num_devices, num_groups=g,
              num_items=items, n_valid=n_valid,
              dropout_traced=len(set(ref.hparams["dropout"].tolist())) > 1,
              normalize=bool(config.normalize), window=window)
  targets_arr = np.stack([np.where(corpus.label_mask[t], corpus.targets[t], 0.0)
                          for t in targets]).astype(np.float32)
  data = {"features": {k: corpus.features[k] for k in mods}, "targets": targets_arr,
          "label_mask": label_mask, "mask": corpus.mask, "row_ok": row_ok,
          **({"film_ok": row_ok.reshape(g, items).any(1)} if spec.sequential else {})}
  plan["fold_normalisation"] = bool(FOLD_NORMALISATION and config.normalize
                                    and spec.input_projections and not spec.sequential)
  if plan["fold_normalisation"]:
    # The centre the folded normalisation works from (see FOLD_NORMALISATION): the mean of
    # the rows that some run of the experiment trains on, so that it does not depend on
    # which runs a program holds, and rows no run trains on (an official test split,
    # unlabelled rows) never enter it.
    trained = (ref.train_weight > 0).any(0)[:, None] & corpus.mask
    data["center"] = {k: (corpus.features[k][trained].mean(0, dtype=np.float64)
                          if trained.any() else np.zeros(corpus.features[k].shape[-1])
                          ).astype(np.float32) for k in mods}
  norm = normalisation(corpus, mods, runs.train_weight, bool(config.normalize))
  pos_weight = np.ones(len(runs), np.float32)
  for ti, t in enumerate(targets):
    sel = runs.target == ti
    pos_weight[sel] = class_weights(corpus, t, runs.train_weight[sel])
  kinds = tasks.kinds(target_tasks)
  run_arrays = {
      "target": runs.target, "run_id": runs.run_id, "train_weight": runs.train_weight,
      "val_idx": runs.val_idx, "val_ok": runs.val_ok, "test_idx": runs.test_idx,
      "test_ok": runs.test_ok, "hparams": runs.hparams, "pos_weight": pos_weight,
      "task_index": np.asarray([kinds.index(target_tasks[t]) for t in runs.target], np.int32),
      "norm_mean": norm["mean"], "norm_std": norm["std"],
  }
  return {"plan": plan, "data": data, "run_arrays": run_arrays, "norm": norm,
          "pos_weight": pos_weight, "digest": digest(corpus, mods)}


def keys(root):
  """(init key, training key): a run's streams fold in its run id."""
  return tuple(jax.random.split(root))


def _normalize(plan: Plan, features: dict, run) -> dict:
  if not plan.normalize:
    return features
  return {m: (x - run["norm_mean"][m]) / run["norm_std"][m] for m, x in features.items()}


def fold_normalisation(path: tuple[str, ...], params, run, center: dict):
  """`params` with each run's feature normalisation folded into its input projections at
  `path` (taking features centred on `center`); see FOLD_NORMALISATION."""
  def fold(tree, depth):
    if depth < len(path):
      return {**tree, path[depth]: fold(tree[path[depth]], depth + 1)}
    out = dict(tree)
    for m, c in center.items():
      layer = tree[f"proj_{m}"]
      scale = 1.0 / run["norm_std"][m]
      shift = (run["norm_mean"][m] - c) * scale
      out[f"proj_{m}"] = {**layer, "kernel": layer["kernel"] * scale[:, None],
                          "bias": layer["bias"] - shift @ layer["kernel"]}
    return out
  return fold(params, 0)


def _predict_groups(plan: Plan, params, data, run, idx):
  """(len(idx), I) raw outputs of one run on the groups `idx`."""
  spec, module, _ = plan.parts

  def one(g):
    feats = {m: x[g] for m, x in data["features"].items()}
    return spec.eval_apply(module, params, _normalize(plan, feats, run), data["mask"][g])
  return jax.vmap(one)(idx)


def predict(plan: Plan, variables, data, runs, which: str):
  """(R, n, I) raw outputs of each run's parameters on its test or validation groups."""
  return per_run(plan, lambda p, run: _predict_groups(
      plan, p, data, run, run[f"{which}_idx"]))(variables["params"], runs)


def validation_loss(plan: Plan, params, data, runs):
  """(R,) each run's task loss on its validation groups (early stopping)."""
  def one(params, run):
    pred = _predict_groups(plan, params, data, run, run["val_idx"])
    g = run["val_idx"]
    y = data["targets"][run["target"]][g]
    w = data["label_mask"][run["target"]][g] & run["val_ok"][:, None]
    return tasks.loss(plan, pred.reshape(-1), y.reshape(-1), w.reshape(-1), run)
  return per_run(plan, one)(params, runs)


def _shuffled(key, usable, rows: int, b: int, n_valid: int):
  """(order, real): the usable entries first, in random order, as `rows` batches of `b`
  (padded with entry 0); `real` marks the first n_valid positions. The others sort last
  and are never used."""
  order = jnp.argsort(jnp.where(usable, jax.random.uniform(key, usable.shape), 2.0))
  pad = rows * b - order.shape[0]
  if pad > 0:
    order = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)])
  order = order[:rows * b].reshape(rows, b)
  return order, (jnp.arange(rows * b) < n_valid).reshape(rows, b)


def train_items(plan: Plan, state, data, runs, train_keys, active):
  """The epoch's steps over shuffled items (the "shared" sampler)."""
  spec, module, tx = plan.parts
  k_perm, k_drop = jax.random.split(jax.random.fold_in(train_keys, state["epoch"]))
  items, b, steps = plan.num_items, plan.batch, plan.steps
  order, real = _shuffled(k_perm, data["row_ok"], steps, b, plan.n_valid)
  _, unravel = ravel_pytree(jax.tree.map(lambda x: x[0], state["params"]))
  folded = plan.fold_normalisation

  def step(carry, xs):
    flat, opt_state = carry
    rows, row_ok, i = xs
    group, item = rows // items, rows % items
    inputs = spec.batch_inputs(module, data, group, item)  # gathered once for all runs
    y_all = data["targets"][:, group, item]
    lab_all = data["label_mask"][:, group, item]
    if folded:  # centred once for all runs
      inputs = dict(inputs, features={m: x - data["center"][m]
                                      for m, x in inputs["features"].items()})

    def one(flat, opt_state, run, act):
      w = run["train_weight"][group] * row_ok * lab_all[run["target"]]
      y = y_all[run["target"]]
      k = jax.random.fold_in(jax.random.fold_in(k_drop, i), run["run_id"])
      mod = run_module(plan, module, run)
      if folded:
        x = inputs
        prep = lambda p: fold_normalisation(spec.input_projections, p, run, data["center"])
      else:
        x = dict(inputs, features=_normalize(plan, inputs["features"], run))
        prep = lambda p: p
      loss_fn = lambda p: tasks.loss(
          plan, spec.train_apply(mod, prep(p), x, run["target"], k), y, w, run)
      loss, grads = jax.value_and_grad(loss_fn)(unravel(flat))
      flat, opt_state = adam_step(tx, flat, opt_state, ravel_pytree(grads)[0], act)
      return flat, opt_state, loss

    flat, opt_state, loss = per_run(plan, one)(flat, opt_state, runs, active)
    return (flat, opt_state), loss

  flat = jax.vmap(lambda p: ravel_pytree(p)[0])(state["params"])
  (flat, opt_state), losses = jax.lax.scan(
      step, (flat, state["opt_state"]), (order, real, jnp.arange(steps)))
  return (jax.vmap(unravel)(flat), opt_state, state["collections"],
          {"train_loss": jnp.mean(losses, axis=0)})


def train_sequential(plan: Plan, state, data, runs, train_keys, active):
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
  k_perm, k_drop = jax.random.split(jax.random.fold_in(train_keys, state["epoch"]))
  items, b, w = plan.num_items, plan.batch, plan.window
  per_pass = -(-items // w)
  passes = plan.steps // per_pass
  order, real = _shuffled(k_perm, data["film_ok"], passes, b, plan.n_valid)
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
      mod = run_module(plan, module, run)
      x = _normalize(plan, feats, run)
      # Truncated BPTT: the carry enters as a constant; a pass's first window starts at zero.
      rnn_in = jax.tree.map(lambda c: jnp.where(s0 == 0, jnp.zeros_like(c), c),
                            jax.lax.stop_gradient(rnn))

      def loss_fn(p):
        out, new = spec.train_window(mod, p, x, rnn_in, seg_ok, k)
        return tasks.loss(plan, out.reshape(-1), y.reshape(-1), wt.reshape(-1), run), new

      (loss, new_rnn), grads = jax.value_and_grad(loss_fn, has_aux=True)(unravel(flat))
      trained = act & (jnp.sum(wt) > 0)
      flat, opt_state = adam_step(tx, flat, opt_state, ravel_pytree(grads)[0], trained)
      return flat, opt_state, new_rnn, jnp.where(trained, loss, 0.0), trained

    flat, opt_state, rnn, loss, trained = per_run(plan, one)(
        flat, opt_state, rnn, runs, active)
    return (flat, opt_state, rnn), (loss, trained)

  flat = jax.vmap(lambda p: ravel_pytree(p)[0])(state["params"])
  (flat, opt_state, _), (losses, trained) = jax.lax.scan(
      step, (flat, state["opt_state"], carry0),
      (rows_at, real_at, start_at, jnp.arange(plan.steps)))
  n = jnp.sum(trained, axis=0)
  train_loss = jnp.where(n > 0, jnp.sum(losses, axis=0) / jnp.maximum(n, 1), jnp.nan)
  return jax.vmap(unravel)(flat), opt_state, state["collections"], {"train_loss": train_loss}


__all__ = ["setup", "keys", "train_items", "train_sequential", "predict", "validation_loss",
           "normalisation", "class_weights"]
