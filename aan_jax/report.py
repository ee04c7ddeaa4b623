"""Tables and JSON for leave-one-movie-out results (the layout of the paper's Table I)."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from aan_jax.features import AUDIO_FEATURES, FEATURES, VIDEO_FEATURES, canonical_modalities

MODEL_LABELS = {"feature_aan": "Feature AAN", "temporal_aan": "Temporal AAN",
                "feature_temporal_aan": "Feature+Temporal AAN"}

# The paper's Table I (COGNIMUSE, leave one movie out, audio+video): (MSE, PCC).
PAPER_COGNIMUSE = {
    "feature_aan": {"arousal": (0.124, 0.630), "valence": (0.178, 0.572)},
    "temporal_aan": {"arousal": (0.153, 0.551), "valence": (0.238, 0.319)},
}


def modality_label(modalities) -> str:
  mods = canonical_modalities(modalities)
  if mods == FEATURES:
    return "audio+video"
  if mods == AUDIO_FEATURES:
    return "audio"
  if mods == VIDEO_FEATURES:
    return "video"
  return "+".join(mods)


def _f(x, width=7, digits=3) -> str:
  return f"{x:{width}.{digits}f}" if x is not None and math.isfinite(x) else " " * (width - 1) + "-"


def format_table(summary: dict, model: str, modalities, dataset: str) -> str:
  """Pooled MSE/PCC per target (Table I's layout), then the figures per held-out movie."""
  targets = [t for t in ("arousal", "valence") if t in summary]
  label = f"{MODEL_LABELS.get(model, model)} ({modality_label(modalities)})"
  lines = [f"Leave one movie out on {dataset}; early stopping: {summary['early_stopping_label']}",
           "MSE and PCC over all held-out predictions pooled (as in the paper's Table I).", ""]
  head = f"{'Model':<32}" + "".join(f"{t.capitalize() + ' MSE':>14}{'PCC':>8}" for t in targets)
  lines += [head, "-" * len(head)]
  lines.append(f"{label:<32}" + "".join(
      f"{_f(summary[t]['mse'], 14)}{_f(summary[t]['pcc'], 8)}" for t in targets))
  lines += ["", "Per held-out movie (MSE, PCC, best epoch; early stopping movie):"]
  head = f"{'Movie':<8}" + "".join(f"{t[:7] + ' MSE':>14}{'PCC':>8}{'best':>6}" for t in targets)
  head += f"{'stopped on':>12}"
  lines += [head, "-" * len(head)]
  movies = list(summary[targets[0]]["per_movie"]) if targets else []
  for mv in movies:
    row = f"{mv:<8}"
    stop = None
    for t in targets:
      pm = summary[t]["per_movie"].get(mv)
      if pm is None:
        row += " " * 28
        continue
      row += f"{_f(pm['mse'], 14)}{_f(pm['pcc'], 8)}{pm['best_epoch'] + 1:>6d}"
      stop = pm["early_stopping_movie"]
    lines.append(row + f"{stop or '-':>12}")
  return "\n".join(lines)


def format_comparison(results: dict, modalities, dataset: str, paper: bool = False) -> str:
  """Several models' pooled figures side by side (Table I's layout).

  results: model name -> a results dict (as written to results.json). With `paper`, the
  paper's own figures follow as reference rows (COGNIMUSE, audio+video only).
  """
  targets = ("arousal", "valence")
  head = f"{'Model':<40}" + "".join(f"{t.capitalize() + ' MSE':>14}{'PCC':>8}" for t in targets)
  labels = {r.get("early_stopping_label") for r in results.values()}
  lines = [f"Leave one movie out on {dataset}; early stopping: {' / '.join(sorted(map(str, labels)))}",
           "MSE and PCC over all held-out predictions pooled.", "", head, "-" * len(head)]
  for model, r in results.items():
    label = f"{MODEL_LABELS.get(model, model)} ({modality_label(modalities)})"
    lines.append(f"{label:<40}" + "".join(
        f"{_f(r[t]['mse'], 14)}{_f(r[t]['pcc'], 8)}" for t in targets))
  if paper:
    for model, figs in PAPER_COGNIMUSE.items():
      label = f"paper: {MODEL_LABELS[model]} (audio+video)"
      lines.append(f"{label:<40}" + "".join(
          f"{_f(figs[t][0], 14)}{_f(figs[t][1], 8)}" for t in targets))
  return "\n".join(lines)


def write_results(path: str, summary: dict, extra: dict) -> dict:
  """Writes results.json: pooled and per-movie figures, early-stopping mode, timing."""
  out = dict(summary)
  out.update(extra)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(out, f, indent=1, default=_jsonable)
  os.replace(tmp, path)
  return out


def _jsonable(x):
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating,)):
    return float(x)
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, tuple):
    return list(x)
  return str(x)
