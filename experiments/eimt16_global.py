"""MediaEval 2016 Global (EIMT16): the paper's Table II.

    python -m experiments.eimt16_global --config.data_dir=~/tensorflow_datasets --workdir=workdir/eimt16
    python -m experiments.eimt16_global --config.model=temporal_aan ...   # reads temporal4
    python -m experiments.eimt16_global --config.dataset=synthetic --workdir=workdir/eimt16_demo

Train on the 9,800 training excerpts (validation carved from them), test on the 1,200 test
excerpts; the paper's settings (lr 0.01, batch 40 for arousal and 20 for valence, window 4).
"""

from aan_jax.training import launch

if __name__ == "__main__":
  launch.configure_xla()

# pylint: disable=g-import-not-at-top,wrong-import-position
from aan_jax.training import regression as train


def get_config():
  c = train.unset_presets(train.get_config())
  c.dataset = "eimt16_global"   # or "synthetic"
  c.preset = "eimt16_global"  # its paper settings, for the synthetic demo too
  c.protocol = "fixed_split"
  return c


if __name__ == "__main__":
  launch.main(get_config, train.train_and_evaluate)
