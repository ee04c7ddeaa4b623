"""aan_jax.inference.predict and .pipeline, `python -m experiments.predict`: curves, bands,
events, outputs, browser."""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess

import jax
import numpy as np
import pytest

from aan_jax.inference import film_report
from aan_jax.inference import predict
from aan_jax.data.features import FEATURE_DIMS, FEATURES

SAMPLE_FILES = {"resnet50": "resnet50", "flownet": "flownet", "i3d": "i3d",
                "vggish": "vggish", "emobase2010": "emobase"}


def _write_video(path, **kw):
  """The extractor tests' generator of tiny videos (moving gradient + 440 Hz tone)."""
  spec = importlib.util.spec_from_file_location(
      "extract_conftest", pathlib.Path(__file__).parent / "extract" / "conftest.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.write_video(path, **kw)


def _npz(path, feats: dict, seg="fixed:5", hop=5.0, length=5.0, weights="pretrained"):
  """An extractor-format .npz (extract.save_npz) holding `feats`."""
  from extract import core
  n = len(next(iter(feats.values())))
  meta = {"segmentation": seg, "source": {"name": "film.mp4", "sha256": "0" * 64},
          "features": list(feats), "weights": {f: {"mode": weights} for f in feats},
          "nan_features": []}
  start = np.arange(n) * hop
  core.save_npz({**feats, "start_s": start, "end_s": start + length,
                 "metadata": json.dumps(meta)}, path)
  return str(path)


def _read_csv(path):
  with open(path) as f:
    rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
  return rows[0], rows[1:]


@functools.lru_cache(maxsize=None)
def _jit_init(module):
  return jax.jit(lambda key: module.init(key, module.dummy_features(1))["params"])


def _init(module, seed):
  return _jit_init(module)(jax.random.key(seed))  # one compile per architecture, not per model


def write_workdir(workdir, models: list[dict]) -> str:
  """A workdir/models/ folder in the engine's export format (aan_jax.export.core), untrained:
  each model's Feature AAN parameters come from the seed it names (same seed, same model),
  with a feature normalisation, as the engine writes it."""
  from aan_jax.export import core as export
  from aan_jax.models.aan import FeatureAAN
  entries = []
  for m in models:
    mods = tuple(m.get("modalities", ("vggish", "emobase2010")))
    module = FeatureAAN(modalities=mods, num_layers=2, ffn="tanh_residual", output_tanh=True)
    params = _init(module, m["seed"])
    rel = f"{m['target']}/{m['fold']}"
    meta = {"name": rel, "target": m["target"], "task": m.get("task", "regression"),
            "fold": m["fold"], "seed": m["seed"], "modalities": list(mods),
            "segmentation": m.get("segmentation", "fixed:5"), "corpus": "synthetic"}
    export.save_model(os.path.join(workdir, "models", rel),
                      config={"model": "feature_aan", "modalities": list(mods), "num_layers": 2,
                              "ffn": "auto"}, params=params,
                      norm_mean={f: np.full(FEATURE_DIMS[f], 0.5, np.float32) for f in mods},
                      norm_std={f: np.full(FEATURE_DIMS[f], 2.0, np.float32) for f in mods},
                      meta=meta)
    entries.append({"name": rel, "target": m["target"], "path": rel})
  with open(os.path.join(workdir, "models", "index.json"), "w") as f:
    json.dump({"format": export.FORMAT, "models": entries}, f)
  return str(workdir)


@pytest.fixture(scope="module")
def samples(reference_dir):
  h5py = pytest.importorskip("h5py")
  out = {}
  for name, stem in SAMPLE_FILES.items():
    with h5py.File(reference_dir / "sample_inputs" / f"{stem}_sample.h5", "r") as f:
      out[name] = np.asarray(f["default"][()], np.float32)
  return out


# ---- The authors' released models ------------------------------------------------------------

def test_released_npz_equals_convert_and_flax(reference_dir, samples, tmp_path, capsys):
  from aan_jax.convert import attendaffectnet as convert
  from experiments import predict as cli
  npz = _npz(tmp_path / "sample.npz", samples)
  assert cli.main([npz, "--models", f"released:{reference_dir}", "--out", str(tmp_path / "o"),
                   "--no-progress"]) == 0
  header, rows = _read_csv(tmp_path / "o" / "sample.csv")
  assert header == ["start_s", "end_s", "arousal", "valence"]
  doc = json.loads((tmp_path / "o" / "sample.json").read_text())
  for target in ("arousal", "valence"):
    path = reference_dir / "trained_models" / (
        f"MDB_{target}_COGNIMUSE_attention_model_Feature_AAN_video_audio.pth")
    model, variables = convert.from_attendaffectnet(path)
    want = np.asarray(jax.jit(functools.partial(model.apply, deterministic=True))(
        variables, samples), np.float64)
    jc = next(c for c in doc["curves"] if c["target"] == target)
    np.testing.assert_array_equal(jc["mean"], want)  # the JSON keeps every bit
    assert jc["folds"] == ["MDB"] and "low" not in jc
    col = header.index(target)
    np.testing.assert_allclose([float(r[col]) for r in rows], want, atol=1e-6, rtol=0)
  meta = doc["metadata"]
  assert meta["source_sha256"] == "0" * 64 and meta["segmentation"] == {"fixed:5": list(FEATURES)}
  files = {m["metadata"]["file"] for m in meta["sources"][0]["models"]}
  assert len(files) == 2 and all("video_audio" in f for f in files)
  assert all(ev["type"] == "emotion" and "evidence" in ev["object"] for ev in doc["events"])


def test_released_variant_is_chosen_from_what_can_be_computed(reference_dir):
  with pytest.raises(predict.SourceError) as e:
    predict.load_source(f"released:{reference_dir}", available=["vggish", "i3d", "emobase2010"])
  msg = str(e.value)
  assert "resnet50, flownet cannot be computed" in msg and "released-audio:" in msg
  with pytest.raises(predict.SourceError, match="audio-only pair also needs vggish"):
    predict.load_source(f"released:{reference_dir}", available=["i3d", "emobase2010"])
  src = predict.load_source(f"released-audio:{reference_dir}")
  assert src.name == "released-audio" and src.features() == ("vggish", "emobase2010")
  assert {m.metadata["variant"] for m in src.models} == {"audio"}


def test_cli_names_missing_weights(reference_dir, tmp_path, monkeypatch, capsys):
  from experiments import predict as cli
  for var in ("AAN_RESNET50_WEIGHTS", "AAN_FLOWNETS_WEIGHTS", "AAN_VGGISH_WEIGHTS"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("AAN_WEIGHTS_DIR", str(tmp_path / "none"))
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "none"))
  video = _write_video(tmp_path / "v.mp4", seconds=1.0)
  assert cli.main([str(video), "--models", f"released:{reference_dir}", "--out",
                   str(tmp_path / "o"), "--no-progress"]) == 2
  err = capsys.readouterr().err
  assert "resnet50, flownet, vggish cannot be computed" in err
  assert not (tmp_path / "o").exists()
  # A workdir whose models read vggish: refused up front with the extractor's own message.
  wd = write_workdir(tmp_path / "wd", [{"name": "a", "target": "arousal", "fold": "A", "seed": 0}])
  assert cli.main([str(video), "--models", wd, "--out", str(tmp_path / "o"),
                   "--no-progress"]) == 2
  err = capsys.readouterr().err
  assert "the models need vggish: pretrained vggish weights not found" in err
  assert "vggish-10086976.pth" in err


# ---- Workdir models: the fold band --------------------------------------------------------------

def _film(n=40, seed=0):
  rng = np.random.default_rng(seed)
  feats = {f: rng.standard_normal((n, FEATURE_DIMS[f])).astype(np.float32)
           for f in ("vggish", "emobase2010")}
  start = np.arange(n) * 5.0
  return {**feats, "start_s": start, "end_s": start + 5.0}


def test_fold_band_is_zero_for_identical_folds(tmp_path):
  same = write_workdir(tmp_path / "same", [
      {"name": f"arousal_{f}", "target": "arousal", "fold": f, "seed": 7}
      for f in ("BMI", "LOR", "GLA")])
  diff = write_workdir(tmp_path / "diff", [
      {"name": f"arousal_{f}", "target": "arousal", "fold": f, "seed": i}
      for i, f in enumerate(("BMI", "LOR", "GLA"))])
  film = _film()
  (c,) = predict.predict_curves(film, [predict.load_source(same)])
  assert c.has_band and c.fold_names == ["BMI", "LOR", "GLA"] and c.folds.shape == (3, 40)
  np.testing.assert_array_equal(c.low, c.high)
  np.testing.assert_array_equal(c.mean, c.folds[0])
  assert np.std(c.mean) > 1e-3  # not a constant curve
  (d,) = predict.predict_curves(film, [predict.load_source(diff)])
  assert np.all(d.high - d.low > 0)
  assert np.all((d.low <= d.mean) & (d.mean <= d.high))
  np.testing.assert_allclose(d.mean, d.folds.mean(0))


def test_cli_workdir_and_released_side_by_side(reference_dir, tmp_path):
  from experiments import predict as cli
  wd = write_workdir(tmp_path / "wd", [
      {"name": f"{t}_{f}", "target": t, "fold": f, "seed": i + 10 * (t == "valence")}
      for t in ("arousal", "valence") for i, f in enumerate(("BMI", "LOR"))]
      + [{"name": "fear_split", "target": "fear", "task": "binary", "fold": "split", "seed": 3}])
  film = _film(24)
  npz = _npz(tmp_path / "film.npz", {f: film[f] for f in ("vggish", "emobase2010")})
  out = tmp_path / "o"
  assert cli.main([npz, "--models", f"ours={wd}", "--models",
                   f"authors=released-audio:{reference_dir}", "--out", str(out),
                   "--no-progress", "--no-video"]) == 0
  header, rows = _read_csv(out / "film.csv")
  assert header == ["start_s", "end_s", "ours/arousal", "ours/arousal_low", "ours/arousal_high",
                    "ours/valence", "ours/valence_low", "ours/valence_high", "ours/fear",
                    "authors/arousal", "authors/valence"]
  assert len(rows) == 24
  a = np.array([[float(r[i]) for i in (2, 3, 4)] for r in rows])
  assert np.all(a[:, 1] <= a[:, 0] + 1e-6) and np.all(a[:, 0] <= a[:, 2] + 1e-6)
  assert np.all(a[:, 2] > a[:, 1])
  doc = json.loads((out / "film.json").read_text())
  assert [s["name"] for s in doc["metadata"]["sources"]] == ["ours", "authors"]
  fear = next(c for c in doc["curves"] if c["target"] == "fear")
  assert fear["task"] == "binary" and fear["folds"] == ["split"]
  # Probabilities: the sigmoid, taken once, of the fear model's output (its logits, read as a
  # regression model's), in film.json at full precision and in film.csv to 6 decimals.
  from aan_jax.export import core as export
  (m,) = [m for m in export.load_models(wd) if m.target == "fear"]
  logits = dataclasses.replace(m, task="regression").predict({f: film[f] for f in m.modalities})
  want = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
  np.testing.assert_allclose(fear["mean"], want, rtol=1e-6, atol=0)
  np.testing.assert_allclose([float(r[header.index("ours/fear")]) for r in rows], want,
                             rtol=0, atol=1e-6)  # rounding, and the float32 sigmoid
  page = (out / "film.html").read_text()
  assert "<video" not in page and "video left out" in page


def test_synthetic_demo_workdir_band(tmp_path):
  """The engine's own export: the synthetic demo's fold models on an unseen synthetic movie."""
  from aan_jax.data import synthetic
  from aan_jax.training import regression as train
  from experiments import cognimuse_loo
  from experiments import predict as cli
  c = cognimuse_loo.get_config()
  c.dataset, c.num_epochs, c.plots, c.bootstrap = "synthetic", 2, False, 1
  c.num_layers, c.modalities, c.batch_size = 1, "audio", 6  # a small program: quick to compile
  c.synthetic.segments_per_movie, c.synthetic.num_movies = 40, 4
  c.compilation_cache = ""
  wd = str(tmp_path / "wd")
  train.train_and_evaluate(c, wd)
  corpus = synthetic.make_corpus(segments_per_movie=30, seed=5, num_movies=2)
  film = {f: np.asarray(corpus.features[f][0]) for f in FEATURES}
  npz = _npz(tmp_path / "synthetic_movie.npz", film)
  assert cli.main([npz, "--models", wd, "--out", str(tmp_path / "o"), "--no-progress"]) == 0
  header, rows = _read_csv(tmp_path / "o" / "synthetic_movie.csv")
  assert header == ["start_s", "end_s", "arousal", "arousal_low", "arousal_high", "valence",
                    "valence_low", "valence_high"] and len(rows) == 30
  (a,) = [cv for cv in predict.predict_curves(dict(np.load(npz)), [predict.load_source(wd)])
          if cv.target == "arousal"]
  assert a.fold_names == ["BMI", "LOR", "GLA", "DEP"]
  assert np.all(a.high > a.low) and np.all((a.low <= a.mean) & (a.mean <= a.high))


# ---- Events -------------------------------------------------------------------------------------

def _curve(target, values, task="regression", folds=1, spread=0.0, error=0.01):
  """A curve of `folds` fold models spread +-spread around `values` (a band of half-width
  `spread`), or one model whose recorded test RMSE is `error`."""
  v = np.asarray(values, np.float64)
  start = np.arange(len(v)) * 5.0
  offsets = np.linspace(-spread, spread, folds) if folds > 1 else [0.0]
  return predict.Curve("m", target, task, "fixed:5", start, start + 5.0,
                       np.stack([v + o for o in offsets]), [str(i) for i in range(folds)],
                       *((error, "test_rmse", "given") if folds == 1 else (None, "band", "")))


def test_events_peaks_stretches_and_fear():
  t = np.arange(120)
  arousal = 0.1 * np.sin(t / 7.0)
  arousal[30] = 2.0
  arousal[90] = 1.5
  evs = predict.curve_events(_curve("arousal", arousal, folds=2))
  assert [e["object"]["start_s"] for e in evs[:2]] == [150.0, 450.0]
  assert evs[0]["class"] == "arousal_peak" and evs[0]["seconds"] == 152.5
  assert "sd)" in evs[0]["object"]["evidence"]["text"] and "band" in evs[0]["object"]
  valence = np.zeros(120)
  valence[20:26] = 1.0
  valence[70:76] = -1.0
  ev = {e["class"]: e for e in predict.curve_events(_curve("valence", valence))}
  assert ev["most_positive"]["object"]["start_s"] == 100.0
  assert ev["most_negative"]["object"]["start_s"] == 350.0
  assert predict.curve_events(_curve("valence", np.zeros(50))) == []  # flat: nothing notable
  fear = np.full(60, 0.1)
  fear[10:14] = [0.6, 0.9, 0.7, 0.55]
  fear[40] = 0.8
  evs = predict.curve_events(_curve("fear", fear, task="binary"))
  assert [(e["class"], e["object"]["start_s"], e["object"]["end_s"], e["seconds"])
          for e in evs] == [("fear", 50.0, 70.0, 57.5), ("fear", 200.0, 205.0, 202.5)]
  assert all(set(e) == {"type", "class", "seconds", "object"} for e in evs)


def test_a_flat_curve_inside_a_wide_band_gives_no_moment():
  """The issue's film: valence +0.234 vs +0.240 and an arousal 'peak' of +1.7 sd, inside fold
  bands 0.9 wide: nothing the models can back."""
  rng = np.random.default_rng(0)
  valence = 0.237 + 0.003 * np.sign(np.arange(12) - 5.5)  # +0.234 for 30 s, then +0.240
  arousal = -0.1 + 0.01 * rng.standard_normal(12)
  arousal[7] += 0.03  # the highest point, several sd above a flat curve's mean
  curves = [_curve("valence", valence, folds=12, spread=0.45),
            _curve("arousal", arousal, folds=12, spread=0.45)]
  assert predict.events(curves) == []
  rules = predict.moment_rules(curves, [])
  assert rules["none"] == "no moment stands out beyond the models' disagreement"
  assert [c["uncertainty_kind"] for c in rules["curves"]] == ["band", "band"]
  # One model whose test RMSE is far above the curve's swings: nothing either.
  assert predict.curve_events(_curve("valence", valence, error=0.42)) == []
  assert predict.curve_events(_curve("arousal", arousal, error=0.35)) == []


def test_a_varying_curve_with_a_narrow_band_gives_its_moments():
  t = np.arange(60)
  arousal = 0.05 * np.sin(t / 5.0)
  arousal[20] = 0.8
  valence = np.zeros(60)
  valence[10:16] = 0.6
  valence[40:46] = -0.6
  fear = np.full(60, 0.1)
  fear[30:33] = [0.7, 0.9, 0.6]
  curves = [_curve("arousal", arousal, folds=4, spread=0.02),
            _curve("valence", valence, folds=4, spread=0.02),
            _curve("fear", fear, task="binary", folds=4, spread=0.02)]
  evs = predict.events(curves)
  assert {e["class"] for e in evs} >= {"arousal_peak", "most_positive", "most_negative", "fear"}
  for e in evs:
    ev = e["object"]["evidence"]
    assert ev["margin"] > ev["uncertainty"] and ev["uncertainty_kind"] == "band"
    assert ev["uncertainty"] == pytest.approx(0.02, abs=1e-9)  # the band's half-width there
  peak = max((e for e in evs if e["class"] == "arousal_peak"), key=lambda e: e["object"]["value"])
  assert peak["object"]["start_s"] == 100.0
  assert peak["object"]["evidence"]["margin"] == pytest.approx(0.8 - arousal.mean(), abs=1e-6)
  # A single model: its recorded test RMSE is the threshold.
  one = predict.curve_events(_curve("arousal", arousal, error=0.1))
  assert [e["object"]["start_s"] for e in one] == [100.0]
  assert one[0]["object"]["evidence"]["uncertainty"] == 0.1
  assert predict.curve_events(_curve("arousal", arousal, error=0.9)) == []


def test_one_segment_makes_no_moment():
  for target, task in (("arousal", "regression"), ("valence", "regression"),
                       ("fear", "binary")):
    assert predict.curve_events(_curve(target, [0.9], task=task, folds=3, spread=0.0)) == []
    assert predict.curve_events(_curve(target, [0.9], task=task, error=0.0)) == []


def test_single_models_uncertainty_and_its_fallbacks(tmp_path, reference_dir):
  """A model's recorded test RMSE, else its workdir's results.json (stated as a fallback),
  else none: no moment claimed and the metadata says why; the released models: the
  published MSE of their variant."""
  wd = write_workdir(tmp_path / "wd", [{"name": "a", "target": "arousal", "fold": "A",
                                        "seed": 0}])
  film = _film(12)
  (c,) = predict.predict_curves(film, [predict.load_source(wd)])
  assert c.error is None and c.error_kind == "none" and "FALLBACK" in c.error_source
  assert predict.curve_events(c) == []
  (tmp_path / "wd" / "results.json").write_text(json.dumps({"arousal": {"mse": 0.0004}}))
  (c,) = predict.predict_curves(film, [predict.load_source(wd)])
  assert c.error == pytest.approx(0.02) and c.error_kind == "results_json"
  assert "FALLBACK" in c.error_source and "results.json" in c.error_source
  spec = json.loads((tmp_path / "wd/models/arousal/A/model.json").read_text())
  spec["test_error"] = {"rmse": 0.03, "on": "test"}
  (tmp_path / "wd/models/arousal/A/model.json").write_text(json.dumps(spec))
  (c,) = predict.predict_curves(film, [predict.load_source(wd)])
  assert c.error == 0.03 and c.error_kind == "test_rmse"
  rel = predict.load_source(f"released-audio:{reference_dir}")
  cs = predict.predict_curves(film, [rel])
  assert [(x.target, round(x.error ** 2, 6)) for x in cs] == [("arousal", 0.125),
                                                               ("valence", 0.185)]


def test_face_events_are_validated(tmp_path):
  good = tmp_path / "a.events.json"
  good.write_text(json.dumps([
      {"type": "emotion", "class": "sad", "seconds": 9.5, "object": {"id": 1}},
      {"type": "emotion", "class": "happy", "seconds": 2, "object": {"id": 0, "box": [0, 0, 4, 4],
                                                                    "score": 0.9}}]))
  assert [e["class"] for e in predict.load_face_events(good)] == ["happy", "sad"]
  for text in ("{", '{"a": 1}', '[{"class": "x", "seconds": "soon"}]', '[{"seconds": 1}]',
               '[{"class": "x", "seconds": 1, "object": {"score": NaN}}]'):
    bad = tmp_path / "b.events.json"
    bad.write_text(text)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
      predict.load_face_events(bad)


def test_csv_with_two_segmentations():
  a = _curve("arousal", [0.1, 0.2, 0.3])
  b = predict.Curve("me", "fear", "binary", "sliding:10:5", np.array([0.0, 5.0]),
                    np.array([10.0, 15.0]), np.array([[0.2, 0.7]]), ["split"])
  text = film_report.to_csv([a, b], random_features=["vggish"])
  lines = text.splitlines()
  assert lines[0].startswith("# RANDOM weights for vggish")
  assert lines[1] == "segmentation,start_s,end_s,m/arousal,me/fear"
  assert lines[2] == "fixed:5,0.000,5.000,0.100000,"
  assert lines[5] == "sliding:10:5,0.000,10.000,,0.200000"


# ---- A generated video through the whole command -------------------------------------------------

@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
  """The CLI on a generated 10-s video and a corrupt file (random weights, audio models of a
  workdir: needs neither the authors' files nor pretrained weights)."""
  from experiments import predict as cli
  d = tmp_path_factory.mktemp("predict")
  wd = write_workdir(d / "wd", [
      {"name": f"{t}_{f}", "target": t, "fold": f, "seed": i + 10 * (t == "valence")}
      for t in ("arousal", "valence") for i, f in enumerate(("A", "B"))])
  _write_video(d / "clip.mp4", seconds=10.0, width=96, height=64)
  (d / "broken.mp4").write_bytes(np.random.RandomState(1).bytes(5000))
  (d / "clip.events.json").write_text(json.dumps([
      {"type": "emotion", "class": "happy", "seconds": 3.0,
       "object": {"id": 0, "box": [10, 10, 40, 40], "score": 0.97}}]))
  out = d / "out"
  rc = cli.main([str(d / "clip.mp4"), str(d / "broken.mp4"), "--models", wd, "--out", str(out),
                 "--weights", "random", "--no-progress"])
  return d, out, rc


def test_video_outputs_and_a_bad_file(video_run, capsys):
  d, out, rc = video_run
  assert rc == 1  # broken.mp4 failed, clip.mp4 did not
  assert not (out / "broken.csv").exists()
  header, rows = _read_csv(out / "clip.csv")
  assert header == ["start_s", "end_s", "arousal", "arousal_low", "arousal_high", "valence",
                    "valence_low", "valence_high"] and len(rows) == 2
  assert (out / "clip.csv").read_text().startswith("# RANDOM weights for vggish")
  doc = json.loads((out / "clip.json").read_text())
  assert doc["metadata"]["random_weights"] == ["vggish"]
  assert doc["face_events"][0]["class"] == "happy"
  assert len(doc["metadata"]["source_sha256"]) == 64
  assert (out / "clip.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  page = (out / "clip.html").read_text()
  assert 'src="../clip.mp4"' in page and "RANDOM weights for vggish" in page
  assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
  assert "https://" not in page
  cached = list((out / "features").glob("clip.*.fixed-5.npz"))
  assert len(cached) == 1


def test_rerun_with_other_models_decodes_nothing(video_run, tmp_path, monkeypatch):
  from extract import core
  from experiments import predict as cli
  d, out, _ = video_run

  def no_decoding(*a, **k):
    raise AssertionError("extract_file called: the cache was not used")
  monkeypatch.setattr(core, "extract_file", no_decoding)
  wd = write_workdir(tmp_path / "wd", [
      {"name": "a0", "target": "arousal", "fold": "A", "seed": 1, "modalities": ["emobase2010"]},
      {"name": "a1", "target": "arousal", "fold": "B", "seed": 2, "modalities": ["emobase2010"]}])
  out2 = tmp_path / "o2"
  assert cli.main([str(d / "clip.mp4"), "--models", wd, "--out", str(out2), "--cache",
                   str(out / "features"), "--weights", "random", "--no-progress"]) == 0
  header, _ = _read_csv(out2 / "clip.csv")
  assert header == ["start_s", "end_s", "arousal", "arousal_low", "arousal_high"]


def _chromium():
  for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
    if shutil.which(name):
      return shutil.which(name)
  return None


def test_report_in_headless_chromium(video_run, tmp_path):
  browser = _chromium()
  if not browser:
    pytest.skip("no chromium binary (apt-get install chromium; .ci/run installs it)")
  _, out, _ = video_run
  page = out / "clip.html"
  proc = subprocess.run(
      [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
       "--v=0", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
       "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
  dom = proc.stdout
  console = [l for l in proc.stderr.splitlines() if ":CONSOLE" in l]
  assert console == [], console  # no error, warning or failed load (the video included)
  assert 'data-ready="1"' in dom, dom[-2000:]
  assert "data-errors" not in dom
  # Two segments: each target's points and their fold band as markers, not a line.
  assert 'class="curve"' not in dom
  assert dom.count('class="point"') == 4 and dom.count('class="band-bar"') == 4
  # A cursor on each curve and on the faces lane; the one face event in the lane.
  assert dom.count('class="cursor"') == 3 and dom.count('class="face-cell"') == 1
  assert "happy" in dom
  doc = json.loads((out / "clip.json").read_text())
  assert ("arousal peak" in dom if doc["events"] else
          "no moment stands out beyond the models' disagreement" in dom)


def test_predict_films_called_as_in_a_notebook(video_run, monkeypatch):
  """aan_jax.inference.pipeline.predict_films, called directly on the command's inputs, writes
  what the command wrote (the features from its cache: nothing decoded)."""
  from extract import core
  from aan_jax.inference import pipeline
  d, out, _ = video_run
  nb = d / "notebook"  # beside the command's out/: both pages link the video as ../clip.mp4
  with pytest.raises(pipeline.SetupError, match="unknown feature 'bogus'"):
    pipeline.predict_films([d / "clip.mp4"], [str(d / "wd")], nb, weights="bogus=random")
  assert not nb.exists()

  def no_decoding(*a, **k):
    raise AssertionError("extract_file called: the cache was not used")
  monkeypatch.setattr(core, "extract_file", no_decoding)
  run = pipeline.predict_films([d / "clip.mp4"], [str(d / "wd")], nb, cache=out / "features",
                               weights="random", progress=False)
  assert run.exit_status == 0 and not run.stopped and run.failed == []
  (film,) = run.films
  assert film.input == str(d / "clip.mp4") and film.error is None
  s = film.summary
  assert s["segments"] == {"fixed:5": 2} and not s["decoded"] and s["random"] == ["vggish"]
  assert s["faces"] == 1
  assert s["outputs"] == {ext: str(nb / f"clip.{ext}") for ext in ("csv", "json", "png", "html")}
  assert (nb / "clip.csv").read_text() == (out / "clip.csv").read_text()
  docs = [json.loads((o / "clip.json").read_text()) for o in (nb, out)]
  for doc in docs:
    assert doc["metadata"].pop("created")  # the only field that differs between runs
  assert docs[0] == docs[1]
  page = (nb / "clip.html").read_text()
  assert page == (out / "clip.html").read_text() and 'src="../clip.mp4"' in page
  assert (nb / "clip.png").read_bytes() == (out / "clip.png").read_bytes()
