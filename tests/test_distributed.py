"""Runs split into programs (config.runs_per_program) and over processes (jax.distributed):
the figures never depend on the split; two local processes write what one writes."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from aan_jax.data import synthetic
from aan_jax.engine import exchange, split
from aan_jax.training import categorical
from aan_jax.training import regression as train
from aan_jax.util import distributed
from aan_jax.util.config import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(**kw):
  c = train.get_config()
  c.update(num_layers=1, batch_size=6, num_epochs=4, patience=2, learning_rate=3e-3,
           checkpoint_every=2, targets=("arousal", "valence"), modalities="vggish,emobase2010",
           bootstrap=50)
  c.update(kw)
  return c


def test_split_keeps_run_order_pads_equal_programs_and_shares_processes():
  progs = split.split({("a",): range(10), ("b",): range(10, 13)}, limit=4, num_processes=2)
  a = [p for p in progs if p.group == ("a",)]
  # 10 runs, at most 4 a program, as many programs for each of 2 processes: 4 of 3 (padded 3).
  assert [p.rows for p in a] == [(0, 1, 2), (3, 4, 5), (6, 7, 8), (9,)]
  assert {len(p.padded) for p in a} == {3} and a[-1].padded == (9, 9, 9)
  assert [p.process for p in a] == [0, 1, 0, 1]
  b = [p for p in progs if p.group == ("b",)]
  assert [p.rows for p in b] == [(10, 11), (12,)] and [p.process for p in b] == [0, 1]
  # Programs a multiple of the devices where that fits in the limit.
  assert [len(p.padded) for p in split.split({(): range(10)}, 8, 1, 2)] == [6, 6]
  assert split.runs_per_program("auto", 2, "cpu")[0] == 2 * split.CPU_RUNS_PER_DEVICE
  assert split.runs_per_program("auto", 1, "gpu")[0] == split.ACCELERATOR_RUNS_PER_PROGRAM
  assert split.runs_per_program("5", 2, "cpu")[0] == 5


@pytest.fixture(scope="module")
def uneven():
  """Movies of different lengths: the shared batch's size depends on which runs set it."""
  c = synthetic.make_corpus(segments_per_movie=16, seed=1, num_movies=4)
  mask = c.mask.copy()
  mask[0, 9:] = False
  mask[2, 13:] = False
  return dataclasses.replace(c, mask=mask)


def test_results_do_not_depend_on_the_split(uneven):
  cfg = tiny_config()
  cfg.sweep.dropout = "0.1,0.3"          # 4 folds x 2 targets x 2 points = 16 runs
  one = train.train(uneven, tiny_config(runs_per_program="16", sweep=cfg.sweep))
  cut = train.train(uneven, tiny_config(runs_per_program="7", sweep=cfg.sweep))
  assert one.split["programs"] == 1 and cut.split["programs"] == 3
  assert cut.split["runs_per_program_padded"] == [6]   # the last one padded
  # Equal to float rounding, not bit for bit: the input projections of all a program's runs
  # are one product (engine.groups.FOLD_NORMALISATION), summed in an order that depends on
  # how many runs it holds. Without the reference runs fixing the shared batch, up to 0.73.
  np.testing.assert_allclose(cut.test_predictions, one.test_predictions, atol=2e-5)
  np.testing.assert_allclose(cut.val_predictions, one.val_predictions, atol=2e-5)
  np.testing.assert_array_equal(cut.best_epoch, one.best_epoch)
  np.testing.assert_allclose(cut.val_loss, one.val_loss, rtol=1e-5, atol=1e-6)
  for (k, a), b in zip(jax.tree_util.tree_leaves_with_path(cut.best_params),
                       jax.tree.leaves(one.best_params)):
    if "['key']['bias']" not in jax.tree_util.keystr(k):  # no effect on the outputs: noise
      np.testing.assert_allclose(a, b, atol=1e-4, err_msg=jax.tree_util.keystr(k))
  sa, sb = train.evaluate(cut, 50)[0], train.evaluate(one, 50)[0]
  for t in ("arousal", "valence"):
    assert abs(sa[t]["mse"] - sb[t]["mse"]) <= 1e-5 and abs(sa[t]["pcc"] - sb[t]["pcc"]) <= 1e-5


def test_split_programs_resume_from_their_own_checkpoints(uneven, tmp_path):
  cfg = tiny_config(num_epochs=6, runs_per_program="3", targets=("arousal",))
  clean = train.train(uneven, cfg)

  class Stop(Exception):
    pass

  def stop_in_second_program(p):
    if p["group"].endswith("program 2/2") and p["epoch"] >= 2:
      raise Stop()

  with pytest.raises(Stop):
    train.train(uneven, cfg, workdir=str(tmp_path), progress=stop_in_second_program)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["program1of2", "program2of2"]
  seen = []
  resumed = train.train(uneven, cfg, workdir=str(tmp_path), progress=seen.append)
  # Program 1 had finished (nothing left to train); program 2 went on from epoch 2.
  assert [p["epoch"] for p in seen if p["group"].endswith("2/2")][0] == 4
  assert not [p for p in seen if p["group"].endswith("1/2")]
  np.testing.assert_array_equal(resumed.test_predictions, clean.test_predictions)


def test_categorical_results_do_not_depend_on_the_split():
  corpus = synthetic.make_clips(num_clips=40, num_splits=3, snippets=2, positions=2,
                                backbone_dim=8, audio_frames=8, n_mfcc=8)
  def cfg(n):
    c = categorical.resolve(categorical.get_config())
    c.update(num_epochs=2, batch_size=8, hidden=8, audio_dim=8, audio_widths="4,4,4,4",
             audio_segments=2, seeds=2, runs_per_program=n, checkpoint_every=2)
    return c
  one, cut = categorical.train(corpus, cfg("6")), categorical.train(corpus, cfg("4"))
  assert one.split["programs"] == 1 and cut.split["programs"] == 2
  np.testing.assert_allclose(cut.test_logits, one.test_logits, atol=1e-5)
  np.testing.assert_allclose(cut.train_loss, one.train_loss, atol=1e-5)


def test_file_checkpointer_restores_and_refuses_another_experiment(tmp_path):
  state = {"a": jax.numpy.arange(6.0).reshape(2, 3), "b": {"c": jax.numpy.ones(2, jax.numpy.int32)}}
  ck = exchange.FileCheckpointer(str(tmp_path), {"runs": ["x"]})
  assert ck.restore(state) is None
  ck.save(jax.tree.map(lambda x: x + 1, state), 3)
  back = ck.restore(state)
  np.testing.assert_array_equal(back["a"], np.arange(6.0).reshape(2, 3) + 1)
  assert back["b"]["c"].dtype == np.int32
  with pytest.raises(RuntimeError, match="different experiment"):
    exchange.FileCheckpointer(str(tmp_path), {"runs": ["y"]}).restore(state)
  with pytest.raises(RuntimeError, match="do not fit"):
    ck.restore({"a": state["a"]})
  (tmp_path / "state.npz").write_bytes(b"not a zip")
  with pytest.raises(RuntimeError, match="cannot restore"):
    ck.restore(state)


@pytest.mark.parametrize("setting, message", [
    ({"runs_per_program": "0"}, "runs_per_program: must be 'auto' or a whole number >= 1"),
    ({"runs_per_program": "many"}, "runs_per_program: must be 'auto'"),
    ({"distributed.coordinator": "127.0.0.1:1234"}, "give coordinator=HOST:PORT, num_processes"),
    ({"distributed.coordinator": "nohost", "distributed.num_processes": 2,
      "distributed.process_id": 0}, "distributed.coordinator: 'nohost' is not HOST:PORT"),
    ({"distributed.coordinator": "h:1", "distributed.num_processes": 2,
      "distributed.process_id": 2}, "distributed.process_id: must be in 0..1"),
])
def test_bad_split_settings_are_one_line(setting, message):
  for get, check in ((train.get_config, train.validate),
                     (categorical.get_config, categorical.validate)):
    c = get()
    for k, v in setting.items():
      node, _, leaf = k.rpartition(".")
      (c[node] if node else c)[leaf] = v
    with pytest.raises(ConfigError, match=message):
      check(train.resolve(c) if check is train.validate else c)


def test_cluster_detection_reads_only_the_environment():
  assert distributed.cluster_detected({}) == ""
  assert distributed.cluster_detected({"SLURM_NTASKS": "1", "SLURM_JOB_ID": "7"}) == ""
  assert distributed.cluster_detected({"SLURM_NTASKS": "4"}) == "SLURM_NTASKS"
  assert distributed.cluster_detected({"TPU_WORKER_HOSTNAMES": "a,b"}) == "TPU_WORKER_HOSTNAMES"
  assert not distributed.active() and distributed.count() == 1  # this test process: plain


# ------------------------------------------------------------------ two local processes

LOO = {"dataset": "synthetic", "synthetic.segments_per_movie": 16, "synthetic.num_movies": 4,
       "num_layers": 1, "modalities": "vggish,emobase2010", "num_epochs": 6, "patience": 2,
       "checkpoint_every": 2, "batch_size": 6, "bootstrap": 50, "plots": False}


def _launch(workdir, n: int, port: int = 0):
  """Starts the leave-one-out launcher as n processes (one CPU device each)."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  args = [f"--config.{k}={v}" for k, v in LOO.items()]
  procs = []
  for i in range(n):
    extra = [] if n == 1 else [f"--config.distributed.coordinator=127.0.0.1:{port}",
                               f"--config.distributed.num_processes={n}",
                               f"--config.distributed.process_id={i}",
                               "--config.distributed.timeout_s=120"]
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "experiments.cognimuse_loo", f"--workdir={workdir}", *args,
         *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True))
  return procs


def _wait(procs, timeout=400):
  out = []
  for p in procs:
    try:
      out.append(p.communicate(timeout=timeout))
    except subprocess.TimeoutExpired:
      for q in procs:
        os.killpg(q.pid, signal.SIGKILL)
      raise
  for p, (_, err) in zip(procs, out):
    assert p.returncode == 0, err[-3000:]
  return out


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _figures(workdir):
  r = json.loads((pathlib.Path(workdir) / "results.json").read_text())
  return r, {(t, k): r[t][k] for t in ("arousal", "valence") for k in ("mse", "pcc", "ccc")
             if k in r[t]}


def _same_predictions(a, b, atol=1e-4):
  rows = [list(csv.reader(open(p, newline=""))) for p in (a, b)]
  assert rows[0][0] == rows[1][0] and len(rows[0]) == len(rows[1]) > 1
  for x, y in zip(rows[0][1:], rows[1][1:]):
    for u, v in zip(x, y):
      try:
        assert abs(float(u) - float(v)) <= atol, (x, y)
      except ValueError:
        assert u == v, (x, y)


def test_two_processes_write_what_one_writes_and_resume_after_a_kill(tmp_path):
  _wait(_launch(tmp_path / "one", 1))
  one, f1 = _figures(tmp_path / "one")
  (_, err0), (_, err1) = _wait(_launch(tmp_path / "two", 2, _free_port()))
  two, f2 = _figures(tmp_path / "two")
  assert "process 1 of 2" in err1 and "process 0 writes" in err1
  assert two["split"]["processes"] == 2 and two["split"]["programs"] == 2
  assert f1.keys() == f2.keys() and len(f1) >= 4
  for k in f1:
    assert abs(f1[k] - f2[k]) <= 1e-5, (k, f1[k], f2[k])
  # Every prediction, to float rounding (each process's program holds fewer runs, and the
  # runs' input projections are one product whose sums XLA orders by its size).
  _same_predictions(tmp_path / "two" / "predictions.csv", tmp_path / "one" / "predictions.csv")
  # Kill both processes once process 1 has checkpointed its program mid-training (a node
  # died, the job ended), then run the same command again: same results.
  work = tmp_path / "killed"
  procs = _launch(work, 2, _free_port())
  ckpt = work / "checkpoints" / "program2of2" / "state.npz"
  t0 = time.time()
  while not ckpt.exists() and time.time() - t0 < 300 and all(p.poll() is None for p in procs):
    time.sleep(0.2)
  for p in procs:
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
  assert ckpt.exists() and not (work / "results.json").exists()
  saved = np.load(ckpt)
  assert len(saved.files) > 3
  _wait(_launch(work, 2, _free_port()))
  _, f3 = _figures(work)
  for k in f1:
    assert abs(f1[k] - f3[k]) <= 1e-5, (k, f1[k], f3[k])
