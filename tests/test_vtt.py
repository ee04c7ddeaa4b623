"""VTT's TSM ResNet-18: the shift itself, shapes, sizes, temporal mixing, fitting a tiny batch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aan_jax.tasks import figures
from aan_jax.models import vtt

TINY = dict(widths=(8, 16), stage_sizes=(1, 1))  # two blocks: compiles fast on a CPU


@pytest.fixture(scope="module")
def tiny_variables():
  """One init for every tiny model here (shapes depend on neither the shift nor the image size).

  A non-default PRNG: threefry's initialisers take ~6x longer to compile on a CPU.
  """
  model = vtt.TSMResNet18(num_classes=7, **TINY)
  return jax.jit(model.init)(jax.random.key(0, impl="unsafe_rbg"), jnp.zeros((1, 4, 8, 8, 3)))


def test_temporal_shift_moves_exactly_one_eighth_each_way():
  n, t, c = 2, 4, 16
  x = jnp.arange(n * t * c, dtype=jnp.float32).reshape(n * t, 1, 1, c) + 1
  y = np.asarray(vtt.temporal_shift(x, t, 8)).reshape(n, t, c)
  xs = np.asarray(x).reshape(n, t, c)
  # Channels 0-1 come from the next frame, 2-3 from the previous one, zeros past the ends.
  np.testing.assert_array_equal(y[:, :-1, 0:2], xs[:, 1:, 0:2])
  np.testing.assert_array_equal(y[:, -1, 0:2], 0)
  np.testing.assert_array_equal(y[:, 1:, 2:4], xs[:, :-1, 2:4])
  np.testing.assert_array_equal(y[:, 0, 2:4], 0)
  np.testing.assert_array_equal(y[..., 4:], xs[..., 4:])
  # Buffers never mix: the second clip's first frame gets nothing from the first clip.
  assert not np.isin(y[1], xs[0]).any()
  np.testing.assert_array_equal(vtt.temporal_shift(x, t, 0), x)
  with pytest.raises(ValueError, match="not a multiple"):
    vtt.temporal_shift(x[:7], t)


def test_full_size_resnet18_shapes_and_parameter_count():
  model = vtt.TSMResNet18(num_classes=7)
  shapes = jax.eval_shape(model.init, jax.random.key(0), model.dummy_input(2))
  n = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes["params"]))
  # torchvision's ResNet-18 has 11,689,512 parameters with its 1000-way head (513,000 of
  # them); TSM adds none; a 7-way head has 3,591.
  assert n == 11_689_512 - 513_000 + 7 * 512 + 7
  out = jax.eval_shape(lambda v, x: model.apply(v, x), shapes, model.dummy_input(2))
  assert out.shape == (2, 7)
  with pytest.raises(ValueError, match="buffers of 3 frames"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 3, 64, 64, 3)))


def test_the_shift_lets_frames_see_each_other(tiny_variables):
  x = jax.random.normal(jax.random.key(1), (1, 4, 16, 16, 3))
  x2 = x.at[0, 1].set(0.0)  # change only the second frame
  for div, mixes in ((8, True), (0, False)):
    model = vtt.TSMResNet18(num_classes=7, shift_div=div, **TINY)
    v = tiny_variables
    both = jax.jit(lambda v, x: (model.apply(v, x, per_frame=True), model.apply(v, x)))
    a, clip = both(v, x)
    b, _ = both(v, x2)
    assert a.shape == (1, 4, 7)
    changed = not np.allclose(a[0, 0], b[0, 0], atol=1e-6)
    assert changed == mixes, div  # frame 0's output hears frame 1 only through the shift
    np.testing.assert_allclose(clip, a.mean(1), rtol=1e-5, atol=1e-6)


def test_fits_a_tiny_batch(tiny_variables):
  rng = np.random.default_rng(0)
  labels = np.arange(8) % 7
  # Each class a different colour drifting over the 4 frames, plus noise.
  base = rng.normal(size=(7, 1, 1, 1, 3)).astype(np.float32)
  drift = np.linspace(-1, 1, 4, dtype=np.float32)[None, :, None, None, None]
  x = base[labels] * (1 + drift) + 0.3 * rng.normal(size=(8, 4, 8, 8, 3)).astype(np.float32)
  model = vtt.TSMResNet18(num_classes=7, **TINY)
  params, stats = tiny_variables["params"], tiny_variables["batch_stats"]
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, stats, opt):
    def loss_fn(p):
      logits, upd = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), upd["batch_stats"]
    (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), stats, opt, loss

  losses = []
  for _ in range(40):
    params, stats, opt, loss = step(params, stats, opt)
    losses.append(float(loss))
  assert losses[-1] < 0.1 * losses[0], losses[::10]
  logits = jax.jit(model.apply)({"params": params, "batch_stats": stats}, x)
  assert float(jnp.mean(jnp.argmax(logits, -1) == labels)) == 1.0


def test_buffers_repeat_the_first_crop_at_the_start():
  crops = np.arange(6)[:, None, None, None] * np.ones((6, 2, 2, 3))
  b = vtt.buffers(crops)
  assert b.shape == (6, 4, 2, 2, 3)
  np.testing.assert_array_equal(b[:, :, 0, 0, 0], [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 2],
                                                   [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]])
  assert vtt.buffers(crops[:0]).shape == (0, 4, 2, 2, 3)
  x = vtt.normalize(np.full((1, 3), 255, np.uint8))
  np.testing.assert_allclose(x[0], (1 - vtt.IMAGENET_MEAN) / vtt.IMAGENET_STD, rtol=1e-6)


def test_categorical_figures_equal_scikit_learn():
  """The one implementation of the categorical figures (aan_jax.tasks.figures) against
  scikit-learn's confusion matrix, accuracy and per-class recall."""
  from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 60)
  pred = np.where(rng.random(60) < 0.6, labels, rng.integers(0, 4, 60))
  labels[labels == 3] = 2  # class 3 has no example: its recall is None, not 0
  conf = figures.confusion(labels, pred, 4)
  np.testing.assert_array_equal(conf, skm.confusion_matrix(labels, pred, labels=range(4)))
  f = figures.categorical_figures(conf, ("a", "b", "c", "d"))
  assert f["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))
  recall = skm.recall_score(labels, pred, labels=[0, 1, 2], average=None)
  assert [f["per_class_recall"][k] for k in "abc"] == pytest.approx(list(recall))
  assert f["per_class_recall"]["d"] is None
  assert f["mean_recall"] == pytest.approx(recall.mean())