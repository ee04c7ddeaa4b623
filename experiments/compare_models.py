"""The Feature, Temporal and Feature+Temporal AANs side by side, leave one movie out.

    python -m experiments.compare_models --config.dataset=synthetic --workdir=workdir/compare
    python -m experiments.compare_models --config.data_dir=~/tensorflow_datasets --workdir=workdir/compare

Runs `experiments.cognimuse_loo` once per model (each with the paper's hyperparameters for
that model unless overridden; each in workdir/<model>, so an interrupted comparison
resumes), then prints their pooled MSE/PCC in the layout of the paper's Table I, with the
paper's figures below when the data are COGNIMUSE with all five features, and writes
workdir/comparison.json.
"""

from __future__ import annotations

if __name__ == "__main__":
  from experiments import cognimuse_loo as _loo
  _loo._configure_xla()  # pylint: disable=protected-access

# pylint: disable=g-import-not-at-top,wrong-import-position
import json
import os

from absl import app, flags
from ml_collections import config_flags

from experiments import cognimuse_loo

MODELS = ("feature_aan", "temporal_aan", "feature_temporal_aan")


def get_config():
  c = cognimuse_loo.get_config()
  c.models = ",".join(MODELS)
  return c


def run(config, workdir: str) -> dict:
  from aan_jax import report
  from aan_jax.features import FEATURES, canonical_modalities
  names = [m.strip() for m in config.models.split(",") if m.strip()]
  results = {}
  for name in names:
    c = config.copy_and_resolve_references()
    with c.unlocked():
      c.model = name
      del c["models"]
    print(f"\n=== {report.MODEL_LABELS.get(name, name)} ===", flush=True)
    results[name] = cognimuse_loo.run(c, os.path.join(workdir, name))
  paper = (config.dataset == "cognimuse"
           and canonical_modalities(config.modalities) == FEATURES)
  dataset = next(iter(results.values())).get("dataset", config.dataset)
  table = report.format_comparison(results, config.modalities, dataset, paper=paper)
  print("\n" + table)
  with open(os.path.join(workdir, "comparison.json"), "w") as f:
    json.dump({name: {t: {k: r[t][k] for k in ("mse", "pcc", "ccc") if k in r[t]}
                      for t in ("arousal", "valence")} | {"seconds": r.get("seconds")}
               for name, r in results.items()}, f, indent=1)
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  run(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  config_flags.DEFINE_config_dict("config", get_config(), lock_config=True)
  flags.DEFINE_string("workdir", None, "Where each model's results go (one folder each).")
  app.run(main)
