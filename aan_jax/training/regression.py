"""Training and evaluation of an experiment: corpus x protocol x targets x seeds x sweep.

`train_and_evaluate(config, workdir)` is what every launcher calls (the Flax examples'
shape): it loads the corpus, builds the protocol's folds and the runs, trains them all in
one compiled program per batch size (`aan_jax.engine.core`), selects each target's grid point on
validation, and writes the output contract:

    workdir/results.json      pooled figures per target with 95% bootstrap intervals over
                              groups, per-group figures, protocol, config, sweep, timings
    workdir/predictions.csv   one row per test prediction of the selected point
    workdir/models/           every selected run's best parameters (aan_jax.export.load_models)
    workdir/tensorboard/      training and validation loss per run
    workdir/plots/            prediction over truth per test movie (scatter for excerpts)
    workdir/checkpoints/      the whole training state; rerun the command to resume

    from aan_jax.data import synthetic
    from aan_jax.training import regression as train
    result = train.train(synthetic.make_corpus(), train.get_config())
    summary = train.evaluate(result)[0]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from typing import Callable

import jax
import ml_collections
import numpy as np
from ml_collections import config_dict

from aan_jax import engine as eng
from aan_jax import tasks
from aan_jax.data import protocols
from aan_jax.data.corpus import TASKS, TARGETS, Corpus
from aan_jax.data.features import canonical_modalities
from aan_jax.engine import zoo
from aan_jax.evaluation.selection import evaluate, swept_keys  # noqa: F401  (notebooks' entry)
from aan_jax.evaluation import pooled as ev
from aan_jax.outputs import tensorboard
from aan_jax.training import common
from aan_jax.util import distributed
from aan_jax.util.config import Checks, ConfigError, add_scale_settings

DATASETS = ("cognimuse", "eimt16_global", "liris_accede_continuous", "synthetic")




def get_config() -> ml_collections.ConfigDict:
  """Engine defaults: the paper's Feature AAN settings; launchers set their corpus."""
  c = ml_collections.ConfigDict()
  c.dataset = "synthetic"       # cognimuse | eimt16_global | liris_accede_continuous | synthetic
  c.preset = ""                 # whose paper settings fill unset values ("" = dataset's)
  c.tfds_config = ""            # the builder config ("" = the launcher's default)
  c.data_dir = ""               # TFDS data_dir; "" = TFDS default (~/tensorflow_datasets)
  c.protocol = "leave_one_out"  # leave_one_out | fixed_split | official | dev_loo
  c.validation_fraction = 0.1   # fixed_split: training groups drawn for validation
  c.validation_groups = 3       # official: dev movies drawn for validation
  c.model = "feature_aan"
  c.modalities = "all"          # names, comma-separated, or all / audio / video
  c.targets = ("arousal", "valence")
  c.num_epochs = 500
  c.patience = 30               # 0 turns early stopping off
  c.early_stopping = "validation"  # or "held_out" (the authors' scripts; leave_one_out only)
  c.batch_size = 30             # training rows per run and step, on average
  c.target_batch_size = ""      # per target, e.g. "arousal:40,valence:20" (EIMT16)
  c.learning_rate = 5e-4
  c.dropout = 0.1
  c.mse_weight = 1.0            # the loss: mse_weight * MSE + pcc_weight * (1 - PCC)
  c.pcc_weight = 1.0
  c.normalize = True            # per-fold feature normalisation from training rows
  c.d_model = 8
  c.num_heads = 2
  c.num_layers = 6
  c.ffn = "auto"                # auto: the released variant for the modality set
  # Temporal models only:
  c.window = 5                  # segments per window (5 COGNIMUSE, 4 EIMT16)
  c.norm_first = True           # released layout; False: post-norm as the paper's text
  c.feature_dropout = 0.1       # Feature+Temporal: dropout inside the feature encoder
  # Baselines (lstm, lstm_late_fusion, linear), trained statefully on consecutive windows of
  # `window` items per group (the carry passed on, truncated backpropagation):
  c.hidden = 512                # LSTM cells (per modality group for lstm_late_fusion)
  c.projection = 8              # per-modality Dense before the LSTM; 0: the raw features
  c.lstm_layers = 1
  c.output_range = ""           # "lo,hi" of the tanh head; "" = the dataset's (EIMT16 1,5)
  c.seed = 0
  c.seeds = 1                   # runs per fold with seeds seed, seed+1, ...
  c.checkpoint_every = 5        # epochs per compiled chunk (checkpoint + progress)
  c.max_devices = 0             # 0: all local devices
  # hash32 (aan_jax.util.prng): a cheap counter-based PRNG; like threefry2x32 it draws the same
  # dropout masks for a run whichever runs train with it.
  c.prng_impl = "hash32"
  # The Feature AAN's encoder: "auto" uses the fused CPU kernel (aan_jax.models.kernels) on a CPU
  # when it builds and dropout is not swept, else XLA's; "cpu_kernel" insists; "xla" never.
  c.encoder_impl = "auto"
  # Sweeps: comma-separated values per hyperparameter, e.g. "1e-4,5e-4,1e-3"; every grid
  # point trains in the same program, each target's point is chosen on validation.
  c.sweep = ml_collections.ConfigDict({k: "" for k in eng.RUN_HPARAMS})
  c.bootstrap = 1000            # resamples of the groups for the 95% intervals
  c.export = True               # write workdir/models/
  c.plots = True
  c.compilation_cache = "auto"  # aan_jax.util.xla_cache: a folder, "" for off, or auto
  c.synthetic = ml_collections.ConfigDict({
      "segments_per_movie": 360, "seed": 0, "num_movies": 12, "num_epochs": 10,
      "patience": 3, "num_train": 400, "num_test": 100})
  return add_scale_settings(c)  # runs_per_program, distributed (docs/distributed.md)


# The paper's hyperparameters (section IV-B), used where a setting is left unset (None).
MODEL_PRESETS = {
    "feature_aan": {"learning_rate": 5e-4, "dropout": 0.1, "num_epochs": 500},
    "temporal_aan": {"learning_rate": 1e-3, "dropout": 0.5, "num_epochs": 1000},
    "feature_temporal_aan": {"learning_rate": 1e-3, "dropout": 0.5, "num_epochs": 1000},
    # The thesis (seed 002, 4.4-4.5): Adam at 1e-3 (1e-4 also good), dropout 0.5; it trained
    # 50 epochs for lack of time, we allow 200 with the usual early stopping.
    "lstm": {"learning_rate": 1e-3, "dropout": 0.5, "num_epochs": 200},
    "lstm_late_fusion": {"learning_rate": 1e-3, "dropout": 0.5, "num_epochs": 200},
    "linear": {"learning_rate": 1e-3, "dropout": 0.0, "num_epochs": 200},
}
DATASET_PRESETS = {
    "cognimuse": {"patience": 30, "batch_size": 30, "window": 5},
    # EIMT16 (section IV-B): lr 0.01, batch 40 for arousal and 20 for valence, window 4.
    "eimt16_global": {"patience": 30, "learning_rate": 1e-2, "batch_size": 30,
                      "target_batch_size": "arousal:40,valence:20", "window": 4,
                      "output_range": "1,5"},
    "liris_accede_continuous": {"patience": 30, "batch_size": 30, "window": 5},
    "synthetic": {"batch_size": 30, "window": 5},
}
_UNSET = ("num_epochs", "patience", "learning_rate", "dropout", "batch_size",
          "target_batch_size", "window")


def unset_presets(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Makes the preset-able settings placeholders (None = the preset), for launchers."""
  types = {"num_epochs": int, "patience": int, "learning_rate": float, "dropout": float,
           "batch_size": int, "target_batch_size": str, "window": int}
  for k in _UNSET:
    c[k] = config_dict.placeholder(types[k])
  return c


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Fills unset settings from the model's and the dataset's presets (the dataset's win:
  EIMT16's learning rate is 0.01 for every model), then the synthetic demo's epochs."""
  config = config.copy_and_resolve_references()
  preset = dict(MODEL_PRESETS.get(config.model, {}))
  preset.update(DATASET_PRESETS.get(config.get("preset") or config.dataset, {}))
  if config.dataset == "synthetic":
    preset.update(num_epochs=config.synthetic.num_epochs, patience=config.synthetic.patience)
  defaults = get_config()
  with config.unlocked():
    for k in _UNSET:
      if config.get(k) is None:
        config[k] = preset.get(k, defaults[k])
    if not str(config.get("output_range", "") or "").strip():
      config.output_range = preset.get("output_range", "")
  return config


def _floats(text: str) -> list[float]:
  return [float(x) for x in str(text).split(",") if x.strip()]


def sweep_points(config) -> list[dict]:
  """The grid: every combination of the swept values; unswept ones from the config."""
  base = {k: config[k] for k in eng.RUN_HPARAMS}
  axes = [(k, _floats(config.sweep[k])) for k in eng.RUN_HPARAMS if str(config.sweep[k]).strip()]
  points = []
  for combo in itertools.product(*[v for _, v in axes]) if axes else [()]:
    p = dict(base)
    p.update({k: v for (k, _), v in zip(axes, combo)})
    p["patience"] = int(p["patience"])
    points.append(p)
  return points


def swept(config) -> list[str]:
  return [k for k in eng.RUN_HPARAMS if str(config.sweep[k]).strip()]


def target_batch_sizes(config) -> dict[str, int]:
  out = {t: int(config.batch_size) for t in config.targets}
  for part in str(config.target_batch_size or "").split(","):
    if part.strip():
      name, _, size = part.partition(":")
      if name.strip() in out:
        out[name.strip()] = int(size)
  return out


def validate(config) -> None:
  """Checks every setting before anything is built; one line per problem."""
  c = Checks(config)
  need = c.need
  c.choice("model", eng.model_names(categorical=False))
  c.choice("dataset", DATASETS)
  c.choice("protocol", protocols.PROTOCOLS)
  need(config.early_stopping in ("validation", "held_out"),
       f"early_stopping: {config.early_stopping!r}; use 'validation' or 'held_out'")
  try:
    canonical_modalities(config.modalities)
  except ValueError as e:
    c.problems.append(f"modalities: {e}")
  targets = tuple(config.targets)
  need(len(targets) > 0, "targets: none given")
  for t in targets:
    need(t in TARGETS, f"targets: unknown {t!r}; use some of {list(TARGETS)}")
  c.engine_settings()
  for k in ("num_layers", "num_heads", "d_model", "window", "bootstrap", "hidden",
            "lstm_layers"):
    c.whole(k, 1)
  for k in ("projection", "patience"):
    c.whole(k, 0)
  try:
    lo, hi = zoo.output_range(config)
    need(math.isfinite(lo) and math.isfinite(hi) and lo < hi,
         f"output_range: {config.output_range!r} is not lo,hi with lo < hi")
  except ValueError:
    c.problems.append(f"output_range: {config.output_range!r} is not two numbers lo,hi")
  if isinstance(config.d_model, int) and isinstance(config.num_heads, int) and config.num_heads >= 1:
    need(config.d_model % config.num_heads == 0,
         f"d_model: {config.d_model} is not divisible by num_heads {config.num_heads}")
  for k in ("dropout", "feature_dropout"):
    c.number(k, 0, 1)
  for k in ("mse_weight", "pcc_weight"):
    c.number(k, 0)
  c.number("validation_fraction", 0, 1, low_open=True)
  c.whole("validation_groups", 1)
  for part in str(config.target_batch_size or "").split(","):
    if part.strip():
      name, _, size = part.partition(":")
      need(name.strip() in TARGETS and size.strip().isdigit() and int(size) >= 1,
           f"target_batch_size: {part!r} is not target:size with size >= 1")
  for k in eng.RUN_HPARAMS:
    text = str(config.sweep[k]).strip()
    if not text:
      continue
    try:
      values = _floats(text)
    except ValueError:
      c.problems.append(f"sweep.{k}: {text!r} is not a comma-separated list of numbers")
      continue
    for v in values:
      if k == "learning_rate":
        need(math.isfinite(v) and v > 0, f"sweep.learning_rate: {v} is not a finite rate > 0")
      elif k == "dropout":
        need(math.isfinite(v) and 0 <= v < 1, f"sweep.dropout: {v} is not in [0, 1)")
      elif k == "patience":
        need(v >= 0 and v == int(v), f"sweep.patience: {v} is not a whole number >= 0")
      else:
        need(math.isfinite(v) and v >= 0, f"sweep.{k}: {v} is not a finite number >= 0")
  if swept(config) and config.early_stopping == "held_out":
    c.problems.append("sweep: grid points are chosen on validation; with early_stopping="
                      "'held_out' that would be the test movie. Use early_stopping=validation")
  elif swept(config) and not c.problems and early_stopping_mode(config) == "off":
    # Without early stopping no fold carves validation groups, and a grid point would be
    # chosen on nothing (or on the test groups): refuse before training.
    c.problems.append("sweep: grid points are chosen on validation groups, which exist only "
                      "with early stopping; set patience >= 1 (e.g. --config.patience=30), "
                      "or drop the sweep")
  c.done()


def early_stopping_mode(config) -> str:
  patience = [config.patience] + [int(v) for v in _floats(config.sweep.patience or "")]
  return "off" if max(patience) == 0 else config.early_stopping


# ----------------------------------------------------------------------------- training


@dataclasses.dataclass
class Result:
  """What an experiment produced, as numpy arrays over runs (leading axis R)."""
  corpus: Corpus
  targets: tuple[str, ...]
  folds: list
  runs: eng.Runs
  points: list[dict]
  test_predictions: np.ndarray  # (R, T, I) on the test groups, best parameters; scores for binary
  val_predictions: np.ndarray   # (R, V, I) on the validation groups, best parameters
  best_params: object           # pytree, leaves (R, ...)
  norm: dict                    # {"mean"/"std": name -> (R, dim)}
  pos_weight: np.ndarray        # (R,)
  best_epoch: np.ndarray        # (R,) 0-based; the last epoch when early stopping is off
  epochs_trained: np.ndarray    # (R,)
  train_loss: np.ndarray        # (R, E) NaN after a run stopped
  val_loss: np.ndarray          # (R, E)
  early_stopping: str
  seconds: float
  num_devices: int
  batch_sizes: dict
  config: dict
  encoder_impl: str = "xla"     # the encoder the programs ran ("xla" or "cpu_kernel")
  compile_seconds: float = 0.0  # compiling the programs (inside `seconds`)
  split: dict | None = None     # how the runs were split over programs and processes


def train(corpus: Corpus, config, workdir: str | None = None,
          progress: Callable[[dict], None] | None = None,
          folds: list | None = None) -> Result:
  """Trains every run of `config` on `corpus`; resumes from `workdir` if it holds a checkpoint.

  `progress` is called after each chunk of `config.checkpoint_every` epochs with
  {"epoch", "num_epochs", "running", "runs", "group"}; raising from it stops training after
  the chunk's checkpoint is written.
  """
  t0 = time.time()
  mode = early_stopping_mode(config)
  if folds is None:
    folds = protocols.make_folds(corpus, config.protocol, mode, config.seed,
                                 config.validation_fraction, config.validation_groups)
  targets = tuple(config.targets)
  points = sweep_points(config)
  runs = eng.make_runs(targets, folds, len(corpus.groups), points, config.seeds)
  sizes = target_batch_sizes(config)
  # One program per batch size; a sequential model's head depends on the task, so its
  # programs are per task too.
  per_task = eng.get_model_spec(config.model).sequential
  by_size: dict[tuple, list[int]] = {}
  for r in range(len(runs)):
    t = targets[runs.target[r]]
    by_size.setdefault((sizes[t], corpus.task(t) if per_task else ""), []).append(r)

  r_total = len(runs)
  limit, rule = eng.split.runs_per_program(config.runs_per_program, len(jax.local_devices()))
  nproc, me = distributed.count(), distributed.index()
  programs = eng.split.split(by_size, limit, nproc, len(jax.local_devices()))
  cfgs = {}
  for size, task in by_size:
    cfgs[(size, task)] = config.copy_and_resolve_references()
    with cfgs[(size, task)].unlocked():
      cfgs[(size, task)].batch_size = size

  def build(p):
    return eng.Engine(corpus, cfgs[p.group], runs.select(p.padded), targets=targets,
                      early_stopping=mode, reference=runs.select(by_size[p.group]))

  def checkpoint_dir(p):
    size, task = p.group
    sub = "" if len(by_size) == 1 else f"batch{size}" + (f"_{task}" if task else "")
    return os.path.join(sub, p.name if p.count > 1 else "")

  def collect(engine, state):
    best = engine.best(state)
    test, val = engine.predict(best, "test"), engine.predict(best, "val")
    rows = engine.runs
    transform = lambda a: np.stack([tasks.get(corpus.task(targets[rows.target[j]])).transform(
        a[j]) for j in range(len(rows))])
    return {"test": transform(test), "val": transform(val),
            "best_epoch": np.asarray(state["best_epoch"]),
            "epochs_trained": np.asarray(state["epochs_trained"]),
            "history": {k: np.asarray(v) for k, v in state["history"].items()},
            "pos_weight": engine.pos_weight, "norm": engine.norm,
            "params": jax.tree.map(np.asarray, best["params"]),
            "devices": np.int64(engine.num_devices),
            "impl": np.asarray(engine.plan.config.get("_encoder_impl", "xla"))}

  outputs = eng.split.train(programs, build, collect,
                            os.path.join(workdir, "checkpoints") if workdir else None,
                            progress, exchange_dir=(os.path.join(workdir, "distributed")
                                                    if workdir else None),
                            process=me, num_processes=nproc, checkpoint_dir=checkpoint_dir)
  if outputs is None:  # another process gathers and writes
    return None
  out = eng.split.assemble(programs, outputs, r_total)
  history = {k: out["history"].get(k, np.full((r_total, config.num_epochs), np.nan, np.float32))
             for k in ("train_loss", "val_loss")}
  best_epoch, epochs_trained = out["best_epoch"], out["epochs_trained"]
  if mode == "off":
    best_epoch = epochs_trained - 1
  return Result(
      corpus=corpus, targets=targets, folds=folds, runs=runs, points=points,
      test_predictions=out["test"].astype(np.float32),
      val_predictions=out["val"].astype(np.float32), best_params=out["params"],
      norm=out["norm"], pos_weight=out["pos_weight"], best_epoch=best_epoch,
      epochs_trained=epochs_trained, train_loss=history["train_loss"],
      val_loss=history["val_loss"], early_stopping=mode, seconds=time.time() - t0,
      num_devices=int(max(out["devices"])), batch_sizes={t: sizes[t] for t in targets},
      config=config.to_dict(), encoder_impl=str(out["impl"][0]),
      compile_seconds=float(sum(out["_seconds"]["compile"])),
      split=eng.split.info(programs, limit, rule, nproc))


# ------------------------------------------------------------------------------ outputs


def protocol_info(result: Result) -> dict:
  c = result.corpus
  return {"name": result.config["protocol"], "early_stopping": result.early_stopping,
          "group_kind": c.group_kind,
          "folds": [{"name": f.name, "train": len(f.train),
                     "validation": [c.groups[g] for g in f.validation][:20],
                     "num_validation": len(f.validation),
                     "test": [c.groups[g] for g in f.test][:20], "num_test": len(f.test)}
                    for f in result.folds]}


def _write(result: Result, corpus: Corpus, config, workdir: str, t0: float, phases) -> dict:
  """Evaluates and writes the output contract; returns results.json's content."""
  from aan_jax.export import core as export  # pylint: disable=g-import-not-at-top
  from aan_jax.outputs import plots  # pylint: disable=g-import-not-at-top
  from aan_jax.outputs import results as report  # pylint: disable=g-import-not-at-top
  summary, table = evaluate(result, config.bootstrap)
  phases.mark("evaluation")
  ev.write_predictions(os.path.join(workdir, "predictions.csv"), table)
  if config.export:
    export.export_result(result, summary, os.path.join(workdir, "models"))
  tensorboard.write(os.path.join(workdir, "tensorboard"), result.runs.names,
                    {"loss/train": result.train_loss, "loss/validation": result.val_loss})
  if config.plots:
    plots.plot_result(result, summary, os.path.join(workdir, "plots"))
  phases.mark("writing")
  return report.write_results(os.path.join(workdir, "results.json"), summary, {
      "model": config.model, "dataset": corpus.name, "tfds_config": corpus.info.get("config"),
      "modalities": report.modality_label(config.modalities),
      "protocol": protocol_info(result), "targets": list(result.targets),
      "batch_sizes": result.batch_sizes,
      "seconds": time.time() - t0, "train_seconds": result.seconds,
      "compile_seconds": result.compile_seconds, "timings": phases.summary(),
      "devices": result.num_devices, "split": result.split, "config": config.to_dict(),
      "synthetic": bool(corpus.info.get("synthetic", False)),
  })


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The launchers' one call: trains, evaluates, prints the table, writes every output."""
  from aan_jax.data import corpora  # pylint: disable=g-import-not-at-top
  from aan_jax.outputs import results as report  # pylint: disable=g-import-not-at-top
  config = resolve(config)
  validate(config)
  describe = lambda corpus, c: (
      f"{c.model} on {corpus.name} ({len(corpus.groups)} {corpus.group_kind}s), protocol "
      f"{c.protocol}, {len(c.targets) * len(sweep_points(c)) * c.seeds} runs per fold, up to "
      f"{c.num_epochs} epochs")
  return common.run_experiment(
      config, workdir, load=corpora.load, describe=describe,
      train=lambda corpus, c, w, progress: train(corpus, c, workdir=w, progress=progress),
      write=_write, format_table=report.format_results)


__all__ = ["get_config", "resolve", "validate", "train", "evaluate", "train_and_evaluate",
           "Result", "ConfigError", "TASKS"]
