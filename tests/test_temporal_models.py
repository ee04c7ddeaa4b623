"""TemporalAAN / FeatureTemporalAAN: causality, teacher forcing vs autoregression, padding."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aan_jax.models import aan as models
from aan_jax.models.layers import DecoderLayer, sinusoidal_positions

MODS = ("vggish", "emobase2010")


def _setup(cls=models.TemporalAAN, b=3, length=5, seed=0, **kw):
  model = cls(modalities=MODS, num_layers=2, **kw)
  feats, t = model.dummy_inputs(b, length)
  variables = model.init(jax.random.key(seed), feats, t)
  rng = np.random.default_rng(seed)
  feats = {m: rng.normal(size=x.shape).astype(np.float32) for m, x in feats.items()}
  targets = rng.uniform(-1, 1, size=(b, length)).astype(np.float32)
  return model, variables, feats, targets


VARIANTS = [(cls, nf) for cls in (models.TemporalAAN, models.FeatureTemporalAAN)
            for nf in (True, False)]


@pytest.mark.parametrize("cls,norm_first", VARIANTS)
def test_causality(cls, norm_first):
  model, variables, feats, targets = _setup(cls, norm_first=norm_first)
  tin = models.shift_targets(targets, None)
  base = model.apply(variables, feats, tin)
  for t in range(1, 5):
    changed = tin.at[:, t].add(3.0)
    out = model.apply(variables, feats, changed)
    np.testing.assert_allclose(out[:, :t], base[:, :t], atol=1e-6)
    if not norm_first:  # the change does reach later outputs
      assert not np.allclose(out[:, t:], base[:, t:])


@pytest.mark.parametrize("cls,norm_first", VARIANTS)
def test_teacher_forcing_with_own_outputs_equals_autoregression(cls, norm_first):
  model, variables, feats, _ = _setup(cls, norm_first=norm_first)
  ar = jax.jit(lambda v, f: models.autoregressive_predict(model, v, f))(variables, feats)
  parallel = model.apply(variables, feats, models.shift_targets(ar, None))
  np.testing.assert_allclose(parallel, ar, atol=1e-5)
  if not norm_first:  # feeding zeros instead differs: the feedback matters
    zeros = model.apply(variables, feats, jnp.zeros_like(ar))
    assert not np.allclose(zeros[:, 1:], ar[:, 1:], atol=1e-4)


def test_norm_first_decoder_cannot_see_duplicated_scalars():
  """A documented property of the released (norm-first) layout: LayerNorm removes c*ones."""
  model, variables, feats, targets = _setup(norm_first=True)
  a = model.apply(variables, feats, jnp.asarray(targets))
  b = model.apply(variables, feats, jnp.asarray(-5 * targets + 2))
  np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("norm_first", [True, False])
def test_padding_at_movie_start_changes_nothing_unmasked(norm_first):
  model, variables, feats, targets = _setup(norm_first=norm_first)
  mask = np.ones((3, 5), bool)
  mask[0, :2] = False   # window of a movie's third segment: two padded positions
  mask[1, :4] = False   # first segment of a movie
  tin = models.shift_targets(targets, mask)
  out = model.apply(variables, feats, tin, mask)
  garbage = {m: np.where(mask[..., None], x, 1e3 * np.random.default_rng(1).normal(size=x.shape))
             for m, x in feats.items()}
  tgarbage = np.where(mask, tin, 77.0)
  out2 = model.apply(variables, garbage, tgarbage, mask)
  np.testing.assert_allclose(np.where(mask, out2, 0), np.where(mask, out, 0), atol=1e-5)
  # The first real position gets the start value as its previous output.
  assert tin[0, 2] == model.start_value and tin[1, 4] == model.start_value
  ar = models.autoregressive_predict(model, variables, garbage, mask)
  ar_clean = models.autoregressive_predict(model, variables, feats, mask)
  np.testing.assert_allclose(ar[:, -1], ar_clean[:, -1], atol=1e-5)


def test_autoregressive_loop_compiles_once():
  model, variables, feats, _ = _setup()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def predict(v, f):
    return models.autoregressive_predict(model, v, f)

  chex.clear_trace_counter()
  for seed in range(3):
    f = {m: x + seed for m, x in feats.items()}
    predict(variables, f).block_until_ready()


def test_autoregression_vmaps_over_folds():
  model, variables, feats, _ = _setup()
  stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x, 2 * x]), variables)
  out = jax.vmap(lambda v: models.autoregressive_predict(model, v, feats))(stacked)
  np.testing.assert_allclose(out[0], models.autoregressive_predict(model, variables, feats),
                             atol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False])
def test_duplicated_scalar_embedding_feeds_the_decoder(norm_first):
  model, variables, feats, targets = _setup(norm_first=norm_first)
  # No parameters on the target side: the only top-level parameters are the segment
  # projections, the decoder layers, the final norm (norm-first) and the output layer.
  assert set(variables["params"]) == {"tokens", "layers_0", "layers_1", "head"} | (
      {"norm"} if norm_first else set())
  tin = models.shift_targets(targets, None)
  seen = {}

  def capture(next_fun, args, kwargs, context):
    if isinstance(context.module, DecoderLayer) and context.module.name == "layers_0":
      seen["x"] = args[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(capture):
    model.apply(variables, feats, tin)
  width = model.width
  assert width == 16
  want = jnp.repeat(tin[..., None], width, axis=-1) + sinusoidal_positions(5, width)
  np.testing.assert_allclose(seen["x"], want, atol=1e-6)


def test_feature_temporal_has_shared_feature_encoder():
  model, variables, _, _ = _setup(models.FeatureTemporalAAN)
  assert "feature_encoder" in variables["params"]
  assert model.feature_layers == 6 and model.width == 16


def test_bad_shapes_are_named():
  model, variables, feats, targets = _setup()
  with pytest.raises(ValueError, match="targets_in has shape"):
    model.apply(variables, feats, targets[:, :4])
  with pytest.raises(ValueError, match=r"\(batch, L, dim\)"):
    model.apply(variables, {m: x[:, 0] for m, x in feats.items()}, targets)


@pytest.mark.parametrize("cls", [models.TemporalAAN, models.FeatureTemporalAAN])
def test_predict_movie_equals_windows_evaluated_one_by_one(cls):
  model, variables, _, _ = _setup(cls, norm_first=False)
  rng = np.random.default_rng(5)
  movie = {m: rng.normal(size=(9, d)).astype(np.float32)
           for m, d in (("vggish", 128), ("emobase2010", 1582))}
  got = jax.jit(lambda v, f: models.predict_movie(model, v, f, 5))(variables, movie)
  assert got.shape == (9,)
  for s in (0, 2, 4, 8):  # windows at the start are padded on the left
    lo = max(0, s - 4)
    pad = 5 - (s + 1 - lo)
    feats = {m: np.concatenate([np.zeros((pad, x.shape[1]), np.float32), x[lo:s + 1]])[None]
             for m, x in movie.items()}
    mask = (np.arange(5) >= pad)[None]
    want = models.autoregressive_predict(model, variables, feats, mask)[0, -1]
    np.testing.assert_allclose(got[s], want, atol=1e-5)
