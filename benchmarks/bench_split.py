"""Runs per program: the compiled cost per run and epoch as the runs in one program grow.

    python benchmarks/bench_split.py                     # sizes 12,24,48,96,144, 3 rounds
    python benchmarks/bench_split.py --sizes 24,48 --rounds 2 --epochs 2

The runs are the first R of the bench_train --sweep grid (3 learning rates x 2 dropouts x
12 folds x 2 targets of the synthetic COGNIMUSE corpus, 360 segments a movie, early
stopping off, normalisation off). Each size is compiled once and warmed by one epoch; then,
in rounds that visit the sizes in turn (so that a loaded machine slows them alike), a fresh
state trains `--epochs` epochs; the best round is kept. aan_jax.engine.split's CPU rule
(runs per CPU device in one program) was read from this table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aan_jax.training import launch  # pylint: disable=wrong-import-position

launch.configure_xla()


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", default="12,24,48,96,144")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--epochs", type=int, default=2)
  p.add_argument("--segments", type=int, default=360)
  args = p.parse_args()

  import jax
  from aan_jax import engine as eng
  from aan_jax.data import protocols, synthetic
  from aan_jax.training import regression as train

  corpus = synthetic.make_corpus(args.segments)
  cfg = train.get_config()
  cfg.update(num_epochs=1 + args.epochs, patience=0, targets=("arousal", "valence"),
             normalize=True, checkpoint_every=1)  # the launchers' default
  cfg.sweep.learning_rate = "1e-4,5e-4,1e-3"
  cfg.sweep.dropout = "0.1,0.5"
  folds = protocols.leave_one_out(corpus, "off")
  runs = eng.make_runs(cfg.targets, folds, len(corpus.groups), train.sweep_points(cfg))
  print(f"{len(jax.local_devices())} {jax.default_backend()} device(s); {len(runs)} runs in "
        f"the grid; {args.epochs} epochs timed per size and round", flush=True)
  engines = {}
  for r in [int(x) for x in args.sizes.split(",")]:
    engines[r] = eng.Engine(corpus, cfg, runs.select(range(r)), targets=cfg.targets,
                            reference=runs)
    t0 = time.time()
    for f in engines[r].precompile():
      f.result()
    state = engines[r].run_chunk(engines[r].init_state(), 1)
    jax.block_until_ready(state)
    print(f"{r} runs: compiled and warmed in {time.time() - t0:.1f} s", flush=True)
  best = {r: float("inf") for r in engines}
  for k in range(args.rounds):
    for r, e in engines.items():
      state = e.run_chunk(e.init_state(), 1)
      jax.block_until_ready(state)
      t0 = time.time()
      jax.block_until_ready(e.run_chunk(state, 1 + args.epochs))
      best[r] = min(best[r], time.time() - t0)
      print(f"round {k + 1}: {r} runs, {time.time() - t0:.2f} s", flush=True)
  d = len(jax.local_devices())
  print("runs per program | runs per device | s per epoch (best round) | ms per run and epoch")
  for r, t in best.items():
    print(f"{r} | {r / d:g} | {t / args.epochs:.2f} | {1000 * t / args.epochs / r:.1f}")


if __name__ == "__main__":
  main()
