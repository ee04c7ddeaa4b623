"""The "per_run" sampler of clip corpora (one labelled example per clip or image).

Unlike the group samplers, whose runs share one batch and weigh the rows they do not train
on zero, each run here draws its own batch from its own training list: a BatchNorm's batch
statistics would be corrupted by zero-weighted rows. A run's batches are its shuffled
training list read with wrap-around, so every row of every batch is one of its training
examples; the rows that wrap around (the last batch of an epoch) are left out of the loss,
so that an epoch's loss counts each example once, as a per-split loop with drop_last=False
does. Per run: its PRNG streams, its learning rate, its BatchNorm statistics.
"""

from __future__ import annotations

import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from aan_jax import tasks
from aan_jax.engine import runs as runs_lib
from aan_jax.engine.program import Plan, adam_step, per_run, tree_where


def digest(corpus) -> str:
  """The data's identity for a checkpoint's fingerprint (inputs' first values, labels, splits)."""
  h = hashlib.sha256()
  n = len(corpus.labels)
  for k in sorted(corpus.inputs):
    h.update(np.ascontiguousarray(corpus.inputs[k].reshape(n, -1)[:, :64]).tobytes())
  h.update(np.asarray(corpus.labels, np.int32).tobytes())
  for tr, te in corpus.splits:
    h.update(np.asarray(tr, np.int64).tobytes() + b"|" + np.asarray(te, np.int64).tobytes())
  return h.hexdigest()


def resolve_run_loop(setting: str) -> str:
  """"auto": vmap on an accelerator, map on a CPU (see training.categorical's run_loop)."""
  if setting == "auto":
    return "map" if jax.default_backend() == "cpu" else "vmap"
  return setting


def setup(corpus, config, spec, runs, positive, num_devices: int, reference=None) -> dict:
  """The plan, the device inputs (data, per-run arrays) and what the outputs need;
  `reference` (default `runs`) fixes the steps per epoch (see groups.setup)."""
  ref = runs if reference is None else reference
  eb = max(1, min(config.eval_batch_size, runs.test_idx.shape[1]))
  chunks = math.ceil(runs.test_idx.shape[1] / eb)
  test_idx, _ = runs_lib.pad_lists(list(runs.test_idx), chunks * eb)  # padding predicts example 0
  batch = int(config.batch_size)
  plan = dict(sampler=spec.sampler, batch=batch,
              steps=int(max(math.ceil(n / batch) for n in ref.n_train)),
              tasks=("categorical",), eval_batch=eb, eval_chunks=chunks, loss=config.loss,
              positive=tuple(positive), lam=float(config.pcce_lambda), num_devices=num_devices,
              run_loop=resolve_run_loop(config.run_loop))
  data = {"inputs": dict(corpus.inputs), "labels": np.asarray(corpus.labels, np.int32)}
  run_arrays = {"run_id": runs.run_id, "hparams": runs.hparams, "train_idx": runs.train_idx,
                "n_train": runs.n_train, "test_idx": test_idx}
  return {"plan": plan, "data": data, "run_arrays": run_arrays,
          "test_width": runs.test_idx.shape[1], "digest": digest(corpus),
          "example": {k: v[:2] for k, v in corpus.inputs.items()}}


def keys(root):
  """(init key, (batch order key, step key)): a run's streams fold in its run id."""
  k_init, k_order, k_step = jax.random.split(root, 3)
  return k_init, (k_order, k_step)


def epoch_batches(key: jax.Array, epoch, run_id, train_idx: jax.Array, n_train,
                  batch: int, steps: int) -> tuple[jax.Array, jax.Array]:
  """One run's batches for one epoch: ((steps, batch) example indices, (steps, batch) loss mask).

  The run's training list (its first n_train entries) in a random order drawn from its
  own stream, read with wrap-around so that every row is one of its training examples;
  the mask is true on each example's first appearance in the epoch only.
  """
  k = jax.random.fold_in(jax.random.fold_in(key, run_id), epoch)
  width = train_idx.shape[0]
  u = jnp.where(jnp.arange(width) < n_train, jax.random.uniform(k, (width,)), 2.0)
  perm = jnp.argsort(u)
  pos = jnp.arange(steps * batch)
  rows = train_idx[perm[pos % jnp.maximum(n_train, 1)]]
  return rows.reshape(steps, batch), (pos < n_train).reshape(steps, batch)


def _gather(data, idx):
  return {k: v[idx] for k, v in data["inputs"].items()}


def train_epoch(plan: Plan, state, data, runs, train_keys, active):
  """One epoch of every run: its own batches, its own BatchNorm statistics."""
  del active  # the clip protocols have no early stopping: every run trains every epoch
  spec, module, tx = plan.parts
  epoch = state["epoch"]
  k_order, k_step = train_keys
  _, unravel = ravel_pytree(jax.tree.map(lambda x: x[0], state["params"]))

  def one(shared, flat, opt_state, colls, run):
    data, epoch = shared
    rows, first = epoch_batches(k_order, epoch, run["run_id"], run["train_idx"],
                                run["n_train"], plan.batch, plan.steps)
    n_steps = (run["n_train"] + plan.batch - 1) // plan.batch
    k_run = jax.random.fold_in(jax.random.fold_in(k_step, run["run_id"]), epoch)

    def step(carry, xs):
      flat, opt_state, colls = carry
      idx, w, i = xs
      inputs = _gather(data, idx)
      labels = data["labels"][idx]

      def loss_fn(f):
        logits, new = spec.train_apply(module, {"params": unravel(f), **colls}, inputs,
                                       jax.random.fold_in(k_run, i))
        return tasks.loss(plan, logits, labels, w, run), (new, logits)

      (loss, (new, logits)), g = jax.value_and_grad(loss_fn, has_aux=True)(flat)
      active = i < n_steps  # a run with a shorter list idles through the last steps
      new_flat, new_opt = adam_step(tx, flat, opt_state, g, active)
      new_colls = {k: new.get(k, v) for k, v in colls.items()}
      wa = w & active
      correct = jnp.sum((jnp.argmax(logits, -1) == labels) & wa)
      return ((new_flat, new_opt, tree_where(active, new_colls, colls)),
              (loss * jnp.sum(wa), correct, jnp.sum(wa)))

    (flat, opt_state, colls), (loss_sum, correct, count) = jax.lax.scan(
        step, (flat, opt_state, colls), (rows, first, jnp.arange(plan.steps)))
    n = jnp.maximum(jnp.sum(count), 1)
    return flat, opt_state, colls, jnp.sum(loss_sum) / n, jnp.sum(correct) / n

  flat = jax.vmap(lambda p: ravel_pytree(p)[0])(state["params"])
  flat, opt_state, colls, loss, acc = per_run(plan, one, shared=True)(
      (data, epoch), flat, state["opt_state"], state["collections"], runs)
  return (jax.vmap(unravel)(flat), opt_state, colls,
          {"train_loss": loss, "train_accuracy": acc})


def predict(plan: Plan, variables, data, runs, which: str = "test"):
  """(R, T, C) test logits of every run, evaluation mode, in chunks of eval_batch."""
  del which  # clip corpora have test lists only
  spec, module, _ = plan.parts
  colls = {k: v for k, v in variables.items() if k != "params"}

  def one(data, p, c, run):
    idx = run["test_idx"].reshape(plan.eval_chunks, plan.eval_batch)
    logits = jax.lax.map(
        lambda i: spec.eval_apply(module, {"params": p, **c}, _gather(data, i))[0], idx)
    return logits.reshape(plan.eval_chunks * plan.eval_batch, -1)
  return per_run(plan, one, shared=True)(data, variables["params"], colls, runs)
