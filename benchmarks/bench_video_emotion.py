"""One training epoch of VAANet on every split in one program against a per-split loop (not a test).

Both sides are the categorical task's own program (aan_jax.training.categorical.engine_for: the engine's per_run sampler), on the
synthetic VideoEmotion-8-like corpus at the same model sizes: "one program" trains the
10 splits as 10 runs of one compiled program (the run axis over the local devices);
"per-split loop" trains one split at a time, one run per program (compiled once, reused).
Compilation is timed apart; each side's epoch time is the median over the timed epochs
after a warm-up epoch. XLA flags are the launchers' (aan_jax.training.launch.configure_xla).

  python -m benchmarks.bench_video_emotion [--epochs 3] [--run-loop auto|vmap|map]
      [--clips 200] [--splits 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from aan_jax.training import launch  # noqa: E402

launch.configure_xla()

import jax  # noqa: E402

from aan_jax.training import categorical  # noqa: E402
from aan_jax.data import synthetic  # noqa: E402
from aan_jax.engine import clips  # noqa: E402


def _time_epochs(trainer, epochs: int) -> tuple[float, list[float]]:
  """(seconds to compile, seconds per timed epoch), the first epoch a warm-up."""
  t0 = time.perf_counter()
  for f in trainer.precompile():
    f.result()
  state = trainer.init_state()
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t0
  state = trainer.run_chunk(state, 1)
  jax.block_until_ready(state)
  times = []
  for e in range(2, epochs + 2):
    t0 = time.perf_counter()
    state = trainer.run_chunk(state, e)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
  return compile_s, times


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up)")
  p.add_argument("--run-loop", default="auto", choices=("auto", "vmap", "map"))
  p.add_argument("--clips", type=int, default=200)
  p.add_argument("--splits", type=int, default=10)
  args = p.parse_args()
  config = categorical.resolve(categorical.get_config())
  config.num_epochs = args.epochs + 1
  config.run_loop = args.run_loop
  corpus = synthetic.make_clips(num_clips=args.clips, num_splits=args.splits)
  devices = jax.local_devices()
  print(f"{len(devices)} {jax.default_backend()} device(s); {args.splits} splits, "
        f"{args.clips} clips, batch {config.batch_size}, run_loop "
        f"{clips.resolve_run_loop(args.run_loop)}; sizes: hidden {config.hidden}, "
        f"audio widths {config.audio_widths}", flush=True)

  all_runs = categorical.engine_for(corpus, config)
  c_all, t_all = _time_epochs(all_runs, args.epochs)
  one = statistics.median(t_all)
  print(f"one program ({all_runs.num_devices} device(s)): compile {c_all:.1f} s, "
        f"epoch {one:.2f} s (median of {args.epochs})", flush=True)

  compile_loop, per_split = 0.0, []
  for k in range(args.splits):
    cfg = config.copy_and_resolve_references()
    cfg.splits = str(k + 1)
    trainer = categorical.engine_for(corpus, cfg)
    c, t = _time_epochs(trainer, args.epochs)
    compile_loop += c
    per_split.append(statistics.median(t))
  loop = sum(per_split)
  print(f"per-split loop (1 run per program, {trainer.num_devices} device): compile "
        f"{compile_loop:.1f} s in all (the first split's; the rest reuse it), epoch of all "
        f"splits {loop:.2f} s (sum of the splits' medians)", flush=True)
  print(f"ratio: the per-split loop takes {loop / one:.2f}x the one program's epoch time")


if __name__ == "__main__":
  main()
