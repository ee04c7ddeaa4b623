"""Launchers' one-line errors (issue 21's partials): a --workdir that is a file, an unknown
--config key, device memory running out, a checkpoint of other settings. Each was seen failing
on the code before its fix (a FileExistsError traceback; absl's AttributeError traceback; XLA's
message without batch_size; orbax's multi-line internals)."""

from __future__ import annotations

import pytest

from aan_jax.training import launch


def test_workdir_that_is_a_file(tmp_path, run_launcher):
  f = tmp_path / "afile"
  f.write_text("x")
  p = run_launcher("cognimuse_loo", f, {"dataset": "synthetic"}, timeout=300)
  assert p.returncode == 2, p.stderr[-2000:]
  assert p.stderr.strip() == f"error: --workdir {f}: exists and is not a directory"


def test_unknown_config_key(tmp_path, run_launcher):
  p = run_launcher("cognimuse_loo", tmp_path / "w", {"modelz": 3, "sweep.learning_ratez": 1},
                   timeout=300)
  assert p.returncode == 2, p.stderr[-2000:]
  assert p.stderr.strip().splitlines() == [
      "error: --config.modelz: no such setting (did you mean --config.model?)",
      "error: --config.sweep.learning_ratez: no such setting (did you mean "
      "--config.sweep.learning_rate?)"]
  assert not (tmp_path / "w").exists()


def test_out_of_memory_names_batch_size():
  import ml_collections
  e = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4000000000000 "
                   "bytes.\nBufferAssignment OOM Debugging.\n...")
  (line,) = launch.explain(e, ml_collections.ConfigDict({"batch_size": 10**9}), "w")
  assert line.startswith("error: out of device memory (RESOURCE_EXHAUSTED: Out of memory")
  assert "--config.batch_size (now 1000000000)" in line


def test_a_checkpoint_of_other_settings_is_one_line():
  """orbax refuses to restore a tree of another structure with its internals on many lines;
  the engine wraps it (aan_jax.engine.loop)."""
  import ml_collections
  code = compile("def restore():\n  raise ValueError('Tree structures differ:\\n  a\\n  b')\n",
                 "/site-packages/orbax/checkpoint/fake.py", "exec")
  ns = {}
  exec(code, ns)  # pylint: disable=exec-used
  with pytest.raises(RuntimeError) as e:
    try:
      ns["restore"]()
    except ValueError as err:
      raise RuntimeError("cannot restore the checkpoint in wd/checkpoints (step 2): Tree "
                         "structures differ:\n  a\n  b. Delete that folder") from err
  (line,) = launch.explain(e.value, ml_collections.ConfigDict({}), "wd")
  assert line.startswith("error: cannot restore the checkpoint in wd/checkpoints (step 2): it "
                         "was written with other settings")


def test_resume_with_other_modalities_is_one_line(tmp_path, run_launcher):
  tiny = {"dataset": "synthetic", "num_epochs": 2, "plots": False, "bootstrap": 1,
          "num_layers": 1, "batch_size": 6, "synthetic.segments_per_movie": 40,
          "synthetic.num_movies": 4}
  p = run_launcher("cognimuse_loo", tmp_path / "w", {**tiny, "modalities": "audio"})
  assert p.returncode == 0, p.stderr[-2000:]
  p = run_launcher("cognimuse_loo", tmp_path / "w", {**tiny, "modalities": "video"})
  assert p.returncode == 1
  errors = [l for l in p.stderr.splitlines() if not l.startswith(("feature_aan", " "))
            and "epoch" not in l and l.strip()]
  assert errors == [l for l in errors if l.startswith("error: cannot restore the checkpoint")]
  assert len(errors) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]


def test_ctrl_c_during_training_is_one_line(tmp_path):
  """Before: orbax's checkpoint wait logged the KeyboardInterrupt's traceback before
  `interrupted:` (checkpoints every epoch, so Ctrl-C lands there)."""
  import os
  import pathlib
  import signal
  import subprocess
  import sys
  import time
  root = str(pathlib.Path(__file__).resolve().parents[1])
  w = tmp_path / "w"
  args = [sys.executable, "-m", "experiments.cognimuse_loo", f"--workdir={w}",
          "--config.dataset=synthetic", "--config.num_epochs=3000", "--config.patience=0",
          "--config.plots=False", "--config.bootstrap=1", "--config.num_layers=1",
          "--config.modalities=audio", "--config.batch_size=6", "--config.checkpoint_every=1",
          "--config.synthetic.segments_per_movie=40", "--config.synthetic.num_movies=4"]
  env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  p = subprocess.Popen(args, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  try:
    deadline = time.time() + 240
    while time.time() < deadline and len(list((w / "checkpoints").glob("[0-9]*"))) < 2:
      assert p.poll() is None, p.communicate()[1][-2000:]
      time.sleep(0.5)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
  finally:
    if p.poll() is None:
      p.kill()
  assert p.returncode == 130, err[-2000:]
  assert "Traceback" not in err, err[-3000:]
  lines = [l for l in err.replace("\r", "\n").splitlines() if l.strip() and "epoch" not in l]
  assert lines[-1].startswith("interrupted: the last checkpoint in ")
