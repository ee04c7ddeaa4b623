"""`python -m extract VIDEO [VIDEO ...] --out DIR`: one <stem>.npz per file (see docs/extraction.md).

Errors are one line (a FAILED line per bad file); `--debug` or AAN_DEBUG=1 shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

from aan_jax.util import cli
from aan_jax.data.features import FEATURES, canonical_modalities
from extract.presets import FAST


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m extract", description=__doc__)
  p.add_argument("videos", nargs="+", metavar="VIDEO", help="media files")
  p.add_argument("--out", required=True, help="folder for <video stem>.npz")
  p.add_argument("--segmentation", default="fixed:5",
                 help="fixed:5 | excerpt:64 | subsegments:4x16 | sliding:10:5 (default fixed:5)")
  p.add_argument("--features", default=",".join(FEATURES),
                 help=f"comma-separated subset of {','.join(FEATURES)},faces (default: the five)")
  p.add_argument("--fast", action="store_true",
                 help="the fast preset: ResNet-50 on "
                      f"{FAST.resnet50_frames} frames and FlowNetS on {FAST.flownet_pairs} "
                      "pairs per segment instead of all (I3D and the audio unchanged: sampling "
                      "I3D did not keep its features); about 2.7x less CPU time. Speed and "
                      "fidelity measured in docs/extraction.md; recorded in the metadata. "
                      "Default: every frame")
  p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
  p.add_argument("--weights", default="pretrained",
                 help="pretrained | random (tests only) | per feature, e.g. "
                      "i3d=pretrained,resnet50=random")
  p.add_argument("--missing-audio", choices=("error", "nan"), default="error",
                 help="a file with no audio stream: fail (default), or write NaN audio features "
                      "and list them in the metadata")
  p.add_argument("--face-fps", type=float, default=2.0,
                 help="faces: frames sampled per second for face detection (default 2); "
                      "writes DIR/<stem>.events.json too")
  p.add_argument("--overwrite", action="store_true",
                 help="redo files that are already done, and replace an output made from a "
                      "different source file (refused otherwise)")
  p.add_argument("--allow-truncated", action="store_true",
                 help="extract a file that holds less than its container declares (a download "
                      "cut short) instead of failing it; the shortfall goes in the metadata")
  p.add_argument("--debug", action="store_true",
                 help="show tracebacks instead of one-line errors (or set AAN_DEBUG=1)")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  p.add_argument("--compilation-cache", default="auto", metavar="DIR",
                 help="XLA's persistent compilation cache for I3D (saves its compile, ~8 s "
                      "on a GPU, in every later process): a folder, '' (off), or auto "
                      "(default: $AAN_COMPILATION_CACHE, else ~/.cache/aan_jax/xla on a GPU "
                      "and off on the CPU)")
  return p


class _Existing:
  """What is already at an output path: nothing, the same work, or something to keep."""

  def __init__(self, out: pathlib.Path, sha: str, options: dict):
    from extract.core import load_npz
    self.kind, self.detail = "none", ""
    if not out.exists() and not out.is_symlink():
      return
    if not out.is_file():
      self.kind, self.detail = "other", "is not a regular file"
      return
    try:
      meta = json.loads(load_npz(out)["metadata"])
    except ValueError as e:
      self.kind, self.detail = "other", f"is not a readable extractor output ({e})"
      return
    source = meta.get("source", {})
    if source.get("sha256") != sha:
      self.kind = "other"
      self.detail = (f"was made from a different file ({source.get('name', '?')}, sha256 "
                     f"{str(source.get('sha256'))[:12]}...)")
    elif meta.get("options") == options:
      self.kind = "done"
    else:
      self.kind = "same_source"  # same film, other options: redone, as asked


def _check_out_dir(out_dir: pathlib.Path) -> None:
  """--out must be a folder we can write in; found before any model is loaded."""
  if out_dir.exists() and not out_dir.is_dir():
    raise cli.UserError(f"--out {out_dir}: exists and is not a directory")
  try:
    out_dir.mkdir(parents=True, exist_ok=True)
    # os.access misses read-only mounts and some ACLs: try it for real.
    with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
      pass
  except OSError as e:
    raise cli.UserError(f"--out {out_dir}: cannot write there ({e.strerror or e}); nothing "
                        "was extracted") from None


def _check_input(video: str) -> None:
  if os.path.isdir(video):
    raise media_error(f"{video}: is a directory, not a media file (give the files in it, "
                      f"e.g. {video.rstrip('/')}/*.mp4)")
  if not os.path.exists(video):
    raise media_error(f"{video}: no such file")
  if not os.path.isfile(video):
    raise media_error(f"{video}: is not a regular file")
  if not os.access(video, os.R_OK):
    raise media_error(f"{video}: permission denied")


def media_error(msg: str):
  from extract.media import MediaError
  return MediaError(msg)


def _main(argv) -> int:
  args = _parser().parse_args(argv)
  from tqdm import tqdm
  from extract import core, media
  from extract.weights import WeightsNotFound
  try:
    features = canonical_modalities(args.features)
    media.parse_segmentation(args.segmentation)
    weights = core.parse_weights(args.weights, features)
    if not args.face_fps > 0:
      raise ValueError(f"--face-fps must be positive; got {args.face_fps}")
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  preset = "fast" if args.fast else "full"
  out_dir = pathlib.Path(args.out)
  _check_out_dir(out_dir)
  device = args.device
  if device is None:
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
  if "i3d" in features:
    from aan_jax.util import xla_cache
    xla_cache.enable(args.compilation_cache, "gpu" if device.startswith("cuda") else "cpu")
  stems: dict[str, str] = {}
  failed, written, skipped = 0, [], 0
  total = len(args.videos)
  quiet = args.no_progress

  def note_progress():
    done = len(written) + skipped
    cli.on_interrupt(
        f"{done} of {total} files done in {out_dir}/ (nothing half-written is left); run the "
        "same command to resume: finished files are skipped" if done else
        f"no file was finished; nothing half-written is left in {out_dir}/")

  note_progress()
  overall = tqdm(total=total, desc="files", unit="file", position=0, disable=quiet)
  try:
    for video in args.videos:
      stem = pathlib.Path(video).stem
      try:
        if stem in stems:
          raise media.MediaError(f"{video}: same stem as {stems[stem]}; both would write "
                                 f"{stem}.npz (rename one or extract them into different --out)")
        stems[stem] = video
        _check_input(video)
        target = out_dir / f"{stem}.npz"
        sha = core.file_sha256(video)
        options = core.options_key(args.segmentation, features, weights, args.missing_audio,
                                   args.face_fps, preset=preset)
        existing = _Existing(target, sha, options)
        events_path = out_dir / f"{stem}.events.json"
        if (existing.kind == "done" and not args.overwrite
            and ("faces" not in features or events_path.is_file())):
          overall.write(f"{video}: already done ({target}), skipped")
          skipped += 1
          note_progress()
          continue
        if existing.kind == "other" and not args.overwrite:
          raise media.MediaError(
              f"{video}: {target} {existing.detail}; not replaced (use --overwrite to replace "
              "it, or another --out)")
        bar = tqdm(desc=pathlib.Path(video).name, unit="seg", position=1, leave=False,
                   disable=quiet)

        def progress(done, total, bar=bar):
          bar.total = total
          bar.update(done - bar.n)
        try:
          result = core.extract_file(video, segmentation=args.segmentation, features=features,
                                     device=device, weights=weights,
                                     missing_audio=args.missing_audio, sha256=sha,
                                     allow_truncated=args.allow_truncated, progress=progress,
                                     face_fps=args.face_fps, preset=preset)
        finally:
          bar.close()
        if not args.overwrite and _Existing(target, sha, options).kind == "other":
          # Written by someone else while this file was extracted.
          raise media.MediaError(f"{video}: {target} appeared meanwhile from another source; "
                                 "not replaced (use --overwrite)")
        core.save_npz(result, target)
        if "events" in result:
          from extract.faces import save_events  # pylint: disable=g-import-not-at-top
          save_events(result["events"], events_path)
        written.append(target)
        note_progress()
        meta = json.loads(result["metadata"])
        notes = []
        if meta.get("truncated"):
          t = meta["truncated"]
          notes.append(f"TRUNCATED file: {t.get('missing_s', 0):.2f} s missing, features cover "
                       "what is there (--allow-truncated)")
        if meta["dropped_tail_s"]:
          notes.append(f"last {meta['dropped_tail_s']:.2f} s dropped (shorter than a segment)")
        if meta["nan_features"]:
          notes.append(f"no audio stream: {', '.join(meta['nan_features'])} are NaN")
        if "faces" in meta and not meta["faces"]["faces"]:
          notes.append("no face found: its events list is empty")
        random = [f for f, w in meta["weights"].items() if w.get("mode") == "random"]
        if random:
          notes.append(f"RANDOM weights for {', '.join(random)} (tests only)")
        if preset != "full":
          notes.insert(0, f"{preset} preset: frames sampled per segment, see the metadata's "
                       "'preset'")
        overall.write(f"{video}: {meta['num_segments']} segments -> {target}"
                      + (f" ({'; '.join(notes)})" if notes else ""))
      except (media.MediaError, WeightsNotFound, ValueError, OSError) as e:
        failed += 1
        msg = str(e)
        if isinstance(e, OSError) and e.filename is not None and e.strerror:
          msg = f"{e.filename}: {e.strerror}"
        if not msg.startswith(str(video)):
          msg = f"{video}: {msg}"
        overall.write(f"extract: FAILED {msg}", file=sys.stderr)
        if isinstance(e, WeightsNotFound):
          # Every later file would fail the same way.
          return 1
      finally:
        overall.update(1)
  finally:
    overall.close()
  if failed:
    print(f"extract: {failed} of {total} files failed", file=sys.stderr)
  return 1 if failed else 0


def main(argv=None) -> int:
  """0: every file done; 1: some failed (one FAILED line each) or a setting is unusable;
  2: bad arguments; 130: interrupted (what was kept is said)."""
  debug = None
  if argv is not None and "--debug" in argv:
    argv, debug = [a for a in argv if a != "--debug"], True
  return cli.run(lambda: _main(argv), debug=debug)


if __name__ == "__main__":
  sys.exit(main())
