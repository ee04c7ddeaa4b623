"""The host loop: restore, chunks of epochs, checkpoint, progress; one for every task.

Training runs in chunks of `config.checkpoint_every` epochs (one compiled call each); after
each chunk the whole state is saved (one .npz, written atomically), so that a killed run and
the same command again give the same results. A checkpoint names its experiment by a
fingerprint (the config but for the settings below, the data's identity, the runs), and a
checkpoint of another experiment is refused.
"""

from __future__ import annotations

import json
import time
from typing import Callable

import numpy as np

from aan_jax.engine import exchange

# Settings that do not matter for resume: how often to save, on how many devices, where
# compiled programs are cached, and what is written after training.
# How the runs are split over programs and processes is left out too: a run's figures do not
# depend on it (aan_jax.engine.split), and each program's checkpoint names its own runs.
NOT_IN_FINGERPRINT = ("checkpoint_every", "max_devices", "compilation_cache", "plots", "export",
                      "explicit", "bootstrap", "runs_per_program", "distributed")


def fingerprint(engine) -> dict:
  """What must match for a checkpoint to be resumed: config, data identity and runs."""
  cfg = {k: v for k, v in engine.config.to_dict().items() if k not in NOT_IN_FINGERPRINT}
  return {"config": json.loads(json.dumps(cfg, default=str)), "corpus": engine.corpus.name,
          "data_sha256": engine.digest, "runs": list(engine.runs.names),
          "hparams": {k: v.tolist() for k, v in engine.runs.hparams.items()}}


# A checkpoint is one .npz per program (aan_jax.engine.exchange.FileCheckpointer), for one
# process or several. Written by hand rather than with orbax for speed: orbax took 0.9 s per
# save of the README demo's state (some 300 small arrays over two CPU devices) against about
# 0.2 s for the archive (training 15.1 s against 13.6 s, `python -m experiments.cognimuse_loo
# --config.dataset=synthetic`, 2-core CPU); and orbax cannot save a program's arrays from one
# process of several, so the archive also makes one format for both.
Checkpointer = exchange.FileCheckpointer


def train(engine, checkpoint_dir: str | None = None,
          progress: Callable[[dict], None] | None = None, group: str = ""):
  """Every run of `engine` from its fresh state, or from the checkpoint in `checkpoint_dir`,
  to config.num_epochs or until every run stopped; returns the final state.

  `progress` is called after each chunk with {"epoch", "num_epochs", "running", "runs",
  "group"}; raising from it stops training after the chunk's checkpoint is written.
  """
  t0 = time.time()
  compiling = engine.precompile()
  state = engine.init_state()
  for f in compiling:  # before the first call, so that nothing is compiled twice
    f.result()
  engine.compile_seconds = time.time() - t0
  ckpt = Checkpointer(checkpoint_dir, fingerprint(engine)) if checkpoint_dir else None
  e, every = engine.config.num_epochs, max(1, engine.config.checkpoint_every)
  try:
    if ckpt is not None:
      restored = ckpt.restore(state)
      if restored is not None:
        state = restored
    while True:
      epoch = int(state["epoch"])
      if epoch >= e or bool(np.all(np.asarray(state["stopped"]))):
        break
      state = engine.run_chunk(state, min(e, epoch + every))
      if ckpt is not None:
        ckpt.save(state, int(state["epoch"]))
      if progress is not None:
        progress({"epoch": int(state["epoch"]), "num_epochs": e,
                  "running": int((~np.asarray(state["stopped"])).sum()),
                  "runs": len(engine.runs), "group": group})
  finally:
    if ckpt is not None:
      ckpt.close()
  return state
