"""Several models on one corpus and protocol (the AAN family and the baselines): their
figures side by side, the published ones beside, and each pair's paired difference on the
same test rows, with a bootstrap interval over groups."""

from __future__ import annotations

import itertools
import json
import os

from aan_jax.evaluation import pooled as ev
from aan_jax.outputs import results as report
from aan_jax.training import regression as train


AAN_FAMILY = ("feature_aan", "temporal_aan", "feature_temporal_aan")
BASELINES = ("lstm", "lstm_late_fusion", "linear")


def model_names(text: str) -> list[str]:
  """Comma-separated model names; "aan" and "baselines" name those families, "all" both."""
  families = {"aan": AAN_FAMILY, "baselines": BASELINES, "all": AAN_FAMILY + BASELINES}
  names = []
  for part in str(text).split(","):
    for name in families.get(part.strip(), (part.strip(),)):
      if name and name not in names:
        names.append(name)
  return names


def compare_models(config, workdir: str) -> dict:
  """Trains each of config.models (comma-separated) in workdir/<model>; returns the results."""
  names = model_names(config.models)
  results, tables = {}, {}
  for name in names:
    c = config.copy_and_resolve_references()
    with c.unlocked():
      c.model = name
      del c["models"]
    print(f"\n=== {report.MODEL_LABELS.get(name, name)} ===", flush=True)
    sub = os.path.join(workdir, name)
    results[name] = train.train_and_evaluate(c, sub)
    if not results[name]:  # one of several processes (jax.distributed): process 0 compares
      continue
    tables[name] = ev.read_predictions(os.path.join(sub, "predictions.csv"))
  if not tables:
    return results
  dataset = next(iter(results.values())).get("dataset", config.dataset)
  # Published rows only beside the real corpora (never beside the synthetic stand-in).
  paper = bool(report.paper_rows(dataset, report.modality_label(config.modalities)))
  lines = [report.format_comparison(results, config.modalities, dataset, paper=paper), "",
           "Paired differences (row model minus column model) on the same test rows, "
           "95% bootstrap interval over groups:"]
  pairs = {}
  targets = next(iter(results.values())).get("targets", ["arousal", "valence"])
  for a, b in itertools.combinations(names, 2):
    for t in targets:
      task = results[a][t].get("task", "regression")
      keys = ("ap",) if task == "binary" else ("mse", "pcc")
      for k in keys:
        ta = {c: v[tables[a]["target"] == t] for c, v in tables[a].items()}
        tb = {c: v[tables[b]["target"] == t] for c, v in tables[b].items()}
        d = ev.paired_difference(ta, tb, task, k, n=int(config.bootstrap))
        pairs[f"{a} - {b}/{t}/{k}"] = d
        lo, hi = d["interval"]
        tell = "differ" if lo > 0 or hi < 0 else "cannot be told apart"
        lines.append(f"  {a} - {b}, {t} {k.upper()}: {d['difference']:+.3f} "
                     f"[{lo:+.3f}, {hi:+.3f}] ({tell})")
  print("\n" + "\n".join(lines))
  with open(os.path.join(workdir, "comparison.json"), "w") as f:
    json.dump({"models": {n: {t: {k: r[t][k] for k in ("mse", "pcc", "ccc", "ap", "map")
                                  if k in r[t]} for t in targets} | {"seconds": r.get("seconds")}
                          for n, r in results.items()},
               "paired_differences": pairs}, f, indent=1)
  return results
