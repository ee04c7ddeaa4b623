import os
import pathlib

import pytest

REFERENCE = pathlib.Path(os.environ.get(
    "AAN_REFERENCE_DIR",
    pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "attendaffectnet"))


@pytest.fixture(scope="session")
def reference_dir():
  if not (REFERENCE / "trained_models").is_dir():
    pytest.skip(f"the authors' released models are not at {REFERENCE} "
                "(set AAN_REFERENCE_DIR to the attendaffectnet reference folder)")
  return REFERENCE


# Tests keep XLA's persistent compilation cache (aan_jax.util.xla_cache) off, so that nothing is
# written to the home folder and every test compiles what it tests; a test that checks the
# cache names a temporary folder. Set at import, before any test or child process starts.
os.environ.setdefault("AAN_COMPILATION_CACHE", "")
# Likewise the fused CPU encoder (aan_jax.models.kernels) is built once per test session into a
# temporary folder (a few seconds), shared with the child processes that tests start.
if "AAN_KERNEL_CACHE" not in os.environ:
  import atexit, shutil, tempfile  # pylint: disable=g-import-not-at-top,multiple-imports
  os.environ["AAN_KERNEL_CACHE"] = tempfile.mkdtemp(prefix="aan-kernels-")
  atexit.register(shutil.rmtree, os.environ["AAN_KERNEL_CACHE"], True)


@pytest.fixture
def fresh_compilation_cache():
  """No persistent compilation cache set, every program cached however fast it compiled;
  the process's settings are restored afterwards (for tests that check the cache is used)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache
  before = (jax.config.jax_compilation_cache_dir,
            jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update("jax_compilation_cache_dir", None)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # tiny programs too
  try:
    yield
  finally:
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
    compilation_cache.reset_cache()


@pytest.fixture(scope="session")
def run_launcher():
  """run(name, workdir, config) -> CompletedProcess of `python -m experiments.<name>
  --workdir=W --config.k=v ...` in a child process from the repository's root."""
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  root = str(pathlib.Path(__file__).resolve().parents[1])

  def run(name: str, workdir, config: dict, *, timeout: int = 600):
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [f"--config.{k}={v}" for k, v in config.items()]
    return subprocess.run([sys.executable, "-m", f"experiments.{name}", f"--workdir={workdir}",
                           *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout)
  return run
