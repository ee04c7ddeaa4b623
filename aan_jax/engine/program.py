"""What every compiled program of the engine shares: its static plan, the run-axis map, the
per-run select and the flat-parameter Adam step."""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec as P

from aan_jax.engine import specs


@dataclasses.dataclass(frozen=True)
class Plan:
  """Everything static about the compiled programs; equal plans share one compilation."""
  config_json: str
  sampler: str               # the spec's sampler: "shared" | "sequential" | "per_run"
  batch: int                 # rows per step (shared: for all runs; sequential: groups)
  steps: int                 # steps per epoch (per_run: the most any run needs)
  tasks: tuple[str, ...]     # per target: "regression" | "binary" | "categorical"
  early_stopping: str = "off"   # "validation" | "held_out" | "off"
  num_devices: int = 1       # the run axis is split over this many local devices
  run_loop: str = "vmap"     # how a device goes through its runs: "vmap" | "map"
  # group corpora
  num_groups: int = 0
  num_items: int = 0
  n_valid: int = 0           # usable rows (shared) or groups (sequential)
  dropout_traced: bool = False  # dropout differs per run: the modules get traced rates
  normalize: bool = False
  fold_normalisation: bool = False  # groups.FOLD_NORMALISATION: normalisation in the weights
  window: int = 0            # sequential: items per window (steps = passes x windows)
  # clip corpora
  eval_batch: int = 0
  eval_chunks: int = 0
  loss: str = ""             # categorical: "pcce" | "ce"
  positive: tuple[int, ...] = ()
  lam: float = 0.0

  @functools.cached_property
  def config(self):
    return ml_collections.ConfigDict(json.loads(self.config_json))

  @functools.cached_property
  def parts(self):
    """(model spec, module, optimizer)."""
    spec = specs.get_model_spec(self.config.model)
    # The learning rate lives in each run's optimizer state (set at init): one program
    # for every rate of a sweep.
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)
    return spec, spec.build(self.config), tx


def run_mesh(num_runs: int, max_devices: int = 0) -> Mesh:
  """The mesh of the run axis: the most local devices (at most `max_devices`, 0 = all) that
  split `num_runs` evenly."""
  devices = jax.local_devices()
  if max_devices:
    devices = devices[:max_devices]
  n = max(d for d in range(1, len(devices) + 1) if num_runs % d == 0)
  return Mesh(np.array(devices[:n]), ("runs",))


def per_run(plan: Plan, fn, shared: bool = False):
  """`fn` mapped over the leading run axis of every argument and result (with `shared`, the
  first argument, such as the corpus, is passed to every run as it is).

  plan.run_loop "vmap" batches the runs (one op per layer for all of them); "map" runs
  them one after another inside the program (XLA:CPU runs a batch of convolutions more
  slowly than the convolutions one by one). With several devices it runs inside
  shard_map, each device mapping its own runs: XLA's partitioner cannot split a custom
  call such as the fused CPU encoder (aan_jax.models.kernels) and would gather every run
  onto every device.
  """
  if plan.run_loop == "map":
    if shared:
      batched = lambda s, *a: jax.lax.map(lambda x: fn(s, *x), a)
    else:
      batched = lambda *a: jax.lax.map(lambda x: fn(*x), a)
  elif shared:
    batched = lambda s, *a: jax.vmap(fn, in_axes=(None,) + (0,) * len(a))(s, *a)
  else:
    batched = jax.vmap(fn)
  if plan.num_devices == 1:
    return batched
  mesh = Mesh(np.array(jax.local_devices()[:plan.num_devices]), ("runs",))

  def call(*args):
    in_specs = ((P(),) if shared else ()) + (P("runs"),) * (len(args) - int(shared))
    # check_vma off: a custom call's results carry no varying-axis types for the checker.
    return jax.shard_map(batched, mesh=mesh, in_specs=in_specs, out_specs=P("runs"),
                         check_vma=False)(*args)
  return call


def tree_where(cond, new, old):
  """Per-run select: `cond` has the leading (run) axes of every leaf."""
  def pick(a, b):
    c = jnp.reshape(cond, jnp.shape(cond) + (1,) * (jnp.ndim(a) - jnp.ndim(cond)))
    return jnp.where(c, a, b)
  return jax.tree.map(pick, new, old)


def adam_step(tx, flat, opt_state, grads, active):
  """One optimizer step on a run's flat parameter vector; a run that is not `active` keeps
  its parameters and optimizer state untouched.

  Parameters travel through an epoch as one flat vector per run, so that Adam and the
  select are a few ops on one array rather than a few per leaf (~100 leaves of a few to a
  few thousand numbers); the optimizer state is kept flat throughout.
  """
  updates, new_opt = tx.update(grads, opt_state, flat)
  new_flat = optax.apply_updates(flat, updates)
  return jnp.where(active, new_flat, flat), tree_where(active, new_opt, opt_state)


def run_module(plan: Plan, module, run):
  """The module with this run's dropout rate (traced) when the rates differ per run."""
  if not plan.dropout_traced:
    return module
  spec = plan.parts[0]
  rate = run["hparams"]["dropout"]
  return module.clone(**{f: rate for f in spec.dropout_fields})
