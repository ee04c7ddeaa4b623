"""MediaEval 2017/2018 continuous (LIRIS-ACCEDE long movies): valence, arousal and fear.

    python -m experiments.mediaeval_continuous --config.edition=2017 --workdir=workdir/me17
    python -m experiments.mediaeval_continuous --config.protocol=dev_loo ...  # leave one dev movie out
    python -m experiments.mediaeval_continuous --config.dataset=synthetic --workdir=workdir/me_demo

Train on the dev movies (validation movies drawn from dev), test on the official test movies.
"""

from aan_jax.training import launch

if __name__ == "__main__":
  launch.configure_xla()

# pylint: disable=g-import-not-at-top,wrong-import-position
from aan_jax.training import regression as train


def get_config():
  c = train.unset_presets(train.get_config())
  c.dataset = "liris_accede_continuous"   # or "synthetic"
  c.edition = 2017                        # 2017 | 2018: the builder config mediaeval<edition>
  c.tfds_config = "mediaeval2017"         # follows edition (see run)
  c.preset = "liris_accede_continuous"  # its paper settings, for the synthetic demo too
  c.protocol = "official"
  c.targets = ("valence", "arousal", "fear")
  return c


def run(config, workdir):
  if config.edition not in (2017, 2018):
    raise train.ConfigError(f"edition: {config.edition!r}; use 2017 or 2018")
  with config.unlocked():
    if config.tfds_config in ("", "mediaeval2017", "mediaeval2018"):
      config.tfds_config = f"mediaeval{config.edition}"
    del config["edition"]
  return train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  launch.main(get_config, run)
