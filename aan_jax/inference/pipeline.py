"""Any film to emotion curves, notable moments and a report (`python -m experiments.predict`).

    from aan_jax.inference import pipeline
    run = pipeline.predict_films(["my_cut.mp4"], ["released:path/to/attendaffectnet"], "report/")
    run.films[0].summary["outputs"]["html"]          # report/my_cut.html
    run.exit_status                                   # 0: every input gave its four files

Per input: its features (a video: extracted, only those the feature cache lacks, and added to
the cache; an .npz from `python -m extract`: read), the curves of every model source
(`predict.predict_curves`), the notable moments, and <stem>.csv, .json, .png, .html in the
output folder (`film_report`). Settings that cannot work (bad weights, an unusable source, a
feature the extractor cannot compute) raise `SetupError` before any output is written; a bad
input is reported on one line and the next one is tried. The command's messages are printed
here (stdout: one line per input done; stderr: the rest), with its progress bars unless
progress=False.

The feature extractors (`extract`, which needs torch) are imported inside the functions that
use them, so that importing this module needs neither.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import re
import sys
from typing import Callable, Mapping, Sequence

from aan_jax.data import featfile
from aan_jax.data.features import FEATURE_DIMS
from aan_jax.inference import face_track as faces
from aan_jax.inference import film_report
from aan_jax.inference import predict
from aan_jax.inference import report_html
from aan_jax.inference import report_set
from aan_jax.inference.report_set import printable
from aan_jax.util import cli as util_cli
from aan_jax.util.hashing import file_sha256

# Every feature a model may read, in canonical order: the paper's five, then faces.
ALL = tuple(FEATURE_DIMS)
OUTPUTS = report_set.OUTPUTS


class SetupError(util_cli.UsageError, ValueError):
  """Settings that cannot work; no output was written (the command exits with 2)."""


@dataclasses.dataclass
class FilmResult:
  """One input's outcome: `predict_film`'s summary, or the one-line message of its failure."""
  input: str
  summary: dict | None = None
  error: str | None = None


@dataclasses.dataclass
class PredictionRun:
  """What `predict_films` did, input by input (in order; inputs after a stop are absent)."""
  films: list[FilmResult]
  stopped: bool = False  # extractor weights were missing: every later input would fail alike

  @property
  def failed(self) -> list[FilmResult]:
    return [f for f in self.films if f.error is not None]

  @property
  def exit_status(self) -> int:
    return 1 if self.failed else 0


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
                    cache: pathlib.Path, device: str, progress, preset: str = "full"
                    ) -> tuple[dict, bool]:
  """The file's features for one segmentation, from the cache or extracted (only the
  missing ones) and added to it; returns (arrays + metadata, whether anything was decoded).

  The cache is keyed on the extraction preset (its own file, and the metadata's preset
  checked): features of one preset are never served for another."""
  from extract import core  # pylint: disable=g-import-not-at-top
  tag = "" if preset == "full" else f".{preset}"
  path = cache / f"{pathlib.Path(video).stem}.{sha[:12]}.{_seg_tag(seg)}{tag}.npz"
  have, usable = {}, []
  if path.is_file():
    try:  # a damaged or stale entry (an older format, no options) is redone
      have = core.load_npz(path)
      meta = json.loads(have["metadata"])
      opts = meta.get("options")
      if (meta.get("source", {}).get("sha256") != sha or meta.get("segmentation") != seg
          or not isinstance(opts, dict) or not isinstance(opts.get("weights"), dict)
          or not isinstance(meta.get("weights"), dict) or not isinstance(meta.get("dims"), dict)
          or featfile.preset_of(meta) != preset):
        have = {}
      else:
        usable = [f for f in ALL if f in have and opts["weights"].get(f) == weights[f]
                  and f in meta["weights"] and f in meta["dims"]
                  and f not in meta.get("nan_features", [])]
        if "faces" in usable and faces.cached(cache, video, sha) is None:
          usable.remove("faces")  # its events are gone: the track runs again
    except ValueError:
      have = {}
  missing = [f for f in need if f not in usable]
  if not missing:
    return have, False
  new = core.extract_file(video, segmentation=seg, features=missing, device=device,
                          weights={f: weights[f] for f in missing}, sha256=sha, progress=progress,
                          preset=preset)
  if "events" in new:  # the faces extractor's events, found there by the report
    faces.save(cache, video, sha, new["events"], new["metadata"])
  if usable:
    new = _merge_cached(have, usable, new, missing, path)
  core.save_npz(new, path)
  return new, True


def _merge_cached(have: dict, usable: list[str], new: dict, missing: list[str],
                  path: pathlib.Path) -> dict:
  """A cache entry's usable features and a new extraction's, with both metadata merged."""
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
  return merged


def random_features(metas: list[dict], used: set) -> list[str]:
  """The used features that some extraction computed with random weights (canonical order)."""
  out = set()
  for m in metas:
    for f, w in m.get("weights", {}).items():
      if f in used and isinstance(w, dict) and w.get("mode") == "random":
        out.add(f)
  return [f for f in ALL if f in out]


def package_versions() -> dict:
  """The installed versions of the packages a prediction depends on (those installed)."""
  import importlib.metadata as md  # pylint: disable=g-import-not-at-top
  out = {}
  for pkg in ("aan-jax", "jax", "flax", "numpy", "av", "torch"):
    try:
      out[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      pass
  return out


def feature_needs(sources: Sequence[predict.Source]) -> dict[str, list[str]]:
  """Segmentation -> the features (canonical order) some source's models read under it."""
  needs: dict[str, list[str]] = {}
  for s in sources:
    for seg in s.segmentations:
      need = set(needs.get(seg, [])) | set(s.features(seg))
      needs[seg] = [f for f in ALL if f in need]
  return needs


def _input_features(inp: str, needs: dict, weights: dict, cache: pathlib.Path, device: str,
                    bar_factory, preset: str = "full") -> tuple[dict, list, str, str | None, bool]:
  """(features by segmentation, their metadata, source sha256, the video or None, decoded?)."""
  from extract import core  # pylint: disable=g-import-not-at-top
  feats_by_seg, metas, decoded = {}, [], False
  if inp.endswith(".npz"):
    data = core.load_npz(inp)
    meta = json.loads(data["metadata"])
    sha = meta.get("source", {}).get("sha256", "")
    have_seg = featfile.segmentation_of(data)
    for seg, need in needs.items():
      if have_seg is None:
        raise ValueError(f"{inp}: its segments are not of one length at a regular hop and its "
                         f"metadata declares no 'segmentation'; the models need {seg!r}")
      if have_seg != seg:
        how = "extracted with" if meta.get("segmentation") else "its segments follow"
        raise ValueError(f"{inp}: {how} segmentation {have_seg!r} but the models need "
                         f"{seg!r}; extract again with --segmentation {seg}")
      absent = [f for f in need if f not in data]
      if absent:
        raise ValueError(f"{inp}: lacks {', '.join(absent)}, which the models need")
      feats_by_seg[seg] = data
    metas.append(meta)
    video = None
    name = meta.get("source", {}).get("name")
    if name and (pathlib.Path(inp).parent / name).is_file():
      video = str(pathlib.Path(inp).parent / name)
    return feats_by_seg, metas, sha, video, decoded
  sha = file_sha256(inp)
  for seg, need in needs.items():
    bar = bar_factory(f"{pathlib.Path(inp).name} [{seg}]")

    def progress(done, total, bar=bar):
      bar.total = total
      bar.update(done - bar.n)
    try:
      data, did = cached_features(inp, sha, seg, need, weights, cache, device, progress, preset)
    except Exception as e:  # pylint: disable=broad-except
      if "has no audio stream" in str(e):  # the extractor's advice names its own option
        raise ValueError(str(e).split(" (use --missing-audio")[0] + " (use video-only models, "
                         "e.g. released-video:DIR, or give a feature file made with `python -m "
                         "extract --missing-audio nan`: its audio gaps show in the report)"
                         ) from None
      raise
    finally:
      bar.close()
    decoded |= did
    feats_by_seg[seg] = data
    metas.append(json.loads(data["metadata"]))
  return feats_by_seg, metas, sha, inp, decoded


def _declared_missing(metas: list, feats_by_seg: dict) -> dict[str, set]:
  """Segmentation -> the features the input declares missing (`nan_features`)."""
  if len(metas) == 1:  # an .npz: one metadata for every segmentation
    return {seg: set(metas[0].get("nan_features", [])) for seg in feats_by_seg}
  return {seg: set(m.get("nan_features", [])) for seg, m in zip(feats_by_seg, metas)}


def predict_film(inp: str, sources: list, needs: dict, out_dir: str | os.PathLike, *,
                 weights: dict, cache: pathlib.Path, device: str | None, bar_factory: Callable,
                 faces_dir: str | None = None, link_video: bool = True,
                 overwrite: bool = False, face_track: bool = False, preset: str = "full") -> dict:
  """Features -> curves -> the four outputs for one input, written as a set (all four or
  none); returns a summary (segments per segmentation, whether anything was decoded, the
  random-weight features, the number of events and face events, and the outputs' paths).

  A report in out_dir made from a different input is not replaced unless `overwrite`.
  face_track: run the face track on the input's video (`face_track.run`, cached) and show it.
  """
  stem = pathlib.Path(inp).stem
  if not os.path.isfile(inp):
    raise ValueError(f"{inp}: no such file" if not os.path.exists(inp) else
                     f"{inp}: is not a regular file (a video or a feature .npz)")
  input_sha = file_sha256(inp)
  may_replace = lambda: None if overwrite else report_set.existing(out_dir, stem, input_sha)
  why = may_replace()
  if why:
    raise ValueError(f"{inp}: {why}; not replaced (use --overwrite to replace it, or another "
                     "--out)")
  feats_by_seg, metas, sha, video, decoded = _input_features(inp, needs, weights, cache, device,
                                                             bar_factory, preset)
  # What the features were extracted with ("fast" where any of them came from the fast preset).
  extraction = "fast" if any(featfile.preset_of(m) == "fast" for m in metas) else "full"
  empty = [seg for seg, d in feats_by_seg.items() if len(d["start_s"]) == 0]
  if empty:
    raise ValueError(f"{inp}: has 0 segments ({empty[0]}): nothing to predict (the film is "
                     "shorter than one segment?)")
  curves = predict.predict_curves(feats_by_seg, sources)
  report_set.check_finite(curves, sources, feats_by_seg,
                          _declared_missing(metas, feats_by_seg))
  used = {f for need in needs.values() for f in need}
  events = predict.events(curves)
  fr = faces.for_report(inp, sha, video, track=face_track, mode=weights.get("faces", "pretrained"),
                        dirs=[faces_dir, cache, out_dir], cache=cache, device=device,
                        bar_factory=bar_factory)
  face_events = fr.events
  random = random_features(metas, used)
  if fr.random and "faces" not in random:
    random.append("faces")  # the expressions shown come from a random classifier
  out = pathlib.Path(out_dir)
  meta0 = metas[0]
  metadata = {
      "input": os.path.basename(inp),
      "input_sha256": input_sha,
      "source_sha256": sha,
      "media": meta0.get("media"),
      "sources": [s.describe() for s in sources],
      "segmentation": {seg: f for seg, f in needs.items()},
      "features": sorted(used, key=ALL.index),
      "weights": {f: m["weights"][f] for m in metas
                  for f in (m.get("weights") or {}) if f in used},
      "random_weights": random,
      "extraction_preset": extraction,
      "face_events_file": os.path.basename(fr.path) if fr.path else None,
      "face_track": fr.metadata,
      "moments": predict.moment_rules(curves, events),
      "versions": {**(meta0.get("versions") or {}), **package_versions()},
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  title = f"{stem}: " + ", ".join(s.name for s in sources)
  if extraction == "fast":
    title += " (fast features)"
  video_src = None
  if video and link_video:
    video_src = pathlib.Path(os.path.relpath(os.path.abspath(video), os.path.abspath(out))
                             ).as_posix()
  paths = report_set.write_set(out, stem, {
      "csv": lambda p: film_report.write_file(p, film_report.to_csv(
          curves, random, "fast features (python -m extract --fast: ResNet-50 and FlowNetS on a "
          "few frames per segment)" if extraction == "fast" else "")),
      "json": lambda p: film_report.write_file(
          p, film_report.to_json(curves, events, face_events, metadata, fr.moments)),
      "png": lambda p: film_report.to_png(curves, events, title, p, random),
      "html": lambda p: film_report.write_file(p, report_html.to_html(
          curves, events, face_events, metadata, title, video_src, fr.moments, fr.thumbs)),
  }, may_replace)
  return {"segments": {seg: int(len(d["start_s"])) for seg, d in feats_by_seg.items()},
          "decoded": decoded, "random": random, "events": len(events),
          "faces": len(face_events), "extraction_preset": extraction,
          "face_moments": len(fr.moments), "outputs": paths}


def load_sources(inputs: Sequence[str], model_sources: Sequence[str],
                 weights: dict[str, str]) -> tuple[list[predict.Source], dict[str, list[str]]]:
  """The model sources (each released pair chosen from what can be computed for these inputs)
  and the features they need per segmentation; SetupError when they cannot work."""
  from extract import core, media  # pylint: disable=g-import-not-at-top
  from extract import weights as weights_lib  # pylint: disable=g-import-not-at-top
  videos = [i for i in inputs if not i.endswith(".npz")]
  if videos:
    available = available_features(weights)
  else:  # only .npz inputs: what every one of them holds
    available = list(ALL)
    for i in inputs:
      try:
        held = set(core.load_npz(i))
        available = [f for f in available if f in held]
      except ValueError:
        pass  # reported per file below
  try:
    sources = [predict.load_source(s, available=available) for s in model_sources]
  except predict.SourceError as e:
    raise SetupError(str(e)) from e
  names = [s.name for s in sources]
  if len(set(names)) != len(names):
    raise SetupError(f"two sources are named alike ({names}); name them NAME=SOURCE")
  needs = feature_needs(sources)
  for seg in needs:
    media.parse_segmentation(seg)
  if videos:  # a feature the models need but the extractor cannot compute: say so up front
    for f in sorted({f for n in needs.values() for f in n} - set(available), key=ALL.index):
      try:
        weights_lib.resolve(f)
      except weights_lib.WeightsNotFound as e:
        raise SetupError(f"the models need {f}: {e}") from e
  return sources, needs


def predict_films(inputs: Sequence[str], model_sources: Sequence[str],
                  out_dir: str | os.PathLike, *, cache: str | os.PathLike | None = None,
                  weights: str | Mapping[str, str] = "pretrained", device: str | None = None,
                  link_video: bool = True, faces_dir: str | None = None,
                  progress: bool = True, overwrite: bool = False,
                  debug: bool = False, face_track: bool = False,
                  preset: str = "full") -> PredictionRun:
  """The four outputs for each input in `out_dir` (see the module docstring).

  model_sources: `predict.load_source` specs (released:DIR, a workdir, NAME=SOURCE, ...).
  cache: the feature cache (default out_dir/features). weights: the extractor's, as
  `--weights` takes them or a mapping. device: cuda or cpu (default: cuda when present).
  link_video: the HTML page links the video by a relative path. faces_dir: where
  <stem>.events.json face events are looked for after the input's folder (then the cache and
  out_dir). overwrite: replace reports made from other inputs. debug: an input's unexpected
  failure raises (with its traceback) instead of being one FAILED line. face_track: run the
  face track (MTCNN + FER-2013, as `python -m extract --features faces`) on each video, kept in
  the cache, and show it on the report (a faces lane, face moments with thumbnails). Raises
  SetupError (no output written) when the settings cannot work. Each input's outputs are
  written as a set: a failure, or Ctrl-C (KeyboardInterrupt), leaves nothing of that input.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from extract import core, media  # pylint: disable=g-import-not-at-top
  from extract.weights import WeightsNotFound  # pylint: disable=g-import-not-at-top
  inputs = [str(i) for i in inputs]
  try:
    weights = core.parse_weights(weights, ALL)
  except ValueError as e:
    raise SetupError(str(e)) from e
  cache = pathlib.Path(cache or os.path.join(out_dir, "features"))
  try:  # before any model is loaded or anything decoded (as `python -m extract` does)
    report_set.check_folder(out_dir, "--out")
    report_set.check_folder(cache, "--cache")
  except ValueError as e:
    raise SetupError(str(e)) from None
  if faces_dir is not None and not os.path.isdir(faces_dir):
    raise SetupError(f"--faces {printable(faces_dir)}: not a folder (it holds "
                     "<stem>.events.json files)")
  sources, needs = load_sources(inputs, model_sources, weights)
  videos = [i for i in inputs if not i.endswith(".npz")]
  if videos and device is None:
    import torch  # pylint: disable=g-import-not-at-top
    device = "cuda" if torch.cuda.is_available() else "cpu"
  if videos and any("i3d" in n for n in needs.values()):
    from aan_jax.util import xla_cache  # pylint: disable=g-import-not-at-top
    xla_cache.enable("auto", "gpu" if str(device).startswith("cuda") else "cpu")
  quiet = not progress
  overall = tqdm(total=len(inputs), desc="files", unit="file", position=0, disable=quiet)
  print(f"predict: {len(inputs)} input(s); models: "
        + "; ".join(f"{printable(s.name)} ({len(s.models)} models: "
                    f"{', '.join(printable(t) for t in s.targets)})" for s in sources)
        + "; features: " + ", ".join(f"{seg} -> {','.join(f)}" for seg, f in needs.items()),
        file=sys.stderr)
  result, stems = PredictionRun([]), {}

  def note_progress():
    done = len(result.films) - len(result.failed)
    util_cli.on_interrupt(
        f"{done} of {len(inputs)} inputs done in {printable(out_dir)}/ (four outputs each); "
        "the input being predicted left nothing; run the same command again (--overwrite is "
        "not needed for reports of the same inputs)")
  note_progress()
  try:
    for inp in inputs:
      stem = pathlib.Path(inp).stem
      try:
        if stem in stems:
          raise ValueError(f"same stem as {stems[stem]}; both would write {stem}.* (rename one)")
        stems[stem] = inp
        s = predict_film(inp, sources, needs, out_dir, weights=weights, cache=cache,
                         device=device,
                         bar_factory=lambda d: tqdm(desc=d, unit="seg", position=1, leave=False,
                                                    disable=quiet),
                         faces_dir=faces_dir, link_video=link_video, overwrite=overwrite,
                         face_track=face_track, preset=preset)
        result.films.append(FilmResult(inp, summary=s))
        overall.write(f"{printable(inp)}: {'; '.join(_notes(s))} -> "
                      f"{printable(pathlib.Path(out_dir) / stem)}.{{csv,json,png,html}}")
      except Exception as e:  # pylint: disable=broad-except
        expected = isinstance(e, (media.MediaError, WeightsNotFound, ValueError, OSError))
        if debug and not expected:
          raise
        why = str(e) if expected else f"{type(e).__name__}: {e}"
        if why.startswith(inp):
          why = why[len(inp):].lstrip(": ")
        # One line: the input's name escaped (a newline in it too), the reason's whitespace
        # collapsed.
        msg = f"{printable(inp)}: {printable(' '.join(why.split()) or type(e).__name__)}"
        result.films.append(FilmResult(inp, error=msg))
        overall.write(f"predict: FAILED {msg}", file=sys.stderr)
        if isinstance(e, WeightsNotFound):
          result.stopped = True  # every later file would fail the same way
      finally:
        overall.update(1)
        note_progress()
      if result.stopped:
        return result
  finally:
    overall.close()
  if result.failed:
    print(f"predict: {len(result.failed)} of {len(inputs)} inputs failed", file=sys.stderr)
  return result


def _notes(s: dict) -> list[str]:
  """A summary of `predict_film` as the command's line for that input says it."""
  notes = [f"{n} segments ({seg})" for seg, n in s["segments"].items()]
  notes.append("features extracted" if s["decoded"] else "features from the cache/npz")
  if s.get("extraction_preset") == "fast":
    notes.append("FAST features (frames sampled per segment)")
  notes.append(f"{s['events']} events" + (f", {s['faces']} face events" if s["faces"] else ""))
  if s["random"]:
    notes.append(f"RANDOM weights for {', '.join(s['random'])} (tests only)")
  return notes
