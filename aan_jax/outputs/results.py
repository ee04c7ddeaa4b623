"""Tables and JSON for leave-one-movie-out results (the layout of the paper's Table I)."""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np

from aan_jax.data.features import AUDIO_FEATURES, FEATURES, VIDEO_FEATURES, canonical_modalities

MODEL_LABELS = {"feature_aan": "Feature AAN", "temporal_aan": "Temporal AAN",
                "feature_temporal_aan": "Feature+Temporal AAN", "lstm": "LSTM",
                "lstm_late_fusion": "LSTM, late fusion", "linear": "Linear"}

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


# The paper's Table II (EIMT16 Global, audio+video) and later work: (MSE, PCC).
PAPER_EIMT16 = {
    "Feature AAN (paper)": {"arousal": (0.742, 0.503), "valence": (0.185, 0.467)},
    "Temporal AAN (paper)": {"arousal": (0.854, 0.210), "valence": (0.218, 0.415)},
    "AFRN (Yi et al. 2020)": {"arousal": (0.542, 0.522), "valence": (0.193, 0.468)},
    "UMFN (Yi et al. 2022)": {"arousal": (0.464, 0.523), "valence": (0.176, 0.503)},
}
PAPER_COGNIMUSE_ROWS = {
    "Feature AAN (paper)": PAPER_COGNIMUSE["feature_aan"],
    "Temporal AAN (paper)": PAPER_COGNIMUSE["temporal_aan"],
    "Sivaprasad et al. LSTM (paper)": {"arousal": (0.08, 0.84), "valence": (0.21, 0.50)},
}
# Every row of the paper's Table I (COGNIMUSE) by modality set, and Sivaprasad et al.'s
# LSTM with late fusion as the paper reports it: (MSE, PCC).
PAPER_COGNIMUSE_BY_MODALITIES = {
    "video": {
        "Feature AAN (paper)": {"arousal": (0.152, 0.518), "valence": (0.204, 0.483)},
        "Temporal AAN (paper)": {"arousal": (0.178, 0.457), "valence": (0.267, 0.232)},
    },
    "audio": {
        "Feature AAN (paper)": {"arousal": (0.125, 0.621), "valence": (0.185, 0.543)},
        "Temporal AAN (paper)": {"arousal": (0.162, 0.472), "valence": (0.247, 0.254)},
    },
    "audio+video": PAPER_COGNIMUSE_ROWS,
}


def paper_rows(dataset: str, modalities: str) -> dict:
  """The published rows to print beside ours: {label: {target: (MSE, PCC)}} (may be empty)."""
  if dataset == "cognimuse":
    return PAPER_COGNIMUSE_BY_MODALITIES.get(modalities, {})
  if dataset == "eimt16_global" and modalities == "audio+video":
    return PAPER_EIMT16
  return {}


def _ci(fig: dict, key: str) -> str:
  lo, hi = fig.get("interval", {}).get(key, [math.nan, math.nan])
  return f"[{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) else ""


def format_results(out: dict) -> str:
  """results.json as a table in the paper's layout, published figures beside ours."""
  targets = [t for t in out.get("targets", ("arousal", "valence")) if t in out]
  reg = [t for t in targets if out[t].get("task") != "binary"]
  binary = [t for t in targets if out[t].get("task") == "binary"]
  proto = out.get("protocol", {})
  label = f"{MODEL_LABELS.get(out.get('model'), out.get('model'))} ({out.get('modalities')})"
  lines = [f"{out.get('dataset')}: protocol {proto.get('name')}, early stopping: "
           f"{out.get('early_stopping_label')}",
           "Pooled over all test predictions; 95% intervals from a bootstrap over "
           f"{proto.get('group_kind', 'group')}s.", ""]
  if reg:
    head = f"{'Model':<34}" + "".join(f"{t.capitalize() + ' MSE':>14}{'PCC':>8}" for t in reg)
    lines += [head, "-" * len(head)]
    lines.append(f"{label:<34}" + "".join(
        f"{_f(out[t]['mse'], 14)}{_f(out[t]['pcc'], 8)}" for t in reg))
    lines.append(f"{'  95% interval':<34}" + "".join(
        f"{_ci(out[t], 'mse'):>22}" for t in reg))
    lines.append(f"{'':<34}" + "".join(f"{_ci(out[t], 'pcc'):>22}" for t in reg))
    paper = paper_rows(out.get("dataset"), out.get("modalities"))
    for name, figs in paper.items():
      lines.append(f"{name:<34}" + "".join(
          f"{_f(figs[t][0], 14)}{_f(figs[t][1], 8)}" if t in figs else " " * 22 for t in reg))
  for t in binary:
    f = out[t]
    lines += ["", f"{t.capitalize()} (binary): AP {f['ap']:.3f} {_ci(f, 'ap')}, "
              f"MAP {_f(f['map'], 0)} {_ci(f, 'map')}, F1 {f['f1']:.3f} {_ci(f, 'f1')} at the "
              f"validation threshold (precision {f['precision']:.3f}, recall {f['recall']:.3f}); "
              f"prevalence {f['prevalence']:.3f} over {f['n']} test windows"]
  if "sweep" in out:
    sw = out["sweep"]
    lines += ["", f"Sweep over {', '.join(sw['swept'])}: {len(sw['points'])} grid points; "
              "selected on validation loss:"]
    for t, i in sw["selected"].items():
      p = sw["points"][i]
      lines.append(f"  {t}: " + ", ".join(f"{k}={p[k]:g}" for k in sw["swept"]))
  per = [t for t in reg if len(out[t].get("per_group", {})) <= 60
         and proto.get("group_kind", "movie") == "movie"]
  if per:
    lines += ["", "Per test group (MSE, PCC):"]
    groups = list(out[per[0]]["per_group"])
    for g in groups:
      lines.append(f"  {g:<12}" + "".join(
          f"{_f(out[t]['per_group'].get(g, {}).get('mse', math.nan), 10)}"
          f"{_f(out[t]['per_group'].get(g, {}).get('pcc', math.nan), 8)}" for t in per))
  return "\n".join(lines)


def format_comparison(results: dict, modalities, dataset: str, paper: bool = False) -> str:
  """Several models' pooled figures side by side (Table I's layout), with intervals.

  results: model name -> a results dict (as written to results.json), the AAN family and
  the baselines alike. With `paper`, the published figures follow as reference rows: every
  row of the paper's Table I for the same modality set on COGNIMUSE (with Sivaprasad et
  al.'s LSTM for audio+video), Table II and later work on EIMT16 (audio+video). A binary
  target (fear) shows AP and MAP.
  """
  first = next(iter(results.values()), {})
  targets = [t for t in first.get("targets", ("arousal", "valence")) if t in first]
  reg = [t for t in targets if first[t].get("task", "regression") != "binary"]
  binary = [t for t in targets if first[t].get("task") == "binary"]
  mods = modality_label(modalities)
  paper_figs = paper_rows(dataset, mods) if paper else {}
  names = [f"{MODEL_LABELS.get(m, m)} ({mods})" for m in results] + [
      f"paper: {n.replace(' (paper)', '')} ({mods})" for n in paper_figs]
  w = max([40] + [len(n) + 2 for n in names])
  head = f"{'Model':<{w}}" + "".join(f"{t.capitalize() + ' MSE':>14}{'PCC':>8}" for t in reg) \
      + "".join(f"{t.capitalize() + ' AP':>12}{'MAP':>8}" for t in binary)
  labels = {r.get("early_stopping_label") for r in results.values()}
  lines = [f"{dataset}; early stopping: {' / '.join(sorted(map(str, labels)))}",
           "MSE and PCC over all test predictions pooled."
           + (" Fear: AP and MAP." if binary else ""), "", head, "-" * len(head)]
  for model, r in results.items():
    label = f"{MODEL_LABELS.get(model, model)} ({mods})"
    lines.append(f"{label:<{w}}" + "".join(
        f"{_f(r[t]['mse'], 14)}{_f(r[t]['pcc'], 8)}" for t in reg) + "".join(
        f"{_f(r[t].get('ap'), 12)}{_f(r[t].get('map'), 8)}" for t in binary))
  for name, figs in paper_figs.items():
    label = f"paper: {name.replace(' (paper)', '')} ({mods})"
    lines.append(f"{label:<{w}}" + "".join(
        f"{_f(figs[t][0], 14)}{_f(figs[t][1], 8)}" if t in figs else " " * 22 for t in reg))
  return "\n".join(lines)


class Progress:
  """Epochs done and runs still training, on stderr (tqdm when installed)."""

  def __init__(self, total: int):
    self.t0 = time.time()
    try:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self.bar = tqdm(total=total, unit="epoch", file=sys.stderr, dynamic_ncols=True)
    except ImportError:
      self.bar = None
    self.total = total
    self.done = 0
    self.group = None

  def __call__(self, p: dict) -> None:
    if p.get("group") != self.group:  # a new program (e.g. another batch size)
      self.group, self.done = p.get("group"), 0
      if self.bar is not None:
        self.bar.reset(total=self.total)
    msg = f"{p['running']}/{p['runs']} runs still training"
    if self.bar is not None:
      self.bar.update(p["epoch"] - self.done)
      self.bar.set_postfix_str(msg)
    else:
      print(f"epoch {p['epoch']}/{p['num_epochs']}: {msg} "
            f"({time.time() - self.t0:.0f} s)", file=sys.stderr, flush=True)
    self.done = p["epoch"]

  def close(self):
    if self.bar is not None:
      self.bar.close()


def write_results(path: str, summary: dict, extra: dict) -> dict:
  """Writes results.json (atomically): the summary's figures, then `extra` (config, timings)."""
  from aan_jax.util import atomic  # pylint: disable=g-import-not-at-top
  out = dict(summary)
  out.update(extra)
  atomic.write_file(path, json.dumps(out, indent=1, default=_jsonable))
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


def format_categorical(out: dict) -> str:
  """The accuracy table, the published figures beside ours."""
  lines = [f"{out.get('label', out.get('model'))} on {out.get('dataset')}: top-1 accuracy on "
           f"each split's test list, last epoch ({out.get('num_epochs')} epochs)", ""]
  if out.get("accuracy") is None:
    for p in out.get("sweep", []):
      lines.append(f"  learning rate {p['learning_rate']:g}: {100 * p['accuracy']:.1f}% "
                   f"(sd {100 * p['accuracy_spread']['std']:.1f} over {len(p['per_split'])} splits)")
    return "\n".join(lines)
  for name, f in out["per_split"].items():
    lines.append(f"  {name:<10} {100 * f['accuracy']:5.1f}%   mean recall "
                 f"{100 * f['mean_recall']:5.1f}%   ({f['n']} test clips)")
  sp = out["accuracy_spread"]
  lines += ["", f"{'ours: mean over ' + str(len(out['per_split'])) + ' splits':<34}"
            f"{100 * out['accuracy']:5.1f}%  (sd {100 * sp['std']:.1f}, "
            f"{100 * sp['min']:.1f}-{100 * sp['max']:.1f})"]
  for name, acc in out.get("published", {}).items():
    lines.append(f"{name + ' (published)':<34}{acc:5.1f}%")
  if out.get("synthetic"):
    k = out.get("num_classes") or 8
    lines.append(f"(synthetic data: chance is 1/{k} = {100 / k:.1f}%; not comparable with the "
                 "published figures)")
  return "\n".join(lines)
