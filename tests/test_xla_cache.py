"""aan_jax.util.xla_cache: where the persistent compilation cache goes, per setting and platform."""

import os

from aan_jax.util import xla_cache


def test_auto_is_on_everywhere_and_the_cpu_has_a_folder_per_machine(monkeypatch):
  monkeypatch.delenv(xla_cache.ENV, raising=False)
  assert xla_cache.resolve("auto", "gpu") == xla_cache.DEFAULT_DIR
  assert xla_cache.resolve("auto", "tpu") == xla_cache.DEFAULT_DIR
  cpu = xla_cache.resolve("auto", "cpu")
  assert cpu == os.path.join(xla_cache.DEFAULT_DIR, "cpu-" + xla_cache.machine_key())
  assert xla_cache.resolve(None, "cpu") == cpu
  assert xla_cache.resolve("auto", "something-else") is None


def test_the_cpu_key_changes_with_jaxlib_and_the_cpu(monkeypatch):
  from importlib import metadata
  key = xla_cache.machine_key()
  assert key == xla_cache.machine_key() and len(key) == 12
  real = metadata.version
  monkeypatch.setattr(metadata, "version",
                      lambda name: "0.0.1" if name == "jaxlib" else real(name))
  assert xla_cache.machine_key() != key
  monkeypatch.setattr(metadata, "version", real)
  real_open = open

  def fake_cpuinfo(path, *a, **k):
    if path == "/proc/cpuinfo":
      import io
      return io.StringIO("model name : Another CPU\nflags : fpu sse2\n")
    return real_open(path, *a, **k)
  monkeypatch.setattr("builtins.open", fake_cpuinfo)
  assert xla_cache.machine_key() != key


def test_a_second_process_loads_the_programs_from_the_cache(tmp_path):
  """A program compiled in one process is read back by the next (XLA:CPU's executables
  reload on the machine that compiled them)."""
  import json
  import subprocess
  import sys
  code = f"""
import json, jax, jax.numpy as jnp
from aan_jax.util import xla_cache
hits = []
jax.monitoring.register_event_listener(lambda e, **k: hits.append(e))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # this program is quick
xla_cache.enable({str(tmp_path)!r}, "cpu")
@jax.jit
def f(x):
  return jax.lax.scan(lambda c, _: (jnp.tanh(c @ c.T @ c), None), x, None, length=50)[0]
f(jnp.ones((64, 64))).block_until_ready()
print(json.dumps(sum(e == "/jax/compilation_cache/cache_hits" for e in hits)))
"""
  # An entry an earlier process left (JAX's LRU eviction, when on, fails every write here).
  (tmp_path / "jit_old-0123456789abcdef-cache").write_bytes(b"left by an earlier version")
  runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300) for _ in range(2)]
  hits = [json.loads(r.stdout.strip().splitlines()[-1]) for r in runs]
  assert hits[0] == 0 and hits[1] >= 1, (hits, runs[1].stderr[-2000:])
  assert not xla_cache.is_empty(str(tmp_path))


def test_env_var_and_explicit_settings_win(monkeypatch, tmp_path):
  monkeypatch.setenv(xla_cache.ENV, str(tmp_path))
  assert xla_cache.resolve("auto", "cpu") == str(tmp_path)
  monkeypatch.setenv(xla_cache.ENV, "")
  assert xla_cache.resolve("auto", "gpu") is None
  assert xla_cache.resolve("~/somewhere", "cpu") == os.path.expanduser("~/somewhere")
  assert xla_cache.resolve("", "gpu") is None


def test_enable_lowers_jax_s_one_second_threshold(tmp_path):
  import subprocess
  import sys
  code = f"""
import jax
from aan_jax.util import xla_cache
xla_cache.enable({str(tmp_path)!r}, "cpu")
print(jax.config.jax_persistent_cache_min_compile_time_secs)
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, timeout=300).stdout.split()[-1]
  assert float(out) == xla_cache.MIN_COMPILE_SECONDS < 1.0
