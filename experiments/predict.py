"""`python -m experiments.predict INPUT [INPUT ...] --models SOURCE --out DIR`: emotion curves,
notable moments and an interactive report for any film (see README, "Predict your own film").

INPUT: a video file (anything PyAV decodes) or an .npz from `python -m extract`.
SOURCE: released:DIR (the authors' checkpoints; released-audio:DIR, released-video:DIR or
released-audio+video:DIR to pick a pair), a training workdir (or its models/ folder, or one
exported model), each optionally named NAME=SOURCE; repeat --models to compare sources.
Outputs per input in DIR: <stem>.csv, <stem>.json, <stem>.png, <stem>.html.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import re
import sys


from aan_jax.inference import film_report
from aan_jax.inference import predict
from aan_jax.data.features import FEATURE_DIMS

# Every feature a model may read, in canonical order: the paper's five, then faces.
ALL = tuple(FEATURE_DIMS)


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m experiments.predict", description=__doc__,
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


def available_features(weights: dict[str, str]) -> list[str]:
  """The features the extractor can compute with these weight modes (no file is read)."""
  from extract import weights as weights_lib  # pylint: disable=g-import-not-at-top
  out = []
  for f in ALL:
    if weights.get(f) == "random" or f not in weights_lib.WEIGHT_FILES:
      out.append(f)
      continue
    try:
      weights_lib.resolve(f)
      out.append(f)
    except weights_lib.WeightsNotFound:
      pass
  return out


def _seg_tag(seg: str) -> str:
  return re.sub(r"[^A-Za-z0-9]+", "-", seg)


def cached_features(video: str, sha: str, seg: str, need: list[str], weights: dict,
                    cache: pathlib.Path, device: str, progress) -> tuple[dict, bool]:
  """The file's features for one segmentation, from the cache or extracted (only the
  missing ones) and added to it; returns (arrays + metadata, whether anything was decoded)."""
  from extract import core  # pylint: disable=g-import-not-at-top
  path = cache / f"{pathlib.Path(video).stem}.{sha[:12]}.{_seg_tag(seg)}.npz"
  have: dict = {}
  if path.is_file():
    try:
      have = core.load_npz(path)
      meta = json.loads(have["metadata"])
      if meta["source"]["sha256"] != sha or meta["segmentation"] != seg:
        have = {}
    except (ValueError, KeyError):
      have = {}  # a damaged cache entry is redone
  if have:
    meta = json.loads(have["metadata"])
    usable = [f for f in ALL if f in have and meta["options"]["weights"].get(f) == weights[f]]
  else:
    usable = []
  missing = [f for f in need if f not in usable]
  if not missing:
    return have, False
  new = core.extract_file(video, segmentation=seg, features=missing, device=device,
                          weights={f: weights[f] for f in missing}, sha256=sha, progress=progress)
  if "events" in new:  # the faces extractor's events, found there by the report
    from extract.faces import save_events  # pylint: disable=g-import-not-at-top
    save_events(new["events"], cache / f"{pathlib.Path(video).stem}.events.json")
  if usable:
    if len(have["start_s"]) != len(new["start_s"]):
      raise ValueError(f"{path}: cached segments do not match a new extraction; delete it")
    old_meta = json.loads(have["metadata"])
    meta = json.loads(new["metadata"])
    feats = [f for f in ALL if f in usable or f in missing]
    for k in ("weights", "dims"):
      meta[k] = {**{f: old_meta[k][f] for f in usable}, **meta[k]}
    meta["features"] = feats
    meta["options"]["features"] = feats
    meta["options"]["weights"] = {**{f: old_meta["options"]["weights"][f] for f in usable},
                                  **meta["options"]["weights"]}
    merged = {f: have[f] for f in usable}
    merged.update({f: new[f] for f in missing})
    merged.update(start_s=new["start_s"], end_s=new["end_s"],
                  metadata=json.dumps(meta, sort_keys=True))
    new = merged
  core.save_npz(new, path)
  return new, True


def _find_face_events(inp: str, dirs: list) -> str | None:
  stem = pathlib.Path(inp).stem
  for d in [pathlib.Path(inp).parent, *dirs]:
    if d is not None and (pathlib.Path(d) / f"{stem}.events.json").is_file():
      return str(pathlib.Path(d) / f"{stem}.events.json")
  return None


def _random_features(metas: list[dict], used: set) -> list[str]:
  out = set()
  for m in metas:
    for f, w in m.get("weights", {}).items():
      if f in used and isinstance(w, dict) and w.get("mode") == "random":
        out.add(f)
  return [f for f in ALL if f in out]


def _versions() -> dict:
  import importlib.metadata as md  # pylint: disable=g-import-not-at-top
  out = {}
  for pkg in ("aan-jax", "jax", "flax", "numpy", "av", "torch"):
    try:
      out[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      pass
  return out


def predict_one(inp: str, sources: list, needs: dict, args, weights: dict, cache: pathlib.Path,
                device: str, bar_factory) -> dict:
  """Features -> curves -> the four outputs for one input; returns a summary."""
  from extract import core  # pylint: disable=g-import-not-at-top
  stem = pathlib.Path(inp).stem
  if not os.path.isfile(inp):
    raise ValueError(f"{inp}: no such file")
  feats_by_seg, metas, decoded = {}, [], False
  if inp.endswith(".npz"):
    data = core.load_npz(inp)
    meta = json.loads(data["metadata"])
    sha = meta.get("source", {}).get("sha256", "")
    for seg, need in needs.items():
      if meta.get("segmentation") != seg:
        raise ValueError(f"{inp}: extracted with segmentation {meta.get('segmentation')!r} but "
                         f"the models need {seg!r}; extract again with --segmentation {seg}")
      absent = [f for f in need if f not in data]
      if absent:
        raise ValueError(f"{inp}: lacks {', '.join(absent)}, which the models need")
      feats_by_seg[seg] = data
    metas.append(meta)
    video = None
    name = meta.get("source", {}).get("name")
    if name and (pathlib.Path(inp).parent / name).is_file():
      video = str(pathlib.Path(inp).parent / name)
  else:
    sha = core.file_sha256(inp)
    video = inp
    for seg, need in needs.items():
      bar = bar_factory(f"{pathlib.Path(inp).name} [{seg}]")

      def progress(done, total, bar=bar):
        bar.total = total
        bar.update(done - bar.n)
      try:
        data, did = cached_features(inp, sha, seg, need, weights, cache, device, progress)
      finally:
        bar.close()
      decoded |= did
      feats_by_seg[seg] = data
      metas.append(json.loads(data["metadata"]))
  curves = predict.predict_curves(feats_by_seg, sources)
  used = {f for need in needs.values() for f in need}
  random = _random_features(metas, used)
  events = predict.events(curves)
  faces_path = _find_face_events(inp, [args.faces, cache, args.out])
  face_events = predict.load_face_events(faces_path) if faces_path else []
  out = pathlib.Path(args.out)
  meta0 = metas[0]
  metadata = {
      "input": os.path.basename(inp),
      "source_sha256": sha,
      "media": meta0.get("media"),
      "sources": [s.describe() for s in sources],
      "segmentation": {seg: f for seg, f in needs.items()},
      "features": sorted(used, key=ALL.index),
      "weights": {f: m["weights"][f] for m in metas for f in m.get("weights", {}) if f in used},
      "random_weights": random,
      "face_events_file": os.path.basename(faces_path) if faces_path else None,
      "versions": {**meta0.get("versions", {}), **_versions()},
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  title = f"{stem}: " + ", ".join(s.name for s in sources)
  film_report.write_file(str(out / f"{stem}.csv"), film_report.to_csv(curves, random))
  film_report.write_file(str(out / f"{stem}.json"),
                            film_report.to_json(curves, events, face_events, metadata))
  film_report.to_png(curves, events, title, str(out / f"{stem}.png"), random)
  video_src = None
  if video and not args.no_video:
    video_src = pathlib.Path(os.path.relpath(os.path.abspath(video), os.path.abspath(out))
                             ).as_posix()
  film_report.write_file(str(out / f"{stem}.html"), film_report.to_html(
      curves, events, face_events, metadata, title, video_src))
  return {"segments": {seg: int(len(d["start_s"])) for seg, d in feats_by_seg.items()},
          "decoded": decoded, "random": random, "events": len(events),
          "faces": len(face_events)}


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from extract import core, media  # pylint: disable=g-import-not-at-top
  from extract.weights import WeightsNotFound  # pylint: disable=g-import-not-at-top
  try:
    weights = core.parse_weights(args.weights, ALL)
  except ValueError as e:
    print(f"predict: {e}", file=sys.stderr)
    return 2
  videos = [i for i in args.inputs if not i.endswith(".npz")]
  if videos:
    available = available_features(weights)
  else:  # only .npz inputs: what every one of them holds
    available = list(ALL)
    for i in args.inputs:
      try:
        held = set(core.load_npz(i))
        available = [f for f in available if f in held]
      except ValueError:
        pass  # reported per file below
  try:
    sources = [predict.load_source(s, available=available) for s in args.models]
  except predict.SourceError as e:
    print(f"predict: {e}", file=sys.stderr)
    return 2
  names = [s.name for s in sources]
  if len(set(names)) != len(names):
    print(f"predict: two sources are named alike ({names}); name them NAME=SOURCE",
          file=sys.stderr)
    return 2
  needs: dict[str, list[str]] = {}
  for s in sources:
    for seg in s.segmentations:
      need = set(needs.get(seg, [])) | set(s.features(seg))
      needs[seg] = [f for f in ALL if f in need]
  for seg in needs:
    media.parse_segmentation(seg)
  if videos:  # a feature the models need but the extractor cannot compute: say so up front
    from extract import weights as weights_lib  # pylint: disable=g-import-not-at-top
    for f in sorted({f for n in needs.values() for f in n} - set(available), key=ALL.index):
      try:
        weights_lib.resolve(f)
      except WeightsNotFound as e:
        print(f"predict: the models need {f}: {e}", file=sys.stderr)
        return 2
  device = args.device
  if videos and device is None:
    import torch  # pylint: disable=g-import-not-at-top
    device = "cuda" if torch.cuda.is_available() else "cpu"
  if videos and any("i3d" in n for n in needs.values()):
    from aan_jax.util import xla_cache  # pylint: disable=g-import-not-at-top
    xla_cache.enable("auto", "gpu" if str(device).startswith("cuda") else "cpu")
  cache = pathlib.Path(args.cache or os.path.join(args.out, "features"))
  quiet = args.no_progress
  overall = tqdm(total=len(args.inputs), desc="files", unit="file", position=0, disable=quiet)
  print(f"predict: {len(args.inputs)} input(s); models: "
        + "; ".join(f"{s.name} ({len(s.models)} models: {', '.join(s.targets)})" for s in sources)
        + "; features: " + ", ".join(f"{seg} -> {','.join(f)}" for seg, f in needs.items()),
        file=sys.stderr)
  failed, stems = 0, {}
  for inp in args.inputs:
    stem = pathlib.Path(inp).stem
    try:
      if stem in stems:
        raise ValueError(f"same stem as {stems[stem]}; both would write {stem}.* (rename one)")
      stems[stem] = inp
      s = predict_one(inp, sources, needs, args, weights, cache, device,
                      lambda d: tqdm(desc=d, unit="seg", position=1, leave=False,
                                     disable=quiet))
      notes = [f"{n} segments ({seg})" for seg, n in s["segments"].items()]
      notes.append("features extracted" if s["decoded"] else "features from the cache/npz")
      notes.append(f"{s['events']} events" + (f", {s['faces']} face events" if s["faces"] else ""))
      if s["random"]:
        notes.append(f"RANDOM weights for {', '.join(s['random'])} (tests only)")
      overall.write(f"{inp}: {'; '.join(notes)} -> {pathlib.Path(args.out) / stem}"
                    ".{csv,json,png,html}")
    except (media.MediaError, WeightsNotFound, ValueError, OSError) as e:
      failed += 1
      msg = str(e)
      if not msg.startswith(str(inp)):
        msg = f"{inp}: {msg}"
      overall.write(f"predict: FAILED {msg}", file=sys.stderr)
      if isinstance(e, WeightsNotFound):
        overall.close()
        return 1  # every later file would fail the same way
    finally:
      overall.update(1)
  overall.close()
  if failed:
    print(f"predict: {failed} of {len(args.inputs)} inputs failed", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
