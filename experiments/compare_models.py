"""The AAN family and the field's baselines side by side, with paired differences.

    python -m experiments.compare_models --config.dataset=synthetic --workdir=workdir/compare
    python -m experiments.compare_models --config.data_dir=~/tensorflow_datasets --workdir=workdir/compare
    python -m experiments.compare_models --config.models=aan ...        # or baselines, or names

Models: the Feature, Temporal and Feature+Temporal AANs and the baselines (the thesis'
LSTM, Sivaprasad et al.'s late-fusion LSTM, a linear floor): `--config.models=all`
(default), `aan`, `baselines`, or comma-separated names.

Runs the engine once per model (each with the paper's hyperparameters for that model unless
overridden; each in workdir/<model>, so an interrupted comparison resumes), prints their
pooled figures side by side (the published rows below: the paper's Table I for the same
modality set on COGNIMUSE, with Sivaprasad et al.'s LSTM for audio+video; Table II and later
work on EIMT16), then each pair's difference on the same test predictions with a 95%
bootstrap interval over groups, and writes workdir/comparison.json.
"""

from aan_jax.training import launch

if __name__ == "__main__":
  launch.configure_xla()

# pylint: disable=g-import-not-at-top,wrong-import-position
from aan_jax.training import compare
from aan_jax.training import regression as train

MODELS = compare.AAN_FAMILY + compare.BASELINES


def get_config():
  c = train.unset_presets(train.get_config())
  c.dataset = "cognimuse"
  c.preset = "cognimuse"
  c.protocol = "leave_one_out"
  c.models = ",".join(MODELS)
  return c


if __name__ == "__main__":
  launch.main(get_config, compare.compare_models)
