"""The categorical task: every split x seed (x learning rate) of a clip classifier in one program.

One labelled example per clip (VideoEmotion-8, Ekman-6: VAANet's inputs; a face crop for
VTT's model). A *run* trains one classifier on one split's training list with one seed and
one learning rate, in the engine's "per_run" sampler (aan_jax.engine.clips: each run its own
batches and BatchNorm statistics).

VAANet's protocol has no validation set: a fixed number of epochs, then the last epoch's
model on the split's test list, in evaluation mode (running BatchNorm averages).

    from aan_jax.data import synthetic
    from aan_jax.training import categorical
    corpus = synthetic.make_clips()
    result = categorical.train(corpus, categorical.get_config())
    summary, table = categorical.evaluate(result)     # accuracy: the mean over splits
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np

from aan_jax import engine as eng
from aan_jax.data.corpus import ClipCorpus
from aan_jax.engine import zoo
from aan_jax.evaluation.classes import evaluate, write_predictions  # noqa: F401
from aan_jax.training import common
from aan_jax.util import distributed
from aan_jax.util.config import Checks, ConfigError, add_scale_settings

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
  add_scale_settings(c)          # runs_per_program, distributed (docs/distributed.md)
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


def check_task(c: Checks, datasets: Sequence[str]) -> None:
  """The categorical engine's settings, the same for every clip task (VAANet's, VTT's)."""
  config = c.config
  c.choice("dataset", datasets)
  c.choice("model", eng.model_names(categorical=True))
  c.engine_settings()
  c.need(config.run_loop in ("auto", "vmap", "map"),
         f"run_loop: unknown {config.run_loop!r}; use 'auto', 'vmap' or 'map'")
  c.choice("loss", LOSSES)
  c.number("pcce_lambda", 0)
  c.whole("eval_batch_size", 1)
  text = str(config.sweep_learning_rate).strip()
  if text:
    try:
      rates = [float(x) for x in text.split(",") if x.strip()]
      c.need(rates and all(math.isfinite(r) and r > 0 for r in rates),
             f"sweep_learning_rate: every rate must be a finite number > 0; got {text!r}")
    except ValueError:
      c.problems.append(f"sweep_learning_rate: {text!r} is not a comma-separated list of numbers")


def validate(config) -> None:
  """Checks every setting before anything is built; one line per problem."""
  c = Checks(config)
  check_task(c, DATASETS)
  for k in ("audio_segments", "hidden", "audio_dim"):
    c.whole(k, 1)
  for k in ("snippets", "positions", "backbone_dim", "n_mfcc", "audio_frames"):
    c.whole(k, 0)
  for k in ("audio_widths", "audio_blocks"):
    try:
      v = zoo.ints(config[k])
      c.need(len(v) >= 1 and min(v) >= 1,
             f"{k}: must be positive whole numbers; got {config[k]!r}")
    except ValueError:
      c.problems.append(f"{k}: {config[k]!r} is not a comma-separated list of whole numbers")
  if config.dataset == "synthetic":
    s = config.synthetic
    for k, low in (("num_clips", 16), ("num_splits", 1), ("snippets", 1), ("positions", 1),
                   ("backbone_dim", 8), ("audio_frames", 1), ("n_mfcc", 1), ("seed", 0)):
      c.whole(k, low, value=s[k], name=f"synthetic.{k}")
  c.done()


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


def make_runs(corpus: ClipCorpus, config) -> eng.Runs:
  """splits x seeds x learning rates of `config` over `corpus` (the engine's clip runs)."""
  return eng.make_split_runs(corpus, select_splits(corpus, config.splits), config.seeds,
                             learning_rates(config))


def fit_config(corpus: ClipCorpus, config) -> ml_collections.ConfigDict:
  """The config with the corpus's class count and the sizes the model reads from the data
  (the settings left at 0)."""
  spec = eng.get_model_spec(config.model)
  cfg = config.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.num_classes = len(corpus.classes)
    if spec.fit is not None:
      for k, v in spec.fit(cfg, {n: x.shape[1:] for n, x in corpus.inputs.items()}).items():
        if not cfg.get(k):
          cfg[k] = v
  return cfg


def engine_for(corpus: ClipCorpus, config, runs: eng.Runs | None = None,
               reference: eng.Runs | None = None) -> eng.Engine:
  """The engine of every run of `config` on `corpus` (config fitted to the corpus here), or
  of `runs`, one program of the experiment's runs `reference` (aan_jax.engine.split)."""
  cfg = fit_config(corpus, config)
  positive = positive_classes(cfg, corpus.classes)
  if cfg.loss == "pcce" and not positive:
    raise ConfigError("loss: pcce needs positive classes; none of "
                      f"{', '.join(corpus.classes)} is known: set positive_classes or use loss=ce")
  return eng.Engine(corpus, cfg, make_runs(corpus, cfg) if runs is None else runs,
                    positive=positive, reference=reference)


# ----------------------------------------------------------------------------- training


@dataclasses.dataclass
class Result:
  """What the runs produced, numpy arrays with a leading run axis R."""
  corpus: ClipCorpus
  runs: eng.Runs
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
  split: dict | None = None     # how the runs were split over programs and processes


def train(corpus: ClipCorpus, config, workdir: str | None = None,
          progress: Callable[[dict], None] | None = None) -> Result:
  """Trains every run of `config` on `corpus`; resumes from `workdir` if it holds a checkpoint.

  `progress` is called after each chunk of `config.checkpoint_every` epochs with
  {"epoch", "num_epochs", "running", "runs", "group"}.
  """
  t0 = time.time()
  runs = make_runs(corpus, fit_config(corpus, config))
  n_dev = len(jax.local_devices())
  limit, rule = eng.split.runs_per_program(config.runs_per_program, n_dev)
  nproc = distributed.count()
  programs = eng.split.split({("categorical",): range(len(runs))}, limit, nproc, n_dev)

  def collect(engine, state):
    variables = engine.best(state)
    return {"logits": engine.predict(variables).astype(np.float32),
            "variables": jax.tree.map(np.asarray, variables),
            "train_loss": np.asarray(state["history"]["train_loss"]),
            "train_accuracy": np.asarray(state["history"]["train_accuracy"]),
            "devices": np.int64(engine.num_devices)}

  engines = []

  def build(p):
    engine = engine_for(corpus, config, runs.select(p.padded), reference=runs)
    engines[:] = engines[:1] or [engine]  # the first one says the plan's classes and config
    return engine

  outputs = eng.split.train(
      programs, build, collect, os.path.join(workdir, "checkpoints") if workdir else None,
      progress, exchange_dir=os.path.join(workdir, "distributed") if workdir else None,
      process=distributed.index(), num_processes=nproc,
      checkpoint_dir=lambda p: p.name if p.count > 1 else "")
  if outputs is None:  # another process gathers and writes
    return None
  out = eng.split.assemble(programs, outputs, len(runs))
  probe = engines[0]  # process 0 trains the first program
  return Result(corpus, runs, learning_rates(config), out["logits"], out["variables"],
                out["train_loss"], out["train_accuracy"], probe.plan.positive,
                time.time() - t0, float(sum(out["_seconds"]["compile"])),
                int(max(out["devices"])), probe.config.to_dict(),
                split=eng.split.info(programs, limit, rule, nproc))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The launcher's one call: trains every run, evaluates, writes the output contract."""
  from aan_jax.data import corpora  # pylint: disable=g-import-not-at-top
  config = resolve(config)
  validate(config)
  return run(config, workdir, corpora.load_clips, lambda corpus: {
      "tfds_config": corpus.info.get("config"),
      "protocol": "official splits; last epoch on each split's test list (no validation set)",
      "published": PUBLISHED.get(corpus.name, {})})


def run(config, workdir: str, load: Callable, meta: Callable[[ClipCorpus], dict]) -> dict:
  """The experiment's steps on the clip corpus load(config) (config resolved and validated):
  train every run, evaluate, write results.json (with meta(corpus)), predictions.csv,
  models/, tensorboard/, plots/confusion.png."""
  from aan_jax.outputs import results as report  # pylint: disable=g-import-not-at-top

  def describe(corpus, c):
    n_runs = len(select_splits(corpus, c.splits)) * c.seeds * len(learning_rates(c))
    return (f"{eng.get_model_spec(c.model).label or c.model} on {corpus.name} "
            f"({len(corpus.labels)} examples, {len(corpus.classes)} classes): {n_runs} runs "
            f"({len(select_splits(corpus, c.splits))} splits x {c.seeds} seeds x "
            f"{len(learning_rates(c))} learning rates), {c.num_epochs} epochs")
  return common.run_experiment(
      config, workdir, load=load, describe=describe,
      train=lambda corpus, c, w, progress: train(corpus, c, workdir=w, progress=progress),
      write=lambda result, corpus, c, w, t0, phases: _write(result, corpus, c, w, t0, phases,
                                                            meta(corpus)),
      format_table=report.format_categorical)


def _write(result: Result, corpus: ClipCorpus, config, workdir: str, t0: float, phases,
           meta: dict) -> dict:
  """Evaluates and writes the output contract; returns results.json's content."""
  from aan_jax.export import core as export  # pylint: disable=g-import-not-at-top
  from aan_jax.outputs import plots, tensorboard  # pylint: disable=g-import-not-at-top
  from aan_jax.outputs import results as report  # pylint: disable=g-import-not-at-top
  summary, table = evaluate(result)
  phases.mark("evaluation")
  write_predictions(os.path.join(workdir, "predictions.csv"), table, corpus.classes)
  if config.export:
    export.export_classifiers(result, os.path.join(workdir, "models"))
  tensorboard.write(os.path.join(workdir, "tensorboard"), result.runs.names,
                    {"loss/train": result.train_loss, "accuracy/train": result.train_accuracy},
                    {"accuracy/test": {n: r["accuracy"] for n, r in summary["runs"].items()}})
  if config.plots and summary.get("confusion") is not None:
    plots.plot_confusion(np.asarray(summary["confusion"]), corpus.classes,
                         os.path.join(workdir, "plots", "confusion.png"),
                         f"{corpus.name}: {len(summary['per_split'])} split(s) summed, "
                         f"accuracy {100 * summary['accuracy']:.1f}%")
  phases.mark("writing")
  return report.write_results(os.path.join(workdir, "results.json"), summary, {
      "task": "categorical", "model": config.model,
      "label": eng.get_model_spec(config.model).label, "dataset": corpus.name,
      "loss": config.loss, "positive_classes": [corpus.classes[i] for i in result.positive],
      "num_epochs": config.num_epochs, "batch_size": config.batch_size,
      "split_sizes": {corpus.split_names[k]: [len(tr), len(te)]
                      for k, (tr, te) in enumerate(corpus.splits)},
      "num_classes": len(corpus.classes),
      "seconds": time.time() - t0, "train_seconds": result.seconds,
      "compile_seconds": result.compile_seconds, "timings": phases.summary(),
      "devices": result.num_devices, "split": result.split,
      "config": result.config, "synthetic": bool(corpus.info.get("synthetic", False)),
      **meta,
  })


__all__ = ["ClipCorpus", "get_config", "validate", "train", "evaluate", "train_and_evaluate",
           "Result", "make_runs", "engine_for"]
