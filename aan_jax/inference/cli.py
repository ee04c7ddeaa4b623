"""The predict command's flags and exit statuses, over `pipeline.predict_films`.

Exit status: 0 when every input gave its four files, 1 when some input failed (or missing
extractor weights stopped the run), 2 when the settings cannot work (no output written).
"""

from __future__ import annotations

import argparse
import sys

from aan_jax.inference import pipeline


def build_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=prog, description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files or extractor .npz files")
  p.add_argument("--models", action="append", required=True, metavar="SOURCE",
                 help="released:DIR | WORKDIR | NAME=SOURCE; repeat to compare")
  p.add_argument("--out", required=True, help="folder for the outputs")
  p.add_argument("--cache", default=None,
                 help="feature cache (default DIR/features): a re-run with other models reuses "
                      "the features and decodes nothing")
  p.add_argument("--weights", default="pretrained",
                 help="extractor weights: pretrained | random (tests only; marked on every "
                      "output) | per feature, e.g. i3d=pretrained,resnet50=random")
  p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
  p.add_argument("--no-video", action="store_true",
                 help="the HTML page without the video player (else it links the video by a "
                      "relative path)")
  p.add_argument("--faces", default=None, metavar="DIR",
                 help="folder of <stem>.events.json face events (default: next to each input, "
                      "then the cache and DIR)")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  return p


def main(argv=None, *, prog: str = "python -m experiments.predict",
         description: str | None = None) -> int:
  """Parses the command line, runs the pipeline; returns the exit status."""
  args = build_parser(prog, description).parse_args(argv)
  try:
    run = pipeline.predict_films(args.inputs, args.models, args.out, cache=args.cache,
                                 weights=args.weights, device=args.device,
                                 link_video=not args.no_video, faces_dir=args.faces,
                                 progress=not args.no_progress)
  except pipeline.SetupError as e:
    print(f"predict: {e}", file=sys.stderr)
    return 2
  return run.exit_status
