"""`python -m extract VIDEO [VIDEO ...] --out DIR`: one <stem>.npz per file (see README)."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

from aan_jax.features import FEATURES, canonical_modalities


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m extract", description=__doc__)
  p.add_argument("videos", nargs="+", metavar="VIDEO", help="media files")
  p.add_argument("--out", required=True, help="folder for <video stem>.npz")
  p.add_argument("--segmentation", default="fixed:5",
                 help="fixed:5 | excerpt:64 | subsegments:4x16 | sliding:10:5 (default fixed:5)")
  p.add_argument("--features", default=",".join(FEATURES),
                 help=f"comma-separated subset of {','.join(FEATURES)},faces (default: the five)")
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
  p.add_argument("--overwrite", action="store_true", help="redo files that are already done")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  p.add_argument("--compilation-cache", default="auto", metavar="DIR",
                 help="XLA's persistent compilation cache for I3D (saves its compile, ~8 s "
                      "on a GPU, in every later process): a folder, '' (off), or auto "
                      "(default: $AAN_COMPILATION_CACHE, else ~/.cache/aan_jax/xla on a GPU "
                      "and off on the CPU)")
  return p


def _done(out: pathlib.Path, sha: str, options: dict) -> bool:
  """An existing output counts as done if it is valid and from the same source and options."""
  from extract.core import load_npz
  if not out.is_file():
    return False
  try:
    meta = json.loads(load_npz(out)["metadata"])
  except ValueError:
    return False
  return meta.get("source", {}).get("sha256") == sha and meta.get("options") == options


def main(argv=None) -> int:
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
    print(f"extract: {e}", file=sys.stderr)
    return 2
  device = args.device
  if device is None:
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
  if "i3d" in features:
    from aan_jax import xla_cache
    xla_cache.enable(args.compilation_cache, "gpu" if device.startswith("cuda") else "cpu")
  out_dir = pathlib.Path(args.out)
  stems: dict[str, str] = {}
  failed = 0
  quiet = args.no_progress
  overall = tqdm(total=len(args.videos), desc="files", unit="file", position=0, disable=quiet)
  for video in args.videos:
    stem = pathlib.Path(video).stem
    try:
      if stem in stems:
        raise media.MediaError(f"{video}: same stem as {stems[stem]}; both would write "
                               f"{stem}.npz (rename one or extract them into different --out)")
      stems[stem] = video
      if not os.path.isfile(video):
        raise media.MediaError(f"{video}: no such file")
      target = out_dir / f"{stem}.npz"
      sha = core.file_sha256(video)
      options = core.options_key(args.segmentation, features, weights, args.missing_audio,
                                 args.face_fps)
      events_path = out_dir / f"{stem}.events.json"
      if (not args.overwrite and _done(target, sha, options)
          and ("faces" not in features or events_path.is_file())):
        overall.write(f"{video}: already done ({target}), skipped")
        continue
      bar = tqdm(desc=pathlib.Path(video).name, unit="seg", position=1, leave=False,
                 disable=quiet)

      def progress(done, total, bar=bar):
        bar.total = total
        bar.update(done - bar.n)
      try:
        result = core.extract_file(video, segmentation=args.segmentation, features=features,
                                   device=device, weights=weights,
                                   missing_audio=args.missing_audio, sha256=sha,
                                   progress=progress, face_fps=args.face_fps)
      finally:
        bar.close()
      core.save_npz(result, target)
      if "events" in result:
        from extract.faces import save_events
        save_events(result["events"], events_path)
      meta = json.loads(result["metadata"])
      notes = []
      if meta["dropped_tail_s"]:
        notes.append(f"last {meta['dropped_tail_s']:.2f} s dropped (shorter than a segment)")
      if meta["nan_features"]:
        notes.append(f"no audio stream: {', '.join(meta['nan_features'])} are NaN")
      if "faces" in meta and not meta["faces"]["faces"]:
        notes.append("no face found: its events list is empty")
      random = [f for f, w in meta["weights"].items() if w.get("mode") == "random"]
      if random:
        notes.append(f"RANDOM weights for {', '.join(random)} (tests only)")
      overall.write(f"{video}: {meta['num_segments']} segments -> {target}"
                    + (f" ({'; '.join(notes)})" if notes else ""))
    except (media.MediaError, WeightsNotFound, ValueError, OSError) as e:
      failed += 1
      msg = str(e)
      if not msg.startswith(str(video)):
        msg = f"{video}: {msg}"
      overall.write(f"extract: FAILED {msg}", file=sys.stderr)
      if isinstance(e, WeightsNotFound):
        # Every later file would fail the same way.
        overall.close()
        return 1
    finally:
      overall.update(1)
  overall.close()
  if failed:
    print(f"extract: {failed} of {len(args.videos)} files failed", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
