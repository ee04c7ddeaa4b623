"""Leave one movie out on COGNIMUSE (or the synthetic stand-in): arousal and valence.

    python -m experiments.cognimuse_loo --config.dataset=synthetic --workdir=workdir/synthetic
    python -m experiments.cognimuse_loo --config.data_dir=~/tensorflow_datasets --workdir=workdir/cog
    python -m experiments.cognimuse_loo --config.early_stopping=held_out ...  # authors' scripts
    python -m experiments.cognimuse_loo --config.sweep.learning_rate=1e-4,5e-4,1e-3 ...

Writes the engine's output contract to --workdir (aan_jax.training.regression.train_and_evaluate).
"""

from aan_jax.training import launch

if __name__ == "__main__":
  launch.configure_xla()

# pylint: disable=g-import-not-at-top,wrong-import-position
from aan_jax.training import regression as train


def get_config():
  """The paper's protocol on COGNIMUSE; unset settings come from the model's presets."""
  c = train.unset_presets(train.get_config())
  c.dataset = "cognimuse"       # or "synthetic" (the demo)
  c.preset = "cognimuse"  # its paper settings, for the synthetic demo too
  c.protocol = "leave_one_out"
  return c


if __name__ == "__main__":
  launch.main(get_config, train.train_and_evaluate)
