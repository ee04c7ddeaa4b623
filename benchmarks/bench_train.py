"""Leave-one-movie-out training speed: the compiled all-folds engine vs. a PyTorch loop.

    python benchmarks/bench_train.py                 # 12 folds x 20 epochs, 360 segments
    python benchmarks/bench_train.py --epochs 5 --torch_folds 2   # quicker, extrapolated

Both train the Feature AAN (audio+video) on arousal of the synthetic corpus, leave one
movie out over 12 movies, early stopping off, batch 30, Adam. Times are end to end:
the JAX figure includes compilation. With --torch_folds below 12 the PyTorch time is
extrapolated linearly to 12 folds (folds are identical work) and labelled as such.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Set before jax is imported (see experiments/cognimuse_loo.py for why).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import cognimuse_loo  # pylint: disable=wrong-import-position

cognimuse_loo._configure_xla()  # pylint: disable=protected-access


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--epochs", type=int, default=20)
  p.add_argument("--segments", type=int, default=360)
  p.add_argument("--torch_folds", type=int, default=12)
  p.add_argument("--skip_torch", action="store_true")
  args = p.parse_args()

  import jax
  from aan_jax import synthetic, train

  corpus = synthetic.make_corpus(args.segments)
  cfg = train.get_config()
  cfg.update(num_epochs=args.epochs, patience=0, targets=("arousal",),
             checkpoint_every=args.epochs)
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; {len(jax.local_devices())} "
        f"{jax.default_backend()} device(s); torch threads: ", end="")
  import torch
  print(torch.get_num_threads(), flush=True)

  t0 = time.time()
  res = train.train_loo(corpus, cfg)
  jax_s = time.time() - t0
  engine_steps = train.Engine(corpus, cfg).steps
  fold_steps = engine_steps * args.epochs * len(res.runs)
  print(f"JAX engine: {len(res.runs)} folds x {args.epochs} epochs x {engine_steps} steps "
        f"(shared batch {train.Engine(corpus, cfg).batch}) on {res.num_devices} device(s): "
        f"{jax_s:.1f} s end to end incl. compile; {engine_steps * args.epochs / jax_s:.1f} "
        f"compiled steps/s = {fold_steps / jax_s:.0f} fold-steps/s; "
        f"pooled arousal MSE {train.summarize(res)['arousal']['mse']:.3f}", flush=True)
  if args.skip_torch:
    return
  from benchmarks import torch_feature_aan
  k = args.torch_folds
  t_s, t_steps, mses = torch_feature_aan.train_folds(corpus, epochs=args.epochs,
                                                     folds=range(k))
  full = t_s * 12 / k
  note = "" if k == 12 else f" (measured {k} folds, {t_s:.1f} s; extrapolated to 12)"
  print(f"PyTorch loop: {k} folds x {args.epochs} epochs, {t_steps} steps: "
        f"{full:.1f} s for 12 folds{note}; {t_steps / t_s:.1f} steps/s; "
        f"mean held-out MSE {mses.mean():.3f}")
  print(f"ratio (PyTorch / JAX, end to end): {full / jax_s:.1f}x")


if __name__ == "__main__":
  main()
