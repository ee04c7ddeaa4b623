"""Predict you can trust (issue 21): any feature file or model folder gives a complete report
or one line; the batch goes on; a film's four outputs are written as a set; nothing is
replaced silently. Each test was seen failing on the code before its fix."""

from __future__ import annotations

import io
import json
import os
import pathlib
import zipfile

import numpy as np
import pytest

from test_predict import _read_csv, write_workdir

from aan_jax.data import featfile
from aan_jax.data.features import FEATURE_DIMS

OUTS = ("csv", "json", "png", "html")


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
  """Two fold models of arousal and one of valence, reading vggish + emobase2010."""
  d = tmp_path_factory.mktemp("wd")
  return write_workdir(d / "wd", [
      {"name": "a_A", "target": "arousal", "fold": "A", "seed": 1},
      {"name": "a_B", "target": "arousal", "fold": "B", "seed": 2},
      {"name": "v_A", "target": "valence", "fold": "A", "seed": 3}])


def _feats(n=12, seed=0):
  rng = np.random.default_rng(seed)
  return {f: rng.standard_normal((n, FEATURE_DIMS[f])).astype(np.float32)
          for f in ("vggish", "emobase2010")}


def _raw_npz(path, arrays: dict, metadata=None) -> str:
  """An .npz written with numpy alone (as a user would), metadata a JSON-able value or None."""
  extra = {} if metadata is None else {"metadata": np.array(json.dumps(metadata))}
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, **arrays, **extra)
  return str(path)


def _times(n, hop=5.0, length=5.0):
  start = np.arange(n) * hop
  return {"start_s": start, "end_s": start + length}


def _run(capsys, *argv):
  from experiments import predict as cli
  rc = cli.main([*map(str, argv), "--no-progress"])
  cap = capsys.readouterr()
  return rc, cap.out, cap.err


def _outputs(out, stem):
  return sorted(e for e in OUTS if (pathlib.Path(out) / f"{stem}.{e}").exists())


def _no_leftovers(out):
  left = [p.name for p in pathlib.Path(out).glob(".*partial*")] if os.path.isdir(out) else []
  assert left == [], left


# ---- (2) outputs as a set; non-finite predictions ---------------------------------------------

def test_declared_nan_features_are_gaps_in_every_output(wd, tmp_path, capsys):
  """`python -m extract --missing-audio nan` declares NaN features: the report shows the gap
  (before: a CSV full of nan, then "not JSON compliant", no JSON, PNG or HTML)."""
  f = _feats(12)
  f["vggish"][3:6] = np.nan
  meta = {"segmentation": "fixed:5", "source": {"name": "gappy.mp4", "sha256": "0" * 64},
          "features": list(f), "nan_features": ["vggish"],
          "weights": {"vggish": {"mode": "none (no audio stream)"},
                      "emobase2010": {"mode": "pretrained"}}}
  npz = _raw_npz(tmp_path / "gappy.npz", {**f, **_times(12)}, meta)
  out = tmp_path / "o"
  rc, _, err = _run(capsys, npz, "--models", wd, "--out", out)
  assert rc == 0, err
  assert _outputs(out, "gappy") == sorted(OUTS)
  header, rows = _read_csv(out / "gappy.csv")
  col = header.index("arousal")
  assert [r[col] == "" for r in rows] == [i in (3, 4, 5) for i in range(12)]
  doc = json.loads((out / "gappy.json").read_text())
  arousal = next(c for c in doc["curves"] if c["target"] == "arousal")
  assert arousal["mean"][3:6] == [None] * 3 and None not in arousal["mean"][6:]
  assert arousal["low"][4] is None
  page = (out / "gappy.html").read_text()
  assert "null" in page and "NaN" not in page


def test_zero_segments_fail_with_one_line_and_nothing_written(wd, tmp_path, capsys):
  """Before: `max() arg is an empty sequence`, and a .csv and .json left behind."""
  f = {k: v[:0] for k, v in _feats(1).items()}
  npz = _raw_npz(tmp_path / "empty.npz", {**f, **_times(0)}, {"segmentation": "fixed:5"})
  out = tmp_path / "o"
  rc, _, err = _run(capsys, npz, "--models", wd, "--out", out)
  assert rc == 1
  assert f"predict: FAILED {npz}: has 0 segments" in err and "Traceback" not in err
  assert _outputs(out, "empty") == []
  _no_leftovers(out)


def test_huge_features_fail_naming_the_feature(wd, tmp_path, capsys):
  """Features of 3e38 overflow the model: a failure naming the feature, nothing written."""
  f = _feats(6)
  f["emobase2010"][2] = 3e38
  npz = _raw_npz(tmp_path / "huge.npz", {**f, **_times(6)})
  out = tmp_path / "o"
  rc, _, err = _run(capsys, npz, "--models", wd, "--out", out)
  assert rc == 1, err
  line = next(l for l in err.splitlines() if "FAILED" in l)
  assert "emobase2010 reaches 3e+38" in line and "segment 2" in line
  assert _outputs(out, "huge") == []
  _no_leftovers(out)


def test_a_writer_failure_or_ctrl_c_leaves_nothing_of_that_film(wd, tmp_path, capsys,
                                                                monkeypatch):
  from aan_jax.inference import film_report
  npz = _raw_npz(tmp_path / "film.npz", {**_feats(6), **_times(6)})
  out = tmp_path / "o"

  def broken_png(*a, **k):
    raise RuntimeError("the plot failed")
  monkeypatch.setattr(film_report, "to_png", broken_png)
  rc, _, err = _run(capsys, npz, "--models", wd, "--out", out)
  assert rc == 1 and "FAILED" in err and "RuntimeError: the plot failed" in err
  assert "Traceback" not in err
  assert _outputs(out, "film") == []
  _no_leftovers(out)

  def interrupted(*a, **k):
    raise KeyboardInterrupt
  monkeypatch.setattr(film_report, "to_png", interrupted)
  rc, _, err = _run(capsys, npz, "--models", wd, "--out", out)
  assert rc == 130
  lines = [l for l in err.splitlines() if l.strip()]
  assert lines[-1].startswith("interrupted: 0 of 1 inputs done") and "Traceback" not in err
  assert _outputs(out, "film") == []
  _no_leftovers(out)


# ---- (3) the batch goes on -------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("source", "film.mp4"), ("weights", ["vggish"]), ("nan_features", 5),
    ("segmentation", 5), ("num_segments", "six")])
def test_bad_metadata_field_is_one_line_naming_file_and_field(field, value, wd, tmp_path,
                                                              capsys):
  """Before: an AttributeError traceback, and the files after it never processed."""
  bad = _raw_npz(tmp_path / "bad.npz", {**_feats(6), **_times(6)},
                 {"segmentation": "fixed:5", field: value})
  good = _raw_npz(tmp_path / "good.npz", {**_feats(6), **_times(6)})
  out = tmp_path / "o"
  rc, _, err = _run(capsys, bad, good, "--models", wd, "--out", out)
  assert rc == 1, err
  failed = [l for l in err.splitlines() if "FAILED" in l]
  assert failed == [l for l in failed if l.startswith(f"predict: FAILED {bad}: ")]
  assert len(failed) == 1 and f"metadata field '{field}' must be" in failed[0]
  assert "Traceback" not in err
  assert _outputs(out, "good") == sorted(OUTS) and _outputs(out, "bad") == []


def test_metadata_that_is_a_json_list_is_one_line(wd, tmp_path, capsys):
  bad = _raw_npz(tmp_path / "bad.npz", {**_feats(6), **_times(6)}, ["fixed:5"])
  good = _raw_npz(tmp_path / "good.npz", {**_feats(6), **_times(6)})
  rc, _, err = _run(capsys, bad, good, "--models", wd, "--out", tmp_path / "o")
  assert rc == 1 and "metadata must be a JSON object, got a list" in err
  assert "Traceback" not in err and _outputs(tmp_path / "o", "good") == sorted(OUTS)


def test_usage_errors_exit_2_in_one_line(wd, tmp_path, capsys):
  npz = _raw_npz(tmp_path / "film.npz", {**_feats(6), **_times(6)})
  (tmp_path / "afile").write_text("x")
  for argv, says in [
      ([npz, "--models", wd, "--out", tmp_path / "afile"], "--out"),
      ([npz, "--models", wd, "--out", tmp_path / "o", "--cache", tmp_path / "afile"], "--cache"),
      ([npz, "--models", wd, "--out", tmp_path / "o", "--faces", tmp_path / "afile"], "--faces"),
      ([npz, "--models", wd, "--out", tmp_path / "o", "--weights", "bogus=random"], "bogus")]:
    rc, _, err = _run(capsys, *argv)
    assert rc == 2 and says in err and "Traceback" not in err, err
    assert len([l for l in err.splitlines() if l.startswith("error:")]) == 1
  assert not (tmp_path / "o").exists()


# ---- (5) model folders are untrusted -----------------------------------------------------------

def _copy_wd(wd, dst):
  import shutil
  shutil.copytree(wd, dst)
  return dst


def _one_model(wd, dst):
  d = _copy_wd(wd, dst)
  return d / "models" / "arousal" / "A"


def _edit_json(path, fn):
  spec = json.loads(path.read_text())
  fn(spec)
  path.write_text(json.dumps(spec))


def _edit_params(path, fn):
  with np.load(path) as z:
    flat = {k: z[k] for k in z.files}
  fn(flat)
  np.savez(path, **flat)


def _first_param(flat):
  return next(k for k in flat if k.startswith("params/"))


@pytest.mark.parametrize("case,says", [
    ("build_list", "field 'build' must be an object"),
    ("num_heads_3", "'build.num_heads' (3) must divide 'build.d_model'"),
    ("d_model_neg", "field 'build.d_model' must be an integer in [1, 4096], got -8"),
    ("missing_param", "is missing"),
    ("misshapen_param", "the settings in model.json need"),
    ("int64_param", "is int64; parameters are float32"),
    ("binary_on_regression", "field 'task' is 'binary' but the model was built for 'regression'"),
    ("norm_std_zero", "norm_std/vggish has a zero or negative entry"),
    ("nan_param", "holds NaN or infinite values"),
    ("target_list", "field 'target' must be a non-empty one-line string"),
])
def test_bad_model_folder_is_usage_error_in_one_line(case, says, wd, tmp_path, capsys):
  """Before: TypeError, KeyError or flax tracebacks with exit 1 (or a CSV full of nan)."""
  m = _one_model(wd, tmp_path / "wd")
  spec, params = m / "model.json", m / "params.npz"
  edit = {
      "build_list": lambda: _edit_json(spec, lambda s: s.update(build=[1, 2])),
      "num_heads_3": lambda: _edit_json(spec, lambda s: s["build"].update(num_heads=3)),
      "d_model_neg": lambda: _edit_json(spec, lambda s: s["build"].update(d_model=-8)),
      "missing_param": lambda: _edit_params(params, lambda f: f.pop(_first_param(f))),
      "misshapen_param": lambda: _edit_params(
          params, lambda f: f.update({_first_param(f): np.zeros((3, 3), np.float32)})),
      "int64_param": lambda: _edit_params(
          params, lambda f: f.update({_first_param(f): f[_first_param(f)].astype(np.int64)})),
      "binary_on_regression": lambda: _edit_json(spec, lambda s: (
          s.update(task="binary"), s["build"].update(_task="regression"))),
      "norm_std_zero": lambda: _edit_params(
          params, lambda f: f["norm_std/vggish"].__setitem__(0, 0.0)),
      "nan_param": lambda: _edit_params(
          params, lambda f: f[_first_param(f)].flat.__setitem__(0, np.nan)),
      "target_list": lambda: _edit_json(spec, lambda s: s.update(target=["arousal"])),
  }[case]
  edit()
  npz = _raw_npz(tmp_path / "film.npz", {**_feats(6), **_times(6)})
  rc, _, err = _run(capsys, npz, "--models", tmp_path / "wd", "--out", tmp_path / "o")
  assert rc == 2, err
  assert says in err and "Traceback" not in err, err
  assert not (tmp_path / "o").exists()


def _bomb_npz(path, shape, compress: bool):
  """A params.npz whose one entry's header declares `shape` (float32)."""
  hdr = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      hdr, {"descr": "<f4", "fortran_order": False, "shape": shape})
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
    with z.open("params/x.npy", "w", force_zip64=True) as f:
      f.write(hdr.getvalue())
      if compress:  # the declared bytes, deflated to next to nothing
        zero = bytes(1 << 24)
        for _ in range(int(np.prod(shape)) * 4 // len(zero)):
          f.write(zero)


@pytest.mark.parametrize("shape,compress", [((200000, 200000), False), ((96, 1 << 20), True)])
def test_params_sizes_are_capped_from_the_headers(shape, compress, wd, tmp_path):
  """Before: a (200000, 200000) header gave a MemoryError traceback, and a deflated 384 MiB
  array loaded silently."""
  import tracemalloc
  from aan_jax.export import checks
  m = _one_model(wd, tmp_path / "wd")
  _bomb_npz(m / "params.npz", shape, compress)
  tracemalloc.start()
  try:
    with pytest.raises(checks.ExportError, match="far smaller") as e:
      checks.read_params(str(m / "params.npz"))
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert peak < 32 << 20 and str(m / "params.npz") in str(e.value)
  from aan_jax.inference import predict
  with pytest.raises(predict.SourceError, match="far smaller"):
    predict.load_source(str(tmp_path / "wd"))


def test_index_paths_resolve_symlinks_and_refuse_duplicates(wd, tmp_path):
  from aan_jax.inference import predict
  other = _copy_wd(wd, tmp_path / "other")
  d = _copy_wd(wd, tmp_path / "wd")
  os.symlink(other / "models" / "arousal" / "A", d / "models" / "elsewhere")
  idx = d / "models" / "index.json"
  doc = json.loads(idx.read_text())
  doc["models"].append({**doc["models"][0], "path": "elsewhere"})
  idx.write_text(json.dumps(doc))
  with pytest.raises(predict.SourceError, match="'elsewhere' leaves the models folder"):
    predict.load_source(str(d))
  doc["models"] = doc["models"][:1] * 50
  idx.write_text(json.dumps(doc))
  with pytest.raises(predict.SourceError, match="twice"):
    predict.load_source(str(d))


# ---- (4) nothing replaced silently; a stale cache entry is redone -----------------------------

def test_report_of_another_input_is_not_replaced(wd, tmp_path, capsys):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  a = _raw_npz(tmp_path / "a" / "film.npz", {**_feats(6, 1), **_times(6)})
  b = _raw_npz(tmp_path / "b" / "film.npz", {**_feats(6, 2), **_times(6)})
  out = tmp_path / "o"
  assert _run(capsys, a, "--models", wd, "--out", out)[0] == 0
  first = (out / "film.json").read_text()
  rc, _, err = _run(capsys, b, "--models", wd, "--out", out)
  assert rc == 1 and "was made from a different input" in err and "--overwrite" in err
  assert (out / "film.json").read_text() == first
  assert _run(capsys, a, "--models", wd, "--out", out)[0] == 0  # the same input: redone
  rc, _, err = _run(capsys, b, "--models", wd, "--out", out, "--overwrite")
  assert rc == 0 and (out / "film.json").read_text() != first


def test_stale_cache_entry_is_redone(tmp_path, monkeypatch):
  """A cache entry whose metadata lacks `options` (before: KeyError, the batch aborted)."""
  from extract import core
  from aan_jax.inference import pipeline
  cache = tmp_path / "cache"
  sha = "ab" * 32
  f = _feats(4)
  stale = cache / f"clip.{sha[:12]}.fixed-5.npz"
  _raw_npz(stale, {**f, **_times(4)}, {"segmentation": "fixed:5",
                                      "source": {"name": "clip.mp4", "sha256": sha}})
  calls = []

  def fake_extract(video, *, segmentation, features, **k):
    calls.append(features)
    meta = {"segmentation": segmentation, "source": {"name": "clip.mp4", "sha256": sha},
            "options": {"weights": {x: "random" for x in features}},
            "weights": {x: {"mode": "random"} for x in features},
            "dims": {x: FEATURE_DIMS[x] for x in features}, "features": list(features)}
    return {**{x: f[x] for x in features}, **_times(4), "metadata": json.dumps(meta)}
  monkeypatch.setattr(core, "extract_file", fake_extract)
  data, decoded = pipeline.cached_features(
      str(tmp_path / "clip.mp4"), sha, "fixed:5", ["vggish", "emobase2010"],
      {x: "random" for x in FEATURE_DIMS}, cache, "cpu", None)
  assert decoded and calls == [["vggish", "emobase2010"]]
  assert "options" in json.loads(featfile.read(stale)["metadata"])


# ---- (1) a feature file written by hand --------------------------------------------------------

def test_arrays_only_npz_is_predicted_with_its_segmentation_inferred(wd, tmp_path, capsys):
  npz = _raw_npz(tmp_path / "mine.npz", {**_feats(8), **_times(8)})  # no metadata at all
  rc, _, err = _run(capsys, npz, "--models", wd, "--out", tmp_path / "o")
  assert rc == 0, err
  doc = json.loads((tmp_path / "o" / "mine.json").read_text())
  assert doc["metadata"]["segmentation"] == {"fixed:5": ["vggish", "emobase2010"]}
  # Sliding spans are inferred as such, and refused for fixed:5 models, in one line.
  npz = _raw_npz(tmp_path / "slide.npz", {**_feats(8), **_times(8, hop=2.5)})
  rc, _, err = _run(capsys, npz, "--models", wd, "--out", tmp_path / "o")
  assert rc == 1 and "segmentation 'sliding:5:2.5' but the models need 'fixed:5'" in err


def test_featfile_write_makes_a_valid_file_and_names_bad_fields(tmp_path):
  f = _feats(5)
  t = _times(5)
  p = featfile.write(tmp_path / "w.npz", f, t["start_s"], t["end_s"],
                     source={"name": "my film.mp4"}, note="kept")
  data = featfile.read(p)
  meta = json.loads(data["metadata"])
  assert meta["features"] == ["vggish", "emobase2010"] and meta["num_segments"] == 5
  assert meta["note"] == "kept" and featfile.segmentation_of(data) == "fixed:5"
  np.testing.assert_array_equal(data["vggish"], f["vggish"])
  with pytest.raises(featfile.FeatureFileError, match="metadata field 'nan_features' must be"):
    featfile.write(tmp_path / "x.npz", f, t["start_s"], t["end_s"], nan_features="vggish")
  g = {**f, "vggish": f["vggish"].copy()}
  g["vggish"][1] = np.nan
  with pytest.raises(featfile.FeatureFileError, match="'nan_features' does not declare"):
    featfile.write(tmp_path / "x.npz", g, t["start_s"], t["end_s"])
  featfile.write(tmp_path / "x.npz", g, t["start_s"], t["end_s"], nan_features=["vggish"])
  assert not (tmp_path / "y.npz").exists()


def test_schema_and_reader_agree():
  jsonschema = pytest.importorskip("jsonschema")
  root = pathlib.Path(__file__).resolve().parents[1]
  schema = json.loads((root / "schemas" / "featfile-metadata.schema.json").read_text())
  cases = [{}, {"segmentation": "fixed:5"}, {"segmentation": "every 5 s"},
           {"source": "film.mp4"}, {"source": {"name": "a", "sha256": "0" * 64}},
           {"source": {"sha256": "xyz"}}, {"weights": ["vggish"]},
           {"weights": {"vggish": {"mode": "random"}}}, {"weights": {"bogus": "x"}},
           {"nan_features": 5}, {"nan_features": ["vggish"]}, {"nan_features": ["x"]},
           {"nan_features": ["vggish", "vggish"]}, {"num_segments": -1},
           {"num_segments": True}, {"dims": {"vggish": 128}}, {"dims": {"vggish": 12}},
           {"truncated": None}, {"truncated": 3}, {"device": "cpu"}, {"device": 0},
           {"format_version": 1}, {"format_version": 0}, {"other": [1, 2]}, [], "x",
           {"preset": {"name": "fast", "i3d_frames_per_segment": 16}}, {"preset": {"name": "full"}},
           {"preset": {"name": "quick"}}, {"preset": {}}, {"preset": "fast"}]
  for meta in cases:
    by_schema = jsonschema.Draft202012Validator(schema).is_valid(meta)
    try:
      featfile.check_metadata(meta)
      by_reader = True
    except featfile.FeatureFileError:
      by_reader = False
    assert by_schema == by_reader, meta


def test_authors_h5_samples_as_a_hand_made_file_reproduce_their_models(reference_dir,
                                                                       tmp_path, capsys):
  """The README's example: the authors' .h5 sample features -> featfile.write -> predict with
  their released models = their models (convert + Flax, jitted), bit for bit in the JSON."""
  import functools
  import jax
  h5py = pytest.importorskip("h5py")
  from aan_jax.convert import attendaffectnet as convert
  names = {"resnet50": "resnet50", "flownet": "flownet", "i3d": "i3d", "vggish": "vggish",
           "emobase2010": "emobase"}
  feats = {}
  for f, stem in names.items():
    with h5py.File(reference_dir / "sample_inputs" / f"{stem}_sample.h5", "r") as h:
      feats[f] = h["default"][()]
  start = np.arange(10) * 5.0
  npz = featfile.write(tmp_path / "samples.npz", feats, start, start + 5.0)
  rc, _, err = _run(capsys, npz, "--models", f"released:{reference_dir}", "--out", tmp_path / "o")
  assert rc == 0, err
  doc = json.loads((tmp_path / "o" / "samples.json").read_text())
  for target in ("arousal", "valence"):
    model, variables = convert.from_attendaffectnet(
        reference_dir / "trained_models" /
        f"MDB_{target}_COGNIMUSE_attention_model_Feature_AAN_video_audio.pth")
    want = np.asarray(jax.jit(functools.partial(model.apply, deterministic=True))(
        variables, {k: np.asarray(v, np.float32) for k, v in feats.items()}), np.float64)
    got = next(c for c in doc["curves"] if c["target"] == target)["mean"]
    np.testing.assert_array_equal(got, want)


# ---- (6) names reach every writer safely -------------------------------------------------------

def test_names_with_dollars_hashes_and_newlines(wd, tmp_path, capsys):
  """`film$\\frac$` broke matplotlib's mathtext (orphan CSV and JSON); a source named with `$`
  too; a newline in a file name split the log line."""
  named = _copy_wd(wd, tmp_path / "w$\\frac$")
  films = [_raw_npz(tmp_path / "film$\\frac$.npz", {**_feats(6), **_times(6)}),
           _raw_npz(tmp_path / "two\nlines.npz", {**_feats(6), **_times(6)})]
  out = tmp_path / "o"
  rc, log, err = _run(capsys, *films, "--models", named, "--out", out)
  assert rc == 0, err
  assert _outputs(out, "film$\\frac$") == sorted(OUTS)
  assert _outputs(out, "two\nlines") == sorted(OUTS)
  assert any("two\\nlines.npz: " in l for l in log.splitlines()), log
  assert not any(l.startswith("lines.npz") for l in log.splitlines())


def test_video_link_is_url_encoded():
  from aan_jax.inference import report_html
  from aan_jax.inference.predict import Curve
  c = Curve("s", "arousal", "regression", "fixed:5", np.array([0.0]), np.array([5.0]),
            np.zeros((1, 1)), ["A"])
  page = report_html.to_html([c], [], [], {}, "t", "../a#b%20c <x>.mp4")
  assert 'src="../a%23b%2520c%20%3Cx%3E.mp4"' in page


@pytest.mark.parametrize("n_classes", [3, 10])
def test_classifier_class_names_are_checked_against_its_head(n_classes, tmp_path):
  """A classifier's model.json naming 3 or 10 classes over a 7-way head loaded, and its
  predictions were mislabelled."""
  import jax
  import ml_collections
  from aan_jax import engine
  from aan_jax.export import core as export
  build = {"model": "vtt", "vtt": {"widths": [4, 8], "stage_sizes": [1, 1]}}
  spec = engine.get_model_spec("vtt")
  module = spec.build(ml_collections.ConfigDict(build))
  shape = [4, 16, 16, 3]
  want = jax.eval_shape(lambda k: spec.init(module, k, {"faces": np.zeros([1, *shape], np.uint8)}),
                        jax.random.key(0))  # shapes only: nothing compiled
  flat = export._flatten(jax.tree.map(lambda s: np.zeros(s.shape, np.float32), want))

  def folder(name, classes):
    d = tmp_path / name
    d.mkdir()
    np.savez(d / "params.npz", **flat)
    (d / "model.json").write_text(json.dumps({
        "format": export.CLASSIFIER_FORMAT, "name": name, "task": "categorical",
        "build": build, "classes": classes, "inputs": {"faces": shape}}))
    return d
  (ok,) = export.load_classifiers(folder("ok", [f"c{i}" for i in range(7)]))
  assert len(ok.classes) == 7
  with pytest.raises(export.ExportError, match=f"names {n_classes} classes but the model's "
                                               "head has 7 outputs"):
    export.load_classifiers(folder("bad", [f"c{i}" for i in range(n_classes)]))


# ---- (7) the partials ---------------------------------------------------------------------------

def test_no_audio_message_names_what_predict_can_do(wd, tmp_path, capsys):
  """Before: the extractor's advice, `--missing-audio nan`, an option predict does not have."""
  from test_predict import _write_video
  video = _write_video(tmp_path / "silent.mp4", seconds=1.0, audio=False)
  rc, _, err = _run(capsys, video, "--models", wd, "--out", tmp_path / "o", "--weights", "random")
  assert rc == 1 and "has no audio stream" in err and "Traceback" not in err
  line = next(l for l in err.splitlines() if "FAILED" in l)
  assert "--missing-audio nan" not in line.replace("python -m extract --missing-audio nan", "")
  assert "released-video:DIR" in line


_NODE_DOM = r"""
const fs = require("fs");
const page = fs.readFileSync(process.argv[2], "utf8");
const data = /<script id="data" type="application\/json">([\s\S]*?)<\/script>/.exec(page)[1];
const scripts = [...page.matchAll(/<script>([\s\S]*?)<\/script>/g)].map(m => m[1]);
const made = [];
function node(tag) { const n = {tag, attrs: {}, children: [], style: {}, dataset: {}, textContent: "",
  setAttribute(k, v) { this.attrs[k] = v; }, appendChild(c) { this.children.push(c); return c; },
  addEventListener() {}, getBoundingClientRect() { return {left: 0, width: 1000}; }};
  made.push(n); return n; }
const byId = {data: {textContent: data}};
global.document = { documentElement: {dataset: {}}, body: {dataset: {}},
  getElementById: id => byId[id] || (id === "video" ? null : (byId[id] = node(id))),
  createElementNS: (ns, tag) => node(tag), createElement: tag => node(tag),
  createTextNode: t => ({t}) };
global.window = { addEventListener() {} };
global.location = { hash: "" };
global.requestAnimationFrame = () => {};
eval(scripts[scripts.length - 1]);
console.log(JSON.stringify({ready: document.body.dataset.ready,
  curves: made.filter(n => n.tag === "polyline").map(l => [l.attrs["data-source"],
                                                           l.attrs.points.split(" ").length]),
  bands: made.filter(n => n.tag === "polygon").map(p => p.attrs.points.split(" ").length),
  nan: made.some(n => JSON.stringify(n.attrs).includes("NaN"))}));
"""


def test_the_page_breaks_its_curves_at_a_gap(wd, tmp_path, capsys):
  """The page's own script (run in node over a minimal DOM, where Debian's chromium is not
  installed): a segment declared missing breaks each curve and its band, no NaN drawn."""
  import shutil
  import subprocess
  node = shutil.which("node") or shutil.which("nodejs")
  if not node:
    pytest.skip("no node binary (apt-get install nodejs)")
  f = _feats(12)
  f["vggish"][3:6] = np.nan
  t = _times(12)
  npz = featfile.write(tmp_path / "gap.npz", f, t["start_s"], t["end_s"], nan_features=["vggish"])
  assert _run(capsys, npz, "--models", wd, "--out", tmp_path / "o")[0] == 0
  (tmp_path / "dom.js").write_text(_NODE_DOM)
  p = subprocess.run([node, str(tmp_path / "dom.js"), str(tmp_path / "o" / "gap.html")],
                     capture_output=True, text=True, timeout=60)
  assert p.returncode == 0, p.stderr
  got = json.loads(p.stdout)
  assert got["ready"] == "1" and not got["nan"]
  assert [n for _, n in got["curves"]] == [3, 6, 3, 6]  # arousal and valence: 0-2, 6-11
  assert got["bands"] == [6, 12]  # arousal's two folds: a band per piece (2 x points)
