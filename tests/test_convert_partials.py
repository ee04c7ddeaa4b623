"""`aan_jax.convert` on the partials of issue 21: a bare tensor and a reshaped projection are
refused naming the file and the tensor (before: no file named, and "d_model 9" blamed); NaN
weights are refused (before: converted silently); from_vaanet / from_attendaffectnet on a
folder say so in one line (before: a raw IsADirectoryError). Each seen failing before."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from aan_jax.convert import attendaffectnet as convert
from aan_jax.convert import torch_pickle

ROOT = str(__import__("pathlib").Path(__file__).resolve().parents[1])
AUDIO = "MDB_arousal_COGNIMUSE_attention_model_Feature_AAN_only_audio.pth"


@pytest.fixture(scope="module")
def audio_sd(reference_dir):
  torch = pytest.importorskip("torch")
  sd = torch_pickle.state_dict(torch_pickle.load(reference_dir / "trained_models" / AUDIO))
  return torch, {k: torch.tensor(np.array(v)) for k, v in sd.items()}


def _convert_cli(path, out):
  p = subprocess.run([sys.executable, "-m", "aan_jax.convert", str(path), str(out)],
                     capture_output=True, text=True, cwd=ROOT, timeout=300)
  return p.returncode, p.stderr.strip()


def test_bare_tensor_names_the_file(tmp_path):
  torch = pytest.importorskip("torch")
  torch.save(torch.zeros(3, 4), tmp_path / "bare.pth")
  with pytest.raises(convert.ConversionError, match=r"bare\.pth: expected a module or a state"):
    convert.from_attendaffectnet(tmp_path / "bare.pth")
  rc, err = _convert_cli(tmp_path / "bare.pth", tmp_path / "out")
  assert rc == 1 and err == (f"error: {tmp_path / 'bare.pth'}: expected a module or a state "
                             "dict, found ndarray")


def test_reshaped_projection_is_named(audio_sd, tmp_path):
  torch, sd = audio_sd
  w = sd["reduced_4.weight"]
  sd = {**sd, "reduced_4.weight": w.reshape(-1)[:(w.numel() // 9) * 9].reshape(9, -1)}
  torch.save(sd, tmp_path / "reshaped.pth")
  with pytest.raises(convert.ConversionError) as e:
    convert.from_attendaffectnet(tmp_path / "reshaped.pth")
  msg = str(e.value)
  assert msg.startswith(str(tmp_path / "reshaped.pth")) and "reduced_4.weight has shape (9, " in msg
  assert "heads" not in msg


def test_nan_weights_are_refused(audio_sd, tmp_path):
  torch, sd = audio_sd
  k = "encoder.layers.2.feed_forward.w.weight"
  bad = sd[k].clone()
  bad[0, 0] = float("nan")
  torch.save({**sd, k: bad}, tmp_path / "nan.pth")
  with pytest.raises(convert.ConversionError, match=f"tensor {k} holds NaN or infinite values"):
    convert.from_attendaffectnet(tmp_path / "nan.pth")


def test_a_folder_is_one_line(tmp_path):
  from aan_jax.convert import vaanet
  with pytest.raises(vaanet.VAANetConversionError, match="is a directory; give the .pth file"):
    convert.from_vaanet(tmp_path)
  with pytest.raises(convert.ConversionError, match="is a directory; give the .pth file"):
    convert.from_attendaffectnet(tmp_path)
