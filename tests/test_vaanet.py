"""VAANet in Flax against a PyTorch reference written from VAANET.md, its converter and losses."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aan_jax.convert import attendaffectnet as convert  # noqa: E402
from aan_jax.convert import torch_pickle  # noqa: E402
from aan_jax.models import vaanet  # noqa: E402
from aan_jax.convert import vaanet as vaanet_convert  # noqa: E402
from vaanet_torch_reference import TorchVAANet, pcce as torch_pcce  # noqa: E402

TINY = dict(num_classes=8, seq_len=3, positions=16, backbone_dim=24, hidden=12,
            audio_segments=4, audio_frames=64, audio_widths=(4, 8, 8, 16), audio_dim=8)


def _randomise(model: torch.nn.Module, seed: int):
  """Non-trivial BN affine and running stats, so that eval mode tests them."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
        n = m.num_features
        m.weight.copy_(1 + 0.3 * torch.randn(n, generator=g))
        m.bias.copy_(0.2 * torch.randn(n, generator=g))
        m.running_mean.copy_(0.3 * torch.randn(n, generator=g))
        m.running_var.copy_(0.5 + torch.rand(n, generator=g))
  return model


def _inputs(cfg, batch, seed):
  rng = np.random.RandomState(seed)
  visual = rng.rand(batch, cfg["seq_len"], cfg["positions"], cfg["backbone_dim"]).astype(np.float32)
  audio = (20 * rng.randn(batch, cfg["audio_segments"] * cfg["audio_frames"], 32)).astype(np.float32)
  return visual, audio


def _torch_out(model, visual, audio):
  # The reference takes channels-first maps [B, S, C, P], as the backbone gives them.
  out = model(torch.from_numpy(visual).permute(0, 1, 3, 2).contiguous(), torch.from_numpy(audio))
  logits, alpha, beta, gamma, aa = [t.detach().numpy() for t in out]
  return {"logits": logits, "alpha": alpha.transpose(1, 0, 2), "beta": beta.transpose(1, 0, 2),
          "gamma": gamma, "audio_gamma": aa}


def _assert_close(ours, ref, atol=1e-4):
  for k in ref:
    np.testing.assert_allclose(np.asarray(ours[k]), ref[k], rtol=1e-4, atol=atol, err_msg=k)


def _flat_stats(variables):
  return {"/".join(str(getattr(k, "key", k)) for k in p): np.asarray(v)
          for p, v in jax.tree_util.tree_leaves_with_path(variables["batch_stats"])}


def _parity(tmp_path, cfg, batch, save, train=True):
  torch.manual_seed(0)
  ref = _randomise(TorchVAANet(**cfg), 1).eval()
  path = tmp_path / "vaanet.pth"
  save(ref.state_dict(), path)
  model, variables = convert.from_vaanet(path, audio_frames=cfg["audio_frames"])
  visual, audio = _inputs(cfg, batch, 2)
  with torch.no_grad():
    want = _torch_out(ref, visual, audio)
  got = jax.jit(lambda v, x, a: model.apply(v, x, a, deterministic=True))(variables, visual, audio)
  _assert_close(got, want)
  if not train:
    return model, variables
  # Train mode: batch statistics, and the running statistics torch updates.
  ref.train()
  with torch.no_grad():
    want = _torch_out(ref, visual, audio)
  got, new = jax.jit(lambda v, x, a: model.apply(v, x, a, deterministic=False,
                                                 mutable=["batch_stats"]))(variables, visual, audio)
  _assert_close(got, want, atol=2e-4)
  _, after = vaanet_convert.from_state_dict(ref.state_dict(), audio_frames=cfg["audio_frames"])
  want_stats, got_stats = _flat_stats(after), _flat_stats(new)
  assert want_stats.keys() == got_stats.keys()
  for k in want_stats:
    np.testing.assert_allclose(got_stats[k], want_stats[k], rtol=1e-4, atol=1e-5, err_msg=k)
  return model, variables


def test_parity_tiny_zip_state_dict(tmp_path):
  _parity(tmp_path, TINY, 3, lambda sd, p: torch.save(sd, p))


def test_parity_tiny_legacy_training_checkpoint_with_backbone_keys(tmp_path):
  """The authors' era: legacy file, DataParallel prefix, a training checkpoint dict."""
  def save(sd, p):
    sd = {"module." + k: v for k, v in sd.items()}
    sd["module.resnet.conv1.weight"] = torch.zeros(4, 3, 7, 7, 7)  # backbone: ignored
    torch.save({"epoch": 3, "state_dict": sd}, p, _use_new_zipfile_serialization=False)
  model, _ = _parity(tmp_path, TINY, 2, save, train=False)
  assert (model.seq_len, model.backbone_dim, model.audio_widths) == (3, 24, (4, 8, 8, 16))


def test_parity_real_sizes(tmp_path):
  cfg = dict(num_classes=8, seq_len=12, positions=16, backbone_dim=2048, hidden=512,
             audio_segments=16, audio_frames=256, audio_widths=(64, 128, 256, 512),
             audio_dim=256)
  model, variables = _parity(tmp_path, cfg, 2, lambda sd, p: torch.save(sd, p))
  assert model == vaanet.VAANet()  # every size read back equals the authors' defaults
  assert variables["params"]["ta"]["fc"]["kernel"].shape == (12, 12)


def test_init_follows_the_authors(tmp_path):
  model = vaanet.VAANet(**TINY)
  # An rbg key: XLA:CPU compiles the threefry init of every array in about 3x the time.
  v = jax.jit(model.init)(jax.random.key(0, impl="rbg"), *model.dummy_inputs(2))
  np.testing.assert_array_equal(v["params"]["ta"]["fc"]["bias"], np.ones(3))  # ta_net.fc.bias = 1
  np.testing.assert_array_equal(v["batch_stats"]["conv0_bn"]["var"], np.ones(12))
  # kaiming_normal(fan_out) of conv0: std sqrt(2 / 12).
  assert 0.3 < float(np.std(v["params"]["conv0"]["kernel"])) < 0.5
  with pytest.raises(ValueError, match=r"visual has shape .*expected \(batch, 3 snippets, 16 positions, 24"):
    jax.eval_shape(model.apply, v, jnp.zeros((2, 4, 16, 24)), model.dummy_inputs(2)[1])


def test_pcce_weights_and_gradient_match_torch():
  rng = np.random.RandomState(0)
  logits = rng.randn(16, 8).astype(np.float32)
  labels = rng.randint(0, 8, 16)
  logits[0] = 0; logits[0, 4] = 5; labels[0] = 0   # argmax Joy, label Anger: flip -> 1.5
  logits[1] = 0; logits[1, 7] = 5; labels[1] = 4   # Trust vs Joy: same polarity -> 1.0
  w = np.asarray(vaanet.polarity_weights(jnp.asarray(logits), jnp.asarray(labels),
                                         vaanet.VE8_POSITIVE))
  assert w[0] == 1.5 and w[1] == 1.0 and set(np.unique(w)) <= {1.0, 1.5}
  t_logits = torch.tensor(logits, requires_grad=True)
  loss_t = torch_pcce(t_logits, torch.tensor(labels))
  loss_t.backward()
  loss, grad = jax.value_and_grad(vaanet.pcce_loss)(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(float(loss), loss_t.item(), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad), t_logits.grad.numpy(), rtol=1e-4, atol=1e-7)
  ce = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels)).item()
  np.testing.assert_allclose(float(vaanet.ce_loss(jnp.asarray(logits), jnp.asarray(labels))), ce,
                             rtol=1e-5)
  # Per-example weights (e.g. padding rows) leave the padded rows out of the mean.
  mask = np.r_[np.ones(8), np.zeros(8)]
  np.testing.assert_allclose(
      float(vaanet.pcce_loss(jnp.asarray(logits), jnp.asarray(labels), weights=mask)),
      torch_pcce(torch.tensor(logits[:8]), torch.tensor(labels[:8])).item(), rtol=1e-5)


def test_converter_errors_name_the_file_and_tensor(tmp_path):
  ref = TorchVAANet(**TINY)
  sd = ref.state_dict()
  del sd["cwa_net.fc.weight"]
  path = tmp_path / "broken.pth"
  torch.save(sd, path)
  with pytest.raises(vaanet_convert.VAANetConversionError, match=r"broken.pth: missing tensor 'cwa_net.fc.weight'"):
    convert.from_vaanet(path)
  other = tmp_path / "other.pth"
  torch.save({"linear1.weight": torch.zeros(8, 2048)}, other)
  with pytest.raises(vaanet_convert.VAANetConversionError, match="other.pth: none of VAANet's modules"):
    convert.from_vaanet(other)

  class Evil:
    def __reduce__(self):
      return (print, ("owned",))
  bad = tmp_path / "evil.pth"
  with open(bad, "wb") as f:  # a zip-less legacy-looking pickle whose object runs code
    for obj in (torch_pickle.LEGACY_MAGIC, 1001, {}):
      pickle.dump(obj, f)
    pickle.dump(Evil(), f)
  with pytest.raises(torch_pickle.UnsafeCheckpointError, match="evil.pth"):
    convert.from_vaanet(bad)


def test_load_audio_resnet18_body():
  import torchvision  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  sd = {k: v.numpy() for k, v in torchvision.models.resnet18(weights=None).state_dict().items()}
  sd["bn1.running_mean"] = np.full(64, 0.25, np.float32)
  model = vaanet.VAANet(seq_len=2, backbone_dim=8, hidden=8, audio_segments=2)
  variables = jax.eval_shape(model.init, jax.random.key(0), *model.dummy_inputs(1))
  variables = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), variables)
  out = vaanet_convert.load_audio_resnet18(variables, sd)
  a_p, a_s = out["params"]["a_resnet"], out["batch_stats"]["a_resnet"]
  np.testing.assert_array_equal(a_s["stem_bn"]["mean"], 0.25)
  np.testing.assert_array_equal(a_p["layer3_0"]["down_conv"]["kernel"],
                                sd["layer3.0.downsample.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(a_p["stem_conv"]["kernel"], 0)  # the new 1-channel conv stays
  small = vaanet.VAANet(**TINY)
  sv = jax.eval_shape(small.init, jax.random.key(0), *small.dummy_inputs(1))
  with pytest.raises(vaanet_convert.VAANetConversionError, match="does not fit the audio branch"):
    vaanet_convert.load_audio_resnet18(sv, sd)
