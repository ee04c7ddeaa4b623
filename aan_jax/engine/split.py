"""How the runs of an experiment map to compiled programs and to processes.

The runs (targets x folds x seeds x grid points) are cut into *programs* of at most
`config.runs_per_program` runs, each trained by its own call of the engine; programs of
the same plan and shape share one compilation (the short ones are padded with copies of
their first run, whose results are dropped). With several processes (jax.distributed,
aan_jax.util.distributed) every process trains its own programs, and process 0 gathers
every program's results.

A run's figures do not depend on the split: its PRNG streams fold in its own id
(aan_jax.engine.runs.stable_id), and what the runs of a program share (the shared batch's
size and steps, which dropout rate the modules are built with) is fixed by all the runs
of the experiment (`Engine(..., reference=...)`), not by the program's own.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable

import jax
import numpy as np

from aan_jax.engine import exchange, loop

# "auto" on a CPU: at most this many runs per local device in one program. Measured with
# `python benchmarks/bench_split.py --sizes 24,48,144 --rounds 2` (the bench_train --sweep
# grid's first R runs, normalisation on, 2 epochs compiled, best of 2 interleaved rounds;
# quiet 2-core CPU, two CPU devices): ms per run and epoch 44.0 (24 runs, 12 per device),
# 47.3 (48), 55.3 (144); an earlier, loaded run found compiling to take 11.0 to 39.0 s from
# 12 to 144 runs (docs/distributed.md). A run costs no less in a bigger program, while the
# compile grows with the runs; programs of the same shape compile once, so the rule keeps
# programs small.
CPU_RUNS_PER_DEVICE = 12
# On a GPU or TPU a step of these tiny models is launch-bound: more runs per step are
# nearly free, so every run goes in one program (a cap only against memory).
ACCELERATOR_RUNS_PER_PROGRAM = 4096
RULE = {"cpu": f"auto: at most {CPU_RUNS_PER_DEVICE} runs per CPU device per program "
               "(measured: bigger programs cost no less per run and compile for longer)",
        "accelerator": "auto: one program per process (an accelerator's step is launch-bound)"}


_GATHERS: list[int] = []


@dataclasses.dataclass(frozen=True)
class Program:
  """One compiled call's runs: `rows` (real, indices into the experiment's runs) padded to
  `padded` (the same length for every program of its group, so one compilation serves)."""
  group: tuple          # the caller's key of programs that may share a plan (batch size, task)
  index: int            # within its group
  count: int            # programs in its group
  rows: tuple[int, ...]
  padded: tuple[int, ...]
  process: int          # which process trains it

  @property
  def name(self) -> str:
    return f"program{self.index + 1}of{self.count}"


def runs_per_program(setting, num_devices: int, backend: str | None = None) -> tuple[int, str]:
  """(N, rule): the most runs in one program for config.runs_per_program ("auto" or N)."""
  if setting != "auto":
    return int(setting), f"runs_per_program={int(setting)} (the config)"
  backend = backend or jax.default_backend()
  if backend == "cpu":
    return CPU_RUNS_PER_DEVICE * max(1, num_devices), RULE["cpu"]
  return ACCELERATOR_RUNS_PER_PROGRAM, RULE["accelerator"]


def split(groups: dict, limit: int, num_processes: int = 1, num_devices: int = 1
          ) -> list[Program]:
  """Programs for `groups` (key -> row indices, in run order): each group's runs in equal
  programs of at most `limit` runs (a multiple of the devices where that fits), as many
  for every process; program j of a group goes to process j % num_processes."""
  out = []
  for key, rows in groups.items():
    rows = list(rows)
    share = math.ceil(len(rows) / num_processes)
    count = num_processes * max(1, math.ceil(share / max(1, limit)))
    size = math.ceil(len(rows) / count)
    width = math.ceil(size / num_devices) * num_devices
    if width > max(limit, size):
      width = size
    for j in range(count):
      real = tuple(rows[j * size:(j + 1) * size])
      if real:
        out.append(Program(key, j, count, real, real + (real[0],) * (width - len(real)),
                           j % num_processes))
  return out


def info(programs: list[Program], limit: int, rule: str, num_processes: int) -> dict:
  """The split as results.json records it."""
  return {"runs_per_program": limit, "programs": len(programs),
          "runs_per_program_padded": sorted({len(p.padded) for p in programs}),
          "processes": num_processes, "rule": rule}


def train(programs: list[Program], build: Callable, collect: Callable,
          checkpoint_root: str | None, progress=None, exchange_dir: str | None = None,
          process: int = 0, num_processes: int = 1, checkpoint_dir: Callable | None = None):
  """Trains this process's programs; returns every program's collected results (process 0)
  or None (the others).

  build(program) -> Engine of its padded runs; collect(engine, state) -> a nested dict of
  numpy arrays whose leading axis is the program's padded runs (scalars allowed). With
  several processes each program's results go to `exchange_dir` (a folder every process
  sees: the workdir), and process 0 reads them after every process reached the barrier.
  """
  from aan_jax.util import distributed  # pylint: disable=g-import-not-at-top
  if num_processes > 1 and not exchange_dir:
    raise ValueError("several processes need a --workdir that every process sees: the "
                     "processes' results are gathered there")
  mine = {}
  for p in programs:
    if p.process != process:
      continue
    engine = build(p)
    sub = checkpoint_dir(p) if checkpoint_dir else p.name
    state = loop.train(engine, os.path.join(checkpoint_root, sub) if checkpoint_root else None,
                       progress, group=_label(p))
    out = _real(collect(engine, state), len(p.rows))
    out["_seconds"] = {"compile": np.float64(getattr(engine, "compile_seconds", 0.0))}
    if num_processes > 1:
      exchange.write_results(os.path.join(exchange_dir, _file(p)), out)
    else:
      mine[id(p)] = out
  if num_processes == 1:
    return [mine[id(p)] for p in programs]
  # Every process calls train() the same number of times in the same order (compare_models
  # trains several experiments): the barrier's name counts them.
  _GATHERS.append(1)
  distributed.barrier(f"aan_jax/split/gathered/{len(_GATHERS)}", timeout_s=7 * 24 * 3600)
  if process != 0:
    return None
  return [exchange.read_results(os.path.join(exchange_dir, _file(p))) for p in programs]


def _label(p: Program) -> str:
  head = " ".join(str(k) for k in p.group if k != "")
  tail = f"program {p.index + 1}/{p.count}" if p.count > 1 else ""
  return " ".join(x for x in (head, tail) if x)


def _file(p: Program) -> str:
  key = "_".join(str(k) for k in p.group if k != "") or "runs"
  return f"{key}_{p.name}.npz"


def _real(tree, n: int):
  """The first n rows of every array with a leading run axis (scalars as they are)."""
  if isinstance(tree, dict):
    return {k: _real(v, n) for k, v in tree.items()}
  a = np.asarray(tree)
  return a[:n] if a.ndim else a


def assemble(programs: list[Program], outputs: list[dict], total: int) -> dict:
  """One nested dict of arrays over all `total` runs, in run order, from each program's."""
  def merge(parts):
    first = parts[0][1]
    if isinstance(first, dict):
      return {k: merge([(rows, o[k]) for rows, o in parts if k in o]) for k in first}
    if np.ndim(first) == 0:
      return [o for _, o in parts]
    full = np.zeros((total,) + np.shape(first)[1:], np.asarray(first).dtype)
    for rows, o in parts:
      full[np.asarray(rows)] = o
    return full
  return merge([(p.rows, o) for p, o in zip(programs, outputs)])


__all__ = ["Program", "runs_per_program", "split", "info", "train", "assemble", "RULE"]
