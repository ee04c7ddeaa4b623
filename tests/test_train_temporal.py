"""The temporal models inside the leave-one-movie-out engine."""

import jax.numpy as jnp
import numpy as np
import pytest

from aan_jax import models, synthetic, train
from aan_jax.data import Corpus


def tiny_config(model, **kw):
  c = train.get_config()
  c.model = model
  c.num_layers = 1
  c.batch_size = 6
  c.num_epochs = 2
  c.patience = 2
  c.learning_rate = 1e-3
  c.dropout = 0.5
  c.checkpoint_every = 2
  c.targets = ("arousal", "valence")
  c.modalities = "vggish"
  c.update(kw)
  return c


def test_windows_are_padded_at_a_movie_start_and_never_mix_movies():
  # Features and targets encode (movie, segment), so any mixing would show.
  m, s = 3, 6
  movie_id = np.repeat(np.arange(m), s).reshape(m, s).astype(np.float32)
  seg_id = np.tile(np.arange(s), m).reshape(m, s).astype(np.float32)
  mask = np.ones((m, s), bool)
  mask[2, 4:] = False  # a shorter movie, padded at its end
  data = {"features": {"vggish": np.repeat((100 * movie_id + seg_id)[..., None], 128, -1)},
          "targets": np.stack([movie_id, seg_id]), "mask": mask}
  module = train.get_model_spec("temporal_aan").build(tiny_config("temporal_aan", window=4))
  movie = jnp.array([1, 1, 2, 0])
  seg = jnp.array([0, 5, 2, 3])
  inp = train._temporal_inputs(module, data, movie, seg)  # pylint: disable=protected-access
  np.testing.assert_array_equal(inp["mask"], [[0, 0, 0, 1], [1, 1, 1, 1], [0, 1, 1, 1],
                                              [1, 1, 1, 1]])
  feats = np.asarray(inp["features"]["vggish"][..., 0])
  valid = np.asarray(inp["mask"])
  # Every real position is from the window's own movie, ending at the target segment.
  np.testing.assert_array_equal((feats // 100)[valid], np.broadcast_to(movie[:, None], (4, 4))[valid])
  np.testing.assert_array_equal(feats[:, -1] % 100, seg)
  np.testing.assert_array_equal(inp["targets"][0][valid], np.broadcast_to(movie[:, None], (4, 4))[valid])
  np.testing.assert_array_equal(inp["targets"][1][:, -1], seg)


@pytest.mark.parametrize("model", ["temporal_aan", "feature_temporal_aan"])
def test_temporal_models_train_in_the_engine(model):
  corpus = synthetic.make_corpus(segments_per_movie=12, seed=2, num_movies=3)
  result = train.train_loo(corpus, tiny_config(model))
  assert result.predictions.shape == (6, 12)
  assert np.all(np.isfinite(result.predictions))
  assert np.all(np.isfinite(result.train_loss[:, 0]))
  s = train.summarize(result)
  assert set(s) >= {"arousal", "valence"} and np.isfinite(s["valence"]["mse"])
  # Held-out predictions are the compiled autoregressive evaluation of the best params.
  assert result.best_epoch.min() >= 0


def test_model_presets_follow_the_paper():
  from experiments import cognimuse_loo  # pylint: disable=g-import-not-at-top
  c = cognimuse_loo.get_config()
  c.model = "temporal_aan"
  r = cognimuse_loo.resolve(c)
  assert (r.learning_rate, r.dropout, r.num_epochs, r.patience) == (1e-3, 0.5, 1000, 30)
  c.model = "feature_aan"
  r = cognimuse_loo.resolve(c)
  assert (r.learning_rate, r.dropout, r.num_epochs, r.patience) == (5e-4, 0.1, 500, 30)
  c.learning_rate = 0.01
  assert cognimuse_loo.resolve(c).learning_rate == 0.01
