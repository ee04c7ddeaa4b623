"""VAANet after the backbone: one training step (PCCE, Adam lr 2e-4) in Flax and in PyTorch (not a test).

Both start from the same random state dict in the authors' key layout (the Flax side
through `aan_jax.convert.from_vaanet`), take the same random batch (features of 12
snippets, 4096 MFCC frames) and run train-mode steps; the script prints the largest
differences of the first step's outputs, then the median time of the timed steps after
a warm-up (the Flax step is jitted; compile time is printed apart).

  python -m benchmarks.bench_vaanet [--batch 32] [--steps 5] [--threads 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

from aan_jax.convert import attendaffectnet as convert  # noqa: E402
from aan_jax.models import vaanet  # noqa: E402
from vaanet_torch_reference import TorchVAANet, pcce  # noqa: E402  (written from VAANET.md)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
  args = p.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  ref = TorchVAANet().train()
  rng = np.random.RandomState(0)
  visual = rng.rand(args.batch, 12, 16, 2048).astype(np.float32)
  audio = (20 * rng.randn(args.batch, 4096, 32)).astype(np.float32)
  labels = rng.randint(0, 8, args.batch)
  with tempfile.TemporaryDirectory() as d:
    torch.save(ref.state_dict(), os.path.join(d, "v.pth"))
    model, variables = convert.from_vaanet(os.path.join(d, "v.pth"))

  tx = optax.adam(2e-4)

  def step(params, stats, opt, x, a, y):
    def loss_fn(params):
      out, new = model.apply({"params": params, "batch_stats": stats}, x, a,
                             deterministic=False, mutable=["batch_stats"])
      return vaanet.pcce_loss(out["logits"], y), (out, new["batch_stats"])
    (loss, (out, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), stats, opt, loss, out["logits"]

  params, stats = variables["params"], variables["batch_stats"]
  opt = tx.init(params)
  x, a, y = jnp.asarray(visual), jnp.asarray(audio), jnp.asarray(labels)
  t = time.perf_counter()
  jstep = jax.jit(step).lower(params, stats, opt, x, a, y).compile()
  compile_s = time.perf_counter() - t

  topt = torch.optim.Adam(ref.parameters(), lr=2e-4)
  tv = torch.from_numpy(visual).permute(0, 1, 3, 2).contiguous()
  ta, ty = torch.from_numpy(audio), torch.from_numpy(labels)

  def torch_step():
    topt.zero_grad()
    logits = ref(tv, ta)[0]
    loss = pcce(logits, ty)
    loss.backward()
    topt.step()
    return loss.item(), logits.detach().numpy()

  p1, s1, o1, loss_j, logits_j = jstep(params, stats, opt, x, a, y)
  loss_t, logits_t = torch_step()
  print(f"first step: |loss diff| {abs(float(loss_j) - loss_t):.2e}, max |logit diff| "
        f"{np.abs(np.asarray(logits_j) - logits_t).max():.2e}")
  times = {"flax": [], "torch": []}
  state = (p1, s1, o1)
  for _ in range(args.steps):
    t = time.perf_counter()
    out = jstep(*state, x, a, y)
    jax.block_until_ready(out)
    state = out[:3]
    times["flax"].append(time.perf_counter() - t)
    t = time.perf_counter()
    torch_step()
    times["torch"].append(time.perf_counter() - t)
  print(f"batch {args.batch}, {args.steps} timed steps after one warm-up; Flax compile "
        f"{compile_s:.1f} s; jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
  for k, v in times.items():
    print(f"  {k:6s} median {1e3 * np.median(v):8.1f} ms/step  (min {1e3 * min(v):.1f})")


if __name__ == "__main__":
  main()
