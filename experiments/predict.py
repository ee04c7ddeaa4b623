"""`python -m experiments.predict INPUT [INPUT ...] --models SOURCE --out DIR`: emotion curves,
notable moments and an interactive report for any film (see docs/predict.md).

INPUT: a video file (anything PyAV decodes) or an .npz from `python -m extract`.
SOURCE: released:DIR (the authors' checkpoints; released-audio:DIR, released-video:DIR or
released-audio+video:DIR to pick a pair), a training workdir (or its models/ folder, or one
exported model), each optionally named NAME=SOURCE; repeat --models to compare sources.
Outputs per input in DIR: <stem>.csv, <stem>.json, <stem>.png, <stem>.html.
"""

import sys

from aan_jax.inference import cli


def main(argv=None) -> int:
  return cli.main(argv, prog="python -m experiments.predict", description=__doc__)


if __name__ == "__main__":
  sys.exit(main())
