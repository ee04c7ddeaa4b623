"""FeatureAAN: shapes, validation, dropout, modality subsets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aan_jax.models import aan as models
from aan_jax.data.features import FEATURE_DIMS, FEATURES, PAPER_FEATURE_DIMS, canonical_modalities
from aan_jax.models.layers import TorchLayerNorm


def _features(mods, batch, seed=0):
  rng = np.random.default_rng(seed)
  return {m: rng.normal(size=(batch, FEATURE_DIMS[m])).astype(np.float32) for m in mods}


def test_output_shape_and_param_count():
  model = models.FeatureAAN()
  variables = model.init(jax.random.key(0), model.dummy_features(2))
  y = model.apply(variables, _features(FEATURES, 7))
  assert y.shape == (7,)
  # 5 projections + 6 layers x (4 attention + 1 ff dense + 2 norms) + final norm + head.
  proj = sum(d * 8 + 8 for d in PAPER_FEATURE_DIMS.values())
  layer = 4 * (8 * 8 + 8) + (8 * 8 + 8) + 2 * 16
  assert sum(x.size for x in jax.tree_util.tree_leaves(variables)) == proj + 6 * layer + 16 + 9
  assert proj + 6 * layer + 16 + 9 == 48865


def test_leading_axes_are_kept():
  model = models.FeatureAAN(modalities=("vggish",), num_layers=1)
  variables = model.init(jax.random.key(0), model.dummy_features(1))
  x = np.random.default_rng(0).normal(size=(3, 4, 128)).astype(np.float32)
  y = model.apply(variables, {"vggish": x})
  assert y.shape == (3, 4)
  np.testing.assert_allclose(y[1], model.apply(variables, {"vggish": x[1]}), atol=1e-6)


def test_deterministic_disables_dropout():
  model = models.FeatureAAN(dropout=0.5, attention_dropout=0.5, output_dropout=0.5)
  variables = model.init(jax.random.key(0), model.dummy_features(1))
  x = _features(FEATURES, 16)
  a = model.apply(variables, x, deterministic=True)
  b = model.apply(variables, x, deterministic=True)
  np.testing.assert_array_equal(a, b)
  c = model.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
  d = model.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(c, d)
  assert not np.allclose(a, c)


@pytest.mark.parametrize("mods", [("resnet50",), ("vggish", "emobase2010"),
                                  ("resnet50", "flownet", "i3d"), FEATURES])
def test_modality_subsets(mods):
  model = models.FeatureAAN(modalities=mods, num_layers=2)
  variables = model.init(jax.random.key(0), model.dummy_features(1))
  projs = set(variables["params"]["tokens"])
  assert projs == {f"proj_{m}" for m in mods}
  # Extra modalities in the input are ignored; the output depends only on the chosen ones.
  x = _features(FEATURES, 5)
  y = model.apply(variables, x)
  assert y.shape == (5,) and np.all(np.isfinite(y))
  y2 = model.apply(variables, {m: x[m] for m in mods})
  np.testing.assert_array_equal(y, y2)


def test_modalities_are_put_in_canonical_order():
  assert canonical_modalities(["emobase2010", "resnet50"]) == ("resnet50", "emobase2010")
  assert canonical_modalities("audio") == ("vggish", "emobase2010")
  with pytest.raises(ValueError, match="unknown modality 'mfcc'"):
    canonical_modalities(["mfcc"])


def test_missing_or_misshapen_modality_is_named():
  model = models.FeatureAAN(modalities=("vggish", "emobase2010"), num_layers=1)
  variables = model.init(jax.random.key(0), model.dummy_features(1))
  with pytest.raises(ValueError, match=r"missing modality 'emobase2010'.*\(batch, 1582\)"):
    model.apply(variables, {"vggish": np.zeros((2, 128), np.float32)})
  with pytest.raises(ValueError, match=r"'vggish' has shape \(2, 127\); expected \(batch, 128\)"):
    model.apply(variables, {"vggish": np.zeros((2, 127)), "emobase2010": np.zeros((2, 1582))})


def test_torch_layernorm_uses_unbiased_std_and_eps_on_std():
  x = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
  ln = TorchLayerNorm(eps=1e-6)
  y = ln.apply(ln.init(jax.random.key(0), x), x)
  want = (x - x.mean(-1, keepdims=True)) / (x.std(-1, ddof=1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(y, want, atol=1e-5)
  # nn.LayerNorm (biased variance, eps inside the sqrt) differs measurably.
  assert np.abs(np.asarray(y) - (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)).max() > 1e-2


def test_jit_and_grad():
  model = models.FeatureAAN(num_layers=2)
  variables = model.init(jax.random.key(0), model.dummy_features(1))
  x = _features(FEATURES, 4)
  loss = jax.jit(lambda v: jnp.sum(model.apply(v, x) ** 2))
  grads = jax.grad(loss)(variables)
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
