"""The host loop: restore, chunks of epochs, checkpoint, progress; one for every task.

Training runs in chunks of `config.checkpoint_every` epochs (one compiled call each); after
each chunk the whole state is saved with orbax, so that a killed run and the same command
again give the same results. A checkpoint names its experiment by a fingerprint (the
config but for the settings below, the data's identity, the runs), and a checkpoint of
another experiment is refused.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import jax
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


class Checkpointer:
  """Orbax checkpoints of a whole training state (every run); `fingerprint` (JSON) names the
  experiment, and a checkpoint of another is refused."""

  def __init__(self, directory: str, fingerprint: dict):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    self._ocp = ocp
    self.directory = os.path.abspath(directory)
    self.fingerprint = fingerprint
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
  # With several processes (jax.distributed) orbax would expect every process in each save.
  kind = Checkpointer if jax.process_count() == 1 else exchange.FileCheckpointer
  ckpt = kind(checkpoint_dir, fingerprint(engine)) if checkpoint_dir else None
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
