"""Leave one movie out on COGNIMUSE (or the synthetic stand-in): arousal and valence.

    python -m experiments.cognimuse_loo --config.dataset=synthetic --workdir=workdir/synthetic
    python -m experiments.cognimuse_loo --config.data_dir=~/tensorflow_datasets --workdir=workdir/cog
    python -m experiments.cognimuse_loo --config.early_stopping=held_out ...  # authors' scripts

Trains one model per target and held-out movie (all in one compiled program), prints
the pooled MSE/PCC in the layout of the paper's Table I and the per-movie figures,
writes workdir/results.json and workdir/plots/<movie>.png, and checkpoints to
workdir/checkpoints (a killed run resumes where it stopped, with the same results).
"""

from __future__ import annotations

import os
import sys


def _configure_xla() -> None:
  """XLA CPU flags that suit this workload; set before jax is imported.

  The model's tensors are tiny, so per-op overhead dominates and Eigen's intra-op
  thread pool costs more than it gains; one CPU device per core lets the run axis
  (independent folds and targets) use the cores instead. XLA's newer CPU fusion
  emitters took twice as long to compile the training program (6.4 s vs 3.1 s, same
  step time), so the classic ones are used. Flags already in XLA_FLAGS win.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_multi_thread_eigen" not in flags:
    flags += " --xla_cpu_multi_thread_eigen=false"
  # XLA aborts the process on a flag it does not know, and jaxlib 0.11 dropped this one
  # (the classic emitters are gone there), so it is set only where it exists.
  if "xla_cpu_use_fusion_emitters" not in flags and _jaxlib_version() < (0, 11):
    flags += " --xla_cpu_use_fusion_emitters=false"
  if "xla_force_host_platform_device_count" not in flags:
    flags += f" --xla_force_host_platform_device_count={os.cpu_count() or 1}"
  os.environ["XLA_FLAGS"] = flags.strip()


def _jaxlib_version() -> tuple[int, ...]:
  """jaxlib's (major, minor) from its metadata, without importing jax (which reads XLA_FLAGS)."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    return tuple(int(p) for p in metadata.version("jaxlib").split(".")[:2])
  except (metadata.PackageNotFoundError, ValueError):
    return (0, 0)


if __name__ == "__main__":
  _configure_xla()

# pylint: disable=g-import-not-at-top,wrong-import-position
import time

import ml_collections
from absl import app, flags
from ml_collections import config_dict, config_flags

PRESETS = {  # used where num_epochs / patience are left unset (None)
    "cognimuse": {"patience": 30},  # the paper's settings; epochs come with the model
}
# The paper's hyperparameters per model (section IV-B), used where left unset (None).
MODEL_PRESETS = {
    "feature_aan": {"learning_rate": 5e-4, "dropout": 0.1, "num_epochs": 500},
    "temporal_aan": {"learning_rate": 1e-3, "dropout": 0.5, "num_epochs": 1000},
    "feature_temporal_aan": {"learning_rate": 1e-3, "dropout": 0.5, "num_epochs": 1000},
}

BUILD_HINT = """\
The COGNIMUSE dataset is not built (or cannot be read) at data_dir={data_dir!r}: {error}

Build it once from the downloaded corpus and the extracted features:
    tfds build datasets/cognimuse --manual_dir=/path/to/COGNIMUSE --data_dir={data_dir_or_default}
(see datasets/cognimuse/README.md for what the manual dir must hold), then run
    python -m experiments.cognimuse_loo --config.data_dir={data_dir_or_default} --workdir=workdir/cognimuse

Without the corpus, run the synthetic demo:
    python -m experiments.cognimuse_loo --config.dataset=synthetic --workdir=workdir/synthetic"""


def get_config() -> ml_collections.ConfigDict:
  """The paper's Feature AAN protocol on COGNIMUSE; `synthetic` holds the demo preset."""
  from aan_jax import train
  c = train.get_config()
  c.dataset = "cognimuse"       # "cognimuse" (built TFDS dataset) or "synthetic"
  c.tfds_name = "cognimuse"
  c.data_dir = ""               # TFDS data_dir; "" = TFDS default (~/tensorflow_datasets)
  # None: the dataset's preset (COGNIMUSE: 500 epochs, patience 30; synthetic: below).
  c.num_epochs = config_dict.placeholder(int)
  c.patience = config_dict.placeholder(int)
  # None: the model's paper value (Feature AAN 5e-4 / 0.1; Temporal models 1e-3 / 0.5).
  c.learning_rate = config_dict.placeholder(float)
  c.dropout = config_dict.placeholder(float)
  c.synthetic = ml_collections.ConfigDict()
  c.synthetic.segments_per_movie = 360
  c.synthetic.seed = 0
  c.synthetic.num_movies = 12
  c.synthetic.num_epochs = 10   # keeps the README demo near two minutes on 2 busy cores
  c.synthetic.patience = 3
  c.plots = True
  # XLA's persistent compilation cache (aan_jax.xla_cache): rerunning the same experiment
  # (another seed, or a resumed run) skips compiling, 10-45 s on a GPU; other
  # hyperparameters compile anew. "auto": on for GPU/TPU, off on the CPU; a folder; "": off.
  c.compilation_cache = "auto"
  return c


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Fills unset settings from the dataset's and the model's presets; validates both."""
  config = config.copy_and_resolve_references()
  if config.model not in MODEL_PRESETS:
    raise ValueError(f"unknown model {config.model!r}; use one of {sorted(MODEL_PRESETS)}")
  if config.dataset == "synthetic":
    preset = {"num_epochs": config.synthetic.num_epochs, "patience": config.synthetic.patience}
  elif config.dataset == "cognimuse":
    preset = dict(PRESETS["cognimuse"])
  else:
    raise ValueError(f"unknown dataset {config.dataset!r}; use 'cognimuse' or 'synthetic'")
  preset = {**MODEL_PRESETS[config.model], **preset}
  with config.unlocked():
    for k, v in preset.items():
      if config[k] is None:
        config[k] = v
  return config


def load_corpus(config):
  """The corpus for `config.dataset`; a clear message if COGNIMUSE is not built."""
  if config.dataset == "synthetic":
    from aan_jax import synthetic
    return synthetic.make_corpus(config.synthetic.segments_per_movie, config.synthetic.seed,
                                 config.synthetic.num_movies)
  data_dir = os.path.expanduser(config.data_dir) if config.data_dir else None
  try:
    from aan_jax import data
    from aan_jax.features import canonical_modalities
    return data.load_tfds(config.tfds_name, data_dir,
                          features=canonical_modalities(config.modalities))
  except (ImportError, AttributeError, FileNotFoundError) as e:
    error = e
  except Exception as e:  # pylint: disable=broad-except
    # TFDS signals a missing dataset with its own exception types.
    if "NotFound" not in type(e).__name__ and "could not find data" not in str(e):
      raise
    error = e
  raise SystemExit(BUILD_HINT.format(
      data_dir=config.data_dir, error=f"{type(error).__name__}: {error}",
      data_dir_or_default=config.data_dir or "~/tensorflow_datasets"))


class _Progress:
  """Epochs done and runs still training, on stderr (tqdm when installed)."""

  def __init__(self, total: int, runs: int):
    self.t0 = time.time()
    try:
      from tqdm import tqdm
      self.bar = tqdm(total=total, unit="epoch", file=sys.stderr, dynamic_ncols=True)
    except ImportError:
      self.bar = None
    self.done = 0
    self.runs = runs

  def __call__(self, p: dict) -> None:
    msg = f"{p['running']}/{p['runs']} runs still training"
    if self.bar is not None:
      self.bar.update(p["epoch"] - self.done)
      self.bar.set_postfix_str(msg)
    else:
      print(f"epoch {p['epoch']}/{p['num_epochs']}: {msg} "
            f"({time.time() - self.t0:.0f} s)", file=sys.stderr, flush=True)
    self.done = p["epoch"]

  def close(self):
    if self.bar is not None:
      self.bar.close()


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains, evaluates, prints the table; writes results.json and plots to `workdir`."""
  import jax
  from absl import logging
  from aan_jax import plots, report, train

  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO

  t0 = time.time()
  config = resolve(config)
  from aan_jax import xla_cache
  xla_cache.enable(config.compilation_cache)  # "" leaves it off
  corpus = load_corpus(config)
  engine_keys = train.get_config().keys()
  engine_config = ml_collections.ConfigDict({k: config[k] for k in engine_keys})
  os.makedirs(workdir, exist_ok=True)
  n_runs = len(config.targets) * len(corpus.movies)
  print(f"{n_runs} runs ({len(config.targets)} targets x {len(corpus.movies)} held-out "
        f"movies) of {config.model} on {corpus.name}, {config.num_epochs} epochs max, "
        f"patience {config.patience}, on {len(jax.local_devices())} "
        f"{jax.default_backend()} device(s)", file=sys.stderr, flush=True)
  progress = _Progress(config.num_epochs, n_runs)
  try:
    result = train.train_loo(corpus, engine_config, workdir=workdir, progress=progress)
  finally:
    progress.close()
  summary = train.summarize(result)
  table = report.format_table(summary, config.model, config.modalities, corpus.name)
  print(table)
  if config.plots:
    plots.plot_held_out(result, os.path.join(workdir, "plots"))
  out = report.write_results(os.path.join(workdir, "results.json"), summary, {
      "model": config.model, "dataset": corpus.name,
      "modalities": report.modality_label(config.modalities),
      "seconds": time.time() - t0, "train_seconds": result.seconds,
      "devices": result.num_devices, "config": config.to_dict(),
      "synthetic": bool(corpus.info.get("synthetic", False)),
  })
  print(f"\nwrote {os.path.join(workdir, 'results.json')} "
        f"({out['seconds']:.1f} s in all)", file=sys.stderr)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS.workdir:
    raise app.UsageError("--workdir is required (results, plots and checkpoints go there)")
  run(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  # Flags are defined here, not at import, so tests can import this module freely.
  config_flags.DEFINE_config_dict("config", get_config(), lock_config=True)
  flags.DEFINE_string("workdir", None, "Where results, plots and checkpoints go.")
  app.run(main)
