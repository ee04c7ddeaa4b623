"""One training step of the baselines for all runs of a sweep at once (aan_jax.models.baselines).

    python benchmarks/bench_lstm.py                       # 24 runs, batch 30 x 5 segments
    python benchmarks/bench_lstm.py --models lstm --hidden 512,128 --steps 10
    python benchmarks/bench_lstm.py --engine --sweep 1e-4,1e-3,1e-2   # through aan_jax.engine.core

What the engine will do with these models, without the engine: R runs (24: 12 folds x 2
targets) are a leading array axis (vmap), sharded over the local devices (one CPU device
per core, XLA's intra-op threads off: the engine's settings, unless XLA_FLAGS says
otherwise). Each step every run reads the same batch of B windows of T consecutive
segments of the five features (random numbers: the cost does not depend on the values),
carries its LSTM state from the previous step (stateful windows, truncated
backpropagation), and takes one Adam step on MSE + (1 - PCC). Compilation is timed
apart; the step time is the median of `--repeats` timings of `--steps` steps each (wall
clock), and the CPU time a step is this process's CPU time over the same steps, all its
threads together: on a machine shared with other jobs the wall clock is inflated by the
others, the CPU time much less so.

`--engine` measures the same through the engine itself (`aan_jax.engine.core`, the sequential
epoch the launchers run): the synthetic COGNIMUSE corpus (12 movies x `--segments`), leave
one movie out, arousal and valence, every point of `--sweep` (learning rates): 24 runs per
point, all in one compiled program. Batch rows are the films (12 here), each step a window
of `--window` segments per film; early stopping off (no validation pass inside the timing).
It times the programs' compilation, then `--repeats` chunks of `--epochs` epochs after a
first epoch, and reports the time of one step for all runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _configure_xla():
  # As the engine's launchers do, before jax is imported; flags in XLA_FLAGS win.
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_multi_thread_eigen" not in flags:
    flags += " --xla_cpu_multi_thread_eigen=false"
  if "xla_force_host_platform_device_count" not in flags:
    flags += f" --xla_force_host_platform_device_count={os.cpu_count() or 1}"
  os.environ["XLA_FLAGS"] = flags.strip()


def build(name: str, modalities, hidden: int, projection: int, unroll: int):
  from aan_jax.models import baselines  # pylint: disable=g-import-not-at-top
  if name == "lstm":
    return baselines.LSTMBaseline(modalities, projection=projection, hidden=hidden,
                                  unroll=unroll)
  if name == "lstm_late_fusion":
    return baselines.LateFusionLSTM(modalities, projection=projection, hidden=hidden,
                                    unroll=unroll)
  if name == "linear":
    return baselines.LinearBaseline(modalities)
  raise ValueError(f"unknown model {name!r}")


def bench(model, runs: int, batch: int, window: int, steps: int, repeats: int, mesh):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp
  import numpy as np
  import optax
  from jax.sharding import NamedSharding, PartitionSpec as P
  from aan_jax.tasks import losses as metrics

  tx = optax.adam(1e-3)
  rng = np.random.default_rng(0)
  pool = 4   # distinct batches, cycled
  feats = {m: jnp.asarray(rng.standard_normal((pool, batch, window, v.shape[-1]), np.float32))
           for m, v in model.dummy_features().items()}
  targets = jnp.asarray(rng.uniform(-1, 1, (pool, runs, batch, window)).astype(np.float32))
  by_run = NamedSharding(mesh, P("runs"))

  @jax.jit
  def init(keys):
    def one(k):
      params = model.init(k, model.dummy_features(1, 1))["params"]
      return params, tx.init(params), model.initial_carry(batch)
    return jax.vmap(one)(keys)

  def loss_fn(params, x, y, carry, key):
    out, carry = model.apply({"params": params}, x, carry, deterministic=False,
                             rngs={"dropout": key})
    return metrics.aan_loss(out.reshape(-1), y.reshape(-1)), carry

  @jax.jit
  def step(state, i):
    params, opt_state, carry = state
    x = {m: v[i % pool] for m, v in feats.items()}   # shared by all runs
    keys = jax.random.split(jax.random.fold_in(jax.random.key(1), i), runs)

    def one(p, o, c, y, k):
      (loss, c), g = jax.value_and_grad(loss_fn, has_aux=True)(p, x, y, c, k)
      u, o = tx.update(g, o, p)
      # Truncated backpropagation: the next window starts from this state, no gradient.
      return optax.apply_updates(p, u), o, jax.lax.stop_gradient(c), loss

    p, o, c, loss = jax.vmap(one)(params, opt_state, carry, targets[i % pool], keys)
    return (p, o, c), loss

  state = jax.device_put(init(jax.random.split(jax.random.key(0), runs)), by_run)
  n_params = sum(x.size for x in jax.tree.leaves(state[0])) // runs
  t0 = time.perf_counter()
  compiled = step.lower(state, jnp.int32(0)).compile()
  compile_s = time.perf_counter() - t0
  state, loss = compiled(state, jnp.int32(0))
  jax.block_until_ready(loss)
  times, cpu = [], []
  for r in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(steps):
      state, loss = compiled(state, jnp.int32(1 + r * steps + s))
    jax.block_until_ready(loss)
    times.append((time.perf_counter() - t0) / steps)
    cpu.append((time.process_time() - c0) / steps)
  assert np.all(np.isfinite(np.asarray(loss)))
  return n_params, compile_s, statistics.median(times), times, statistics.median(cpu)


def bench_engine(name: str, hidden: int, args):
  """(runs, steps per epoch, parameters per run, compile s, step s (median), repeats, CPU s)."""
  import jax  # pylint: disable=g-import-not-at-top
  from aan_jax import engine as eng
  from aan_jax.data import protocols
  from aan_jax.data import synthetic
  from aan_jax.training import regression as train
  corpus = synthetic.make_corpus(args.segments, num_movies=12)
  c = train.get_config()
  c.model, c.modalities, c.window, c.batch_size = name, args.modalities, args.window, args.batch
  c.hidden, c.projection = max(hidden, 1), args.projection
  c.learning_rate, c.dropout, c.patience = 1e-3, 0.5 if name != "linear" else 0.0, 0
  c.num_epochs = 1 + args.epochs * args.repeats
  c.encoder_impl = "xla"
  c.sweep.learning_rate = args.sweep
  mode = train.early_stopping_mode(c)
  folds = protocols.make_folds(corpus, "leave_one_out", mode, 0, 0.1, 3)
  runs = eng.make_runs(c.targets, folds, len(corpus.groups), train.sweep_points(c))
  engine = eng.Engine(corpus, c, runs, targets=c.targets, early_stopping=mode)
  t0 = time.perf_counter()
  for f in engine.precompile():
    f.result()
  state = engine.init_state()
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t0
  state = engine.run_chunk(state, 1)
  jax.block_until_ready(state)
  times, cpu = [], []
  for r in range(args.repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    state = engine.run_chunk(state, 1 + (r + 1) * args.epochs)
    jax.block_until_ready(state)
    n = args.epochs * engine.steps
    times.append((time.perf_counter() - t0) / n)
    cpu.append((time.process_time() - c0) / n)
  n_params = sum(x.size for x in jax.tree.leaves(state["params"])) // len(runs)
  return (len(runs), engine.steps, n_params, compile_s, statistics.median(times), times,
          statistics.median(cpu), engine.batch, engine.num_devices)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="lstm,lstm_late_fusion,linear")
  p.add_argument("--modalities", default="all")
  p.add_argument("--hidden", default="512", help="LSTM cells; a comma list runs each")
  p.add_argument("--projection", type=int, default=8)
  p.add_argument("--unroll", type=int, default=1, help="lax.scan's unroll over segments")
  p.add_argument("--runs", type=int, default=24)
  p.add_argument("--batch", type=int, default=30, help="windows per step")
  p.add_argument("--window", type=int, default=5, help="segments per window")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--engine", action="store_true", help="through aan_jax.engine.core (see above)")
  p.add_argument("--sweep", default="1e-4,1e-3,1e-2", help="--engine: learning rates")
  p.add_argument("--segments", type=int, default=60, help="--engine: segments per movie")
  p.add_argument("--epochs", type=int, default=1, help="--engine: epochs per timed chunk")
  args = p.parse_args()

  if args.engine:
    from aan_jax.training import launch  # pylint: disable=g-import-not-at-top
    launch.configure_xla()  # the launchers' settings, as the engine runs under them
  else:
    _configure_xla()
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np
  from jax.sharding import Mesh
  from aan_jax.data.features import canonical_modalities

  devices = jax.local_devices()
  # The run axis is split evenly over as many devices as divide it.
  n_dev = max(k for k in range(1, len(devices) + 1) if args.runs % k == 0)
  mesh = Mesh(np.array(devices[:n_dev]), ("runs",))
  mods = canonical_modalities(args.modalities)
  if args.engine:
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {len(devices)} devices; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; {os.cpu_count()} cores")
    print(f"engine, synthetic COGNIMUSE 12 movies x {args.segments} segments, leave one "
          f"movie out x (arousal, valence) x learning rates {args.sweep}; windows of "
          f"{args.window}; modalities {','.join(mods)}, projection {args.projection}")
    print("| model | cells | runs | batch (films) | steps/epoch | parameters per run | "
          "compile (s) | step, all runs (ms) | run-steps/s | CPU time a step (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
      for hidden in ([0] if name == "linear" else [int(h) for h in args.hidden.split(",")]):
        r, steps, n, comp, step, times, cpu, batch, ndev = bench_engine(name, hidden, args)
        cells = "-" if name == "linear" else str(hidden)
        print(f"| {name} | {cells} | {r} | {batch} | {steps} | {n:,} | {comp:.1f} | "
              f"{1e3 * step:.1f} | {r / step:.0f} | {1e3 * cpu:.1f} |  (repeats: "
              + ", ".join(f"{1e3 * t:.1f}" for t in times) + f" ms; {ndev} devices)",
              flush=True)
    return
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {n_dev} of {len(devices)} "
        f"devices; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; {os.cpu_count()} cores")
  print(f"{args.runs} runs x batch {args.batch} windows x {args.window} segments, "
        f"modalities {','.join(mods)}, projection {args.projection}, Adam, MSE + (1 - PCC)")
  print("| model | cells | parameters per run | compile (s) | step, all runs (ms) | "
        "steps/s | run-steps/s | CPU time a step (ms) |")
  print("|---|---|---|---|---|---|---|---|")
  for name in args.models.split(","):
    for hidden in ([0] if name == "linear" else [int(h) for h in args.hidden.split(",")]):
      model = build(name, mods, hidden, args.projection, args.unroll)
      n, comp, step, times, cpu = bench(model, args.runs, args.batch, args.window, args.steps,
                                   args.repeats, mesh)
      cells = "-" if name == "linear" else str(hidden)
      print(f"| {name} | {cells} | {n:,} | {comp:.1f} | {1e3 * step:.1f} | {1 / step:.1f} | "
            f"{args.runs / step:.0f} | {1e3 * cpu:.1f} |  (repeats: "
            + ", ".join(f"{1e3 * t:.1f}" for t in times) + " ms)", flush=True)


if __name__ == "__main__":
  main()
