"""Predicted vs. ground-truth curves per test movie (like the paper's Figures 5 and 6), or a
scatter of prediction against truth where the groups are excerpts."""

from __future__ import annotations

import os

import numpy as np


def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_result(result, summary: dict, directory: str) -> list[str]:
  """One PNG per test movie (a panel per target, seed 0 of the selected grid point), or
  one scatter per target for excerpt corpora."""
  plt = _plt()
  os.makedirs(directory, exist_ok=True)
  c, runs = result.corpus, result.runs
  selected = summary.get("sweep", {}).get("selected", {})
  chosen = [r for r in range(len(runs)) if runs.seed[r] == 0
            and runs.point[r] == selected.get(result.targets[runs.target[r]], 0)]
  paths = []
  if c.group_kind != "movie":
    for ti, name in enumerate(result.targets):
      preds, truth = [], []
      for r in chosen:
        if runs.target[r] != ti:
          continue
        for j, (g, ok) in enumerate(zip(runs.test_idx[r], runs.test_ok[r])):
          lab = c.label_mask[name][g]
          if ok and lab.any():
            preds.append(result.test_predictions[r, j][lab])
            truth.append(c.targets[name][g][lab])
      if not preds:
        continue
      p, t = np.concatenate(preds), np.concatenate(truth)
      fig, ax = plt.subplots(figsize=(4.5, 4.5))
      ax.scatter(t, p, s=4, alpha=0.4)
      lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
      ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
      ax.set_xlabel(f"{name} (ground truth)")
      ax.set_ylabel("predicted")
      ax.set_title(f"{c.name} {name}: {len(t)} test {c.group_kind}s", fontsize=9)
      fig.tight_layout()
      path = os.path.join(directory, f"{name}_scatter.png")
      fig.savefig(path, dpi=80)
      plt.close(fig)
      paths.append(path)
    return paths
  tests = sorted({int(g) for r in chosen for g, ok in zip(runs.test_idx[r], runs.test_ok[r]) if ok})
  # One figure per panel count, its lines' data replaced per movie: building a figure and
  # laying it out took most of the 12 PNGs' 5.3 s in the README demo (profiled).
  figures: dict[int, tuple] = {}
  try:
    for h in tests:
      sel = [(r, j) for r in chosen
             for j, (g, ok) in enumerate(zip(runs.test_idx[r], runs.test_ok[r])) if ok and g == h]
      if not sel:
        continue
      if len(sel) not in figures:
        fig, axes = plt.subplots(len(sel), 1, figsize=(10, 2.6 * len(sel)), squeeze=False,
                                 sharex=True)
        lines = [(ax.plot([], [], color="black", lw=1.2, label="ground truth")[0],
                  ax.plot([], [], color="tab:red", lw=1.2, label="predicted")[0])
                 for ax in axes[:, 0]]
        for ax in axes[:, 0]:
          ax.grid(alpha=0.3)
        axes[0, 0].legend(loc="upper right", fontsize=8)
        figures[len(sel)] = (fig, axes, lines, [False])
      fig, axes, lines, laid_out = figures[len(sel)]
      n = int(c.mask[h].sum())
      times = c.start_s[h, :n]
      x = times / 60.0 if np.isfinite(times).all() else np.arange(n)
      for ax, (truth_line, pred_line), (r, j) in zip(axes[:, 0], lines, sel):
        name = result.targets[runs.target[r]]
        lab = c.label_mask[name][h, :n]
        truth_line.set_data(x, np.where(lab, c.targets[name][h, :n], np.nan))
        pred_line.set_data(x, result.test_predictions[r, j, :n])
        ax.relim()
        ax.autoscale_view()
        ax.set_ylabel(name)
        fig_stats = summary.get(name, {}).get("per_group", {}).get(c.groups[h], {})
        stats = ", ".join(f"{k.upper()} {fig_stats[k]:.3f}" for k in ("mse", "pcc", "ap")
                          if isinstance(fig_stats.get(k), float) and np.isfinite(fig_stats[k]))
        ax.set_title(f"{c.groups[h]} {name}: {stats}", fontsize=9)
      axes[-1, 0].set_xlabel("time (min)" if np.isfinite(times).all() else "item")
      if not laid_out[0]:
        fig.tight_layout()
        laid_out[0] = True
      path = os.path.join(directory, f"{c.groups[h]}.png")
      fig.savefig(path, dpi=80)
      paths.append(path)
  finally:
    for fig, *_ in figures.values():
      plt.close(fig)
  return paths


def plot_confusion(confusion: np.ndarray, classes, path: str, title: str = "") -> str:
  """A confusion matrix (true x predicted counts), each row normalised to sum 1."""
  plt = _plt()
  c = np.asarray(confusion, np.float64)
  rows = c / np.maximum(c.sum(1, keepdims=True), 1.0)
  k = len(classes)
  fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 0.8 + 0.65 * k))
  im = ax.imshow(rows, vmin=0.0, vmax=1.0, cmap="Blues")
  for i in range(k):
    for j in range(k):
      ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center", fontsize=7,
              color="white" if rows[i, j] > 0.5 else "black")
  ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
  ax.set_yticks(range(k), classes, fontsize=8)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true (rows sum to 1)")
  if title:
    ax.set_title(title, fontsize=9)
  fig.colorbar(im, ax=ax, fraction=0.046)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path
