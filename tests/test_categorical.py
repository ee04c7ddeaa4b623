"""The categorical task (aan_jax.training.categorical): its runs against a plain loop, their batches,
BatchNorm state, isolation of the test lists, resume and config errors (a tiny classifier)."""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aan_jax import engine
from aan_jax.engine import clips
from aan_jax.engine import core as engine_core
from aan_jax.tasks import losses
from aan_jax.training import categorical

CLASSES = ("a", "b", "c", "d")


class TinyBN(nn.Module):
  """Dense -> BatchNorm -> ReLU -> Dense: the smallest model with batch statistics.

  No bias before the BatchNorm: its gradient is zero up to rounding, and Adam turns
  rounding noise into steps of the full learning rate, so no two programs would agree.
  """
  num_classes: int
  hidden: int = 8

  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.Dense(self.hidden, use_bias=False)(x.reshape(x.shape[0], -1))
    h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(h))
    return nn.Dense(self.num_classes)(h)


def _train_logits(module, variables, inputs, key):
  del key
  logits, new = module.apply(variables, inputs["x"], True, mutable=["batch_stats"])
  return logits, dict(new)


engine.register_model("_tiny_bn", engine.ModelSpec(
    build=lambda c: TinyBN(c.num_classes, c.hidden),
    init=lambda m, k, x: dict(m.init(k, x["x"], False)),
    train_apply=_train_logits,
    eval_apply=lambda m, v, x: (m.apply(v, x["x"], False), {}),
    label="tiny", sampler="per_run", dropout_fields=()))


def _corpus(x=None) -> categorical.ClipCorpus:
  rng = np.random.default_rng(0)
  n = 40
  labels = np.arange(n) % 4
  if x is None:
    x = rng.standard_normal((n, 2, 3)).astype(np.float32)
    x[:, 0, 0] += 1.5 * labels
  # Splits of different sizes (20 and 26 training examples: 3 and 4 steps of 8), and the
  # second trains on examples that the first tests on.
  a = np.arange(n)
  splits = ((a[:20], a[20:]), (a[14:], a[:14]))
  return categorical.ClipCorpus("tiny", {"x": x}, labels.astype(np.int32), CLASSES, splits,
                                ("s1", "s2"), tuple(f"e{i}" for i in a))


def _config(**kw):
  c = categorical.get_config()
  c.model = "_tiny_bn"
  c.batch_size = 8
  c.num_epochs = 2
  c.checkpoint_every = 1
  c.positive_classes = "b,d"
  c.sweep_learning_rate = "0.01,0.003"
  c.max_devices = 1
  c.unlock()
  c.hidden = 8
  for k, v in kw.items():
    c[k] = v
  return c


def _plain_loop(corpus, config, r):
  """One run trained by a plain per-split loop: same init key, same batches, optax.adam."""
  runs = categorical.make_runs(corpus, config)
  module = TinyBN(len(CLASSES), config.hidden)
  spec = engine.get_model_spec("_tiny_bn")
  k_init, (k_order, _) = clips.keys(jax.random.key(config.seed, impl=engine.prng_impl(config.prng_impl)))
  example = {k: v[:2] for k, v in corpus.inputs.items()}
  variables = spec.init(module, jax.random.fold_in(k_init, int(runs.run_id[r])), example)
  params, stats = variables["params"], variables["batch_stats"]
  tx = optax.adam(float(runs.hparams["learning_rate"][r]))
  opt = tx.init(params)
  n = int(runs.n_train[r])
  steps_all = max(math.ceil(int(m) / config.batch_size) for m in runs.n_train)
  positive = categorical.positive_classes(config, CLASSES)
  for epoch in range(config.num_epochs):
    rows, first = clips.epoch_batches(k_order, epoch, int(runs.run_id[r]),
                                            jnp.asarray(runs.train_idx[r]), n,
                                            config.batch_size, steps_all)
    for s in range(math.ceil(n / config.batch_size)):
      idx = np.asarray(rows[s])
      x = {"x": corpus.inputs["x"][idx]}
      y = corpus.labels[idx]

      def loss_fn(p):
        logits, new = spec.train_apply(module, {"params": p, "batch_stats": stats}, x, None)
        return losses.classification_loss(logits, y, first[s], config.loss, positive,
                                               config.pcce_lambda), new
      (_, new), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt = tx.update(g, opt, params)
      params = optax.apply_updates(params, updates)
      stats = new["batch_stats"]
  test = runs.test_idx[r][runs.test_ok[r]]
  logits = module.apply({"params": params, "batch_stats": stats},
                        corpus.inputs["x"][test], False)
  return params, stats, np.asarray(logits)


@pytest.fixture(scope="module")
def trained():
  corpus, config = _corpus(), _config()
  return corpus, config, categorical.train(corpus, config)


@pytest.mark.parametrize("run_loop", ["vmap", "map"])
def test_each_run_equals_a_plain_single_run_loop(trained, run_loop):
  corpus, config, result = trained
  if run_loop != "vmap":
    config = _config(run_loop=run_loop)
    result = categorical.train(corpus, config)
  assert len(result.runs) == 4  # 2 splits x 2 learning rates
  for r in (0, 3):  # split s1 at lr 0.01; split s2 (one more step per epoch) at lr 0.003
    params, stats, logits = _plain_loop(corpus, config, r)
    got = jax.tree.map(lambda x, rr=r: x[rr], result.variables)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
                 got["params"], params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
                 got["batch_stats"], stats)
    ok = result.runs.test_ok[r]
    np.testing.assert_allclose(result.test_logits[r][ok], logits, atol=1e-5, rtol=1e-5)


def test_batch_stats_are_per_run(trained):
  _, _, result = trained
  bs = result.variables["batch_stats"]
  for leaf in jax.tree.leaves(bs):
    assert leaf.shape[0] == 4
    # Runs of different splits saw different batches: their running statistics differ.
    assert np.abs(leaf[0] - leaf[2]).max() > 1e-3
  # and differ from the initial ones (mean 0, var 1): they were threaded through training.
  assert np.abs(bs["BatchNorm_0"]["mean"][0]).max() > 1e-3


@pytest.mark.parametrize("n", [20, 5])
def test_padded_batches_hold_only_the_runs_training_rows(n):
  train_idx = np.zeros(32, np.int32)
  train_idx[:n] = np.arange(100, 100 + n)
  steps = 4
  rows, first = clips.epoch_batches(jax.random.key(0), 3, 77, jnp.asarray(train_idx), n,
                                          8, steps)
  rows, first = np.asarray(rows), np.asarray(first)
  assert rows.shape == (steps, 8)
  assert set(rows.ravel().tolist()) <= set(range(100, 100 + n))   # never a padding entry
  counted = rows[first]
  assert sorted(counted.tolist()) == list(range(100, 100 + n))    # each once in the loss
  # Another epoch, another order; the same epoch, the same order.
  again = np.asarray(clips.epoch_batches(jax.random.key(0), 3, 77, jnp.asarray(train_idx),
                                               n, 8, steps)[0])
  other = np.asarray(clips.epoch_batches(jax.random.key(0), 4, 77, jnp.asarray(train_idx),
                                               n, 8, steps)[0])
  np.testing.assert_array_equal(rows, again)
  assert not np.array_equal(rows, other)


def test_a_runs_test_examples_never_influence_its_training(trained):
  corpus, config, result = trained
  x = corpus.inputs["x"].copy()
  test_s1 = corpus.splits[0][1]
  x[test_s1] = 100.0 * np.random.default_rng(1).standard_normal(x[test_s1].shape)
  other = categorical.train(_corpus(x), config)
  for r in range(4):
    same = [np.array_equal(a[r], b[r]) for a, b in zip(jax.tree.leaves(result.variables),
                                                       jax.tree.leaves(other.variables))]
    if result.runs.fold[r] == 0:
      assert all(same), "split s1's model changed with its test examples"
    else:  # s2 trains on some of s1's test examples: it must see the change
      assert not all(same)


def test_resume_after_interruption_gives_the_uninterrupted_result(trained, tmp_path,
                                                                  monkeypatch):
  corpus, config, result = trained
  config = _config(num_epochs=3)
  traces = []
  original = engine_core._chunk_impl
  monkeypatch.setattr(engine_core, "_chunk_impl", lambda *a: traces.append(1) or original(*a))
  full = categorical.train(corpus, config)
  assert len(traces) == 1  # compiled once (ahead of time), reused by its three chunks

  def stop(p):
    if p["epoch"] == 1:
      raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    categorical.train(corpus, config, workdir=str(tmp_path), progress=stop)
  seen = []
  resumed = categorical.train(corpus, config, workdir=str(tmp_path), progress=seen.append)
  assert [p["epoch"] for p in seen] == [2, 3]  # epoch 1 came from the checkpoint
  jax.tree.map(np.testing.assert_array_equal, resumed.variables, full.variables)
  # A checkpoint of another experiment is refused, naming the folder.
  with pytest.raises(RuntimeError, match="different experiment"):
    categorical.train(corpus, _config(num_epochs=3, batch_size=4), workdir=str(tmp_path))


def test_evaluate_reports_the_mean_over_splits_and_per_class_recall(trained):
  corpus, _, result = trained
  one = dataclasses.replace(result, runs=result.runs.select([0, 2]), rates=[0.01],
                            test_logits=result.test_logits[[0, 2]])
  one.runs = dataclasses.replace(one.runs, point=np.zeros(2, np.int32))
  summary, table = categorical.evaluate(one)
  accs = []
  for r, name in enumerate(("s1", "s2")):
    ok = one.runs.test_ok[r]
    pred = one.test_logits[r][ok].argmax(-1)
    truth = corpus.labels[one.runs.test_idx[r][ok]]
    accs.append(float(np.mean(pred == truth)))
    assert summary["per_split"][name]["accuracy"] == pytest.approx(accs[-1])
    rec = summary["per_split"][name]["per_class_recall"]
    for k, c in enumerate(CLASSES):
      assert rec[c] == pytest.approx(np.mean(pred[truth == k] == k))
  assert summary["accuracy"] == pytest.approx(np.mean(accs))
  assert np.asarray(summary["confusion"]).sum() == len(table["id"]) == 20 + 14
  np.testing.assert_allclose(table["probabilities"].sum(1), 1.0, atol=1e-9)


def test_config_errors_name_the_field():
  from aan_jax.util.config import ConfigError
  c = categorical.get_config()
  c.loss = "hinge"
  c.batch_size = 0
  c.sweep_learning_rate = "1e-3,x"
  c.run_loop = "pmap"
  c.synthetic.num_clips = 3
  with pytest.raises(ConfigError) as e:
    categorical.validate(c)
  lines = str(e.value).splitlines()
  for field in ("loss:", "batch_size:", "sweep_learning_rate:", "run_loop:",
                "synthetic.num_clips:"):
    assert sum(line.startswith(field) for line in lines) == 1, (field, lines)
  assert len(lines) == 5
  categorical.validate(categorical.get_config())  # the defaults pass
  with pytest.raises(ConfigError, match="^positive_classes: 'joy'"):
    categorical.positive_classes(_config(positive_classes="joy"), CLASSES)
  with pytest.raises(ConfigError, match="^loss: pcce needs positive classes"):
    categorical.engine_for(_corpus(), _config(positive_classes=""))
  with pytest.raises(ConfigError, match="^splits: 's9'"):
    categorical.select_splits(_corpus(), "s1,s9")
