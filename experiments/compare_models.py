"""The Feature, Temporal and Feature+Temporal AANs side by side, with paired differences.

    python -m experiments.compare_models --config.dataset=synthetic --workdir=workdir/compare
    python -m experiments.compare_models --config.data_dir=~/tensorflow_datasets --workdir=workdir/compare

Runs the engine once per model (each with the paper's hyperparameters for that model unless
overridden; each in workdir/<model>, so an interrupted comparison resumes), prints their
pooled figures side by side (the paper's rows below for COGNIMUSE with all five features),
then each pair's difference on the same test predictions with a 95% bootstrap interval over
groups, and writes workdir/comparison.json.
"""

from aan_jax import launch

if __name__ == "__main__":
  launch.configure_xla()

# pylint: disable=g-import-not-at-top,wrong-import-position
from aan_jax import compare, train

MODELS = ("feature_aan", "temporal_aan", "feature_temporal_aan")


def get_config():
  c = train.unset_presets(train.get_config())
  c.dataset = "cognimuse"
  c.preset = "cognimuse"
  c.protocol = "leave_one_out"
  c.models = ",".join(MODELS)
  return c


if __name__ == "__main__":
  launch.main(get_config, compare.compare_models)
