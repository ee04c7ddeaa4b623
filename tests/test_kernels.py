"""The fused CPU encoder (aan_jax.models.kernels) against the XLA encoder it replaces, and the
switch between them (aan_jax.models.layers.encoder_impl)."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aan_jax.models import kernels
from aan_jax.models import layers
from aan_jax.models import aan as models
from aan_jax.data.features import FEATURE_DIMS

# Only the tests that run the kernel need it; the switch, the XLA path's dropout stream
# and the fallback when the kernel cannot be built are tested everywhere.
needs_kernel = pytest.mark.skipif(
    not kernels.available(),
    reason=f"the fused CPU encoder is not available: {kernels.unavailable_reason()}")


def _encoder_and_params(num_layers, ffn, d=8, tokens=5, heads=2, seed=0, **kw):
  enc = layers.Encoder(num_layers, heads, ffn=ffn, **kw)
  x = jax.random.normal(jax.random.key(seed + 1), (7, tokens, d))
  return enc, _params(enc, seed, x, True), x


# Jitted: op by op, flax's init and the perturbation took most of these tests' time.
@jax.jit
def _perturbed(p, seed):
  # Away from the init's ones and zeros, so that every parameter matters.
  leaves, tree = jax.tree.flatten(p)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return tree.unflatten([a + 0.2 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])


def _params(module, seed, *args):
  """module's parameters for `args`, perturbed."""
  init = jax.jit(lambda k: module.init(k, *args)["params"])
  return _perturbed(init(jax.random.key(seed)), seed + 2)


def _fused(p, x, num_layers, ffn, heads=2, seed=0, rate=0.0, attention_rate=0.0):
  return kernels.encoder(x, kernels.pack_encoder_params(p, num_layers), seed,
                         num_layers=num_layers, num_heads=heads, ffn=ffn, rate=rate,
                         attention_rate=attention_rate)


def _assert_trees_close(got, want, rtol=1e-4):
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    # Absolute tolerance on the scale of each gradient: some (the key bias's) are exactly
    # zero in exact arithmetic, and only rounding noise in either implementation.
    np.testing.assert_allclose(a, b, atol=rtol * float(jnp.abs(b).max() + 1), rtol=rtol)


# ----------------------------------------------------------------- everywhere


def test_the_switch_is_a_context_not_a_model_field():
  assert layers.current_encoder_impl() == "xla"
  with layers.encoder_impl("cpu_kernel"):
    assert layers.current_encoder_impl() == "cpu_kernel"
    with layers.encoder_impl("xla"):
      assert layers.current_encoder_impl() == "xla"
    assert layers.current_encoder_impl() == "cpu_kernel"
  assert layers.current_encoder_impl() == "xla"
  with pytest.raises(RuntimeError, match="boom"), layers.encoder_impl("cpu_kernel"):
    raise RuntimeError("boom")
  assert layers.current_encoder_impl() == "xla"
  with pytest.raises(ValueError, match="encoder impl"):
    with layers.encoder_impl("fast"):
      pass
  decorated = layers.encoder_impl("cpu_kernel")(layers.current_encoder_impl)
  assert decorated() == "cpu_kernel" and layers.current_encoder_impl() == "xla"
  for cls in (models.FeatureAAN, models.TemporalAAN, models.FeatureTemporalAAN,
              layers.Encoder):
    fields = cls.__dataclass_fields__
    assert "encoder_impl" not in fields and "impl" not in fields, cls


def test_resolve(monkeypatch):
  assert kernels.resolve("xla") == "xla"
  with pytest.raises(ValueError, match="encoder_impl"):
    kernels.resolve("fast")
  want = ("cpu_kernel" if jax.default_backend() == "cpu" and kernels.available() else "xla")
  assert kernels.resolve("auto") == want
  monkeypatch.setenv("AAN_KERNELS", "off")
  assert kernels.resolve("auto") == "xla"
  with pytest.raises((RuntimeError, ValueError), match="AAN_KERNELS|CPU backend"):
    kernels.resolve("cpu_kernel")


def test_xla_encoder_dropout_masks_are_counter_hashes():
  # Kept fraction and scale; every site of every layer draws; a concrete rate of 0 draws
  # nothing and a traced rate of 0 keeps everything.
  key = layers.dropout_key(jnp.uint32(11))
  m = layers.dropout_multipliers(key, jnp.arange(40000, dtype=jnp.uint32), 0.25)
  assert set(np.unique(m)) == {0.0, np.float32(1 / np.float32(0.75))}
  assert abs((m > 0).mean() - 0.75) < 4 * np.sqrt(0.75 * 0.25 / m.size)
  np.testing.assert_array_equal(layers.dropout_multipliers(key, jnp.arange(9, dtype=jnp.uint32),
                                                           jnp.float32(0.0)), np.ones(9))
  assert (layers.dropout_multipliers(key, jnp.arange(99, dtype=jnp.uint32), 1.0) == 0).all()
  masks = [layers.encoder_dropout_masks(key, l, 3, 5, 8, 2, 2, 0.5, 0.5) for l in (0, 1)]
  flat = np.concatenate([np.ravel(a) for ms in masks for a in ms])
  assert flat.size == 3 * 2 * (2 * 25 + 3 * 40)
  assert 0.45 < (flat > 0).mean() < 0.55
  assert layers.encoder_dropout_masks(key, 0, 3, 5, 8, 2, 2, 0.5, 0.0)[0] is None


def test_xla_encoder_a_samples_output_does_not_depend_on_the_batch_around_it():
  enc, p, _ = _encoder_and_params(2, "relu")
  x = jax.random.normal(jax.random.key(3), (21, 5, 8))
  run = jax.jit(lambda x, rate: enc.clone(dropout=rate, attention_dropout=rate).apply(
      {"params": p}, x, False, rngs={"dropout": jax.random.key(4)}))
  # Equal up to float32 rounding: XLA:CPU may vectorise a batch of 21 and one of 10
  # differently (jax 0.10.2: 1.5e-6 apart); a dropout mask that changed with the batch
  # around a sample would move its outputs by ~0.1.
  np.testing.assert_allclose(run(x, 0.3)[:10], run(x[:10], 0.3), atol=2e-5, rtol=2e-5)
  # A traced rate of 0 is no dropout, as a concrete one.
  det = jax.jit(enc.apply, static_argnums=2)({"params": p}, x, True)
  assert not np.allclose(run(x, 0.3), det)
  np.testing.assert_allclose(run(x, 0.0), det, atol=1e-6)


@pytest.mark.parametrize("cause", ["compiler", "cache"])
def test_a_failed_build_says_why_and_auto_falls_back(tmp_path, cause):
  # A fresh process with an empty kernel cache and a compiler that fails after pages of
  # warnings, or with a kernel cache that cannot be created (a file is in the way).
  code = textwrap.dedent("""
      from aan_jax.models import kernels
      assert not kernels.available()
      print("REASON", kernels.unavailable_reason().replace("\\n", " | "))
      print("IMPL", kernels.resolve("auto"))
  """)
  (tmp_path / "file").write_text("")
  cxx = tmp_path / "cxx"
  cxx.write_text("#!/bin/sh\nfor i in 1 2 3; do echo 'ffi.h:1:1: warning: noise' >&2; done\n"
                 "echo 'encoder.cc:9:9: error: boom' >&2\nexit 3\n")
  cxx.chmod(0o755)
  cache = tmp_path / ("k" if cause == "compiler" else "file/k")
  env = dict(os.environ, AAN_KERNEL_CACHE=str(cache), CXX=str(cxx))
  env.pop("AAN_KERNELS", None)
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True).stdout
  if cause == "compiler":
    assert "REASON compiling" in out and "encoder.cc failed (exit code 3" in out
    assert "error: boom" in out and "noise" not in out
  else:
    assert "REASON cannot write the kernel cache" in out and "AAN_KERNEL_CACHE" in out
  assert "IMPL xla" in out
  assert not list(tmp_path.glob("**/*.so"))


# ----------------------------------------------------------------- the kernel


@needs_kernel
@pytest.mark.parametrize("ffn", ["relu", "tanh_residual"])
@pytest.mark.parametrize("dims", [(8, 5, 2), (6, 3, 3)])  # the AAN's, and the generic path
def test_forward_and_gradients_equal_the_flax_encoder(ffn, dims):
  d, tokens, heads = dims
  enc, p, x = _encoder_and_params(3, ffn, d, tokens, heads)
  ref = lambda p, x: enc.apply({"params": p}, x, True)
  fused = lambda p, x: _fused(p, x, 3, ffn, heads)
  w = jax.random.normal(jax.random.key(9), x.shape)

  def loss(f):  # one program for the output and the gradients
    def fn(p, x):
      y = f(p, x)
      return jnp.sum(jnp.sin(y) * w), y
    return jax.jit(jax.grad(fn, argnums=(0, 1), has_aux=True))

  (g_fused, y_fused), (g_ref, y_ref) = loss(fused)(p, x), loss(ref)(p, x)
  np.testing.assert_allclose(y_fused, y_ref, atol=2e-5, rtol=1e-5)
  _assert_trees_close(g_fused, g_ref)


@needs_kernel
def test_the_kernels_masks_are_the_xla_encoders():
  # Bit for bit, on rates where the threshold is exact, rounds, or saturates.
  n = 700
  for rate in (0.0, 1e-9, 0.1, 0.25, 0.5, 0.9, 1.0):
    for seed, base in ((7, 0), (123456789, 4294960000)):  # the second wraps around 2^32
      got = kernels.dropout_probe(n, rate, seed, base)
      counters = (np.uint64(base) + np.arange(got.size, dtype=np.uint64)) % 2**32
      want = layers.dropout_multipliers(layers.dropout_key(jnp.uint32(seed)),
                                        jnp.asarray(counters.astype(np.uint32)), rate)
      np.testing.assert_array_equal(got, want, err_msg=f"rate {rate}, seed {seed}")
  m = kernels.dropout_probe(4000, 0.25, seed=7)
  other = kernels.dropout_probe(4000, 0.25, seed=8)
  assert 0.5 < ((m > 0) == (other > 0)).mean() < 0.7  # independent seeds: ~0.625 agree


@needs_kernel
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


@needs_kernel
def test_a_samples_output_does_not_depend_on_the_batch_after_it():
  enc, p, x = _encoder_and_params(2, "relu")
  x = jax.random.normal(jax.random.key(3), (21, 5, 8))
  full = _fused(p, x, 2, "relu", seed=3, rate=0.2, attention_rate=0.2)
  head = _fused(p, x[:10], 2, "relu", seed=3, rate=0.2, attention_rate=0.2)
  np.testing.assert_allclose(full[:10], head, atol=1e-6)


def _features(mods, lead, seed=0):
  rng = np.random.default_rng(seed)
  return {m: rng.standard_normal(lead + (FEATURE_DIMS[m],)).astype(np.float32) for m in mods}


def _on(impl, fn):
  """fn jitted with the encoder implementation `impl` (the block is active when it traces)."""
  return jax.jit(layers.encoder_impl(impl)(fn))


def _assert_paths_agree_with_dropout(loss_and_grads, params, seeds):
  """Loss and gradients equal on the kernel and XLA paths for each dropout key; and dropout
  is on and follows the key (the two keys' losses differ)."""
  kernel, xla = _on("cpu_kernel", loss_and_grads), _on("xla", loss_and_grads)
  losses = []
  for seed in seeds:
    key = jax.random.key(seed)
    (l_k, g_k), (l_x, g_x) = kernel(params, key), xla(params, key)
    np.testing.assert_allclose(l_k, l_x, rtol=1e-5, atol=1e-5)
    _assert_trees_close(g_k, g_x)
    losses.append(float(l_x))
  assert abs(losses[0] - losses[1]) > 1e-3


@needs_kernel
def test_feature_aan_trains_alike_on_both_paths_with_dropout():
  # The Feature AAN's sizes (5 tokens of width 8, 2 heads, 6 layers), audio+video.
  model = models.FeatureAAN(dropout=0.3, attention_dropout=0.2, output_dropout=0.1)
  params = _params(model, 0, model.dummy_features(1))
  feats = _features(model.modalities, (11,))

  def loss_and_grads(params, key):
    f = lambda p: jnp.sum(jnp.sin(model.apply({"params": p}, feats, deterministic=False,
                                              rngs={"dropout": key})))
    return jax.value_and_grad(f)(params)

  _assert_paths_agree_with_dropout(loss_and_grads, params, (5, 6))


@needs_kernel
def test_feature_temporal_aan_trains_alike_on_both_paths_with_dropout():
  # The per-segment feature encoder over (batch x window) segments.
  model = models.FeatureTemporalAAN(modalities=("resnet50", "vggish", "emobase2010"),
                                    feature_layers=2, num_layers=1, window=3,
                                    feature_dropout=0.3, dropout=0.2, attention_dropout=0.1)
  params = _params(model, 0, *model.dummy_inputs(1))
  feats = _features(model.modalities, (6, 3))
  targets_in = jnp.asarray(np.random.default_rng(1).standard_normal((6, 3)), jnp.float32)

  def loss_and_grads(params, key):
    f = lambda p: jnp.sum(jnp.sin(model.apply({"params": p}, feats, targets_in,
                                              deterministic=False, rngs={"dropout": key})))
    return jax.value_and_grad(f)(params)

  _assert_paths_agree_with_dropout(loss_and_grads, params, (7, 8))


@needs_kernel
def test_per_run_rates_under_vmap_equal_each_run_alone_on_both_paths():
  # As the engine trains a sweep: one program, a traced dropout rate per run (clone), the
  # loss and gradients of a training step. Each run equals that run alone with its rate
  # as a Python float, and the kernel equals XLA. A single-stream model (2 tokens: the
  # kernel's generic path; tanh_residual).
  base = models.FeatureAAN(modalities=("vggish", "emobase2010"), ffn="tanh_residual",
                           output_tanh=True, num_layers=2)
  params = _params(base, 0, base.dummy_features(1))
  feats = _features(base.modalities, (9,))
  y = jnp.asarray(np.random.default_rng(2).standard_normal(9), jnp.float32)
  rates = (0.0, 0.1, 0.5)

  def step(params, rate, key):
    model = base.clone(dropout=rate, attention_dropout=rate, output_dropout=rate)
    loss = lambda p: jnp.mean((model.apply({"params": p}, feats, deterministic=False,
                                           rngs={"dropout": key}) - y) ** 2)
    return jax.value_and_grad(loss)(params)

  keys = jax.random.split(jax.random.key(8), len(rates))
  together = {impl: _on(impl, jax.vmap(step, in_axes=(None, 0, 0)))(
      params, jnp.asarray(rates, jnp.float32), keys) for impl in ("cpu_kernel", "xla")}
  _assert_trees_close(together["cpu_kernel"], together["xla"])
  # Alone, its rate a Python float: 0.0 on XLA (which then skips dropout altogether) and
  # 0.5 on the kernel; the rest follows, as the kernel equals XLA under vmap.
  for impl, i in [("xla", 0), ("cpu_kernel", 2)]:
    alone = _on(impl, lambda p, k, r=rates[i]: step(p, r, k))(params, keys[i])
    _assert_trees_close(jax.tree.map(lambda a, i=i: a[i], together[impl]), alone)
  # The rates took effect: the runs' losses differ.
  losses = [float(l) for l in together["xla"][0]]
  assert min(abs(losses[0] - losses[1]), abs(losses[1] - losses[2]),
             abs(losses[0] - losses[2])) > 1e-4, losses


@needs_kernel
def test_vmap_over_runs_equals_each_run_alone():
  enc, p, x = _encoder_and_params(2, "relu")
  ps = jax.tree.map(lambda a: jnp.stack([a, 1.1 * a, 0.9 * a]), p)
  xs = jnp.stack([x, -x, 2 * x])
  seeds = jnp.array([1, 2, 3], jnp.uint32)
  rates = jnp.array([0.2, 0.0, 0.4], jnp.float32)
  run = lambda p, x, s, r: _fused(p, x, 2, "relu", seed=s, rate=r, attention_rate=r / 2)
  together = jax.jit(jax.vmap(run))(ps, xs, seeds, rates)
  for r in range(3):
    alone = run(jax.tree.map(lambda a: a[r], ps), xs[r], seeds[r], float(rates[r]))
    np.testing.assert_allclose(together[r], alone, atol=1e-6)


@needs_kernel
def test_clear_errors():
  with pytest.raises(ValueError, match=r"params must have shape \(\d+,\)"):
    kernels.encoder(jnp.zeros((2, 5, 8)), jnp.zeros(10), 0, num_layers=1, num_heads=2)
  with pytest.raises(ValueError, match="feed-forward kind"):
    kernels.encoder(jnp.zeros((2, 5, 8)), jnp.zeros(kernels.layer_size(8) + 16), 0,
                    num_layers=1, num_heads=2, ffn="gelu")
  enc, x = layers.Encoder(1), jnp.zeros((2, 5, 8))
  p = jax.eval_shape(lambda: enc.init(jax.random.key(0), x, True))  # abstract: nothing runs
  with layers.encoder_impl("cpu_kernel"), pytest.raises(ValueError, match="no attention mask"):
    jax.eval_shape(lambda: enc.apply(p, x, True, jnp.ones((5, 5), bool)))
