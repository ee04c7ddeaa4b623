"""The temporal models inside the training engine."""

import jax.numpy as jnp
import numpy as np
import pytest

from aan_jax import engine
from aan_jax.engine import zoo
from aan_jax.models import aan as models
from aan_jax.data import synthetic
from aan_jax.training import regression as train


def tiny_config(model, **kw):
  c = train.get_config()
  c.model = model
  c.num_layers = 1
  c.batch_size = 6
  c.num_epochs = 3
  c.patience = 1
  c.learning_rate = 1e-3
  c.dropout = 0.5
  c.checkpoint_every = 3
  c.targets = ("arousal", "valence")
  c.modalities = "vggish"
  c.bootstrap = 20
  c.early_stopping = "held_out"
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
  module = engine.get_model_spec("temporal_aan").build(tiny_config("temporal_aan", window=4))
  movie = jnp.array([1, 1, 2, 0])
  seg = jnp.array([0, 5, 2, 3])
  inp = zoo._temporal_inputs(module, data, movie, seg)  # pylint: disable=protected-access
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
def test_temporal_models_predict_from_their_best_parameters(model):
  corpus = synthetic.make_corpus(segments_per_movie=12, seed=2, num_movies=3)
  # A high learning rate so that validation loss moves and runs stop at different epochs.
  result = train.train(corpus, tiny_config(model, learning_rate=3e-2, num_epochs=6,
                                           checkpoint_every=6))
  assert result.test_predictions.shape == (6, 1, 12)
  assert np.all(np.isfinite(result.test_predictions))
  # Held-out predictions are the compiled autoregressive evaluation of the BEST parameters:
  # in held-out mode the early-stopping loss is measured on the predicted movie itself, so
  # the loss of the returned predictions equals the best epoch's validation loss (and not
  # the last epoch's, where they differ).
  from aan_jax.tasks import losses as metrics  # pylint: disable=g-import-not-at-top
  differs = 0
  for r in range(len(result.runs)):
    t = result.targets[result.runs.target[r]]
    h = result.runs.test_idx[r, 0]
    loss = float(metrics.aan_loss(result.test_predictions[r, 0], corpus.targets[t][h],
                                  corpus.mask[h]))
    best = int(result.best_epoch[r])
    np.testing.assert_allclose(loss, result.val_loss[r, best], rtol=1e-4)
    last = result.epochs_trained[r] - 1
    differs += not np.isclose(result.val_loss[r, last], result.val_loss[r, best])
  assert differs, "no run's last epoch differs from its best; the test needs one"
