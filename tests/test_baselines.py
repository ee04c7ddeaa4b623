"""The baselines (aan_jax.models.baselines): torch parity, causality, state across windows, fear."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aan_jax.models import baselines
from aan_jax.convert import lstm as convert_lstm
from aan_jax.data.features import FEATURE_DIMS

AUDIO = ("vggish", "emobase2010")
SMALL = dict(projection=4, hidden=8)


def _features(modalities, batch, length, seed=0):
  rng = np.random.default_rng(seed)
  return {m: rng.standard_normal((batch, length, FEATURE_DIMS[m])).astype(np.float32)
          for m in modalities}


def _models():
  return {
      "lstm": baselines.LSTMBaseline(AUDIO, num_layers=2, **SMALL),
      "late_fusion": baselines.LateFusionLSTM(("i3d", "vggish"), **SMALL),
      "linear": baselines.LinearBaseline(AUDIO),
  }


def _init(model, feats, seed=0):
  return model.init(jax.random.key(seed), {m: v[:1, :1] for m, v in feats.items()})


@functools.lru_cache(maxsize=None)
def _jit(model):
  # Compiled: an eager apply would compile the LSTM's scan again on every call.
  return jax.jit(model.apply, static_argnames="deterministic")


# ------------------------------------------------------------------ torch parity


def _torch():
  return pytest.importorskip("torch", reason="torch parity needs the [extract] extra")


def test_torch_lstm_parity_two_layers_with_initial_state():
  torch = _torch()
  torch.manual_seed(0)
  lstm = torch.nn.LSTM(12, 16, num_layers=2, batch_first=True)
  rng = np.random.default_rng(1)
  x = rng.standard_normal((3, 9, 12)).astype(np.float32)
  h0, c0 = rng.standard_normal((2, 2, 3, 16)).astype(np.float32)
  with torch.no_grad():
    y, (hn, cn) = lstm(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
  module = baselines.TorchLSTM(hidden=16, num_layers=2)
  like = module.init(jax.random.key(0), x[:1, :1])["params"]
  params = convert_lstm.import_torch_lstm(
      {k: v.numpy() for k, v in lstm.state_dict().items()}, like=like)
  yj, carry = _jit(module)({"params": params}, x, {"h": h0, "c": c0})
  np.testing.assert_allclose(yj, y.numpy(), atol=1e-5, rtol=0)
  np.testing.assert_allclose(carry["h"], hn.numpy(), atol=1e-5, rtol=0)
  np.testing.assert_allclose(carry["c"], cn.numpy(), atol=1e-5, rtol=0)


def test_lstm_baseline_matches_a_torch_model_read_from_a_pth_file(tmp_path):
  """The thesis' model (concatenated features -> LSTM -> Dense -> tanh), saved by torch."""
  torch = _torch()

  class Thesis(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.lstm = torch.nn.LSTM(128 + 1582, 16, batch_first=True)
      self.fc = torch.nn.Linear(16, 1)

    def forward(self, x, state=None):
      y, state = self.lstm(x, state)
      return torch.tanh(self.fc(y))[..., 0], state

  torch.manual_seed(3)
  net = Thesis().eval()
  path = tmp_path / "thesis.pth"
  torch.save(net.state_dict(), path)
  feats = _features(AUDIO, 2, 10, seed=4)
  x = np.concatenate([feats[m] for m in AUDIO], axis=-1)
  with torch.no_grad():
    first, state = net(torch.from_numpy(x[:, :6]))     # stateful: two windows
    second, _ = net(torch.from_numpy(x[:, 6:]), state)
  want = np.concatenate([first.numpy(), second.numpy()], axis=1)

  model = baselines.LSTMBaseline(AUDIO, projection=0, hidden=16)
  params = jax.tree.map(np.asarray, _init(model, feats)["params"])
  params["lstm"] = convert_lstm.import_torch_lstm(path, prefix="lstm.", like=params["lstm"])
  sd = net.state_dict()
  params["head"] = {"kernel": sd["fc.weight"].numpy().T, "bias": sd["fc.bias"].numpy()}
  got, _ = _jit(model)({"params": params}, feats)   # the whole film at once
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_import_refuses_what_does_not_fit(tmp_path):
  torch = _torch()
  bi = torch.nn.LSTM(4, 5, bidirectional=True).state_dict()
  with pytest.raises(convert_lstm.TorchImportError, match="bidirectional"):
    convert_lstm.import_torch_lstm({k: v.numpy() for k, v in bi.items()})
  sd = {k: v.numpy() for k, v in torch.nn.LSTM(4, 5).state_dict().items()}
  like = baselines.TorchLSTM(hidden=6).init(jax.random.key(0), jnp.zeros((1, 1, 4)))["params"]
  with pytest.raises(convert_lstm.TorchImportError,
                     match=r"layer_0_kernel_ih has shape \(4, 20\) from the file; "
                     r"the model wants \(4, 24\)"):
    convert_lstm.import_torch_lstm(sd, like=like)
  with pytest.raises(convert_lstm.TorchImportError, match="bias_hh_l0"):
    convert_lstm.import_torch_lstm({k: v for k, v in sd.items() if k != "bias_hh_l0"})
  with pytest.raises(convert_lstm.TorchImportError, match="no rnn.weight_ih_l0"):
    convert_lstm.import_torch_lstm(sd, prefix="rnn.")
  bad = dict(sd, weight_hh_l0=sd["weight_hh_l0"][:, :3])
  with pytest.raises(convert_lstm.TorchImportError, match=r"weight_hh_l0 has shape \(20, 3\)"):
    convert_lstm.import_torch_lstm(bad)


# ------------------------------------------------------------- sequence behaviour


@pytest.mark.parametrize("name", ["lstm", "late_fusion", "linear"])
def test_causal_an_output_never_depends_on_a_later_segment(name):
  model = _models()[name]
  feats = _features(model.modalities, 2, 8)
  variables = _init(model, feats)
  apply = jax.jit(lambda f: model.apply(variables, f)[0])
  base = np.asarray(apply(feats))
  for k in (1, 4, 7):
    changed = {m: v.copy() for m, v in feats.items()}
    for v in changed.values():
      v[:, k:] += 3.0 * np.random.default_rng(k).standard_normal(v[:, k:].shape)
    out = np.asarray(apply(changed))
    np.testing.assert_array_equal(out[:, :k], base[:, :k])
    assert np.all(np.abs(out[:, k] - base[:, k]) > 0), "the changed segment must matter"
  if name != "linear":   # the state carries the past: a change at 0 reaches segment 7
    changed = {m: v.copy() for m, v in feats.items()}
    for v in changed.values():
      v[:, 0] += 3.0
    assert np.all(np.asarray(apply(changed))[:, 7] != base[:, 7])


@pytest.mark.parametrize("name", ["lstm", "late_fusion", "linear"])
def test_stateful_windows_equal_the_whole_sequence(name):
  model = _models()[name]
  feats = _features(model.modalities, 3, 12, seed=5)
  variables = _init(model, feats)
  whole, last = _jit(model)(variables, feats)
  outs, carry = [], model.initial_carry(3)
  for a, b in ((0, 5), (5, 10), (10, 12)):
    y, carry = _jit(model)(variables, {m: v[:, a:b] for m, v in feats.items()}, carry)
    outs.append(y)
  np.testing.assert_allclose(np.concatenate(outs, axis=1), whole, atol=1e-6, rtol=0)
  for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(last)):
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_padding_mask_and_reset():
  model = baselines.LSTMBaseline(AUDIO, **SMALL)
  feats = _features(AUDIO, 2, 9, seed=6)
  variables = _init(model, feats)
  # Row 0 is a 6-segment film padded to 9: its carry is the one after 6 segments.
  mask = np.ones((2, 9), bool)
  mask[0, 6:] = False
  _, carry = _jit(model)(variables, feats, mask=mask)
  _, short = _jit(model)(variables, {m: v[:1, :6] for m, v in feats.items()})
  np.testing.assert_allclose(carry["h"][:, 0], short["h"][:, 0], atol=1e-6, rtol=0)
  np.testing.assert_allclose(carry["c"][:, 0], short["c"][:, 0], atol=1e-6, rtol=0)
  _, full = _jit(model)(variables, feats)
  assert not np.allclose(full["h"][:, 0], carry["h"][:, 0])
  # Row 1 is unmasked in both calls: equal up to float32 rounding (the mask changes how
  # XLA:CPU fuses the batch: 4e-9 apart on jax 0.10.2).
  np.testing.assert_allclose(carry["h"][:, 1], full["h"][:, 1], atol=1e-6, rtol=0)
  # A new film in row 1: its state starts from zeros again, row 0 goes on.
  reset = baselines.reset_carry(full, np.array([False, True]))
  np.testing.assert_array_equal(reset["h"][:, 1], 0.0)
  np.testing.assert_array_equal(reset["c"][:, 0], full["c"][:, 0])
  nxt = {m: v[:, :3] for m, v in _features(AUDIO, 2, 3, seed=7).items()}
  y, _ = _jit(model)(variables, nxt, reset)
  fresh, _ = _jit(model)(variables, nxt)
  np.testing.assert_array_equal(y[1], fresh[1])
  assert not np.allclose(y[0], fresh[0])


# ----------------------------------------------------------------- the other models


def test_late_fusion_is_a_learned_weighted_mean_of_group_lstms():
  model = baselines.LateFusionLSTM(("resnet50", "i3d", "vggish"), **SMALL)
  feats = _features(model.modalities, 2, 6, seed=8)
  params = jax.tree.map(np.asarray, _init(model, feats)["params"])
  assert set(params) == {"audio", "video", "fusion_logits"}
  assert set(params["video"]) == {"proj_resnet50", "proj_i3d", "lstm", "head"}
  branch = lambda mods, g: _jit(baselines.LSTMBaseline(mods, **SMALL))(
      {"params": params[g]}, {m: feats[m] for m in mods})[0]
  audio, video = branch(("vggish",), "audio"), branch(("resnet50", "i3d"), "video")
  fused, _ = _jit(model)({"params": params}, feats)   # zeros at init: the plain mean
  np.testing.assert_allclose(fused, (audio + video) / 2, atol=1e-6, rtol=0)
  params["fusion_logits"] = np.array([np.log(3.0), 0.0], np.float32)   # audio 3 : video 1
  fused, _ = _jit(model)({"params": params}, feats)
  np.testing.assert_allclose(fused, 0.75 * audio + 0.25 * video, atol=1e-6, rtol=0)
  only_audio = baselines.LateFusionLSTM(AUDIO, **SMALL)
  assert set(_init(only_audio, _features(AUDIO, 1, 1))["params"]) == {"audio", "fusion_logits"}


def test_linear_baseline_is_a_linear_map_of_the_features():
  model = baselines.LinearBaseline(AUDIO)
  feats = _features(AUDIO, 2, 4, seed=9)
  params = _init(model, feats)["params"]
  y, carry = model.apply({"params": params}, feats, carry="untouched")
  x = np.concatenate([feats[m] for m in AUDIO], axis=-1)
  want = x @ np.asarray(params["head"]["kernel"])[:, 0] + np.asarray(params["head"]["bias"])
  np.testing.assert_allclose(y, want, atol=1e-4, rtol=1e-5)
  assert carry == "untouched" and model.initial_carry(2) is None


def test_heads_ranges_and_errors():
  feats = _features(AUDIO, 2, 5, seed=10)
  for lo, hi in ((-1.0, 1.0), (1.0, 5.0)):
    model = baselines.LSTMBaseline(AUDIO, **SMALL, output_range=(lo, hi))
    variables = jax.tree.map(lambda p: 40 * p, _init(model, feats))   # saturate the head
    y = np.asarray(_jit(model)(variables, feats)[0])
    assert lo <= y.min() < lo + 0.1 * (hi - lo) and hi - 0.1 * (hi - lo) < y.max() <= hi
  logit = baselines.LSTMBaseline(AUDIO, **SMALL, task="binary")
  variables = jax.tree.map(lambda p: 40 * p, _init(logit, feats))
  assert np.abs(np.asarray(_jit(logit)(variables, feats)[0])).max() > 1   # not squashed
  with pytest.raises(ValueError, match="unknown task 'fear'"):
    baselines.LSTMBaseline(AUDIO, task="fear").init(jax.random.key(0), feats)
  with pytest.raises(ValueError, match="missing modality 'emobase2010'"):
    _init(logit, {"vggish": feats["vggish"]})
  with pytest.raises(ValueError,
                     match=r"'vggish' has shape \(2, 128\); expected \(batch, segments, 128\)"):
    logit.init(jax.random.key(0), {"vggish": feats["vggish"][:, 0],
                                   "emobase2010": feats["emobase2010"]})


def test_dropout_rate_may_be_traced_per_run():
  """The engine sweeps dropout as a per-run array: the rate arrives traced."""
  feats = _features(AUDIO, 2, 5, seed=11)
  variables = _init(baselines.LSTMBaseline(AUDIO, **SMALL), feats)

  def run(rate):
    model = baselines.LSTMBaseline(AUDIO, **SMALL, input_dropout=rate, dropout=rate)
    return model.apply(variables, feats, deterministic=False,
                       rngs={"dropout": jax.random.key(0)})[0]

  out = jax.jit(jax.vmap(run))(jnp.array([0.0, 0.5]))
  np.testing.assert_allclose(out[0], _jit(baselines.LSTMBaseline(AUDIO, **SMALL))(
      variables, feats)[0], atol=1e-6, rtol=0)
  assert not np.allclose(out[1], out[0])


# -------------------------------------------------------------------------- fear


def _fear_corpus(films=24, length=100, seed=0):
  """Imbalanced toy fear (about 10%): fear where a slow latent of each film is high.

  The features show the latent under noise, so a single segment is ambiguous near the
  threshold and integrating over time helps.
  """
  rng = np.random.default_rng(seed)
  latent = np.zeros((films, length), np.float32)
  latent[:, 0] = rng.standard_normal(films)
  for t in range(1, length):   # AR(1) with unit variance
    latent[:, t] = 0.9 * latent[:, t - 1] + np.sqrt(0.19) * rng.standard_normal(films)
  fear = (latent > 1.25).astype(np.float32)
  direction = rng.standard_normal(128).astype(np.float32)
  direction /= np.linalg.norm(direction)
  x = 3.0 * latent[..., None] * direction + rng.standard_normal((films, length, 128))
  x = (x - x.mean((0, 1))) / x.std((0, 1))
  return {"vggish": x.astype(np.float32)}, fear


def test_class_weighted_fear_head_does_not_collapse_to_one_class():
  sklearn_metrics = pytest.importorskip("sklearn.metrics")
  feats, fear = _fear_corpus()
  train, test = slice(0, 16), slice(16, None)
  prevalence = float(fear[train].mean())
  assert 0.05 < prevalence < 0.2 and fear[test].sum() >= 20
  # Balanced class weights: each class carries half of the loss.
  weights = np.where(fear[train] > 0, 0.5 / prevalence, 0.5 / (1 - prevalence))
  model = baselines.LSTMBaseline(("vggish",), projection=4, hidden=8, input_dropout=0.1,
                                 dropout=0.1, task="binary")
  x_train = {m: v[train] for m, v in feats.items()}
  params = model.init(jax.random.key(0), {m: v[:1, :1] for m, v in feats.items()})["params"]
  tx = optax.adam(3e-3)

  def loss_fn(p, key):
    logits, _ = model.apply({"params": p}, x_train, deterministic=False, rngs={"dropout": key})
    return jnp.mean(weights * optax.sigmoid_binary_cross_entropy(logits, fear[train]))

  @jax.jit
  def train_all(params, opt_state):
    def step(carry, key):
      p, o = carry
      loss, g = jax.value_and_grad(loss_fn)(p, key)
      updates, o = tx.update(g, o, p)
      return (optax.apply_updates(p, updates), o), loss
    return jax.lax.scan(step, (params, opt_state), jax.random.split(jax.random.key(1), 150))

  (params, _), losses = train_all(params, tx.init(params))
  assert losses[-10:].mean() < 0.6 * losses[:10].mean()
  logits, _ = _jit(model)({"params": params}, {m: v[test] for m, v in feats.items()})
  logits, truth = np.asarray(logits).ravel(), fear[test].ravel()
  ap = sklearn_metrics.average_precision_score(truth, logits)
  test_prevalence = truth.mean()
  assert ap > 3 * test_prevalence, (ap, test_prevalence)
  said_fear = logits > 0
  # Both classes are predicted, and most fear segments are found at the 0.5 threshold.
  assert 0.5 * test_prevalence < said_fear.mean() < 0.5, said_fear.mean()
  assert said_fear[truth > 0].mean() > 0.5


def test_vmapped_init_of_the_late_fusion_model_does_not_hang(tmp_path):
  """Regression: orthogonal (QR) recurrent inits deadlocked a jitted, vmapped init here."""
  import subprocess, sys, textwrap  # pylint: disable=g-import-not-at-top,multiple-imports
  script = textwrap.dedent("""
      import jax
      from aan_jax.models import baselines
      model = baselines.LateFusionLSTM("all", hidden=64)
      init = jax.jit(jax.vmap(lambda k: model.init(k, model.dummy_features(1, 1))))
      jax.block_until_ready(init(jax.random.split(jax.random.key(0), 24)))
      print("ok")
  """)
  env = dict(os.environ, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false "
             "--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, timeout=240,
                       capture_output=True, text=True)
  assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
