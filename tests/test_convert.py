"""Parity with the authors' released models and safety of the checkpoint reader."""

import glob
import io
import os
import pickle
import struct
import sys
import zipfile

import jax
import numpy as np
import pytest

from aan_jax.convert import checkpoint
from aan_jax.convert import attendaffectnet as convert
from aan_jax.convert import torch_pickle
from aan_jax.data.features import FEATURES

SAMPLE_FILES = {"resnet50": "resnet50", "flownet": "flownet", "i3d": "i3d",
                "vggish": "vggish", "emobase2010": "emobase"}
EXPECTED = {  # file tag -> (modalities, ffn, output tanh), from the authors' README
    "video_audio": (FEATURES, "relu", False),
    "only_video": (("resnet50", "flownet", "i3d"), "tanh_residual", True),
    "only_audio": (("vggish", "emobase2010"), "tanh_residual", True),
}


def _checkpoints(reference_dir):
  files = sorted(glob.glob(str(reference_dir / "trained_models" / "*.pth")))
  assert len(files) == 6, files
  return files


@pytest.fixture(scope="module")
def samples(reference_dir):
  h5py = pytest.importorskip("h5py")
  out = {}
  for name, stem in SAMPLE_FILES.items():
    with h5py.File(reference_dir / "sample_inputs" / f"{stem}_sample.h5", "r") as f:
      out[name] = np.asarray(f["default"][()], np.float32)
  return out


def _torch_outputs(path, samples):
  """The authors' forward pass in PyTorch, on the state read from the file."""
  torch = pytest.importorskip("torch")
  sys.path.insert(0, os.path.dirname(__file__))
  from torch_reference import AuthorsFeatureAAN  # pylint: disable=g-import-not-at-top
  obj = torch_pickle.load(path)
  sd = {k: v for k, v in torch_pickle.state_dict(obj).items() if not k.startswith("src_embed")}
  projs = [(k[: -len(".weight")], v.shape[1]) for k, v in sd.items()
           if convert._PROJ.match(k)]  # pylint: disable=protected-access
  tag = next(t for t in EXPECTED if t in os.path.basename(path))
  mods, kind, tanh = EXPECTED[tag]
  heads = torch_pickle.find_modules(obj, "MultiHeadedAttention")[0].state["h"]
  n_layers = len(torch_pickle.find_modules(obj, "EncoderLayer"))
  model = AuthorsFeatureAAN(projs, sd["linear.weight"].shape[1], heads, n_layers, kind, tanh)
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
  model.eval()
  with torch.no_grad():
    y = model(*[torch.from_numpy(samples[m][:, None, :]) for m in mods])
  return y.numpy()[:, 0], mods


def test_parity_with_released_models(reference_dir, samples):
  for path in _checkpoints(reference_dir):
    model, variables = convert.from_attendaffectnet(path)
    want, mods = _torch_outputs(path, samples)
    assert model.modalities == mods
    got = np.asarray(model.apply(variables, {m: samples[m] for m in mods}, deterministic=True))
    assert got.shape == (10,)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=os.path.basename(path))
    # The outputs are not degenerate: the rows give different predictions.
    assert np.std(want) > 1e-3


def test_inferred_architecture_matches_file_sources(reference_dir):
  for path in _checkpoints(reference_dir):
    obj = torch_pickle.load(path)
    model, _ = convert.from_attendaffectnet(path)
    tag = next(t for t in EXPECTED if t in os.path.basename(path))
    assert (model.modalities, model.ffn, model.output_tanh) == EXPECTED[tag]
    assert (model.d_model, model.num_heads, model.num_layers) == (8, 2, 6)
    # Our torch reference follows the class sources the legacy pickle carries.
    ln = type(torch_pickle.find_modules(obj, "LayerNorm")[0]).source
    assert "x.std(-1" in ln and "(std + self.eps)" in ln
    ff = type(torch_pickle.find_modules(obj, "PositionwiseFeedForward")[0]).source
    assert ("F.relu(self.w(x))" in ff) == (model.ffn == "relu")


def test_parameter_count_equals_released_state_dict(reference_dir):
  for path in _checkpoints(reference_dir):
    sd = torch_pickle.state_dict(torch_pickle.load(path))
    released = sum(v.size for k, v in sd.items() if not k.startswith("src_embed."))
    model, _ = convert.from_attendaffectnet(path)
    fresh = model.init(jax.random.key(0), model.dummy_features(1))
    assert sum(x.size for x in jax.tree_util.tree_leaves(fresh)) == released
  assert released == 48865  # the 5-modality d_model=8 model (last file in sorted order)


def test_zip_format_resaved_with_current_torch(reference_dir, samples, tmp_path):
  torch = pytest.importorskip("torch")
  path = [p for p in _checkpoints(reference_dir) if "video_audio" in p][0]
  sd = torch_pickle.state_dict(torch_pickle.load(path))
  model, variables = convert.from_attendaffectnet(path)
  feats = {m: samples[m] for m in model.modalities}
  want = np.asarray(model.apply(variables, feats))
  for i, payload in enumerate([
      {k: torch.from_numpy(np.array(v)) for k, v in sd.items()},
      {"state_dict": {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, "epoch": 3}]):
    out = tmp_path / f"resaved{i}.pth"
    torch.save(payload, out)
    assert zipfile.is_zipfile(out)
    m2, v2 = convert.from_attendaffectnet(out)
    assert (m2.ffn, m2.output_tanh) == ("relu", False)
    np.testing.assert_allclose(np.asarray(m2.apply(v2, feats)), want, atol=1e-6)


def test_orbax_roundtrip_and_cli(reference_dir, samples, tmp_path):
  path = [p for p in _checkpoints(reference_dir) if "only_audio" in p][0]
  assert convert.main([path, str(tmp_path / "ck")]) == 0
  model, variables = checkpoint.restore(tmp_path / "ck")
  ref_model, ref_vars = convert.from_attendaffectnet(path)
  assert model == ref_model
  feats = {m: samples[m] for m in model.modalities}
  np.testing.assert_array_equal(np.asarray(model.apply(variables, feats)),
                                np.asarray(ref_model.apply(ref_vars, feats)))
  assert checkpoint.metadata(tmp_path / "ck")["source"] == os.path.abspath(path)
  # A second conversion into the same directory is refused, not merged.
  assert convert.main([path, str(tmp_path / "ck")]) == 1


# ---- malicious and broken files -------------------------------------------------------

class _Evil:
  def __init__(self, func, *args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


def _legacy_file(path, obj):
  with open(path, "wb") as f:
    for header in (torch_pickle.LEGACY_MAGIC, 1001, {"little_endian": True}):
      pickle.dump(header, f, protocol=2)
    pickle.dump(obj, f, protocol=2)
    pickle.dump([], f, protocol=2)


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, layout):
  marker = tmp_path / "pwned"
  payload = {"linear1.weight": _Evil(os.system, f"touch {marker}")}
  path = tmp_path / "evil.pth"
  if layout == "legacy":
    _legacy_file(path, payload)
  else:
    with zipfile.ZipFile(path, "w") as zf:
      zf.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
  with pytest.raises(torch_pickle.UnsafeCheckpointError, match="system"):
    convert.from_attendaffectnet(path)
  assert not marker.exists()
  # The CLI says so in one line and exits non-zero.
  assert convert.main([str(path), str(tmp_path / "out")]) == 1
  assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("func,args", [
    (eval, ("__import__('os')",)),
    (__import__("subprocess").Popen, (["true"],)),
    (getattr, ("text", "upper")),
    (__import__("shutil").rmtree, ("/nonexistent",)),
])
def test_other_dangerous_globals_are_refused(tmp_path, func, args):
  path = tmp_path / "evil.pth"
  _legacy_file(path, _Evil(func, *args))
  with pytest.raises(torch_pickle.UnsafeCheckpointError, match="refusing"):
    torch_pickle.load(path)


def test_header_with_globals_is_refused(tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "evil.pth"
  with open(path, "wb") as f:
    pickle.dump(_Evil(os.system, f"touch {marker}"), f, protocol=2)
  with pytest.raises(torch_pickle.UnsafeCheckpointError):
    torch_pickle.load(path)
  assert not marker.exists()


def test_broken_files_give_clear_errors(tmp_path, reference_dir):
  not_torch = tmp_path / "notes.pth"
  not_torch.write_text("hello")
  with pytest.raises(torch_pickle.CheckpointError, match="notes.pth"):
    convert.from_attendaffectnet(not_torch)
  real = _checkpoints(reference_dir)[0]
  truncated = tmp_path / "truncated.pth"
  truncated.write_bytes(open(real, "rb").read()[:-1000])
  with pytest.raises(torch_pickle.CheckpointError, match="truncated"):
    convert.from_attendaffectnet(truncated)
  other = tmp_path / "other.pth"
  _legacy_file(other, {"fc.weight": 1})
  with pytest.raises(convert.ConversionError, match="no input projections"):
    convert.from_attendaffectnet(other)
