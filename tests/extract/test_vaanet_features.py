"""VAANet's inputs: snippet sampling, crops, MFCCs, the 3D ResNet in Hara's layout, I3D maps."""

from __future__ import annotations

import json
import os
from unittest import mock

import numpy as np
import pytest
import torch

from conftest import write_video
from extract import resnet3d, vaanet_features as vf
from extract import weights as weights_lib


def test_sampling_centre_windows_and_loop_padding():
  idx = vf.sample_snippets(300)
  assert idx.shape == (12, 16)
  # 12 segments of 25 frames; the centre 16-frame window of each starts 4 frames in.
  np.testing.assert_array_equal(idx[:, 0], np.arange(12) * 25 + 4)
  assert (np.diff(idx, axis=1) == 1).all()
  np.testing.assert_array_equal(idx, vf.sample_snippets(300))  # deterministic
  # 50 frames: repeated 4 times to 200 (segments of 16), the windows wrap the clip.
  short = vf.sample_snippets(50)
  np.testing.assert_array_equal(short.reshape(-1), np.tile(np.arange(50), 4)[:192])
  # The authors' random draw: starts in [0, seglen - 17], inside each segment.
  draws = np.stack([vf.sample_snippets(300, rng=np.random.default_rng(s)) for s in range(40)])
  starts = draws[:, :, 0] - np.arange(12) * 25
  assert starts.min() == 0 and starts.max() == 8 and len(np.unique(starts)) == 9


def test_crop_is_the_centre_square_resized():
  frame = np.zeros((40, 100, 3), np.uint8)
  frame[:, 30:70] = 200  # the centre 40 x 40 square
  out = vf.crop_resize(frame, 8)
  assert out.shape == (8, 8, 3) and (out == 200).all()
  assert (vf.crop_resize(frame, 8, "top_left") == 0)[:, :4].all()


def test_mfcc_is_librosas_tiled_to_4096_frames():
  librosa = pytest.importorskip("librosa")
  wav = np.random.RandomState(0).randn(44100 * 3).astype(np.float32) * 0.1
  m = vf.mfcc(wav)
  ref = librosa.feature.mfcc(y=wav, sr=44100, n_mfcc=32, n_fft=2048, hop_length=512).T
  assert m.shape == (4096, 32) and m.dtype == np.float32 and len(ref) == 259
  np.testing.assert_array_equal(m[:259], ref)
  np.testing.assert_array_equal(m[259:518], ref)  # the clip repeated from its start
  np.testing.assert_array_equal(m[-1], ref[4095 % 259])


def test_decode_mono_44k_and_resampled(tmp_path):
  path = write_video(tmp_path / "a.mp4", seconds=1.0, fps=25, width=64, height=48,
                     sample_rate=22050, channels=2)
  idx = vf.sample_snippets(25, seq_len=2, snippet=4)
  video, wav, n = vf.decode(path, idx, size=16)
  assert n == 25 and video.shape == (2, 4, 16, 16, 3) and video.dtype == np.uint8
  # 22.05 kHz resampled to 44.1 kHz: twice the samples (AAC adds its priming frames).
  assert abs(len(wav) / 44100 - 1.0) < 0.1
  # The 440 Hz tone's amplitude survives the channel mean (both channels carry it).
  assert 0.2 < np.abs(wav[4000:40000]).max() < 0.4


def _hara_checkpoint(path, blocks=(1, 1, 1, 1), seed=0):
  """A random ResNet in Hara et al.'s checkpoint layout (DataParallel prefix, fc, arch)."""
  with torch.random.fork_rng():
    torch.manual_seed(seed)
    model = resnet3d.ResNet3D(blocks)
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm3d):
        m.running_mean.uniform_(-0.1, 0.1)
        m.running_var.uniform_(0.5, 1.5)
  sd = {f"module.{k}": v for k, v in model.state_dict().items()}
  sd["module.fc.weight"], sd["module.fc.bias"] = torch.zeros(400, 2048), torch.zeros(400)
  torch.save({"arch": "resnet", "epoch": 200, "state_dict": sd}, path,
             _use_new_zipfile_serialization=False)
  return model.eval()


def test_resnet3d_reads_haras_layout_and_maps_are_row_major(tmp_path):
  ckpt = tmp_path / "resnet-101-kinetics.pth"
  model = _hara_checkpoint(ckpt)
  with mock.patch.dict(os.environ, {"AAN_RESNET101_3D_WEIGHTS": str(ckpt)}):
    ext = resnet3d.ResNet3DExtractor("pretrained")
  assert ext.weights_info["blocks"] == [1, 1, 1, 1] and ext.weights_info["mode"] == "pretrained"
  x = np.random.RandomState(0).randint(0, 256, (2, 16, 112, 112, 3)).astype(np.uint8)
  maps = ext.snippets(x)
  assert maps.shape == (2, 16, 2048)
  with torch.inference_mode():
    y = model((torch.from_numpy(x).permute(0, 4, 1, 2, 3).float() - 100) / 255)
  assert tuple(y.shape) == (2, 2048, 1, 4, 4)
  np.testing.assert_allclose(maps[:, 1 * 4 + 3], y[:, :, 0, 1, 3].numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(maps.reshape(2, 4, 4, 2048), y[:, :, 0].permute(0, 2, 3, 1).numpy(),
                             rtol=1e-5, atol=1e-5)
  # A checkpoint that does not fit names the file.
  sd = torch.load(ckpt, weights_only=True)
  del sd["state_dict"]["module.layer2.0.bn3.running_var"]
  torch.save(sd, ckpt)
  with mock.patch.dict(os.environ, {"AAN_RESNET101_3D_WEIGHTS": str(ckpt)}), \
      pytest.raises(ValueError, match=r"resnet-101-kinetics.pth: does not fit .*layer2.0.bn3.running_var"):
    resnet3d.ResNet3DExtractor("pretrained")


def test_resnet101_default_architecture_and_missing_weights(tmp_path):
  model = resnet3d.ResNet3D()
  # The upstream ResNet-101 without its fc: 85.2M parameters (VAANET.md).
  assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 85.2
  with mock.patch.dict(os.environ, {"AAN_WEIGHTS_DIR": str(tmp_path)}), \
      pytest.raises(weights_lib.WeightsNotFound, match="resnet-101-kinetics.pth.*kenshohara"):
    resnet3d.ResNet3DExtractor("pretrained")


def test_cli_writes_the_model_inputs(tmp_path):
  """End to end on a 2-s clip: 12 snippets of the Hara-layout file's network, MFCCs."""
  ckpt = tmp_path / "r.pth"
  _hara_checkpoint(ckpt)
  (tmp_path / "Joy").mkdir()
  video = write_video(tmp_path / "Joy" / "clip,1 (a).avi.mp4", seconds=2.0, fps=25, width=80,
                      height=60)
  out = tmp_path / "out"
  with mock.patch.dict(os.environ, {"AAN_RESNET101_3D_WEIGHTS": str(ckpt)}):
    assert vf.main([str(video), "--out", str(out), "--root", str(tmp_path)]) == 0
    target = out / "Joy" / "clip,1 (a).avi.npz"
    got = vf.load(target)
    assert got["visual"].shape == (12, 16, 2048) and got["mfcc"].shape == (4096, 32)
    meta = json.loads(got["metadata"])
    assert meta["frames"] == 50 and meta["weights"]["mode"] == "pretrained"
    mtime = target.stat().st_mtime_ns
    assert vf.main([str(video), "--out", str(out), "--root", str(tmp_path)]) == 0
    assert target.stat().st_mtime_ns == mtime  # done already: skipped
  with np.load(target) as z:
    np.testing.assert_array_equal(z["frame_indices"], vf.sample_snippets(50))
  assert vf.main([str(tmp_path / "nope.mp4"), "--out", str(out), "--weights", "random"]) == 1


def test_i3d_maps_average_to_the_pooled_feature():
  """Mixed_5c maps at 112 px: 16 positions whose mean is the I3D feature of the same clip."""
  ext = vf.I3DMapsExtractor("random")
  x = np.random.RandomState(0).randint(0, 256, (1, 16, 112, 112, 3)).astype(np.uint8)
  maps = ext.snippets(x)
  assert maps.shape == (1, 16, 1024)
  # The pooled feature of the same call (I3D's own output: Mixed_5c's mean over T', H', W').
  np.testing.assert_allclose(maps.mean(axis=1), np.asarray(ext.last_pooled), rtol=1e-4, atol=1e-5)
  assert np.abs(maps - maps.mean(axis=1, keepdims=True)).max() > 1e-3  # positions differ


def test_load_refuses_bad_files_by_name(tmp_path):
  bomb = tmp_path / "bomb.npz"
  np.savez_compressed(bomb, resnet101=np.zeros((12, 16, 2048), np.float32),
                      mfcc=np.zeros((4096, 32), np.float32), pad=np.zeros(20 << 20, np.float32))
  with pytest.raises(ValueError, match=r"bomb.npz: .*declares 82 MiB of arrays"):
    vf.load(bomb)
  short = tmp_path / "short.npz"
  np.savez(short, resnet101=np.zeros((12, 16, 2048), np.float32), mfcc=np.zeros((100, 32), np.float32))
  with pytest.raises(ValueError, match=r"short.npz: mfcc is float32 \(100, 32\); expected float32 \(4096, 32\)"):
    vf.load(short)
  (tmp_path / "junk.npz").write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="junk.npz: not a readable .npz"):
    vf.load(tmp_path / "junk.npz")
