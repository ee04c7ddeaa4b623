"""Leave-one-movie-out training speed: the compiled all-folds engine vs. a PyTorch loop.

    python benchmarks/bench_train.py                 # 12 folds x 20 epochs, 360 segments
    python benchmarks/bench_train.py --epochs 5 --torch_folds 2   # quicker, extrapolated
    python benchmarks/bench_train.py --model temporal_aan --epochs 5   # steps/s only
    python benchmarks/bench_train.py --sweep --skip_torch   # 3 x 2 grid: one, six, auto
    python benchmarks/bench_train.py --processes --skip_torch --epochs 5   # 1 vs 2 processes
    python benchmarks/bench_train.py --cli --torch_folds 2  # whole commands vs the PyTorch loop

Both train the Feature AAN (audio+video) on arousal of the synthetic corpus, leave one
movie out over 12 movies, early stopping off, batch 30, Adam. Times are end to end:
the JAX figure includes compilation. With --torch_folds below 12 the PyTorch time is
extrapolated linearly to 12 folds (folds are identical work) and labelled as such.
On a CPU the engine's encoder is the fused C++ kernel (aan_jax.models.kernels) unless
`--encoder_impl xla`; the kernel is built once per machine (cached) before the clock starts.
With --model temporal_aan or feature_temporal_aan the engine trains that model (windows
of 5 segments, teacher forcing; the per-epoch evaluation off, as early stopping is off)
and only the engine's figures are printed: there is no PyTorch temporal loop to compare.
Feature normalisation is off in both (the released models' setting), so they do the same work.
With --sweep it also trains a 3 (learning rate) x 2 (dropout) grid for the 24 COGNIMUSE runs
(12 folds x 2 targets) in one program, as the same six settings in six separate engine
runs, and with the engine's own split (runs_per_program=auto), and prints the ratios (all
end to end, compilation included), then the grid as whole launcher commands: one
command with the sweep against six commands, one per point. With --processes it times the
leave-one-out command as one process and as two local processes (jax.distributed) and
compares their results.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Set before jax is imported (see aan_jax/training/launch.py for why).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aan_jax.training import launch  # pylint: disable=wrong-import-position

launch.configure_xla()


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--epochs", type=int, default=20)
  p.add_argument("--segments", type=int, default=360)
  p.add_argument("--torch_folds", type=int, default=12)
  p.add_argument("--torch_threads", type=int, default=1,
                 help="torch intra-op threads (1 was fastest for this tiny model here)")
  p.add_argument("--torch_device", default="cpu", help="cpu, or cuda on a GPU machine")
  p.add_argument("--skip_torch", action="store_true")
  p.add_argument("--encoder_impl", default="auto", choices=("auto", "xla", "cpu_kernel"),
                 help="the engine's encoder on a CPU (train.get_config's encoder_impl)")
  p.add_argument("--model", default="feature_aan",
                 choices=("feature_aan", "temporal_aan", "feature_temporal_aan"))
  p.add_argument("--cli", action="store_true",
                 help="also time whole launcher commands (process start to exit, warm): the "
                      "README demo, and leave-one-out with 24 runs against the PyTorch loop")
  p.add_argument("--sweep", action="store_true",
                 help="also time a 3x2 grid (24 runs each): one program, one per point, and "
                      "the engine's split (runs_per_program=auto)")
  p.add_argument("--sweep_sizes", default="",
                 help="with --sweep, also time the grid at these runs_per_program values "
                      "(comma-separated; how aan_jax.engine.split's CPU rule was measured)")
  p.add_argument("--processes", action="store_true",
                 help="also time the leave-one-out command as 1 and as 2 local processes "
                      "(jax.distributed)")
  args = p.parse_args()

  import jax
  from aan_jax import engine
  from aan_jax.models import kernels
  from aan_jax.data import protocols
  from aan_jax.data import synthetic
  from aan_jax.training import regression as train

  # The fused CPU encoder (aan_jax.models.kernels) is C++ built once per machine and cached, like
  # an install step; it is built (or loaded) here, before the clock starts, and said so.
  t0 = time.time()
  impl = kernels.resolve(args.encoder_impl)
  if impl == "cpu_kernel":
    print(f"fused CPU encoder: ready in {time.time() - t0:.1f} s (built once per machine and "
          f"cached: {kernels.library_path()}; not in the times below)", flush=True)
  else:
    why = ("--encoder_impl xla" if args.encoder_impl == "xla" else
           kernels.unavailable_reason() or f"backend {jax.default_backend()}")
    print(f"fused CPU encoder: not used ({why}); XLA's encoder", flush=True)

  corpus = synthetic.make_corpus(args.segments)
  cfg = train.get_config()
  cfg.update(num_epochs=args.epochs, patience=0, targets=("arousal",),
             checkpoint_every=args.epochs, model=args.model, encoder_impl=args.encoder_impl,
             normalize=False, bootstrap=1)
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; {len(jax.local_devices())} "
        f"{jax.default_backend()} device(s); torch threads: {args.torch_threads}", flush=True)

  t0 = time.time()
  res = train.train(corpus, cfg)
  jax_s = time.time() - t0
  folds = protocols.leave_one_out(corpus, "off")
  probe = engine.Engine(corpus, cfg, engine.make_runs(
      ("arousal",), folds, len(corpus.groups), train.sweep_points(cfg)), targets=("arousal",))
  engine_steps = probe.steps
  fold_steps = engine_steps * args.epochs * len(res.runs)
  print(f"JAX engine ({args.model}): {len(res.runs)} folds x {args.epochs} epochs x {engine_steps} steps "
        f"(shared batch {probe.batch}) on {res.num_devices} device(s): "
        f"{jax_s:.1f} s end to end incl. compile; {engine_steps * args.epochs / jax_s:.1f} "
        f"steps/s end to end = {fold_steps / jax_s:.0f} fold-steps/s; "
        f"pooled arousal MSE {train.evaluate(res, 1)[0]['arousal']['mse']:.3f}", flush=True)
  t0 = time.time()
  train.train(corpus, cfg)
  warm = time.time() - t0
  print(f"JAX engine again, compiled program cached: {warm:.1f} s "
        f"({engine_steps * args.epochs / warm:.1f} compiled steps/s)", flush=True)
  if args.sweep:
    sweep(corpus, cfg, train, [int(x) for x in args.sweep_sizes.split(",") if x.strip()])
    sweep_commands(args)
  if args.processes:
    processes(args)
  cli = cli_times(args) if args.cli else None
  if args.skip_torch or args.model != "feature_aan":
    return
  # The PyTorch loop runs in a fresh process, so that XLA's threads cannot slow it.
  import subprocess
  code = ("import sys, json, torch; torch.set_num_threads(%d); "
          "from aan_jax.data import synthetic; from benchmarks import torch_feature_aan as T; "
          "s, n, m = T.train_folds(synthetic.make_corpus(%d), epochs=%d, folds=range(%d), "
          "device=%r); print(json.dumps([s, n, float(m.mean())]))"
          % (args.torch_threads, args.segments, args.epochs, args.torch_folds, args.torch_device))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code], cwd=root, check=True,
                       capture_output=True, text=True).stdout
  import json
  t_s, t_steps, mse = json.loads(out.strip().splitlines()[-1])
  k = args.torch_folds
  full = t_s * 12 / k
  note = "" if k == 12 else f" (measured {k} folds, {t_s:.1f} s; extrapolated to 12)"
  print(f"PyTorch loop on {args.torch_device}: {k} folds x {args.epochs} epochs, {t_steps} steps: "
        f"{full:.1f} s for 12 folds{note}; {t_steps / t_s:.1f} steps/s; "
        f"mean held-out MSE {mse:.3f}")
  print(f"ratio (PyTorch / JAX, end to end): {full / jax_s:.1f}x")
  if cli is not None:
    # The command trains both targets: 24 runs, twice the loop's 12 folds of arousal.
    print(f"ratio (PyTorch loop for 24 runs / the whole leave-one-out command, warm): "
          f"{2 * full / cli:.1f}x")


def _timed(argv, root) -> float:
  """Seconds from starting the command to its exit; its own timings line is echoed."""
  import subprocess  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  r = subprocess.run(argv, cwd=root, capture_output=True, text=True)
  wall = time.time() - t0
  if r.returncode != 0:
    raise SystemExit(f"{' '.join(argv)} failed:\n{r.stderr[-2000:]}")
  line = [x for x in r.stderr.splitlines() if x.startswith("time: ")]
  print(f"  {wall:.1f} s wall; {line[-1] if line else ''}", flush=True)
  return wall


def cli_times(args) -> float:
  """The README demo and the 24-run leave-one-out command (args.epochs epochs, early stopping
  off), each run twice in fresh workdirs: the first fills the compilation cache, the second
  is the warm figure. Returns the warm leave-one-out seconds."""
  import tempfile  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  base = [sys.executable, "-m", "experiments.cognimuse_loo", "--config.dataset=synthetic"]
  loo = base + [f"--config.num_epochs={args.epochs}", "--config.patience=0",
                f"--config.synthetic.segments_per_movie={args.segments}"]
  out = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name, argv in (("README demo", base), ("leave-one-out, 24 runs", loo)):
      print(f"{name}: {' '.join(argv[1:])}", flush=True)
      _timed(argv + [f"--workdir={tmp}/{len(out)}a"], root)
      out[name] = _timed(argv + [f"--workdir={tmp}/{len(out)}b"], root)
  print(f"whole commands, warm: README demo {out['README demo']:.1f} s; leave-one-out "
        f"(24 runs x {args.epochs} epochs) {out['leave-one-out, 24 runs']:.1f} s", flush=True)
  return out["leave-one-out, 24 runs"]


def sweep(corpus, cfg, train, sizes=()):
  """A 3 x 2 grid (learning rate x dropout) for 24 runs (12 folds x 2 targets), 144 runs,
  three ways in one process: one program of 144 runs, the six settings as six engine runs
  of 24 (one per point, each its own call), and the engine's own split
  (runs_per_program=auto, aan_jax.engine.split). All end to end, compilation included."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  lrs, drops = (1e-4, 5e-4, 1e-3), (0.1, 0.5)
  grid = cfg.copy_and_resolve_references()
  grid.targets = ("arousal", "valence")
  grid.sweep.learning_rate = ",".join(map(str, lrs))
  grid.sweep.dropout = ",".join(map(str, drops))
  times, results = {}, {}
  for n in sizes:
    g = grid.copy_and_resolve_references()
    g.runs_per_program = str(n)
    t0 = time.time()
    r = train.train(corpus, g)
    print(f"sweep, runs_per_program={n}: {r.split['programs']} program(s) of "
          f"{r.split['runs_per_program_padded']} runs: {time.time() - t0:.1f} s end to end",
          flush=True)
  for name, setting in (("one program", str(24 * len(lrs) * len(drops))), ("auto", "auto")):
    g = grid.copy_and_resolve_references()
    g.runs_per_program = setting
    t0 = time.time()
    results[name] = train.train(corpus, g)
    times[name] = time.time() - t0
    s = results[name].split
    print(f"sweep, {name}: {len(results[name].runs)} runs (3 x 2 grid x 24) in "
          f"{s['programs']} program(s) of {s['runs_per_program_padded']} runs: "
          f"{times[name]:.1f} s end to end incl. compile ({s['rule']})", flush=True)
    if name == "one program":
      t0 = time.time()
      for lr in lrs:
        for d in drops:
          c = cfg.copy_and_resolve_references()
          c.targets = ("arousal", "valence")
          c.learning_rate, c.dropout = lr, d
          train.train(corpus, c)
      times["one per point"] = time.time() - t0
      print(f"sweep, one per point: the same six settings as six engine runs of 24: "
            f"{times['one per point']:.1f} s end to end", flush=True)
  diff = np.abs(results["auto"].test_predictions - results["one program"].test_predictions)
  gap = f"{float(diff.max()):.1e} (mean {float(diff.mean()):.1e})"
  six = times["one per point"]
  print(f"sweep ratio (one per point / one program): {six / times['one program']:.2f}x; "
        f"(one per point / auto): {six / times['auto']:.2f}x; largest difference of a test "
        f"prediction, auto vs one program: {gap}", flush=True)


def sweep_commands(args) -> None:
  """The 3 x 2 grid as a user runs it: one launcher command with the sweep, against six
  commands, one per point (separate jobs, one after the other), both whole commands, warm
  (each kind run once before, to fill the compilation cache). Early stopping is on, as a
  sweep needs validation to choose its point, with patience = epochs, so no run stops
  early and both do the same 144 runs x args.epochs epochs of training."""
  import tempfile  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  lrs, drops = ("1e-4", "5e-4", "1e-3"), ("0.1", "0.5")
  base = [sys.executable, "-m", "experiments.cognimuse_loo", "--config.dataset=synthetic",
          f"--config.num_epochs={args.epochs}", f"--config.patience={args.epochs}",
          f"--config.synthetic.segments_per_movie={args.segments}"]
  grid = base + [f"--config.sweep.learning_rate={','.join(lrs)}",
                 f"--config.sweep.dropout={','.join(drops)}"]
  point = lambda lr, d: base + [f"--config.learning_rate={lr}", f"--config.dropout={d}"]
  with tempfile.TemporaryDirectory() as tmp:
    print("sweep as commands, warming the cache: the grid command, one point's command",
          flush=True)
    _timed(grid + [f"--workdir={tmp}/warm_grid"], root)
    _timed(point(lrs[0], drops[0]) + [f"--workdir={tmp}/warm_point"], root)
    print(f"sweep as one command: {' '.join(grid[1:])}", flush=True)
    one = _timed(grid + [f"--workdir={tmp}/grid"], root)
    print("sweep as six commands, one per point (--config.learning_rate, --config.dropout):",
          flush=True)
    six = sum(_timed(point(lr, d) + [f"--workdir={tmp}/p{lr}_{d}"], root)
              for lr in lrs for d in drops)
  print(f"sweep as commands, warm: one command {one:.1f} s, six commands {six:.1f} s; "
        f"ratio (six / one) {six / one:.2f}x", flush=True)


def processes(args) -> None:
  """The leave-one-out command (24 runs, args.epochs epochs, early stopping off) as one
  process and as two local processes (jax.distributed, coordinator on 127.0.0.1, one CPU
  device each), warm (each run once before, to fill the compilation cache), and the largest
  difference of their results.json figures."""
  import json  # pylint: disable=g-import-not-at-top
  import socket  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  base = [sys.executable, "-m", "experiments.cognimuse_loo", "--config.dataset=synthetic",
          f"--config.num_epochs={args.epochs}", "--config.patience=0",
          f"--config.synthetic.segments_per_movie={args.segments}"]

  def launch(workdir, n):
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    extra = lambda i: ([] if n == 1 else [
        f"--config.distributed.coordinator=127.0.0.1:{port}",
        f"--config.distributed.num_processes={n}", f"--config.distributed.process_id={i}"])
    env = dict(os.environ, XLA_FLAGS=" ".join(
        [os.environ.get("XLA_FLAGS", ""),
         f"--xla_force_host_platform_device_count={max(1, (os.cpu_count() or 1) // n)}"]))
    t0 = time.time()
    procs = [subprocess.Popen(base + [f"--workdir={workdir}"] + extra(i), cwd=root, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    errs = [p.communicate()[1] for p in procs]
    wall = time.time() - t0
    if any(p.returncode for p in procs):
      raise SystemExit(f"{n} process(es) failed:\n" + "\n".join(e[-1500:] for e in errs))
    with open(os.path.join(workdir, "results.json")) as f:
      return wall, json.load(f)

  with tempfile.TemporaryDirectory() as tmp:
    out = {}
    for n in (1, 2):
      launch(f"{tmp}/warm{n}", n)
      out[n] = launch(f"{tmp}/run{n}", n)
      print(f"leave-one-out, 24 runs x {args.epochs} epochs, {n} process(es), warm: "
            f"{out[n][0]:.1f} s wall", flush=True)
  gap = max(abs(out[1][1][t][k] - out[2][1][t][k])
            for t in ("arousal", "valence") for k in ("mse", "pcc"))
  print(f"processes: 1 / 2 = {out[1][0] / out[2][0]:.2f}x; largest difference of a pooled "
        f"figure in results.json: {gap:.1e}", flush=True)


if __name__ == "__main__":
  main()
