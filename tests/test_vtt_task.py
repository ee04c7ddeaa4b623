"""VTT's model as a categorical classifier: still buffers, augmentation, the spec functions."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from aan_jax.util import prng
from aan_jax.models import vtt
from aan_jax.models import vtt_classifier

TINY = ml_collections.ConfigDict({"vtt": {"widths": (8, 16), "stage_sizes": (1, 1)}})


def _faces(n=3, size=16, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_a_still_image_is_a_buffer_of_four_copies_without_copying():
  img = _faces(2)
  b = vtt.still_buffers(img)
  assert b.shape == (2, 4, 16, 16, 3) and b.dtype == np.uint8
  for t in range(4):
    np.testing.assert_array_equal(b[:, t], img)
  assert np.shares_memory(b, img)  # a view: RAF-DB's 12k stills cost no extra memory
  np.testing.assert_array_equal(np.asarray(vtt_classifier.as_buffers(jnp.asarray(img))), b)
  assert vtt_classifier.as_buffers(jnp.asarray(b)).shape == b.shape  # buffers pass as they are
  with pytest.raises(ValueError, match=r"still images, got shape \(16, 16, 3\)"):
    vtt.still_buffers(img[0])
  with pytest.raises(ValueError, match="faces: expected"):
    vtt_classifier.as_buffers(jnp.zeros((2, 16, 3)))


def test_jitter_moves_each_frame_on_its_own_and_flip_mirrors_whole_buffers():
  img = _faces(8)
  x = jnp.asarray(vtt.still_buffers(img))
  key = jax.random.key(3)
  np.testing.assert_array_equal(vtt_classifier.jitter_and_flip(x, key, 0, False), x)
  j = 2
  y = np.asarray(vtt_classifier.jitter_and_flip(x, key, j, False))
  pad = np.pad(img, ((0, 0), (j, j), (j, j), (0, 0)), mode="edge")
  crops = lambda i: [pad[i, a:a + 16, b:b + 16] for a in range(2 * j + 1) for b in range(2 * j + 1)]
  for i in range(8):
    for t in range(4):  # every frame is one crop of its padded still
      assert any(np.array_equal(y[i, t], c) for c in crops(i)), (i, t)
  moved = [not np.array_equal(y[i, 0], y[i, t]) for i in range(8) for t in range(1, 4)]
  assert sum(moved) > len(moved) // 2  # the copies now differ, as frames of a real track do
  f = np.asarray(vtt_classifier.jitter_and_flip(x, key, 0, True))
  mirrored = [np.array_equal(f[i], np.asarray(x)[i, :, :, ::-1]) for i in range(8)]
  same = [np.array_equal(f[i], np.asarray(x)[i]) for i in range(8)]
  assert all(m != s for m, s in zip(mirrored, same))  # each buffer one or the other, whole
  assert 0 < sum(mirrored) < 8


@pytest.fixture(scope="module")
def tiny():
  module = vtt_classifier.build(TINY)
  faces = vtt.still_buffers(_faces(4))
  key = jax.random.key(0, impl=prng.HASH32)
  variables = jax.jit(lambda k, f: vtt_classifier.init(module, k, {"faces": f}))(key, faces)
  return module, variables, faces


def test_build_reads_config_vtt():
  m = vtt_classifier.build(TINY)
  assert isinstance(m, vtt.TSMResNet18)
  assert (m.widths, m.stage_sizes, m.num_classes, m.jitter, m.flip) == ((8, 16), (1, 1), 7, 4, True)
  full = vtt_classifier.build(ml_collections.ConfigDict({"num_classes": 5}))
  assert full.widths == (64, 128, 256, 512) and full.num_classes == 5


def test_spec_functions_normalise_inside_and_update_batch_stats(tiny):
  module, variables, faces = tiny
  assert set(variables) == {"params", "batch_stats"}
  logits, extras = jax.jit(lambda v, f: vtt_classifier.eval_logits(module, v, {"faces": f}))(
      variables, faces)
  assert logits.shape == (4, 7) and extras == {}
  # uint8 in, ImageNet normalisation inside: the same as the model on vtt.normalize's output.
  ref = module.apply(variables, jnp.asarray(vtt.normalize(faces)), train=False)
  np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-5)
  stills, _ = vtt_classifier.eval_logits(module, variables, {"faces": faces[:, 0]})
  np.testing.assert_allclose(stills, logits, rtol=1e-4, atol=1e-5)
  train = jax.jit(lambda v, f, k: vtt_classifier.train_logits(module, v, {"faces": f}, k))
  out, new = train(variables, faces, jax.random.key(1, impl=prng.HASH32))
  assert out.shape == (4, 7) and set(new) == {"batch_stats"}
  moved = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), variables["batch_stats"],
                                 new["batch_stats"])
  assert all(jax.tree_util.tree_leaves(moved))  # train mode updates the running statistics
  again, _ = train(variables, faces, jax.random.key(2, impl=prng.HASH32))
  assert not np.allclose(out, again)  # a new key, a new augmentation


def test_image_size_resizes_in_jax():
  cfg = ml_collections.ConfigDict({"vtt": dict(TINY.vtt.to_dict(), image_size=24)})
  module = vtt_classifier.build(cfg)
  x = vtt_classifier.preprocess(module, vtt.still_buffers(_faces(2, size=40)))
  assert x.shape == (2, 4, 24, 24, 3) and x.dtype == jnp.float32
  assert vtt_classifier.preprocess(vtt_classifier.build(TINY), vtt.still_buffers(_faces(2))).shape[2] == 16
