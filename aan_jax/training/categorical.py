"""The categorical task: every split x seed (x learning rate) of a clip classifier in one program.

One labelled example per clip (VideoEmotion-8, Ekman-6: VAANet's inputs; a face crop for
VTT's model). A *run* trains one classifier on one split's training list with one seed and
one learning rate; the runs are the leading array axis of the training state (vmap over
runs, lax.scan over the steps of an epoch, lax.while_loop over epochs, the run axis
sharded over the local devices). Unlike the regression engine (aan_jax.engine.core), whose runs
share one batch and weigh the rows they do not train on zero, each run here draws its own
batch from its own training list: a BatchNorm's batch statistics would be corrupted by
zero-weighted rows. A run's batches are its shuffled training list read with
wrap-around, so every row of every batch is one of its training examples; the rows that
wrap around (the last batch of an epoch) are left out of the loss, so that an epoch's
loss counts each example once, as a per-split loop with drop_last=False does. Per run:
a PRNG stream from a stable id of its split, seed and point, its learning rate
(optax.inject_hyperparams), its BatchNorm statistics.

VAANet's protocol has no validation set: a fixed number of epochs, then the last epoch's
model on the split's test list, in evaluation mode (running BatchNorm averages).

    from aan_jax.training import categorical
    from aan_jax.data import synthetic
    corpus = synthetic.make_clips()
    result = categorical.train(corpus, categorical.get_config())
    summary = categorical.evaluate(result)          # accuracy: the mean over splits

Models plug in through `CLASSIFIERS` (a `ClassifierSpec` per config name).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
import time
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from aan_jax.engine.core import Checkpointer, pad_lists, prng_impl, run_mesh, stable_id
from aan_jax.data.corpus import ClipCorpus
from aan_jax.util.config import ConfigError

# ----------------------------------------------------------------------------- models


@dataclasses.dataclass(frozen=True)
class ClassifierSpec:
  """How the categorical task builds and runs one kind of classifier.

  build(config) -> module (config.num_classes is set from the corpus).
  init(module, key, inputs) -> variables {"params", maybe "batch_stats"}; inputs: name ->
    (B, ...) an example batch.
  train_logits(module, variables, inputs, key) -> (logits (B, C), updated non-param
    collections, {} if none).
  eval_logits(module, variables, inputs) -> (logits (B, C), extras such as attention, maybe {}).
  fit(config, shapes) -> {setting: value}: sizes read from the inputs' shapes (name ->
    per-example shape) for the settings left at 0; optional.
  """
  build: Callable[[ml_collections.ConfigDict], nn.Module]
  init: Callable[[nn.Module, jax.Array, dict], dict]
  train_logits: Callable[..., tuple[jax.Array, dict]]
  eval_logits: Callable[..., tuple[jax.Array, dict]]
  label: str = ""
  fit: Callable[[ml_collections.ConfigDict, dict], dict] | None = None


CLASSIFIERS: dict[str, ClassifierSpec] = {}


def register_classifier(name: str, spec: ClassifierSpec) -> None:
  CLASSIFIERS[name] = spec


def get_classifier(name: str) -> ClassifierSpec:
  if name == "vtt" and name not in CLASSIFIERS:
    from aan_jax.training import faces as vtt_task  # pylint: disable=g-import-not-at-top,unused-import  # registers "vtt"
  if name not in CLASSIFIERS:
    raise ValueError(f"unknown classifier {name!r}; expected one of {sorted(CLASSIFIERS)}")
  return CLASSIFIERS[name]


def _ints(text) -> tuple[int, ...]:
  if isinstance(text, (tuple, list)):
    return tuple(int(x) for x in text)
  return tuple(int(x) for x in str(text).replace("(", "").replace(")", "").split(",")
               if x.strip())


def _vaanet_build(config):
  from aan_jax.models import vaanet  # pylint: disable=g-import-not-at-top
  return vaanet.VAANet(
      num_classes=config.num_classes, seq_len=config.snippets, positions=config.positions,
      backbone_dim=config.backbone_dim, hidden=config.hidden,
      audio_segments=config.audio_segments, audio_frames=config.audio_frames,
      n_mfcc=config.n_mfcc, audio_widths=_ints(config.audio_widths),
      audio_blocks=_ints(config.audio_blocks), audio_dim=config.audio_dim)


def _vaanet_fit(config, shapes):
  s, p, d = shapes["visual"]
  frames, mfcc = shapes["audio"]
  segments = config.audio_segments or 16
  return {"snippets": s, "positions": p, "backbone_dim": d, "n_mfcc": mfcc,
          "audio_segments": segments, "audio_frames": frames // segments}


def _vaanet_init(module, key, inputs):
  return dict(module.init(key, inputs["visual"], inputs["audio"], deterministic=True))


def _vaanet_train(module, variables, inputs, key):
  del key  # VAANet has no dropout
  out, new = module.apply(variables, inputs["visual"], inputs["audio"], deterministic=False,
                          mutable=["batch_stats"])
  return out["logits"], dict(new)


def _vaanet_eval(module, variables, inputs):
  out = module.apply(variables, inputs["visual"], inputs["audio"], deterministic=True)
  return out["logits"], {k: v for k, v in out.items() if k != "logits"}


register_classifier("vaanet", ClassifierSpec(
    _vaanet_build, _vaanet_init, _vaanet_train, _vaanet_eval, label="VAANet", fit=_vaanet_fit))


# ----------------------------------------------------------------------------- config

DATASETS = ("synthetic", "videoemotion8", "ekman6")
LOSSES = ("pcce", "ce")
# Classes of positive polarity for PCCE, by name (VE8: the authors' "pcce_ve8"; Ekman-6:
# joy and surprise, our choice since the authors' code has none; FER's happy and surprise).
POSITIVE_NAMES = ("anticipation", "joy", "surprise", "trust", "happy", "happiness")
# Published top-1 accuracy (%), mean over the official splits.
PUBLISHED = {
    "videoemotion8": {"VAANet (Zhao et al. 2020)": 54.5, "UMFN (Yi et al. 2022)": 55.8},
    "ekman6": {"VAANet (Zhao et al. 2020)": 55.3, "CTEN (CVPR 2023)": 58.2},
}


def get_config() -> ml_collections.ConfigDict:
  """VAANet's training defaults (VAANET.md); sizes left at 0 are read from the data."""
  c = ml_collections.ConfigDict()
  c.dataset = "synthetic"        # synthetic | videoemotion8 | ekman6
  c.tfds_config = "resnet101"    # the builders' backbone config (resnet101 | i3d)
  c.data_dir = ""                # TFDS data_dir; "" = TFDS default
  c.model = "vaanet"
  c.loss = "pcce"                # pcce (the authors' default) | ce
  c.pcce_lambda = 0.5
  c.positive_classes = ""        # PCCE's positive classes, comma-separated; "" = by name
  c.batch_size = 32
  c.learning_rate = 2e-4
  c.num_epochs = 100
  c.splits = ""                  # which splits, comma-separated names or 1-based numbers; "" = all
  c.seed = 0
  # hash32 (aan_jax.util.prng): a cheap counter-based PRNG (as the engine's default); XLA:CPU
  # compiles threefry's initialisation of VAANet's convolutions far more slowly.
  c.prng_impl = "hash32"
  c.seeds = 1                    # runs per split with seeds 0 .. seeds-1
  c.sweep_learning_rate = ""     # comma-separated rates: every one trains in the same program
  c.eval_batch_size = 32         # test clips per evaluation step (memory, not results)
  c.checkpoint_every = 5         # epochs per compiled chunk (checkpoint + progress line)
  c.max_devices = 0              # 0: every local device
  # How a device goes through its runs: "vmap" (batched: one op per layer for all runs) or
  # "map" (one run after another, inside the same program). Batching turns each run's
  # convolutions into one grouped convolution, fast on a GPU but slower on XLA:CPU than
  # the runs one by one; "auto" picks vmap on an accelerator and map on a CPU.
  c.run_loop = "auto"
  c.export = True
  c.plots = True
  c.compilation_cache = "auto"
  # Set by the launcher: the settings given on the command line (comma-separated dotted
  # names); the synthetic demo's sizes replace only defaults that are not among them.
  c.explicit = ""
  # VAANet's sizes: 0 = from the data (snippets, positions, backbone_dim, audio frames).
  c.snippets = 0
  c.positions = 0
  c.backbone_dim = 0
  c.n_mfcc = 0
  c.audio_frames = 0             # MFCC frames per audio segment
  c.audio_segments = 16
  c.hidden = 512
  c.audio_dim = 256
  c.audio_widths = "64,128,256,512"
  c.audio_blocks = "2,2,2,2"
  c.num_classes = 0              # set from the corpus
  c.synthetic = ml_collections.ConfigDict({
      "num_clips": 200, "num_splits": 10, "seed": 0, "snippets": 4, "positions": 4,
      "backbone_dim": 64, "audio_frames": 64, "n_mfcc": 32})
  return c


# The synthetic demo's model: VAANet's layout at sizes that train in minutes on a CPU.
SYNTHETIC_SIZES = {"hidden": 32, "audio_dim": 32, "audio_segments": 4,
                   "audio_widths": "8,16,16,32", "audio_blocks": "1,1,1,1",
                   "num_epochs": 40, "learning_rate": 1e-3}


def validate(config) -> None:
  """Checks every setting before anything is built; one line per problem."""
  problems = []

  def need(ok, msg):
    if not ok:
      problems.append(msg)

  def finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

  def whole(k, low):
    v = config[k]
    need(isinstance(v, int) and not isinstance(v, bool) and v >= low,
         f"{k}: must be a whole number >= {low}; got {v!r}")

  need(config.dataset in DATASETS, f"dataset: unknown {config.dataset!r}; use one of {list(DATASETS)}")
  need(config.model in CLASSIFIERS, f"model: unknown {config.model!r}; use one of {sorted(CLASSIFIERS)}")
  need(config.prng_impl in ("hash32", "threefry2x32", "rbg", "unsafe_rbg"),
       f"prng_impl: unknown {config.prng_impl!r}; use hash32 or threefry2x32")
  need(config.run_loop in ("auto", "vmap", "map"),
       f"run_loop: unknown {config.run_loop!r}; use 'auto', 'vmap' or 'map'")
  need(config.loss in LOSSES, f"loss: unknown {config.loss!r}; use one of {list(LOSSES)}")
  need(finite(config.pcce_lambda) and config.pcce_lambda >= 0,
       f"pcce_lambda: must be a finite number >= 0; got {config.pcce_lambda!r}")
  need(finite(config.learning_rate) and config.learning_rate > 0,
       f"learning_rate: must be a finite number > 0; got {config.learning_rate!r}")
  for k in ("batch_size", "num_epochs", "seeds", "eval_batch_size", "checkpoint_every",
            "audio_segments", "hidden", "audio_dim"):
    whole(k, 1)
  for k in ("snippets", "positions", "backbone_dim", "n_mfcc", "audio_frames", "max_devices",
            "seed"):
    whole(k, 0)
  for k in ("audio_widths", "audio_blocks"):
    try:
      v = _ints(config[k])
      need(len(v) >= 1 and min(v) >= 1, f"{k}: must be positive whole numbers; got {config[k]!r}")
    except ValueError:
      problems.append(f"{k}: {config[k]!r} is not a comma-separated list of whole numbers")
  text = str(config.sweep_learning_rate).strip()
  if text:
    try:
      rates = [float(x) for x in text.split(",") if x.strip()]
      need(rates and all(math.isfinite(r) and r > 0 for r in rates),
           f"sweep_learning_rate: every rate must be a finite number > 0; got {text!r}")
    except ValueError:
      problems.append(f"sweep_learning_rate: {text!r} is not a comma-separated list of numbers")
  if config.dataset == "synthetic":
    s = config.synthetic
    for k, low in (("num_clips", 16), ("num_splits", 1), ("snippets", 1), ("positions", 1),
                   ("backbone_dim", 8), ("audio_frames", 1), ("n_mfcc", 1), ("seed", 0)):
      need(isinstance(s[k], int) and s[k] >= low,
           f"synthetic.{k}: must be a whole number >= {low}; got {s[k]!r}")
  if problems:
    raise ConfigError("\n".join(problems))


def explicit_settings(config) -> frozenset[str]:
  """The settings the command line gave (config.explicit, set by aan_jax.training.launch)."""
  return frozenset(x for x in str(config.get("explicit", "") or "").split(",") if x)


def resolve(config) -> ml_collections.ConfigDict:
  """The synthetic demo's sizes where VAANet's defaults were left (not given on the command
  line, even if equal to the default)."""
  config = config.copy_and_resolve_references()
  if config.dataset == "synthetic":
    defaults, given = get_config(), explicit_settings(config)
    with config.unlocked():
      for k, v in SYNTHETIC_SIZES.items():
        if k not in given and config[k] == defaults[k]:
          config[k] = v
  return config


def positive_classes(config, classes: Sequence[str]) -> tuple[int, ...]:
  """PCCE's positive class indices: the config's names, else VE8/Ekman-6/FER's by name."""
  names = [x.strip().lower() for x in str(config.positive_classes).split(",") if x.strip()]
  lower = [c.lower() for c in classes]
  if names:
    bad = [n for n in names if n not in lower]
    if bad:
      raise ConfigError(f"positive_classes: {bad[0]!r} is not a class of the corpus "
                               f"({', '.join(classes)})")
    return tuple(lower.index(n) for n in names)
  return tuple(i for i, c in enumerate(lower) if c in POSITIVE_NAMES)


# ------------------------------------------------------------------------------- runs


@dataclasses.dataclass(frozen=True)
class Runs:
  """Runs = splits x seeds x learning rates (that nesting), numpy arrays with a leading run axis."""
  split: np.ndarray          # (R,) index into the corpus's splits
  seed: np.ndarray           # (R,)
  point: np.ndarray          # (R,) index into the learning rates
  run_id: np.ndarray         # (R,) stable id: the run's PRNG stream
  learning_rate: np.ndarray  # (R,)
  train_idx: np.ndarray      # (R, L) training examples, padded with 0
  n_train: np.ndarray        # (R,)
  test_idx: np.ndarray       # (R, T) test examples, padded with 0
  test_ok: np.ndarray        # (R, T)
  names: tuple               # "split/seedK/pN"

  def __len__(self):
    return len(self.split)

  def select(self, rows) -> "Runs":
    rows = np.asarray(rows)
    return Runs(**{f.name: (tuple(getattr(self, f.name)[i] for i in rows) if f.name == "names"
                            else getattr(self, f.name)[rows]) for f in dataclasses.fields(self)})


def select_splits(corpus: ClipCorpus, text: str) -> list[int]:
  """Split indices from "" (all), names or 1-based numbers."""
  out = []
  for part in str(text).split(","):
    part = part.strip()
    if not part:
      continue
    if part in corpus.split_names:
      out.append(corpus.split_names.index(part))
    elif part.isdigit() and 1 <= int(part) <= len(corpus.splits):
      out.append(int(part) - 1)
    else:
      raise ConfigError(f"splits: {part!r} is not one of {list(corpus.split_names)} "
                               f"nor a number 1..{len(corpus.splits)}")
  return out or list(range(len(corpus.splits)))


def learning_rates(config) -> list[float]:
  text = str(config.sweep_learning_rate).strip()
  return [float(x) for x in text.split(",") if x.strip()] if text else [float(config.learning_rate)]


def make_runs(corpus: ClipCorpus, config) -> Runs:
  rows = []
  rates = learning_rates(config)
  for k in select_splits(corpus, config.splits):
    for s in range(config.seeds):
      for p in range(len(rates)):
        rows.append((k, s, p, f"{corpus.split_names[k]}/seed{s}/p{p}"))
  k, s, p, names = zip(*rows)
  i32 = lambda x: np.asarray(x, np.int32)
  train_idx, _ = pad_lists([corpus.splits[i][0] for i in k])
  test_idx, test_ok = pad_lists([corpus.splits[i][1] for i in k])
  return Runs(i32(k), i32(s), i32(p),
              i32([stable_id(corpus.name, n) for n in names]),
              np.asarray([rates[i] for i in p], np.float32), train_idx,
              i32([len(corpus.splits[i][0]) for i in k]), test_idx, test_ok, tuple(names))


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


def run_keys(config) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(init, batch order, step) base keys; a run's are these folded with its run id."""
  impl = prng_impl(config.get("prng_impl", "hash32"))
  return tuple(jax.random.split(jax.random.key(config.seed, impl=impl), 3))


def resolve_run_loop(setting: str) -> str:
  if setting == "auto":
    return "map" if jax.default_backend() == "cpu" else "vmap"
  return setting


def classification_loss(logits, labels, weights, loss: str, positive, lam):
  from aan_jax.models import vaanet  # pylint: disable=g-import-not-at-top
  if loss == "pcce":
    return vaanet.pcce_loss(logits, labels, positive, lam, weights)
  return vaanet.ce_loss(logits, labels, weights)


# ------------------------------------------------------------------------------ program


@dataclasses.dataclass(frozen=True)
class Plan:
  """Everything static about the compiled programs; equal plans share one compilation."""
  config_json: str
  batch: int
  steps: int               # per epoch: the most any run needs (others idle through the rest)
  eval_batch: int
  eval_chunks: int
  loss: str
  positive: tuple[int, ...]
  lam: float
  num_devices: int = 1
  run_loop: str = "vmap"   # "vmap" | "map"

  @functools.cached_property
  def config(self):
    return ml_collections.ConfigDict(json.loads(self.config_json))

  @functools.cached_property
  def parts(self):
    """(spec, module, optimizer); the learning rate lives in each run's optimizer state."""
    spec = get_classifier(self.config.model)
    return spec, spec.build(self.config), optax.inject_hyperparams(optax.adam)(learning_rate=0.0)


def _per_run(plan: Plan, fn, nargs: int):
  """`fn(shared, *per_run)` vmapped over the leading run axis of the `nargs` per-run
  arguments; with several devices inside shard_map, each device vmapping its own runs
  (`shared`, such as the corpus, is passed replicated: a closed-over sharded array would
  not match shard_map's manual mesh)."""
  if plan.run_loop == "vmap":
    batched = jax.vmap(fn, in_axes=(None,) + (0,) * nargs)
  else:  # one run after another inside the program (see get_config's run_loop)
    batched = lambda shared, *args: jax.lax.map(lambda a: fn(shared, *a), args)
  if plan.num_devices == 1:
    return batched
  mesh = Mesh(np.array(jax.local_devices()[:plan.num_devices]), ("runs",))
  return jax.shard_map(batched, mesh=mesh, in_specs=(P(),) + (P("runs"),) * nargs,
                       out_specs=P("runs"), check_vma=False)


def _gather(data, idx):
  return {k: v[idx] for k, v in data["inputs"].items()}


def _sel(cond, new, old):
  return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def _epoch_impl(plan: Plan, state, data, runs, keys):
  """One epoch of every run: its own batches, its own BatchNorm statistics."""
  spec, module, tx = plan.parts
  epoch = state["epoch"]
  _, k_order, k_step = keys
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
        logits, new = spec.train_logits(module, {"params": unravel(f), **colls}, inputs,
                                        jax.random.fold_in(k_run, i))
        loss = classification_loss(logits, labels, w, plan.loss, plan.positive, plan.lam)
        return loss, (new, logits)

      (loss, (new, logits)), g = jax.value_and_grad(loss_fn, has_aux=True)(flat)
      updates, new_opt = tx.update(g, opt_state, flat)
      new_flat = optax.apply_updates(flat, updates)
      active = i < n_steps  # a run with a shorter list idles through the last steps
      new_colls = {k: new.get(k, v) for k, v in colls.items()}
      carry = (jnp.where(active, new_flat, flat), _sel(active, new_opt, opt_state),
               _sel(active, new_colls, colls))
      wa = w & active
      correct = jnp.sum((jnp.argmax(logits, -1) == labels) & wa)
      return carry, (loss * jnp.sum(wa), correct, jnp.sum(wa))

    (flat, opt_state, colls), (loss_sum, correct, count) = jax.lax.scan(
        step, (flat, opt_state, colls), (rows, first, jnp.arange(plan.steps)))
    n = jnp.maximum(jnp.sum(count), 1)
    return flat, opt_state, colls, jnp.sum(loss_sum) / n, jnp.sum(correct) / n

  flat = jax.vmap(lambda p: ravel_pytree(p)[0])(state["params"])
  flat, opt_state, colls, loss, acc = _per_run(plan, one, 4)(
      (data, epoch), flat, state["opt_state"], state["collections"], runs)
  return {**state, "params": jax.vmap(unravel)(flat), "opt_state": opt_state,
          "collections": colls, "epoch": epoch + 1,
          "train_loss": state["train_loss"].at[:, epoch].set(loss),
          "train_accuracy": state["train_accuracy"].at[:, epoch].set(acc)}


def _chunk_impl(plan: Plan, state, data, runs, keys, end_epoch):
  return jax.lax.while_loop(lambda st: st["epoch"] < end_epoch,
                            lambda st: _epoch_impl(plan, st, data, runs, keys), state)


# Looked up at call time so that tests can count traces of _chunk_impl.
_chunk = jax.jit(lambda *a: _chunk_impl(*a), static_argnums=0, donate_argnums=1)


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
    opt = tx.init(ravel_pytree(p)[0])  # flat: see _epoch_impl
    return opt._replace(hyperparams={**opt.hyperparams, "learning_rate": lr})
  return jax.vmap(one)(params, learning_rate)


@functools.partial(jax.jit, static_argnums=0)
def _predict(plan: Plan, params, colls, data, runs):
  """(R, T, C) test logits of every run, evaluation mode, in chunks of eval_batch."""
  spec, module, _ = plan.parts

  def one(data, p, c, run):
    idx = run["test_idx"].reshape(plan.eval_chunks, plan.eval_batch)
    logits = jax.lax.map(
        lambda i: spec.eval_logits(module, {"params": p, **c}, _gather(data, i))[0], idx)
    return logits.reshape(plan.eval_chunks * plan.eval_batch, -1)
  return _per_run(plan, one, 3)(data, params, colls, runs)


class Trainer:
  """All runs over one corpus: the compiled programs, their inputs on the devices."""

  def __init__(self, corpus: ClipCorpus, config, runs: Runs):
    spec = get_classifier(config.model)
    self.corpus, self.runs = corpus, runs
    cfg = config.copy_and_resolve_references()
    with cfg.unlocked():
      cfg.num_classes = len(corpus.classes)
      if spec.fit is not None:
        for k, v in spec.fit(cfg, {n: x.shape[1:] for n, x in corpus.inputs.items()}).items():
          if not cfg.get(k):
            cfg[k] = v
    self.config = cfg
    positive = positive_classes(cfg, corpus.classes)
    if cfg.loss == "pcce" and not positive:
      raise ConfigError("loss: pcce needs positive classes; none of "
                               f"{', '.join(corpus.classes)} is known: set positive_classes "
                               "or use loss=ce")
    self.positive = positive
    self.mesh = self._mesh(len(runs))
    eb = max(1, min(cfg.eval_batch_size, runs.test_idx.shape[1]))
    chunks = math.ceil(runs.test_idx.shape[1] / eb)
    test_idx, _ = pad_lists(list(runs.test_idx), chunks * eb)  # padding rows predict example 0
    self.test_width = runs.test_idx.shape[1]
    fixed = {k: v for k, v in cfg.to_dict().items()
             if k not in ("checkpoint_every", "max_devices", "compilation_cache", "plots",
                          "export", "data_dir", "learning_rate", "sweep_learning_rate",
                          "seeds", "seed", "splits")}
    batch = int(cfg.batch_size)
    self.plan = Plan(json.dumps(fixed, sort_keys=True, default=list), batch,
                     int(max(math.ceil(n / batch) for n in runs.n_train)), eb, chunks,
                     cfg.loss, positive, float(cfg.pcce_lambda), self.mesh.devices.size,
                     resolve_run_loop(cfg.run_loop))
    rep = NamedSharding(self.mesh, P())
    self.run_sharding = NamedSharding(self.mesh, P("runs"))
    self.data = jax.device_put({"inputs": dict(corpus.inputs),
                                "labels": np.asarray(corpus.labels, np.int32)}, rep)
    self.run_arrays = jax.device_put({
        "run_id": runs.run_id, "learning_rate": runs.learning_rate,
        "train_idx": runs.train_idx, "n_train": runs.n_train, "test_idx": test_idx,
    }, self.run_sharding)
    self.keys = run_keys(cfg)

  def _mesh(self, num_runs: int) -> Mesh:
    return run_mesh(num_runs, self.config.max_devices)

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size

  def init_state(self) -> dict:
    r, e = len(self.runs), self.config.num_epochs
    example = {k: v[:2] for k, v in self.corpus.inputs.items()}
    per_run = [_init_one(self.plan, example, self.keys[0], int(i)) for i in self.runs.run_id]
    variables = jax.tree.map(lambda *x: jnp.stack(x), *per_run)
    params = variables.pop("params")
    opt = _init_opt(self.plan, params, jnp.asarray(self.runs.learning_rate))
    colls = variables
    state = {"params": params, "opt_state": opt, "collections": colls,
             "epoch": jnp.zeros((), jnp.int32),
             "train_loss": jnp.full((r, e), jnp.nan, jnp.float32),
             "train_accuracy": jnp.full((r, e), jnp.nan, jnp.float32)}
    return jax.device_put(state, self.state_sharding(state))

  def state_sharding(self, state):
    rep = NamedSharding(self.mesh, P())
    return {k: jax.tree.map(lambda _: rep if k == "epoch" else self.run_sharding, v)
            for k, v in state.items()}

  def compile(self) -> float:
    """Compiles the training and prediction programs ahead of time; returns the seconds."""
    t0 = time.time()
    abstract = jax.eval_shape(self.init_state)
    abstract = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                            abstract, self.state_sharding(abstract))
    _chunk.lower(self.plan, abstract, self.data, self.run_arrays, self.keys,
                 jnp.int32(0)).compile()
    _predict.lower(self.plan, abstract["params"], abstract["collections"], self.data,
                   self.run_arrays).compile()
    return time.time() - t0

  def run_chunk(self, state, end_epoch: int):
    return _chunk(self.plan, state, self.data, self.run_arrays, self.keys, jnp.int32(end_epoch))

  def predict(self, state) -> np.ndarray:
    """(R, T, C) test logits in evaluation mode (T: the runs' padded test lists)."""
    out = _predict(self.plan, state["params"], state["collections"], self.data, self.run_arrays)
    return np.asarray(out)[:, :self.test_width]


# ------------------------------------------------------------------------ checkpoints


def fingerprint(trainer: Trainer) -> dict:
  """What must match for a checkpoint to be resumed: config, data identity and runs."""
  c = trainer.corpus
  h = hashlib.sha256()
  for k in sorted(c.inputs):
    h.update(np.ascontiguousarray(c.inputs[k][:, ...].reshape(len(c.labels), -1)[:, :64]).tobytes())
  h.update(np.asarray(c.labels, np.int32).tobytes())
  for tr, te in c.splits:
    h.update(np.asarray(tr, np.int64).tobytes() + b"|" + np.asarray(te, np.int64).tobytes())
  cfg = {k: v for k, v in trainer.config.to_dict().items()
         if k not in ("checkpoint_every", "max_devices", "compilation_cache", "plots", "export",
                      "explicit")}
  return {"config": json.loads(json.dumps(cfg, default=str)), "corpus": c.name,
          "data_sha256": h.hexdigest(), "runs": list(trainer.runs.names)}


# ----------------------------------------------------------------------------- training


@dataclasses.dataclass
class Result:
  """What the runs produced, numpy arrays with a leading run axis R."""
  corpus: ClipCorpus
  runs: Runs
  rates: list
  test_logits: np.ndarray       # (R, T, C), T the padded test lists (runs.test_ok)
  variables: dict               # {"params", other collections}: leaves (R, ...)
  train_loss: np.ndarray        # (R, E)
  train_accuracy: np.ndarray    # (R, E)
  positive: tuple
  seconds: float
  compile_seconds: float
  num_devices: int
  config: dict                  # the resolved config (sizes read from the data)


def train(corpus: ClipCorpus, config, workdir: str | None = None,
          progress: Callable[[dict], None] | None = None) -> Result:
  """Trains every run of `config` on `corpus`; resumes from `workdir` if it holds a checkpoint.

  `progress` is called after each chunk of `config.checkpoint_every` epochs with
  {"epoch", "num_epochs", "running", "runs", "group"}.
  """
  t0 = time.time()
  runs = make_runs(corpus, config)
  trainer = Trainer(corpus, config, runs)
  compile_s = trainer.compile()
  state = trainer.init_state()
  ckpt = (Checkpointer(os.path.join(workdir, "checkpoints"), fingerprint(trainer))
          if workdir else None)
  e = config.num_epochs
  try:
    if ckpt is not None:
      restored = ckpt.restore(state)
      if restored is not None:
        state = restored
    every = max(1, config.checkpoint_every)
    while int(state["epoch"]) < e:
      state = trainer.run_chunk(state, min(e, int(state["epoch"]) + every))
      if ckpt is not None:
        ckpt.save(state, int(state["epoch"]))
      if progress is not None:
        progress({"epoch": int(state["epoch"]), "num_epochs": e, "running": len(runs),
                  "runs": len(runs), "group": "categorical"})
    logits = trainer.predict(state)
  finally:
    if ckpt is not None:
      ckpt.close()
  variables = {"params": state["params"], **state["collections"]}
  return Result(corpus, runs, learning_rates(config), logits.astype(np.float32),
                jax.tree.map(np.asarray, variables), np.asarray(state["train_loss"]),
                np.asarray(state["train_accuracy"]), trainer.positive, time.time() - t0,
                compile_s, trainer.num_devices, trainer.config.to_dict())


# --------------------------------------------------------------------------- evaluation


def _softmax(x):
  x = x - x.max(-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(-1, keepdims=True)


def confusion(labels, predicted, k: int) -> np.ndarray:
  c = np.zeros((k, k), np.int64)
  np.add.at(c, (np.asarray(labels), np.asarray(predicted)), 1)
  return c


def _figures(c: np.ndarray, classes) -> dict:
  support = c.sum(1)
  recall = np.where(support > 0, np.diag(c) / np.maximum(support, 1), np.nan)
  return {"accuracy": float(np.trace(c) / max(c.sum(), 1)), "n": int(c.sum()),
          "mean_recall": float(np.nanmean(recall)) if np.isfinite(recall).any() else math.nan,
          "per_class_recall": {n: (float(r) if np.isfinite(r) else None)
                               for n, r in zip(classes, recall)}}


def _spread(values) -> dict:
  v = np.asarray(values, np.float64)
  return {"std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "min": float(v.min()),
          "max": float(v.max())}


def evaluate(result: Result) -> tuple[dict, dict]:
  """(summary, table): accuracy per run, per split (mean over seeds) and their mean, with
  the spread over splits; per-class recall; the confusion matrix summed over splits."""
  c, runs = result.corpus, result.runs
  k = len(c.classes)
  table = {key: [] for key in ("run", "split", "seed", "point", "id", "label", "predicted")}
  probs_all = []
  per_run, conf_point = {}, {}
  for r in range(len(runs)):
    idx = runs.test_idx[r][runs.test_ok[r]]
    logits = result.test_logits[r][runs.test_ok[r]]
    pred = logits.argmax(-1)
    labels = np.asarray(c.labels)[idx]
    conf = confusion(labels, pred, k)
    p = int(runs.point[r])
    conf_point[p] = conf_point.get(p, 0) + conf
    per_run[runs.names[r]] = {"split": c.split_names[runs.split[r]], "seed": int(runs.seed[r]),
                              "learning_rate": float(runs.learning_rate[r]),
                              "confusion": conf.tolist(), **_figures(conf, c.classes)}
    table["run"] += [runs.names[r]] * len(idx)
    table["split"] += [c.split_names[runs.split[r]]] * len(idx)
    table["seed"] += [int(runs.seed[r])] * len(idx)
    table["point"] += [p] * len(idx)
    table["id"] += [c.ids[i] for i in idx]
    table["label"] += [c.classes[i] for i in labels]
    table["predicted"] += [c.classes[i] for i in pred]
    probs_all.append(_softmax(logits.astype(np.float64)))
  table["probabilities"] = np.concatenate(probs_all)
  points = []
  for p, rate in enumerate(result.rates):
    sel = [r for r in range(len(runs)) if runs.point[r] == p]
    per_split = {}
    for sk in sorted({int(runs.split[r]) for r in sel}):
      rs = [r for r in sel if runs.split[r] == sk]
      conf = sum(np.asarray(per_run[runs.names[r]]["confusion"]) for r in rs)
      figs = _figures(conf, c.classes)
      # The split's accuracy: the mean over its seeds' accuracies.
      figs["accuracy"] = float(np.mean([per_run[runs.names[r]]["accuracy"] for r in rs]))
      figs["seeds"] = len(rs)
      per_split[c.split_names[sk]] = figs
    accs = [f["accuracy"] for f in per_split.values()]
    points.append({"learning_rate": rate, "accuracy": float(np.mean(accs)),
                   "accuracy_spread": _spread(accs), "per_split": per_split,
                   "confusion": np.asarray(conf_point[p]).tolist(),
                   **{"pooled_" + key: v for key, v in _figures(conf_point[p], c.classes).items()
                      if key != "n"}})
  summary = {"classes": list(c.classes), "splits": len(points[0]["per_split"]),
             "runs": per_run}
  if len(points) == 1:
    summary.update({key: points[0][key] for key in ("accuracy", "accuracy_spread", "per_split",
                                                    "confusion", "pooled_accuracy",
                                                    "pooled_mean_recall",
                                                    "pooled_per_class_recall")})
  else:
    # No validation set in this protocol: nothing is selected on the test lists.
    summary.update({"accuracy": None, "sweep": points,
                    "note": "several learning rates: each point's accuracy is in 'sweep'; "
                            "no point is selected (the protocol has no validation set)"})
  return summary, table


def write_predictions(path: str, table: dict, classes) -> None:
  """predictions.csv: run, split, seed, id, label, predicted, one probability per class."""
  import csv  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  from aan_jax.util import atomic  # pylint: disable=g-import-not-at-top
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(["run", "split", "seed", "learning_rate_point", "id", "label", "predicted"]
             + [f"p_{c}" for c in classes])
  for i in range(len(table["id"])):
    w.writerow([table["run"][i], table["split"][i], table["seed"][i], table["point"][i],
                table["id"][i], table["label"][i], table["predicted"][i]]
               + [f"{x:.6f}" for x in table["probabilities"][i]])
  atomic.write_file(path, buf.getvalue())


def write_tensorboard(result: Result, summary: dict, directory: str) -> None:
  """Training loss and accuracy per run and epoch, and its test accuracy (tensorboardX)."""
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("tensorboardX is not installed: no TensorBoard event files "
          "(pip install 'aan-jax[experiments]')", file=sys.stderr)
    return
  for r, name in enumerate(result.runs.names):
    with SummaryWriter(os.path.join(directory, name.replace("/", "_"))) as w:
      for epoch in range(result.train_loss.shape[1]):
        for tag, arr in (("loss/train", result.train_loss),
                         ("accuracy/train", result.train_accuracy)):
          v = float(arr[r, epoch])
          if math.isfinite(v):
            w.add_scalar(tag, v, epoch + 1)
      w.add_scalar("accuracy/test", summary["runs"][name]["accuracy"],
                   result.train_loss.shape[1])


def format_results(out: dict) -> str:
  """The accuracy table, the published figures beside ours."""
  lines = [f"{out.get('label', out.get('model'))} on {out.get('dataset')}: top-1 accuracy on "
           f"each split's test list, last epoch ({out.get('num_epochs')} epochs)", ""]
  if out.get("accuracy") is None:
    for p in out.get("sweep", []):
      lines.append(f"  learning rate {p['learning_rate']:g}: {100 * p['accuracy']:.1f}% "
                   f"(sd {100 * p['accuracy_spread']['std']:.1f} over {len(p['per_split'])} splits)")
    return "\n".join(lines)
  for name, f in out["per_split"].items():
    lines.append(f"  {name:<10} {100 * f['accuracy']:5.1f}%   mean recall "
                 f"{100 * f['mean_recall']:5.1f}%   ({f['n']} test clips)")
  sp = out["accuracy_spread"]
  lines += ["", f"{'ours: mean over ' + str(len(out['per_split'])) + ' splits':<34}"
            f"{100 * out['accuracy']:5.1f}%  (sd {100 * sp['std']:.1f}, "
            f"{100 * sp['min']:.1f}-{100 * sp['max']:.1f})"]
  for name, acc in PUBLISHED.get(out.get("dataset"), {}).items():
    lines.append(f"{name + ' (published)':<34}{acc:5.1f}%")
  if out.get("synthetic"):
    k = out.get("num_classes") or 8
    lines.append(f"(synthetic data: chance is 1/{k} = {100 / k:.1f}%; not comparable with the "
                 "published figures)")
  return "\n".join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The launcher's one call: trains every run, evaluates, writes the output contract."""
  from aan_jax.data import corpora  # pylint: disable=g-import-not-at-top
  from aan_jax.util import xla_cache  # pylint: disable=g-import-not-at-top
  config = resolve(config)
  validate(config)
  xla_cache.enable(config.compilation_cache)
  corpus = corpora.load_clips(config)
  return run_and_write(corpus, config, workdir, {
      "tfds_config": corpus.info.get("config"),
      "protocol": "official splits; last epoch on each split's test list (no validation set)",
      "published": PUBLISHED.get(corpus.name, {})})


def run_and_write(corpus: ClipCorpus, config, workdir: str, meta: dict) -> dict:
  """Trains every run on `corpus` (config resolved and validated), evaluates, and writes the
  output contract: results.json (with `meta`), predictions.csv, models/, tensorboard/,
  plots/confusion.png."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from aan_jax.export import core as export  # pylint: disable=g-import-not-at-top
  from aan_jax.outputs import plots  # pylint: disable=g-import-not-at-top
  from aan_jax.outputs import results as report  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  t0 = time.time()
  os.makedirs(workdir, exist_ok=True)
  runs = make_runs(corpus, config)
  spec = get_classifier(config.model)
  print(f"{spec.label or config.model} on {corpus.name} ({len(corpus.labels)} examples, "
        f"{len(corpus.classes)} classes): {len(runs)} runs ({len(set(runs.split.tolist()))} "
        f"splits x {config.seeds} seeds x {len(learning_rates(config))} learning rates), "
        f"{config.num_epochs} epochs, on {len(jax.local_devices())} {jax.default_backend()} "
        "device(s)", file=sys.stderr, flush=True)
  progress = report.Progress(config.num_epochs)
  try:
    result = train(corpus, config, workdir=workdir, progress=progress)
  finally:
    progress.close()
  summary, table = evaluate(result)
  write_predictions(os.path.join(workdir, "predictions.csv"), table, corpus.classes)
  if config.export:
    export.export_classifiers(result, os.path.join(workdir, "models"))
  write_tensorboard(result, summary, os.path.join(workdir, "tensorboard"))
  if config.plots and summary.get("confusion") is not None:
    plots.plot_confusion(np.asarray(summary["confusion"]), corpus.classes,
                         os.path.join(workdir, "plots", "confusion.png"),
                         f"{corpus.name}: {len(summary['per_split'])} split(s) summed, "
                         f"accuracy {100 * summary['accuracy']:.1f}%")
  out = report.write_results(os.path.join(workdir, "results.json"), summary, {
      "task": "categorical", "model": config.model, "label": spec.label,
      "dataset": corpus.name, "loss": config.loss,
      "positive_classes": [corpus.classes[i] for i in result.positive],
      "num_epochs": config.num_epochs, "batch_size": config.batch_size,
      "split_sizes": {corpus.split_names[k]: [len(tr), len(te)]
                      for k, (tr, te) in enumerate(corpus.splits)},
      "num_classes": len(corpus.classes),
      "seconds": time.time() - t0, "train_seconds": result.seconds,
      "compile_seconds": result.compile_seconds, "devices": result.num_devices,
      "config": result.config, "synthetic": bool(corpus.info.get("synthetic", False)),
      **meta,
  })
  print(format_results(out))
  print(f"\nwrote {os.path.join(workdir, 'results.json')}, predictions.csv, models/, "
        f"tensorboard/, plots/ ({out['seconds']:.1f} s in all)", file=sys.stderr)
  return out


__all__ = ["ClipCorpus", "ClassifierSpec", "CLASSIFIERS", "register_classifier", "get_config",
           "validate", "train", "evaluate", "train_and_evaluate", "Result", "epoch_batches"]
