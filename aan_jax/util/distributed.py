"""Several processes, one experiment: `config.distributed` and JAX's multi-controller runtime.

Every launcher's config has

    distributed.coordinator    "HOST:PORT" of process 0's coordinator ("" = none given)
    distributed.num_processes  how many processes take part (0 = none given)
    distributed.process_id     this process's index, 0 .. num_processes - 1 (-1 = none given)
    distributed.auto           without them, let jax.distributed.initialize detect a cluster
                               (SLURM with several tasks, Open MPI, Cloud TPU pods) where its
                               environment variables say there is one

`initialize(config)` starts `jax.distributed` once per process, before any computation: with
the three values given, or where a cluster's variables are set (only environment variables
are read to decide: a plain machine is never probed over the network). After it,
jax.process_index() / jax.process_count() say who this process is; the engine then trains
this process's share of the runs (aan_jax.engine.split) and process 0 writes the outputs.
"""

from __future__ import annotations

import os

import ml_collections

# Environment variables by which jax.distributed.initialize's cluster detection recognises a
# cluster (jax._src.clusters); a job of one task is not a cluster worth a coordinator.
_CLUSTER_COUNTS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
_TPU_POD = ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "MEGASCALE_COORDINATOR_ADDRESS")


def config() -> ml_collections.ConfigDict:
  """The `distributed` settings every launcher's config carries (all unset)."""
  return ml_collections.ConfigDict({"coordinator": "", "num_processes": 0, "process_id": -1,
                                    "auto": True, "timeout_s": 600})


def problems(d) -> list[str]:
  """One line per bad `distributed` setting."""
  out = []
  given = [bool(str(d.coordinator).strip()), d.num_processes != 0, d.process_id != -1]
  if any(given) and not all(given):
    out.append("distributed: give coordinator=HOST:PORT, num_processes=N and process_id=I "
               "together (or none of them, for auto-detection on a cluster)")
  if all(given):
    host, _, port = str(d.coordinator).rpartition(":")
    if not host or not port.isdigit():
      out.append(f"distributed.coordinator: {d.coordinator!r} is not HOST:PORT")
    n, i = d.num_processes, d.process_id
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
      out.append(f"distributed.num_processes: must be a whole number >= 1; got {n!r}")
    elif not (isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n):
      out.append(f"distributed.process_id: must be in 0..{n - 1}; got {i!r}")
  t = d.timeout_s
  if not (isinstance(t, int) and not isinstance(t, bool) and t >= 1):
    out.append(f"distributed.timeout_s: must be a whole number >= 1; got {t!r}")
  return out


def cluster_detected(environ=None) -> str:
  """The cluster whose variables are set ("" on a plain machine): read from the environment
  only, never by asking a metadata server."""
  env = os.environ if environ is None else environ
  for k in _CLUSTER_COUNTS:
    if env.get(k, "").isdigit() and int(env[k]) > 1:
      return k
  for k in _TPU_POD:
    if env.get(k):
      return k
  return ""


def initialize(cfg) -> bool:
  """Starts jax.distributed for `cfg.distributed` (a launcher's config) if asked or if a
  cluster is detected; True when this process is one of several. Idempotent."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax._src import distributed as jd  # pylint: disable=g-import-not-at-top
  d = cfg.get("distributed") if hasattr(cfg, "get") else None
  if jd.global_state.client is not None:
    return jax.process_count() > 1
  if d is None:
    return False
  if str(d.coordinator).strip():
    jax.distributed.initialize(str(d.coordinator).strip(), num_processes=int(d.num_processes),
                               process_id=int(d.process_id),
                               initialization_timeout=int(d.timeout_s))
  elif d.auto and cluster_detected():
    jax.distributed.initialize(initialization_timeout=int(d.timeout_s))
  else:
    return False
  return jax.process_count() > 1


def active() -> bool:
  """Whether this process is one of several (jax.distributed started with more than one)."""
  from jax._src import distributed as jd  # pylint: disable=g-import-not-at-top
  return jd.global_state.client is not None and jd.global_state.num_processes > 1


def index() -> int:
  from jax._src import distributed as jd  # pylint: disable=g-import-not-at-top
  return jd.global_state.process_id if active() else 0


def count() -> int:
  from jax._src import distributed as jd  # pylint: disable=g-import-not-at-top
  return jd.global_state.num_processes if active() else 1


def barrier(name: str, timeout_s: int = 3600) -> None:
  """Waits until every process reached the barrier `name` (the coordinator's; no device
  collective, so it works on every backend). A no-op in one process."""
  if not active():
    return
  from jax._src import distributed as jd  # pylint: disable=g-import-not-at-top
  jd.global_state.client.wait_at_barrier(name, int(timeout_s * 1000))


def shutdown() -> None:
  """Leaves jax.distributed (every process calls it; it waits for the others)."""
  from jax._src import distributed as jd  # pylint: disable=g-import-not-at-top
  if jd.global_state.client is not None:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.shutdown()
