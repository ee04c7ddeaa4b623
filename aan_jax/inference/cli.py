"""The predict command's flags and exit statuses, over `pipeline.predict_films`.

Exit status: 0 when every input gave its four files, 1 when some input failed (each one
`predict: FAILED <input>: <why>` line; the others go on) or missing extractor weights stopped
the run, 2 when the command line or settings cannot work (one `error: ...` line, no output
written), 130 on Ctrl-C (one `interrupted: ...` line; nothing half-written). The command
runs under `aan_jax.util.cli.run`, as the launchers do: `--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import sys

from aan_jax.inference import pipeline
from aan_jax.util import cli as util_cli


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
  p.add_argument("--overwrite", action="store_true",
                 help="replace reports in DIR made from other inputs (a report of the same "
                      "input is always replaced)")
  p.add_argument("--faces", default=None, metavar="DIR",
                 help="folder of <stem>.events.json face events (default: next to each input, "
                      "then the cache and DIR)")
  p.add_argument("--face-track", action="store_true",
                 help="run the face track (MTCNN + FER-2013, as `python -m extract --features "
                      "faces`) on each video, cached like the features, and show what the faces "
                      "show: a lane under the curves, face moments with thumbnails")
  p.add_argument("--fast", action="store_true",
                 help="extract a video's features with the fast preset (python -m extract "
                      "--fast: ResNet-50 and FlowNetS on a few frames per segment; speed and "
                      "fidelity in docs/extraction.md); the outputs say 'fast'. Default: every "
                      "frame, as the models were trained")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  p.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
  return p


def main(argv=None, *, prog: str = "python -m experiments.predict",
         description: str | None = None) -> int:
  """Parses the command line, runs the pipeline; returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = "--debug" in argv or None

  def run() -> int:
    args = build_parser(prog, description).parse_args(argv)
    return pipeline.predict_films(
        args.inputs, args.models, args.out, cache=args.cache, weights=args.weights,
        device=args.device, link_video=not args.no_video, faces_dir=args.faces,
        progress=not args.no_progress, overwrite=args.overwrite, face_track=args.face_track,
        preset="fast" if args.fast else "full",
        debug=bool(debug or util_cli.debug_requested(None))).exit_status
  return util_cli.run(run, debug=debug)
