"""The one engine: every run of an experiment (targets x folds or splits x seeds x grid
points) trained by one compiled program per plan, for every model and task.

  specs     a ModelSpec per model kind, found by name (lazy table; `register_model` adds one)
  zoo       the built-in specs: the AAN family, the baselines, VAANet, VTT's face model
  runs      the run axis: Runs, make_runs (group corpora), make_split_runs (clip corpora)
  program   the plan, the run-axis map, the flat-parameter Adam step
  groups    samplers of group corpora: "shared" batches, "sequential" windows with a carry
  clips     the "per_run" sampler of clip corpora (own batches, BatchNorm state)
  core      Engine: initialisation, the epoch (sampler, then early stopping), prediction
  loop      the host loop, checkpoints, the fingerprint
  split     runs into programs and processes (runs_per_program, jax.distributed)
  exchange  .npz files of a program's results and (several processes) checkpoints

Tasks (loss, output transform, figures) are aan_jax.tasks.
"""

from aan_jax.engine.core import Engine, prng_impl, resolve_encoder_impl  # noqa: F401
from aan_jax.engine.loop import NOT_IN_FINGERPRINT, Checkpointer, fingerprint, train  # noqa: F401
from aan_jax.engine.runs import (  # noqa: F401
    RUN_HPARAMS, Runs, make_runs, make_split_runs, pad_lists, shared_batch_size, stable_id)
from aan_jax.engine import split  # noqa: F401
from aan_jax.engine.specs import ModelSpec, get_model_spec, model_names, register_model  # noqa: F401
