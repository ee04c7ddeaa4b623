"""The steps every experiment takes, whatever its task (the Flax examples' train_and_evaluate):
check the config, load the corpus, train every run with progress, evaluate, write the
output contract, print the table."""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

import jax


def run_experiment(config, workdir: str, *, load: Callable, describe: Callable,
                   train: Callable, write: Callable, format_table: Callable) -> dict:
  """`config` resolved and validated by the caller. load(config) -> corpus;
  describe(corpus, config) -> the banner's text; train(corpus, config, workdir, progress)
  -> result; write(result, corpus, config, workdir, t0) -> results.json's dict (it
  evaluates and writes every output); format_table(out) -> the printed table."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from aan_jax.outputs import results  # pylint: disable=g-import-not-at-top
  from aan_jax.util import xla_cache  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  t0 = time.time()
  xla_cache.enable(config.compilation_cache)  # "" leaves it off
  corpus = load(config)
  os.makedirs(workdir, exist_ok=True)
  print(f"{describe(corpus, config)}, on {len(jax.local_devices())} "
        f"{jax.default_backend()} device(s)", file=sys.stderr, flush=True)
  progress = results.Progress(config.num_epochs)
  try:
    result = train(corpus, config, workdir, progress)
  finally:
    progress.close()
  out = write(result, corpus, config, workdir, t0)
  print(format_table(out))
  print(f"\nwrote {os.path.join(workdir, 'results.json')}, predictions.csv, models/, "
        f"tensorboard/, plots/ ({out['seconds']:.1f} s in all)", file=sys.stderr)
  return out
