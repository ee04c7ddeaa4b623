"""A fuzz test of the predictor's inputs (issue 21): random metadata values and types, random
arrays (truncated files, oversized headers, wrong dtypes and shapes, NaN, inf, 3e38, empty),
random file names, and random `model.json` / `params.npz` / `index.json` edits, each through
the whole command (`experiments.predict`, in-process). Every outcome must be a complete
report (all four files) or one clean line (`predict: FAILED <input>: ...`, exit 1; or
`error: ...`, exit 2), never a traceback, never a partial set of outputs.

A seeded generator (no Hypothesis): the same cases on every run. AAN_FUZZ_SEED and
AAN_FUZZ_CASES change them (e.g. a longer run: AAN_FUZZ_CASES=3000).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import zipfile

import numpy as np
import pytest

from test_predict import write_workdir

from aan_jax.data.features import FEATURE_DIMS

pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")


def printable(text) -> str:
  """How the command names an input in its one line (aan_jax.inference.report_set.printable)."""
  def esc(c):
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(
        c, f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")
  return "".join(esc(c) if ord(c) < 32 or c in "\x7f\u2028\u2029" else c for c in str(text))

SEED = int(os.environ.get("AAN_FUZZ_SEED", "21"))
CASES = int(os.environ.get("AAN_FUZZ_CASES", "300"))
OUTS = ("csv", "json", "png", "html")
FIELDS = ("format_version", "source", "media", "segmentation", "num_segments",
          "frames_per_segment", "dropped_tail_s", "features", "dims", "weights", "nan_features",
          "truncated", "options", "preprocessing", "device", "versions", "faces", "other")


def _value(rng, depth=0):
  """A random JSON value of a random type."""
  kinds = ["int", "float", "str", "bool", "null", "list", "dict", "feature", "features",
           "seg", "hex"]
  k = kinds[rng.integers(len(kinds) - (2 if depth > 2 else 0))] if depth <= 2 else "int"
  if k == "int":
    return int(rng.choice([0, 1, -1, 5, 128, 2**40, -2**63]))
  if k == "float":
    return float(rng.choice([0.5, -3.0, 1e308, 5.0, 1e-300]))
  if k == "str":
    return str(rng.choice(["", "fixed:5", "x", "$\\frac$", "a\nb", "../../etc", "é" * 3, "0" * 64]))
  if k == "bool":
    return bool(rng.integers(2))
  if k == "null":
    return None
  if k == "list":
    return [_value(rng, depth + 1) for _ in range(rng.integers(4))]
  if k == "dict":
    keys = ["name", "sha256", "mode", "vggish", "weights", "size_bytes", "x"]
    return {str(rng.choice(keys)): _value(rng, depth + 1) for _ in range(rng.integers(4))}
  if k == "feature":
    return str(rng.choice(list(FEATURE_DIMS) + ["bogus"]))
  if k == "features":
    return [str(f) for f in rng.choice(list(FEATURE_DIMS), rng.integers(1, 4))]
  if k == "seg":
    return str(rng.choice(["fixed:5", "sliding:10:5", "fixed:2.5", "excerpt:64", "fixed:0"]))
  return "".join(rng.choice(list("0123456789abcdef"), 64))


def _name(rng, i):
  chars = list("abcXYZ019 _-.$#%&'\\()[]{}é\n\t<>\"") + ["\u2028"]
  return f"{i:03d}" + "".join(rng.choice(chars, rng.integers(0, 8)))


def _header_bomb(shape) -> bytes:
  """An .npy entry whose header declares `shape` float32, with no data after it."""
  buf = io.BytesIO()
  np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                             "shape": shape})
  return buf.getvalue()


def _feature_file(rng, path: pathlib.Path) -> None:
  """One random feature file: mostly valid with one thing wrong, sometimes several."""
  n = int(rng.choice([0, 1, 2, 5, 7]))
  hop = float(rng.choice([5.0, 5.0, 2.5]))
  start = np.arange(n) * hop
  arrays = {"start_s": start, "end_s": start + 5.0}
  for f in ("vggish", "emobase2010"):
    arrays[f] = rng.standard_normal((n, FEATURE_DIMS[f])).astype(np.float32)
  meta = {"segmentation": "fixed:5", "source": {"name": "film.mp4", "sha256": "0" * 64},
          "features": ["vggish", "emobase2010"], "nan_features": []}
  for _ in range(rng.integers(1, 3)):
    m = rng.integers(14)
    if m == 0:
      meta = None  # arrays only
    elif m == 1:
      meta = _value(rng)  # metadata of any type
    elif m in (2, 3, 4) and isinstance(meta, dict):
      meta[str(rng.choice(FIELDS))] = _value(rng)
    elif m == 5 and isinstance(meta, dict):
      meta.pop(str(rng.choice(list(meta) or ["x"])), None)
    elif m == 6 and n:  # declared missing, or not
      f = str(rng.choice(["vggish", "emobase2010"]))
      arrays[f][rng.integers(n):] = np.nan
      if rng.integers(2) and isinstance(meta, dict):
        meta["nan_features"] = [f]
    elif m == 7 and n:
      f = str(rng.choice(["vggish", "emobase2010"]))
      arrays[f][rng.integers(n)] = float(rng.choice([3e38, -3e38, np.inf, 1e20]))
    elif m == 8:
      k = str(rng.choice(list(arrays)))
      arrays[k] = arrays[k].astype(rng.choice([np.float64, np.int32, np.float16]))
    elif m == 9:
      k = str(rng.choice(list(arrays)))
      shapes = [(n,), (n, 3), (n + 1, 128), (2, 2, 2)]
      arrays[k] = rng.standard_normal(shapes[rng.integers(len(shapes))]).astype(np.float32)
    elif m == 10:
      arrays.pop(str(rng.choice(list(arrays))))
    elif m == 11 and n > 1:
      arrays["start_s"] = arrays["start_s"][::-1].copy()
    elif m == 12:
      arrays[str(rng.choice(["bogus", "faces", "i3d"]))] = np.zeros((n, 9), np.float32)
    elif m == 13 and "start_s" in arrays:
      arrays["end_s"] = arrays["start_s"] + float(rng.choice([0.0, 7.0, -1.0]))
  extra = {} if meta is None else {"metadata": np.array(json.dumps(meta))}
  buf = io.BytesIO()
  np.savez(buf, **arrays, **extra)
  data = buf.getvalue()
  r = rng.integers(12)
  if r == 0:
    data = data[:rng.integers(len(data))]  # truncated
  elif r == 1:  # an entry whose header declares a huge array
    zbuf = io.BytesIO(data)
    with zipfile.ZipFile(zbuf, "a") as z:
      z.writestr("vggish.npy" if "vggish" not in arrays else "i3d.npy",
                 _header_bomb((200000, 200000)))
    data = zbuf.getvalue()
  elif r == 2:
    data = bytes(rng.integers(0, 256, rng.integers(0, 200), dtype=np.uint8))
  path.write_bytes(data)


def _check(rc, err, inputs, out) -> None:
  """A complete report or one clean line per input; one `error:` line for exit 2."""
  assert "Traceback" not in err, err[-3000:]
  assert rc in (0, 1, 2), (rc, err[-2000:])
  left = [p.name for p in out.glob(".*")] if out.is_dir() else []
  assert [p for p in left if "partial" in p] == [], left
  lines = err.splitlines()
  if rc == 2:
    assert len([l for l in lines if l.startswith("error: ")]) == 1, err
    assert not any(out.glob("*.csv")) if out.is_dir() else True
    return
  failed = [l for l in lines if l.startswith("predict: FAILED ")]
  n_failed = 0
  for inp in inputs:
    stem = pathlib.Path(inp).stem
    have = [e for e in OUTS if (out / f"{stem}.{e}").exists()]
    mine = [l for l in failed if l.startswith(f"predict: FAILED {printable(inp)}: ")]
    if have:
      assert have == list(OUTS) and not mine, (inp, have, mine)
      doc = json.loads((out / f"{stem}.json").read_text())
      assert doc["curves"] and (out / f"{stem}.png").stat().st_size > 0
    else:
      assert len(mine) == 1, (inp, failed)
      n_failed += 1
  assert len(failed) == n_failed and rc == (1 if n_failed else 0), (rc, failed)


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
  d = tmp_path_factory.mktemp("fuzz_wd")
  return pathlib.Path(write_workdir(d / "wd", [
      {"name": "a_A", "target": "arousal", "fold": "A", "seed": 1},
      {"name": "a_B", "target": "arousal", "fold": "B", "seed": 2},
      {"name": "v_A", "target": "valence", "fold": "A", "seed": 3}]))


def _run(capsys, argv):
  from experiments import predict as cli
  rc = cli.main([*map(str, argv), "--no-progress", "--no-video"])
  return rc, capsys.readouterr().err


def test_fuzz_feature_files(wd, tmp_path, capsys):
  """Random feature files, 20 per command (the batch goes on past each bad one)."""
  rng = np.random.default_rng(SEED)
  n_cases = CASES * 2 // 3
  outcomes = {"report": 0, "failed": 0}
  for b in range(0, n_cases, 20):
    d = tmp_path / f"in{b}"
    d.mkdir()
    inputs = []
    for i in range(b, min(b + 20, n_cases)):
      p = d / f"{_name(rng, i)}.npz"
      _feature_file(rng, p)
      inputs.append(str(p))
    out = tmp_path / f"out{b}"
    rc, err = _run(capsys, [*inputs, "--models", wd, "--out", out])
    _check(rc, err, inputs, out)
    for inp in inputs:
      outcomes["report" if (out / f"{pathlib.Path(inp).stem}.csv").exists() else "failed"] += 1
  assert outcomes["report"] > n_cases // 10 and outcomes["failed"] > n_cases // 3, outcomes


def _mutate_model(rng, root: pathlib.Path) -> None:
  """One random edit of a copy of the workdir's models."""
  models = root / "models"
  folder = models / str(rng.choice(["arousal/A", "arousal/B", "valence/A"]))
  spec_path, params_path = folder / "model.json", folder / "params.npz"
  m = rng.integers(9)
  try:  # an earlier edit may have left a file that is no longer an object: edit it no further
    spec_ok = isinstance(json.loads(spec_path.read_text()).get("build"), dict)
    doc = json.loads((models / "index.json").read_text())
    index_ok = (isinstance(doc.get("models"), list) and doc["models"]
                and isinstance(doc["models"][0], dict))
  except (ValueError, AttributeError):
    spec_ok = index_ok = False
  params_ok = zipfile.is_zipfile(params_path)  # not if an earlier edit truncated it
  if ((m <= 3 or m == 8) and not spec_ok or m == 7 and not index_ok
      or m in (4, 5, 6) and not params_ok):
    return
  if m <= 2:  # a model.json field, top level or in build, set to anything
    spec = json.loads(spec_path.read_text())
    where = spec["build"] if rng.integers(2) else spec
    key = str(rng.choice(list(where) + ["num_heads", "d_model", "task", "_task", "x"]))
    where[key] = _value(rng) if rng.integers(3) else int(rng.choice([0, -8, 3, 7, 10**9]))
    spec_path.write_text(json.dumps(spec))
  elif m == 3:
    spec = json.loads(spec_path.read_text())
    spec.pop(str(rng.choice(list(spec))))
    spec_path.write_text(json.dumps(spec) if rng.integers(4) else json.dumps([spec]))
  elif m in (4, 5):  # one array dropped, reshaped, retyped, or non-finite
    try:
      with zipfile.ZipFile(params_path) as zf:  # not past an earlier edit's huge header
        if sum(i.file_size for i in zf.infolist()) > 64 << 20:
          return
      with np.load(params_path) as z:
        flat = {k: z[k] for k in z.files}
    except Exception:  # pylint: disable=broad-except
      return  # an earlier edit left it unreadable: the loader's case, not this edit's
    if not flat:
      return
    k = str(rng.choice(sorted(flat)))
    e = rng.integers(5)
    if e == 0:
      flat.pop(k)
    elif e == 1:
      flat[k] = flat[k].reshape(-1)[:max(1, flat[k].size - 1)]
    elif e == 2:
      flat[k] = flat[k].astype(rng.choice([np.int64, np.float64, np.float16]))
    elif e == 3:
      flat[k] = np.full_like(flat[k], rng.choice([np.nan, np.inf, 0.0, 3e38]))
    else:
      flat["params/extra"] = np.zeros(3, np.float32)
    np.savez(params_path, **flat)
  elif m == 6:  # truncated, or a header declaring a huge array
    data = params_path.read_bytes()
    if rng.integers(2):
      params_path.write_bytes(data[:rng.integers(len(data))])
    else:
      with zipfile.ZipFile(params_path, "a") as z:
        z.writestr("params/huge.npy", _header_bomb((200000, 200000)))
  elif m == 7:  # index entries
    idx = models / "index.json"
    doc = json.loads(idx.read_text())
    e = rng.integers(4)
    if e == 0:
      doc["models"].append(dict(doc["models"][0]))
    elif e == 1:
      doc["models"][0]["path"] = str(rng.choice(["../../etc", "/tmp", "", "nope"]))
    elif e == 2:
      doc["models"] = _value(rng)
    else:
      doc["models"][0]["path"] = _value(rng)
    idx.write_text(json.dumps(doc))
  else:  # settings that build another model: the parameters no longer fit
    spec = json.loads(spec_path.read_text())
    spec["build"][str(rng.choice(["num_layers", "ffn", "modalities", "model"]))] = _value(rng)
    spec_path.write_text(json.dumps(spec))


def test_fuzz_model_folders(wd, tmp_path, capsys):
  """Random model.json, params.npz and index.json edits: a report, or `error:` and exit 2."""
  rng = np.random.default_rng(SEED + 1)
  start = np.arange(4) * 5.0
  film = tmp_path / "film.npz"
  np.savez(film, start_s=start, end_s=start + 5.0,
           **{f: rng.standard_normal((4, FEATURE_DIMS[f])).astype(np.float32)
              for f in ("vggish", "emobase2010")})
  outcomes = {0: 0, 1: 0, 2: 0}
  for i in range(CASES - CASES * 2 // 3):
    root = tmp_path / f"wd{i}"
    shutil.copytree(wd, root)
    for _ in range(rng.integers(1, 3)):
      _mutate_model(rng, root)
    out = tmp_path / f"out{i}"
    rc, err = _run(capsys, [film, "--models", root, "--out", out])
    _check(rc, err, [str(film)], out)
    outcomes[rc] += 1
    shutil.rmtree(root)
  assert outcomes[2] > outcomes[0] > 0, outcomes
