"""The fused CPU encoder (aan_jax.kernels) against the Flax encoder it replaces."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aan_jax import kernels, layers, models, synthetic, train

pytestmark = pytest.mark.skipif(
    not kernels.available(),
    reason=f"the fused CPU encoder is not available: {kernels.unavailable_reason()}")


def _encoder_and_params(num_layers, ffn, d=8, tokens=5, heads=2, seed=0):
  enc = layers.Encoder(num_layers, heads, ffn=ffn)
  x = jax.random.normal(jax.random.key(seed + 1), (7, tokens, d))
  p = enc.init(jax.random.key(seed), x, True)["params"]
  # Away from the init's ones and zeros, so that every parameter matters.
  leaves, tree = jax.tree.flatten(p)
  keys = jax.random.split(jax.random.key(seed + 2), len(leaves))
  p = tree.unflatten([a + 0.2 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])
  return enc, p, x


def _fused(p, x, num_layers, ffn, heads=2, seed=0, rate=0.0, attention_rate=0.0):
  return kernels.encoder(x, kernels.pack_encoder_params(p, num_layers), seed,
                         num_layers=num_layers, num_heads=heads, ffn=ffn, rate=rate,
                         attention_rate=attention_rate)


@pytest.mark.parametrize("ffn", ["relu", "tanh_residual"])
@pytest.mark.parametrize("dims", [(8, 5, 2), (6, 3, 3)])  # the AAN's, and the generic path
def test_forward_and_gradients_equal_the_flax_encoder(ffn, dims):
  d, tokens, heads = dims
  enc, p, x = _encoder_and_params(3, ffn, d, tokens, heads)
  ref = lambda p, x: enc.apply({"params": p}, x, True)
  fused = lambda p, x: _fused(p, x, 3, ffn, heads)
  np.testing.assert_allclose(fused(p, x), ref(p, x), atol=2e-5, rtol=1e-5)
  w = jax.random.normal(jax.random.key(9), x.shape)
  loss = lambda f: lambda p, x: jnp.sum(jnp.sin(f(p, x)) * w)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(p, x)
  g_fused = jax.grad(loss(fused), argnums=(0, 1))(p, x)
  for a, b in zip(jax.tree.leaves(g_fused), jax.tree.leaves(g_ref)):
    # Absolute tolerance on the scale of the gradients: some (the key bias's) are exactly
    # zero in exact arithmetic, and only rounding noise in either implementation.
    np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.abs(b).max() + 1), rtol=1e-4)


def test_gradients_with_dropout_match_finite_differences():
  # tanh_residual: smooth, so finite differences are not upset by relu's kink. A central
  # difference along one random direction of (params, x), with a step small enough for
  # this curvy function (1e-2 was not) and large enough for float32.
  enc, p, x = _encoder_and_params(2, "tanh_residual")
  packed = kernels.pack_encoder_params(p, 2)
  f = lambda pk, x: jnp.sum(jnp.sin(kernels.encoder(
      x, pk, 1234, num_layers=2, num_heads=2, ffn="tanh_residual", rate=0.3,
      attention_rate=0.2)))
  gp, gx = jax.grad(f, argnums=(0, 1))(packed, x)
  rng = np.random.default_rng(0)
  vp = rng.standard_normal(packed.shape).astype(np.float32)
  vx = rng.standard_normal(x.shape).astype(np.float32)
  analytic = float(jnp.sum(gp * vp) + jnp.sum(gx * vx))
  eps = 1e-3
  numeric = (float(f(packed + eps * vp, x + eps * vx)) -
             float(f(packed - eps * vp, x - eps * vx))) / (2 * eps)
  assert abs(numeric - analytic) < 0.01 * abs(analytic), (numeric, analytic)
  # Dropout is on: the output differs from the deterministic one, and depends on the seed.
  y = lambda seed: _fused(p, x, 2, "tanh_residual", seed=seed, rate=0.3, attention_rate=0.2)
  np.testing.assert_array_equal(y(5), y(5))
  assert not np.allclose(y(5), y(6))
  assert not np.allclose(y(5), _fused(p, x, 2, "tanh_residual"))


def test_dropout_masks_keep_the_right_fraction_scaled():
  m = kernels.dropout_probe(4000, 0.25, seed=7)
  assert set(np.unique(m)) == {0.0, np.float32(1 / 0.75)}
  kept = (m > 0).mean()
  assert abs(kept - 0.75) < 4 * np.sqrt(0.75 * 0.25 / m.size)
  other = kernels.dropout_probe(4000, 0.25, seed=8)
  assert 0.5 < ((m > 0) == (other > 0)).mean() < 0.7  # independent seeds: ~0.625 agree
  assert (kernels.dropout_probe(100, 0.0, seed=7) == 1).all()


def test_a_samples_output_does_not_depend_on_the_batch_after_it():
  enc, p, x = _encoder_and_params(2, "relu")
  x = jax.random.normal(jax.random.key(3), (21, 5, 8))
  full = _fused(p, x, 2, "relu", seed=3, rate=0.2, attention_rate=0.2)
  head = _fused(p, x[:10], 2, "relu", seed=3, rate=0.2, attention_rate=0.2)
  np.testing.assert_allclose(full[:10], head, atol=1e-6)


def test_vmap_over_runs_equals_each_run_alone():
  enc, p, x = _encoder_and_params(2, "relu")
  ps = jax.tree.map(lambda a: jnp.stack([a, 1.1 * a, 0.9 * a]), p)
  xs = jnp.stack([x, -x, 2 * x])
  seeds = jnp.array([1, 2, 3], jnp.uint32)
  run = lambda p, x, s: _fused(p, x, 2, "relu", seed=s, rate=0.2, attention_rate=0.1)
  together = jax.jit(jax.vmap(run))(ps, xs, seeds)
  for r in range(3):
    alone = run(jax.tree.map(lambda a: a[r], ps), xs[r], seeds[r])
    np.testing.assert_allclose(together[r], alone, atol=1e-6)


def test_feature_aan_with_the_fused_encoder_predicts_like_xla():
  mods = ("vggish", "emobase2010")
  xla = models.FeatureAAN(modalities=mods)
  fused = models.FeatureAAN(modalities=mods, encoder_impl="cpu_kernel")
  v = xla.init(jax.random.key(0), xla.dummy_features(1))
  feats = {m: np.random.default_rng(0).standard_normal((9, a.shape[-1])).astype(np.float32)
           for m, a in xla.dummy_features(1).items()}
  np.testing.assert_allclose(fused.apply(v, feats), xla.apply(v, feats), atol=1e-5)
  with pytest.raises(ValueError, match="impl"):
    models.FeatureAAN(modalities=mods, encoder_impl="bogus").apply(v, feats)


def test_wrong_params_size_is_a_clear_error():
  with pytest.raises(ValueError, match=r"params must have shape \(\d+,\)"):
    kernels.encoder(jnp.zeros((2, 5, 8)), jnp.zeros(10), 0, num_layers=1, num_heads=2)
  with pytest.raises(ValueError, match="feed-forward kind"):
    kernels.encoder(jnp.zeros((2, 5, 8)), jnp.zeros(kernels.layer_size(8) + 16), 0,
                    num_layers=1, num_heads=2, ffn="gelu")


@pytest.mark.parametrize("model", ["feature_aan", "feature_temporal_aan"])
def test_engine_trains_the_same_with_either_encoder_without_dropout(model):
  corpus = synthetic.make_corpus(segments_per_movie=12, seed=2, num_movies=4)
  cfg = train.get_config()
  cfg.update(model=model, num_layers=2, batch_size=6, num_epochs=3, patience=2,
             dropout=0.0, feature_dropout=0.0, targets=("arousal",),
             modalities="vggish,emobase2010", checkpoint_every=3, window=3)
  res = {}
  for impl in ("xla", "cpu_kernel"):
    cfg.encoder_impl = impl
    res[impl] = train.train_loo(corpus, cfg)
  np.testing.assert_allclose(res["cpu_kernel"].predictions, res["xla"].predictions,
                             atol=2e-4, rtol=1e-3)
  np.testing.assert_allclose(res["cpu_kernel"].train_loss, res["xla"].train_loss,
                             atol=1e-4, rtol=1e-3)


def test_auto_uses_the_kernel_on_cpu_and_can_be_turned_off(monkeypatch):
  assert train.resolve_encoder_impl("auto") == "cpu_kernel"
  assert train.resolve_encoder_impl("xla") == "xla"
  with pytest.raises(ValueError, match="encoder_impl"):
    train.resolve_encoder_impl("fast")
  monkeypatch.setenv("AAN_KERNELS", "off")
  assert train.resolve_encoder_impl("auto") == "xla"
  with pytest.raises(RuntimeError, match="AAN_KERNELS"):
    train.resolve_encoder_impl("cpu_kernel")


@pytest.mark.parametrize("cause", ["compiler", "cache"])
def test_a_failed_build_says_why_and_auto_falls_back(tmp_path, cause):
  # A fresh process with an empty kernel cache and a compiler that fails after pages of
  # warnings, or with a kernel cache that cannot be created (a file is in the way).
  code = textwrap.dedent("""
      from aan_jax import kernels, train
      assert not kernels.available()
      print("REASON", kernels.unavailable_reason().replace("\\n", " | "))
      print("IMPL", train.resolve_encoder_impl("auto"))
  """)
  (tmp_path / "file").write_text("")
  cxx = tmp_path / "cxx"
  cxx.write_text("#!/bin/sh\nfor i in 1 2 3; do echo 'ffi.h:1:1: warning: noise' >&2; done\n"
                 "echo 'encoder.cc:9:9: error: boom' >&2\nexit 3\n")
  cxx.chmod(0o755)
  cache = tmp_path / ("k" if cause == "compiler" else "file/k")
  env = dict(os.environ, AAN_KERNEL_CACHE=str(cache), CXX=str(cxx))
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True).stdout
  if cause == "compiler":
    assert "REASON compiling" in out and "encoder.cc failed (exit code 3" in out
    assert "error: boom" in out and "noise" not in out
  else:
    assert "REASON cannot write the kernel cache" in out and "AAN_KERNEL_CACHE" in out
  assert "IMPL xla" in out
  assert not list(tmp_path.glob("**/*.so"))
