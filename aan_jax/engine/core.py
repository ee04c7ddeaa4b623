"""The compiled core: every run of an experiment trained by one jit-compiled program.

All runs are one leading array axis of the training state (mapped over runs, lax.scan over
the steps of an epoch, lax.while_loop over epochs; the run axis is sharded over the local
devices). The epoch's body is the model's sampler (aan_jax.engine.groups for group corpora,
aan_jax.engine.clips for clip corpora); what follows it (early stopping, the best
parameters, the per-epoch history) is the same for every model. Per run: its own PRNG
stream (initialisation, batches, dropout) from a stable id of its name, its learning rate
(optax.inject_hyperparams) and whatever its sampler keeps per run.

    engine = Engine(corpus, config, runs, targets=("arousal",), early_stopping="validation")
    state = loop.train(engine, ...)          # or engine.init_state() + engine.run_chunk(...)
    raw = engine.predict(engine.best(state))  # (R, n, I) or (R, T, C)
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding, PartitionSpec as P

from aan_jax.engine import clips, groups, loop, specs
from aan_jax.engine.program import Plan, per_run, run_mesh, tree_where

# Config keys that never change the compiled program: run-level values (they live in the
# run arrays), and the host loop's and the outputs' settings (aan_jax.engine.loop's list).
PER_RUN_SETTINGS = ("seed", "seeds", "sweep", "sweep_learning_rate", "splits", "learning_rate",
                    "patience", "mse_weight", "pcc_weight", "data_dir")
_SAMPLERS = {"shared": (groups.train_items, groups.predict),
             "sequential": (groups.train_sequential, groups.predict),
             "per_run": (clips.train_epoch, clips.predict)}


def resolve_encoder_impl(setting: str) -> str:
  """"xla" or "cpu_kernel" for config.encoder_impl (aan_jax.models.kernels.resolve)."""
  from aan_jax.models import kernels  # pylint: disable=g-import-not-at-top
  return kernels.resolve(setting)


def prng_impl(name: str):
  """jax.random's impl for config.prng_impl ("hash32": aan_jax.util.prng's counter hash)."""
  from aan_jax.util import prng  # pylint: disable=g-import-not-at-top
  return prng.HASH32 if name == "hash32" else name


def _epoch_impl(plan: Plan, state, data, runs, train_keys):
  """One epoch for every run that has not stopped; then its early-stopping update."""
  train, _ = _SAMPLERS[plan.sampler]
  epoch = state["epoch"]
  active = ~state["stopped"]
  params, opt_state, colls, figures = train(plan, state, data, runs, train_keys, active)
  out = dict(state, params=params, opt_state=opt_state, collections=colls, epoch=epoch + 1,
             epochs_trained=state["epochs_trained"] + active.astype(jnp.int32))
  if plan.early_stopping == "off":
    improved = active
  else:
    val = groups.validation_loss(plan, params, data, runs)
    improved = active & (val < state["best_loss"])
    figures = dict(figures, val_loss=val)
    bad = jnp.where(improved, 0, state["bad_epochs"] + active.astype(jnp.int32))
    out.update(best_params=tree_where(improved, params, state["best_params"]),
               best_loss=jnp.where(improved, val, state["best_loss"]), bad_epochs=bad,
               stopped=state["stopped"] | (bad >= runs["hparams"]["patience"]))
  out["best_epoch"] = jnp.where(improved, epoch, state["best_epoch"])
  out["history"] = {k: h.at[:, epoch].set(jnp.where(active, figures[k], jnp.nan))
                    for k, h in state["history"].items()}
  return out


def _chunk_impl(plan: Plan, state, data, runs, train_keys, end_epoch):
  """Epochs until `end_epoch` or until every run has stopped."""
  from aan_jax.models import layers  # pylint: disable=g-import-not-at-top
  cond = lambda st: (st["epoch"] < end_epoch) & ~jnp.all(st["stopped"])
  # The encoder implementation is read while tracing: the block is inside the program.
  with layers.encoder_impl(plan.config.get("_encoder_impl", "xla")):
    return jax.lax.while_loop(cond, lambda st: _epoch_impl(plan, st, data, runs, train_keys),
                              state)


# Looked up at call time (not bound here) so that tests can count traces of _chunk_impl.
_chunk = jax.jit(lambda *a: _chunk_impl(*a), static_argnums=0, donate_argnums=1)


@functools.partial(jax.jit, static_argnums=0)
def _init_vmapped(plan: Plan, key, run_id):
  spec, module, _ = plan.parts
  return jax.vmap(lambda i: spec.init(module, jax.random.fold_in(key, i), None))(run_id)


@functools.partial(jax.jit, static_argnums=0)
def _init_one(plan: Plan, example, key, run_id):
  """One run's variables; called once per run rather than vmapped: XLA:CPU took minutes
  to compile the vmapped initialisation of VAANet's convolutions, seconds for one."""
  spec, module, _ = plan.parts
  return dict(spec.init(module, jax.random.fold_in(key, run_id), example))


@functools.partial(jax.jit, static_argnums=0)
def _init_opt(plan: Plan, params, learning_rate):
  _, _, tx = plan.parts

  def one(p, lr):
    opt = tx.init(ravel_pytree(p)[0])  # flat: see program.adam_step
    return opt._replace(hyperparams={**opt.hyperparams, "learning_rate": lr})
  return jax.vmap(one)(params, learning_rate)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _predict(plan: Plan, variables, data, runs, which: str):
  from aan_jax.models import layers  # pylint: disable=g-import-not-at-top
  _, predict = _SAMPLERS[plan.sampler]
  with layers.encoder_impl(plan.config.get("_encoder_impl", "xla")):
    return predict(plan, variables, data, runs, which)


class Engine:
  """Training of all runs over one corpus; the compiled programs are shared by plan.

  `targets` and `early_stopping` concern group corpora; a clip corpus has one target (its
  classes) and no validation lists. `positive` are PCCE's positive classes (clip corpora).
  `reference`: all the runs of the experiment when `runs` is one program of several
  (aan_jax.engine.split); they fix what the runs of a program share.
  """

  def __init__(self, corpus, config, runs, targets: Sequence[str] = (),
               early_stopping: str = "off", positive: Sequence[int] = (), reference=None):
    spec = specs.get_model_spec(config.model)  # an unknown model fails before any array moves
    self.config, self.corpus, self.runs, self.spec = config, corpus, runs, spec
    self.targets = tuple(targets)
    self.mesh = run_mesh(len(runs), config.max_devices)
    cfg = {k: v for k, v in config.to_dict().items()
           if k not in loop.NOT_IN_FINGERPRINT + PER_RUN_SETTINGS}
    if spec.categorical:
      if early_stopping != "off":
        raise ValueError(f"model {config.model!r}: the clip protocols have no validation "
                         "lists, so no early stopping")
      parts = clips.setup(corpus, config, spec, runs, positive, self.mesh.devices.size,
                          reference)
      history = ("train_loss", "train_accuracy")
    else:
      parts = groups.setup(corpus, config, spec, self.targets, runs, early_stopping,
                           self.mesh.devices.size, cfg, reference)
      self.norm, self.pos_weight = parts["norm"], parts["pos_weight"]
      history = ("train_loss",) + (() if early_stopping == "off" else ("val_loss",))
    # The fused CPU encoder takes per-run (traced) dropout rates too, with XLA's masks.
    cfg["_encoder_impl"] = resolve_encoder_impl(config.get("encoder_impl", "xla"))
    self.plan = Plan(json.dumps(cfg, sort_keys=True, default=list), **parts["plan"])
    self.history_keys = history
    self.digest, self.test_width = parts["digest"], parts.get("test_width")
    self._example = parts.get("example")
    rep = NamedSharding(self.mesh, P())
    self.run_sharding = NamedSharding(self.mesh, P("runs"))
    self.data = jax.device_put(parts["data"], rep)
    self.run_arrays = jax.device_put(parts["run_arrays"], self.run_sharding)
    root = jax.random.key(config.seed, impl=prng_impl(config.get("prng_impl", "hash32")))
    keys = clips.keys(root) if spec.categorical else groups.keys(root)
    self._init_key, self._train_keys = keys
    self._init = None  # the initialisation program, made on first use (init_state)

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
    """Fresh parameters, optimizer, early-stopping state and history for every run."""
    lr = jnp.asarray(self.runs.hparams["learning_rate"])
    if self._example is None:
      # One program for the whole state: its dozens of small arrays made as eager ops cost
      # a compile each (seconds on a CPU), and one program loads from the XLA cache.
      args = (self._init_key, jnp.asarray(self.runs.run_id), lr)
      if self._init is None:
        # Made where the training wants it (run-sharded): moving it there after took 0.8 s
        # of the README demo.
        shape = jax.eval_shape(self._fresh_state, *args)
        self._init = jax.jit(self._fresh_state, out_shardings=self.state_sharding(shape))
      state = self._init(*args)
    else:
      per = [_init_one(self.plan, self._example, self._init_key, int(i))
             for i in self.runs.run_id]
      state = self._fresh_state(None, None, lr, jax.tree.map(lambda *x: jnp.stack(x), *per))
    return jax.device_put(state, self.state_sharding(state))

  def _fresh_state(self, key, run_id, learning_rate, variables=None) -> dict:
    r, e = len(self.runs), self.config.num_epochs
    if variables is None:
      variables = _init_vmapped(self.plan, key, run_id)
    variables = dict(variables)
    params = variables.pop("params")
    state = {
        "params": params, "collections": variables,
        "opt_state": _init_opt(self.plan, params, learning_rate),
        "best_epoch": jnp.full((r,), -1, jnp.int32),
        "stopped": jnp.zeros((r,), bool),
        "epochs_trained": jnp.zeros((r,), jnp.int32),
        "history": {k: jnp.full((r, e), jnp.nan, jnp.float32) for k in self.history_keys},
        "epoch": jnp.zeros((), jnp.int32),
    }
    if self.plan.early_stopping != "off":
      # best_params is a copy: the state is donated, and a buffer may not be donated twice.
      state.update(best_params=jax.tree.map(jnp.copy, params),
                   best_loss=jnp.full((r,), jnp.inf, jnp.float32),
                   bad_epochs=jnp.zeros((r,), jnp.int32))
    return state

  def state_sharding(self, state):
    rep = NamedSharding(self.mesh, P())
    return {k: jax.tree.map(lambda _: rep if k == "epoch" else self.run_sharding, v)
            for k, v in state.items()}

  @staticmethod
  def best(state) -> dict:
    """The variables to evaluate: the best epoch's parameters under early stopping, else the
    last; with the last epoch's other collections (BatchNorm statistics)."""
    return {"params": state.get("best_params", state["params"]), **state["collections"]}

  def precompile(self) -> list:
    """Starts compiling the training and prediction programs in background threads.

    XLA compiles without the GIL, so the two programs compile side by side on the cores;
    the jit caches then hold them. Returns futures; `.result()` re-raises their errors.
    """
    abstract = jax.eval_shape(self.init_state)
    abstract = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                            abstract, self.state_sharding(abstract))
    pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="aan-compile")
    futures = [
        pool.submit(lambda: _chunk.lower(self.plan, abstract, self.data, self.run_arrays,
                                         self._train_keys, jnp.int32(0)).compile()),
        pool.submit(lambda: _predict.lower(self.plan, self.best(abstract), self.data,
                                           self.run_arrays, "test").compile())]
    pool.shutdown(wait=False)
    return futures

  def run_chunk(self, state, end_epoch: int):
    """Trains from state["epoch"] to `end_epoch` (or until every run stopped)."""
    return _chunk(self.plan, state, self.data, self.run_arrays, self._train_keys,
                  jnp.int32(end_epoch))

  def predict(self, variables, which: str = "test") -> np.ndarray:
    """Raw outputs of each run's `variables`: (R, n, I) on its test (or validation) groups
    of a group corpus, (R, T, C) logits on its test list of a clip corpus."""
    out = np.asarray(_predict(self.plan, variables, self.data, self.run_arrays, which))
    return out[:, :self.test_width] if self.test_width else out


__all__ = ["Engine", "prng_impl", "resolve_encoder_impl", "per_run"]
