"""Leave-one-movie-out training: every fold and target in one compiled program.

A *run* is one model trained for one target with one held-out movie. All runs of an
experiment (12 movies x 2 targets for COGNIMUSE) are one leading array axis of the
training state, trained by one jit-compiled program (vmap over runs, lax.scan over the
steps of an epoch, lax.while_loop over epochs). Held-out and validation movies are
per-run weights over the movie axis, never copies of the data: every run sees the same
shuffled batch of segments, in which its held-out and validation rows weigh zero, so the
features are gathered once per step for all runs. The run axis is sharded over all local
devices with jax.sharding when there is more than one.

Models plug in through `MODELS` (a `ModelSpec` per config name); the fold, early
stopping and checkpoint machinery below never looks inside a model.

    from aan_jax import synthetic, train
    result = train.train_loo(synthetic.make_corpus(), train.get_config())
    summary = train.summarize(result)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from aan_jax import metrics
from aan_jax.data import TARGETS, Corpus
from aan_jax.features import AUDIO_FEATURES, FEATURES, VIDEO_FEATURES, canonical_modalities

EARLY_STOPPING_LABELS = {
    "validation": "validation movie drawn from each fold's training movies",
    "held_out": "held-out movie itself (as in the authors' scripts; optimistic)",
    "off": "off (patience 0): parameters after the last epoch",
}


def get_config() -> ml_collections.ConfigDict:
  """Engine defaults: the paper's Feature AAN settings for COGNIMUSE."""
  c = ml_collections.ConfigDict()
  c.model = "feature_aan"
  c.modalities = "all"          # names, comma-separated, or all / audio / video
  c.targets = ("arousal", "valence")
  c.num_epochs = 500
  c.patience = 30               # 0 turns early stopping off
  c.early_stopping = "validation"  # or "held_out" (the authors' scripts)
  c.batch_size = 30             # training rows per run and step, on average
  c.learning_rate = 5e-4
  c.dropout = 0.1
  c.d_model = 8
  c.num_heads = 2
  c.num_layers = 6
  c.ffn = "auto"                # auto: the released variant for the modality set
  # Temporal models only:
  c.window = 5                  # segments per window (5 COGNIMUSE, 4 EIMT16)
  c.norm_first = True           # released layout; False: post-norm as the paper's text
  c.feature_dropout = 0.1       # Feature+Temporal: dropout inside the feature encoder
  c.seed = 0
  c.checkpoint_every = 5        # epochs per compiled chunk (checkpoint + progress)
  c.max_devices = 0             # 0: all local devices
  # hash32 (aan_jax.prng): a cheap counter-based PRNG; like threefry2x32 it draws the same
  # dropout masks for a run whichever runs train with it ("rbg" does not under vmap), and
  # on 2 CPU cores it made a 12-fold step ~40% faster and the program compile ~40% sooner.
  c.prng_impl = "hash32"
  # The Feature AAN's encoder (also the Feature+Temporal AAN's per-segment one): "auto"
  # uses the fused hand-written CPU kernel (aan_jax.kernels) when the default backend is
  # the CPU and the kernel builds, else XLA's; "cpu_kernel" insists; "xla" never uses it.
  c.encoder_impl = "auto"
  return c


def resolve_encoder_impl(setting: str) -> str:
  """"xla" or "cpu_kernel" for config.encoder_impl (see get_config)."""
  from aan_jax import kernels  # pylint: disable=g-import-not-at-top
  if setting == "xla":
    return "xla"
  if setting not in ("auto", "cpu_kernel"):
    raise ValueError(f"encoder_impl must be 'auto', 'xla' or 'cpu_kernel'; got {setting!r}")
  on_cpu = jax.default_backend() == "cpu"
  if setting == "cpu_kernel":
    if not on_cpu:
      raise ValueError(f"encoder_impl='cpu_kernel' needs the CPU backend; JAX's default "
                       f"is {jax.default_backend()!r}: use 'auto' or 'xla'")
    if not kernels.available():
      raise RuntimeError(f"encoder_impl='cpu_kernel' but the fused CPU encoder is not "
                         f"available: {kernels.unavailable_reason()}")
    return "cpu_kernel"
  return "cpu_kernel" if on_cpu and kernels.available() else "xla"


# ----------------------------------------------------------------------------- models


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """How the engine builds, feeds and runs one kind of model.

  data: {"features": name -> (M, S, dim), "targets": (T, M, S), "mask": (M, S)}.
  build(config) -> module.
  init(module, key) -> params.
  batch_inputs(module, data, movie, seg) -> pytree of per-example inputs for rows
    (movie[i], seg[i]); shared by all runs, so it must not depend on the target
    (a temporal model gathers windows of features and of every target).
  train_predict(module, params, inputs, target, key) -> (B,) predictions, training mode.
  predict_movie(module, params, data, movie, target) -> (S,) predictions for every
    segment of one movie in evaluation mode (a temporal model runs its own loop here).
  """
  build: Callable[[ml_collections.ConfigDict], nn.Module]
  init: Callable[[nn.Module, jax.Array], Any]
  batch_inputs: Callable[..., Any]
  train_predict: Callable[..., jax.Array]
  predict_movie: Callable[..., jax.Array]
  label: str = ""


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, spec: ModelSpec) -> None:
  MODELS[name] = spec


def get_model_spec(name: str) -> ModelSpec:
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
  return MODELS[name]


def _feature_aan_build(config):
  from aan_jax import models  # pylint: disable=g-import-not-at-top
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
      ffn=ffn, output_tanh=tanh, encoder_impl=resolve_encoder_impl(config.encoder_impl))


def _feature_aan_init(module, key):
  return module.init(key, module.dummy_features(1))["params"]


def _feature_aan_inputs(module, data, movie, seg):
  return {m: data["features"][m][movie, seg] for m in canonical_modalities(module.modalities)}


def _feature_aan_train(module, params, inputs, target, key):
  del target
  return module.apply({"params": params}, inputs, deterministic=False, rngs={"dropout": key})


def _feature_aan_predict(module, params, data, movie, target):
  del target
  inputs = {m: data["features"][m][movie] for m in canonical_modalities(module.modalities)}
  return module.apply({"params": params}, inputs, deterministic=True)


register_model("feature_aan", ModelSpec(
    _feature_aan_build, _feature_aan_init, _feature_aan_inputs, _feature_aan_train,
    _feature_aan_predict, label="Feature AAN"))


# Temporal AAN and Feature+Temporal AAN: each training example is the window of the last
# `window` segments of a movie ending at the target segment (padded and masked at the
# movie's start, never mixed across movies), trained sequence-to-one with teacher forcing
# (loss on the last position only); evaluation re-feeds the model's own outputs.


def _temporal_build(config, feature_layers: int):
  from aan_jax import models  # pylint: disable=g-import-not-at-top
  return models.TemporalAAN(
      modalities=canonical_modalities(config.modalities), d_model=config.d_model,
      num_heads=config.num_heads, num_layers=config.num_layers, dropout=config.dropout,
      attention_dropout=config.dropout, output_dropout=config.dropout,
      ffn="relu" if config.ffn == "auto" else config.ffn, norm_first=config.norm_first,
      window=config.window, feature_layers=feature_layers,
      feature_dropout=config.feature_dropout,
      encoder_impl=resolve_encoder_impl(config.encoder_impl) if feature_layers else "xla")


def _temporal_init(module, key):
  return module.init(key, *module.dummy_inputs(1))["params"]


def _temporal_inputs(module, data, movie, seg):
  length = module.window
  idx = seg[:, None] - (length - 1) + jnp.arange(length)[None]   # (B, L)
  pad = idx < 0
  idx = jnp.maximum(idx, 0)
  rows = movie[:, None]
  valid = ~pad & data["mask"][rows, idx]
  feats = {m: data["features"][m][rows, idx] for m in canonical_modalities(module.modalities)}
  # Windows of every target: the inputs are shared by all runs; train_predict picks one.
  return {"features": feats, "targets": data["targets"][:, rows, idx], "mask": valid}


def _temporal_train(module, params, inputs, target, key):
  from aan_jax import models  # pylint: disable=g-import-not-at-top
  mask = inputs["mask"]
  targets_in = models.shift_targets(inputs["targets"][target], mask, module.start_value)
  out = module.apply({"params": params}, inputs["features"], targets_in, mask,
                     deterministic=False, rngs={"dropout": key})
  return out[:, -1]


def _temporal_predict(module, params, data, movie, target):
  from aan_jax import models  # pylint: disable=g-import-not-at-top
  del target
  feats = {m: data["features"][m][movie] for m in canonical_modalities(module.modalities)}
  return models.predict_movie(module, {"params": params}, feats, module.window,
                              valid=data["mask"][movie])


register_model("temporal_aan", ModelSpec(
    lambda c: _temporal_build(c, feature_layers=0), _temporal_init, _temporal_inputs,
    _temporal_train, _temporal_predict, label="Temporal AAN"))
# Feature+Temporal: the per-segment feature encoder has num_layers layers too.
register_model("feature_temporal_aan", ModelSpec(
    lambda c: _temporal_build(c, feature_layers=c.num_layers), _temporal_init,
    _temporal_inputs, _temporal_train, _temporal_predict, label="Feature+Temporal AAN"))


# ------------------------------------------------------------------------------- runs


@dataclasses.dataclass(frozen=True)
class Runs:
  """The runs of an experiment: numpy arrays with a leading run axis R."""
  target: np.ndarray        # (R,) index into the targets
  held_out: np.ndarray      # (R,) movie index
  eval_movie: np.ndarray    # (R,) movie that drives early stopping
  fold_id: np.ndarray       # (R,) stable id for RNG: independent of which runs train together
  train_weight: np.ndarray  # (R, M) 1 for training movies, 0 for held-out/validation

  def __len__(self):
    return len(self.target)


def validation_movie(movie: int, num_movies: int, seed: int) -> int:
  """The validation movie of the fold that holds out `movie`, drawn from the others."""
  others = [m for m in range(num_movies) if m != movie]
  return others[int(np.random.default_rng([seed, movie]).integers(len(others)))]


def make_runs(num_movies: int, num_targets: int, config, held_out: Sequence[int] | None = None,
              targets: Sequence[int] | None = None) -> Runs:
  """Runs for the given held-out movies and targets (default: all x all)."""
  mode = early_stopping_mode(config)
  held = list(range(num_movies)) if held_out is None else list(held_out)
  tgts = list(range(num_targets)) if targets is None else list(targets)
  rows = []
  for t in tgts:
    for h in held:
      v = validation_movie(h, num_movies, config.seed) if mode == "validation" else h
      w = np.ones(num_movies, np.float32)
      w[h] = 0.0
      w[v] = 0.0
      rows.append((t, h, v, t * num_movies + h, w))
  t, h, v, f, w = zip(*rows)
  i32 = lambda x: np.asarray(x, np.int32)
  return Runs(i32(t), i32(h), i32(v), i32(f), np.stack(w))


def early_stopping_mode(config) -> str:
  if config.patience < 0:
    raise ValueError(f"patience must be >= 0; got {config.patience}")
  if config.patience == 0:
    return "off"
  if config.early_stopping not in ("validation", "held_out"):
    raise ValueError(f"early_stopping must be 'validation' or 'held_out'; "
                     f"got {config.early_stopping!r}")
  return config.early_stopping


def shared_batch_size(batch_size: int, num_movies: int, config) -> int:
  """Rows per shared batch, so that each run sees `batch_size` training rows on average.

  Every run reads the same batch of segments from all movies and weighs its held-out
  (and validation) rows zero, so the batch is scaled up by movies / training movies;
  the number of steps per epoch then matches a per-fold loop with `batch_size`.
  """
  n_train = num_movies - 1 - (early_stopping_mode(config) == "validation")
  if n_train < 1:
    raise ValueError(f"{num_movies} movies leave no training movie for early stopping "
                     f"{config.early_stopping!r}")
  return max(1, round(batch_size * num_movies / n_train))


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
  num_movies: int
  num_segments: int
  batch: int
  steps: int
  n_valid: int
  num_devices: int = 1  # the run axis is split over this many local devices

  @functools.cached_property
  def config(self):
    return ml_collections.ConfigDict(json.loads(self.config_json))

  @functools.cached_property
  def parts(self):
    """(model spec, module, optimizer, early-stopping mode)."""
    spec = get_model_spec(self.config.model)
    return (spec, spec.build(self.config), optax.adam(self.config.learning_rate),
            early_stopping_mode(self.config))


def _per_run(plan: Plan, fn):
  """`jax.vmap(fn)` over the leading run axis of every argument and result.

  With several devices it runs inside shard_map, each device vmapping its own runs
  (closed-over arrays, such as the shared batch, are replicated): XLA's partitioner
  cannot split a custom call such as the fused CPU encoder (aan_jax.kernels) and would
  gather every run onto every device.
  """
  batched = jax.vmap(fn)
  if plan.num_devices == 1:
    return batched
  mesh = Mesh(np.array(jax.local_devices()[:plan.num_devices]), ("runs",))
  # check_vma off: a custom call's results carry no varying-axis types for the checker.
  return jax.shard_map(batched, mesh=mesh, in_specs=P("runs"), out_specs=P("runs"),
                       check_vma=False)


def _epoch_impl(plan: Plan, state, data, runs, key):
  """One epoch for every run that has not stopped; then its early-stopping update."""
  spec, module, tx, mode = plan.parts
  epoch = state["epoch"]
  k_perm, k_drop = jax.random.split(jax.random.fold_in(key, epoch))
  s, b, steps = plan.num_segments, plan.batch, plan.steps
  valid = data["mask"].reshape(-1)
  # Valid rows first, in random order; padded rows sort last and are never used.
  order = jnp.argsort(jnp.where(valid, jax.random.uniform(k_perm, valid.shape), 2.0))
  pad = steps * b - order.shape[0]
  if pad > 0:
    order = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)])
  order = order[:steps * b].reshape(steps, b)
  real = (jnp.arange(steps * b) < plan.n_valid).reshape(steps, b)
  active = ~state["stopped"]

  # Parameters travel through the epoch as one flat vector per run, so that Adam and the
  # stopped-run select are a few ops on one array rather than a few per leaf (~100 leaves
  # of a few to a few thousand numbers); the optimizer state is kept flat throughout.
  _, unravel = ravel_pytree(jax.tree.map(lambda x: x[0], state["params"]))

  def step(carry, xs):
    flat, opt_state = carry
    rows, row_ok, i = xs
    movie, seg = rows // s, rows % s
    inputs = spec.batch_inputs(module, data, movie, seg)  # gathered once for all runs
    y_all = data["targets"][:, movie, seg]

    def one(flat, opt_state, target, train_weight, fold_id, act):
      w = train_weight[movie] * row_ok
      y = y_all[target]
      k = jax.random.fold_in(jax.random.fold_in(k_drop, i), fold_id)
      loss_fn = lambda p: metrics.aan_loss(
          spec.train_predict(module, p, inputs, target, k), y, w)
      loss, grads = jax.value_and_grad(loss_fn)(unravel(flat))
      grads = ravel_pytree(grads)[0]
      updates, new_opt = tx.update(grads, opt_state, flat)
      new_flat = optax.apply_updates(flat, updates)
      # A stopped run keeps its parameters and optimizer state untouched.
      return (jnp.where(act, new_flat, flat), _tree_where(act, new_opt, opt_state), loss)

    flat, opt_state, loss = _per_run(plan, one)(
        flat, opt_state, runs["target"], runs["train_weight"], runs["fold_id"], active)
    return (flat, opt_state), loss

  flat = jax.vmap(lambda p: ravel_pytree(p)[0])(state["params"])
  (flat, opt_state), losses = jax.lax.scan(
      step, (flat, state["opt_state"]), (order, real, jnp.arange(steps)))
  params = jax.vmap(unravel)(flat)
  train_loss = jnp.mean(losses, axis=0)

  if mode == "off":
    val = jnp.full_like(train_loss, jnp.nan)
    improved = active
  else:
    def evaluate(params, movie, target):
      pred = spec.predict_movie(module, params, data, movie, target)
      return metrics.aan_loss(pred, data["targets"][target, movie], data["mask"][movie])
    val = _per_run(plan, evaluate)(params, runs["eval_movie"], runs["target"])
    improved = active & (val < state["best_loss"])
  bad = jnp.where(improved, 0, state["bad_epochs"] + active.astype(jnp.int32))
  stopped = state["stopped"]
  if mode != "off":
    stopped = stopped | (bad >= plan.config.patience)
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
  return jax.lax.while_loop(cond, lambda st: _epoch_impl(plan, st, data, runs, key), state)


# Looked up at call time (not bound here) so that tests can count traces of _chunk_impl.
_chunk = jax.jit(lambda *a: _chunk_impl(*a), static_argnums=0, donate_argnums=1)


@functools.partial(jax.jit, static_argnums=0)
def _init(plan: Plan, key, fold_id):
  spec, module, tx, _ = plan.parts
  def one(f):
    params = spec.init(module, jax.random.fold_in(key, f))
    return params, tx.init(ravel_pytree(params)[0])  # flat: see _epoch_impl
  return jax.vmap(one)(fold_id)


@functools.partial(jax.jit, static_argnums=0)
def _predict(plan: Plan, params, data, runs):
  spec, module, _, _ = plan.parts
  return _per_run(plan, lambda p, mv, t: spec.predict_movie(module, p, data, mv, t))(
      params, runs["held_out"], runs["target"])


def _prng_impl(name: str):
  from aan_jax import prng  # pylint: disable=g-import-not-at-top
  return prng.HASH32 if name == "hash32" else name


class Engine:
  """Training of all runs over one corpus; the compiled programs are shared by plan."""

  def __init__(self, corpus: Corpus, config, runs: Runs | None = None):
    self.config = config
    self.mode = early_stopping_mode(config)
    get_model_spec(config.model)
    targets = tuple(config.targets)
    for t in targets:
      if t not in corpus.targets:
        raise ValueError(f"corpus {corpus.name!r} has no target {t!r}; it has {sorted(corpus.targets)}")
    self.targets = targets
    self.corpus = corpus
    mods = canonical_modalities(config.modalities)
    missing = [m for m in mods if m not in corpus.features]
    if missing:
      raise ValueError(f"corpus {corpus.name!r} lacks feature {missing[0]!r}; "
                       f"it has {sorted(corpus.features)}")
    m, s = corpus.mask.shape
    self.runs = runs if runs is not None else make_runs(m, len(targets), config)
    batch = shared_batch_size(config.batch_size, m, config)
    n_valid = int(corpus.mask.sum())
    cfg = {k: v for k, v in config.to_dict().items() if k not in ("checkpoint_every", "max_devices")}
    self.mesh = self._mesh(len(self.runs))
    self.plan = Plan(json.dumps(cfg, sort_keys=True, default=list), m, s, batch,
                     math.ceil(n_valid / batch), n_valid, self.mesh.devices.size)
    rep = NamedSharding(self.mesh, P())
    self.run_sharding = NamedSharding(self.mesh, P("runs"))
    self.data = jax.device_put({
        "features": {k: corpus.features[k] for k in mods},
        "targets": np.stack([corpus.targets[t] for t in targets]),
        "mask": corpus.mask,
    }, rep)
    self.run_arrays = jax.device_put(
        {f.name: getattr(self.runs, f.name) for f in dataclasses.fields(Runs)},
        self.run_sharding)
    self._init_key, self._train_key = jax.random.split(
        jax.random.key(config.seed, impl=_prng_impl(config.prng_impl)))

  def _mesh(self, num_runs: int) -> Mesh:
    devices = jax.local_devices()
    if self.config.max_devices:
      devices = devices[:self.config.max_devices]
    # The run axis must split evenly: use the largest device count that divides it.
    n = max(d for d in range(1, len(devices) + 1) if num_runs % d == 0)
    return Mesh(np.array(devices[:n]), ("runs",))

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
    params, opt = _init(self.plan, self._init_key, jnp.asarray(self.runs.fold_id))
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
    compile side by side on the cores (on 2 CPU cores this took ~3 s off a 12-fold run);
    the jit caches then hold them. Returns futures; `.result()` re-raises their errors.
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
                                           self.run_arrays).compile())]
    pool.shutdown(wait=False)
    return futures

  def run_chunk(self, state, end_epoch: int):
    """Trains from state["epoch"] to `end_epoch` (or until every run stopped)."""
    return _chunk(self.plan, state, self.data, self.run_arrays, self._train_key,
                  jnp.int32(end_epoch))

  def predict_held_out(self, state) -> np.ndarray:
    """(R, S) predictions of each run's best parameters on its held-out movie."""
    return np.asarray(_predict(self.plan, state["best_params"], self.data, self.run_arrays))


# ------------------------------------------------------------------------ checkpoints


def _fingerprint(engine: Engine) -> dict:
  """What must match for a checkpoint to be resumed: config and data identity."""
  c = engine.corpus
  h = hashlib.sha256()
  for k in sorted(engine.data["features"]):
    h.update(np.ascontiguousarray(c.features[k][:, :4]).tobytes())
  for t in engine.targets:
    h.update(np.ascontiguousarray(c.targets[t]).tobytes())
  h.update(c.mask.tobytes())
  cfg = {k: v for k, v in engine.config.to_dict().items()
         if k not in ("checkpoint_every", "max_devices")}
  return {"config": json.loads(json.dumps(cfg, default=str)), "corpus": c.name,
          "movies": list(c.movies), "data_sha256": h.hexdigest(),
          "held_out": engine.runs.held_out.tolist(), "targets": engine.runs.target.tolist()}


class Checkpointer:
  """Orbax checkpoints of the whole training state (all runs, their best parameters)."""

  def __init__(self, directory: str, engine: Engine):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    self._ocp = ocp
    self.directory = os.path.abspath(directory)
    self.fingerprint = _fingerprint(engine)
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


# ----------------------------------------------------------------------------- driver


@dataclasses.dataclass
class LooResult:
  """What a leave-one-movie-out experiment produced, as numpy arrays over runs."""
  corpus: Corpus
  targets: tuple[str, ...]
  runs: Runs
  predictions: np.ndarray      # (R, S) on the held-out movie, best parameters
  best_epoch: np.ndarray       # (R,) 0-based; the last epoch when early stopping is off
  epochs_trained: np.ndarray   # (R,)
  train_loss: np.ndarray       # (R, E) NaN after a run stopped
  val_loss: np.ndarray         # (R, E)
  early_stopping: str          # "validation", "held_out" or "off"
  seconds: float
  num_devices: int
  config: dict


def train_loo(corpus: Corpus, config, workdir: str | None = None,
              held_out: Sequence[int] | None = None, targets: Sequence[int] | None = None,
              progress: Callable[[dict], None] | None = None) -> LooResult:
  """Trains every (target, held-out movie) run; resumes from `workdir` if it holds one.

  `progress` is called after each chunk of `config.checkpoint_every` epochs with
  {"epoch", "num_epochs", "running", "runs"}; raising from it stops training after the
  chunk's checkpoint is written.
  """
  t0 = time.time()
  runs = None
  if held_out is not None or targets is not None:
    runs = make_runs(corpus.mask.shape[0], len(config.targets), config, held_out, targets)
  engine = Engine(corpus, config, runs)
  compiling = engine.precompile()
  state = engine.init_state()
  for f in compiling:  # before the first call, so that nothing is compiled twice
    f.result()
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), engine) if workdir else None
  try:
    if ckpt is not None:
      restored = ckpt.restore(state)
      if restored is not None:
        state = restored
    num_epochs = config.num_epochs
    every = max(1, config.checkpoint_every)
    while True:
      epoch = int(state["epoch"])
      running = int((~np.asarray(state["stopped"])).sum())
      if epoch >= num_epochs or running == 0:
        break
      state = engine.run_chunk(state, min(num_epochs, epoch + every))
      if ckpt is not None:
        ckpt.save(state, int(state["epoch"]))
      if progress is not None:
        progress({"epoch": int(state["epoch"]), "num_epochs": num_epochs,
                  "running": int((~np.asarray(state["stopped"])).sum()),
                  "runs": len(engine.runs)})
    preds = engine.predict_held_out(state)
  finally:
    if ckpt is not None:
      ckpt.close()
  return LooResult(
      corpus=corpus, targets=engine.targets, runs=engine.runs, predictions=preds,
      best_epoch=np.asarray(state["best_epoch"]),
      epochs_trained=np.asarray(state["epochs_trained"]),
      train_loss=np.asarray(state["train_loss"]), val_loss=np.asarray(state["val_loss"]),
      early_stopping=engine.mode, seconds=time.time() - t0,
      num_devices=engine.num_devices, config=config.to_dict())


def _stats(pred, target, mask) -> dict:
  out = metrics.RegressionStats.from_batch(pred, target, mask).compute()
  return {k: float(v) for k, v in out.items()}


def summarize(result: LooResult) -> dict:
  """Pooled MSE/PCC/CCC over all held-out predictions per target, and per movie."""
  c, runs = result.corpus, result.runs
  out = {"early_stopping": result.early_stopping,
         "early_stopping_label": EARLY_STOPPING_LABELS[result.early_stopping]}
  for ti, name in enumerate(result.targets):
    sel = np.flatnonzero(runs.target == ti)
    if not len(sel):
      continue
    preds = result.predictions[sel]
    truth = c.targets[name][runs.held_out[sel]]
    mask = c.mask[runs.held_out[sel]]
    pooled = _stats(preds, truth, mask)
    per_movie = {}
    for j, r in enumerate(sel):
      st = _stats(preds[j], truth[j], mask[j])
      st.update(best_epoch=int(result.best_epoch[r]),
                epochs_trained=int(result.epochs_trained[r]),
                early_stopping_movie=c.movies[runs.eval_movie[r]]
                if result.early_stopping != "off" else None)
      per_movie[c.movies[runs.held_out[r]]] = st
    out[name] = {**pooled, "per_movie": per_movie}
  return out
