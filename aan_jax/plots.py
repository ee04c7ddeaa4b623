"""Predicted vs. ground-truth curves per held-out movie (like the paper's Figures 5 and 6)."""

from __future__ import annotations

import os

import numpy as np


def plot_held_out(result, directory: str) -> list[str]:
  """One PNG per held-out movie: a panel per target, prediction over ground truth."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  os.makedirs(directory, exist_ok=True)
  c, runs = result.corpus, result.runs
  paths = []
  for h in sorted(set(runs.held_out.tolist())):
    sel = [r for r in range(len(runs)) if runs.held_out[r] == h]
    fig, axes = plt.subplots(len(sel), 1, figsize=(10, 2.6 * len(sel)), squeeze=False,
                             sharex=True)
    n = int(c.mask[h].sum())
    minutes = c.start_s[h, :n] / 60.0
    for ax, r in zip(axes[:, 0], sel):
      name = result.targets[runs.target[r]]
      truth = c.targets[name][h, :n]
      pred = result.predictions[r, :n]
      pcc = np.corrcoef(pred, truth)[0, 1] if np.std(pred) > 0 and np.std(truth) > 0 else 0.0
      ax.plot(minutes, truth, color="black", lw=1.2, label="ground truth")
      ax.plot(minutes, pred, color="tab:red", lw=1.2, label="predicted")
      ax.set_ylabel(name)
      ax.set_title(f"{c.movies[h]} {name}: MSE {np.mean((pred - truth) ** 2):.3f}, "
                   f"PCC {pcc:.3f}", fontsize=9)
      ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time (min)")
    fig.tight_layout()
    path = os.path.join(directory, f"{c.movies[h]}.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    paths.append(path)
  return paths
