"""Autoregressive evaluation of the Temporal AANs on a 2-hour movie (1,440 5-s segments).

    python benchmarks/bench_temporal_eval.py [--segments 1440] [--window 5] [--repeats 5]

`aan_jax.models.aan.predict_movie`: segment vectors once per segment, gathered into every
segment's window (the last L segments ending at it, padded and masked at the movie's
start), then the compiled autoregressive loop over all windows in one batch. Prints
compile time and the steady-state time per movie, for both temporal models and both
sublayer layouts. Inputs are put on the device once, before timing.
"""

import argparse
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from aan_jax.models import aan as models  # noqa: E402
from aan_jax.data.features import PAPER_FEATURE_DIMS, FEATURES  # noqa: E402


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--segments", type=int, default=1440)
  p.add_argument("--window", type=int, default=5)
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args()
  rng = np.random.default_rng(0)
  movie = {m: jnp.asarray(rng.normal(size=(args.segments, d)), jnp.float32)
           for m, d in PAPER_FEATURE_DIMS.items()}
  print(f"{jax.devices()[0].platform}: {args.segments} segments, window {args.window}, "
        f"{len(FEATURES)} modalities")
  for cls in (models.TemporalAAN, models.FeatureTemporalAAN):
    for norm_first in (True, False):
      model = cls(norm_first=norm_first)
      f0, t0 = model.dummy_inputs(1, args.window)
      variables = model.init(jax.random.key(0), f0, t0)
      predict = jax.jit(lambda v, f: models.predict_movie(model, v, f, args.window))
      t = time.perf_counter()
      out = predict(variables, movie).block_until_ready()
      first = time.perf_counter() - t
      times = []
      for _ in range(args.repeats):
        t = time.perf_counter()
        predict(variables, movie).block_until_ready()
        times.append(time.perf_counter() - t)
      assert out.shape == (args.segments,) and np.all(np.isfinite(out))
      print(f"{cls.__name__:20s} norm_first={norm_first!s:5s}  first call (compile+run) "
            f"{first:6.2f} s   per movie {np.median(times) * 1e3:8.1f} ms (median of "
            f"{args.repeats})")


if __name__ == "__main__":
  main()
