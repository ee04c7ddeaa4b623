"""Categorical emotion of user videos: VAANet on VideoEmotion-8 or Ekman-6, every split at once.

    python -m experiments.video_emotion --config.dataset=synthetic --workdir=workdir/ve_demo
    python -m experiments.video_emotion --config.dataset=videoemotion8 --workdir=workdir/ve8
    python -m experiments.video_emotion --config.dataset=ekman6 --config.tfds_config=i3d ...

Every official split (x seeds) trains in one compiled program for VAANet's fixed 100
epochs (Adam 2e-4, batch 32, PCCE); each split's last-epoch model is tested on its test
list; results.json holds the mean accuracy over splits and the figures per split.
"""

from aan_jax.training import launch

if __name__ == "__main__":
  launch.configure_xla()

# pylint: disable=g-import-not-at-top,wrong-import-position
from aan_jax.training import categorical


def get_config():
  return categorical.get_config()


if __name__ == "__main__":
  launch.main(get_config, categorical.train_and_evaluate)
