"""The steps every experiment takes, whatever its task (the Flax examples' train_and_evaluate):
check the config, load the corpus, train every run with progress, evaluate, write the
output contract, print the table."""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

import jax


_STARTED: list[float] = []


def run_experiment(config, workdir: str, *, load: Callable, describe: Callable,
                   train: Callable, write: Callable, format_table: Callable) -> dict:
  """`config` resolved and validated by the caller. load(config) -> corpus;
  describe(corpus, config) -> the banner's text; train(corpus, config, workdir, progress)
  -> result (with its compile_seconds); write(result, corpus, config, workdir, t0, phases)
  -> results.json's dict (it evaluates, marks the phase "evaluation", writes every output,
  marks "writing" and puts phases.summary() under "timings"); format_table(out) -> the
  printed table. The phases run from the process's start: their sum is its wall time."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from aan_jax.outputs import results  # pylint: disable=g-import-not-at-top
  from aan_jax.util import distributed, timing, xla_cache  # pylint: disable=g-import-not-at-top
  # Several processes (--config.distributed.*, or a cluster detected): before any computation.
  distributed.initialize(config)
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  t0 = time.time()
  # The first experiment of a process counts from the process's start (interpreter and
  # imports); a later one (compare_models runs several) from its own call.
  phases = timing.Phases(None if not _STARTED else t0)
  _STARTED.append(t0)
  phases.mark("start-up")
  cache = xla_cache.enable(config.compilation_cache)  # "" leaves it off
  cold = cache is not None and xla_cache.is_empty(cache)
  corpus = load(config)
  os.makedirs(workdir, exist_ok=True)
  phases.mark("data")
  where = (f" (process {jax.process_index()} of {jax.process_count()})"
           if jax.process_count() > 1 else "")
  print(f"{describe(corpus, config)}, on {len(jax.local_devices())} "
        f"{jax.default_backend()} device(s){where}", file=sys.stderr, flush=True)
  progress = results.Progress(config.num_epochs)
  try:
    result = train(corpus, config, workdir, progress)
  finally:
    progress.close()
  phases.mark("training")
  if result is None:  # one of several processes: its share is trained, process 0 writes
    print(f"process {jax.process_index()}: its runs are trained; process 0 writes "
          f"{workdir}", file=sys.stderr)
    return {}
  phases.split("training", "compile", getattr(result, "compile_seconds", 0.0))
  if cold:  # a cold start says what it did
    print(f"compiled the programs in {phases.seconds['compile']:.1f} s and cached them in "
          f"{cache}: later runs load them", file=sys.stderr, flush=True)
  out = write(result, corpus, config, workdir, t0, phases)
  print(format_table(out))
  print(phases.line(), file=sys.stderr)
  print(f"\nwrote {os.path.join(workdir, 'results.json')}, predictions.csv, models/, "
        f"tensorboard/, plots/ ({out['seconds']:.1f} s in all)", file=sys.stderr)
  return out
