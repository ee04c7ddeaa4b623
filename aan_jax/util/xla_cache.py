"""XLA's persistent compilation cache, shared by the launchers and `python -m extract`.

A program compiled once (the training engine's: 10-45 s on a GPU, ~5 s on a 2-core CPU;
I3D's: ~8 s on a GPU) is read back from disk by later processes that compile the same
program. Settings:

- "auto" (the default): `$AAN_COMPILATION_CACHE` if set, else `~/.cache/aan_jax/xla` on a
  GPU or TPU, and on the CPU a folder of its own per machine and jaxlib under it,
  `~/.cache/aan_jax/xla/cpu-<key>`. XLA:CPU's cached executables are machine code for the CPU
  that compiled them: a cache shared by machines with other CPU features is rejected on
  reload ("Target machine feature ... is not supported on the host machine"; other projects
  split their CPU caches by machine for that reason), and one kept across a jaxlib reinstall
  has crashed processes. The key hashes the CPU's model and feature flags and the jaxlib
  version, so neither can happen. On the 2-core CPU the README's demo compiled its programs
  in 8 s; warm, they load from the cache (docs/performance.md).
- a folder: the cache lives there.
- "": off.
"""

from __future__ import annotations

import os
import sys

ENV = "AAN_COMPILATION_CACHE"
DEFAULT_DIR = "~/.cache/aan_jax/xla"
MIN_COMPILE_SECONDS = 0.2


def resolve(setting: str | None, platform: str) -> str | None:
  """The folder that `setting` ("auto", a folder, or "") means on `platform`, or None (off)."""
  if setting is None or setting == "auto":
    if ENV in os.environ:
      setting = os.environ[ENV]
    else:
      if platform in ("gpu", "cuda", "rocm", "tpu"):
        return DEFAULT_DIR
      return os.path.join(DEFAULT_DIR, "cpu-" + machine_key()) if platform == "cpu" else None
  return os.path.expanduser(setting) if setting else None


def machine_key() -> str:
  """12 hex digits naming this CPU (model and feature flags) and the installed jaxlib."""
  import hashlib  # pylint: disable=g-import-not-at-top
  import platform  # pylint: disable=g-import-not-at-top
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  parts = [platform.machine(), platform.python_version()]
  try:
    parts.append(metadata.version("jaxlib"))
  except metadata.PackageNotFoundError:
    parts.append("no-jaxlib")
  try:
    with open("/proc/cpuinfo") as f:  # Linux; elsewhere the processor's name
      for line in f:
        if line.split(":")[0].strip() in ("model name", "flags", "Features"):
          parts.append(line.strip())
        if line.startswith("flags") or line.startswith("Features"):
          break  # the first core's lines are enough
  except OSError:
    parts.append(platform.processor())
  return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def enable(setting: str | None = "auto", platform: str | None = None) -> str | None:
  """Points JAX's persistent compilation cache where `setting` says (see the module doc).

  `platform`: where the programs will run, for "auto" (default: JAX's default backend).

  Returns the folder in use, or None when the cache stays off (also when the folder
  cannot be created, said on stderr). A folder already set in this process (by the
  user, or by an earlier call) is kept.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  path = resolve(setting, platform or jax.default_backend())
  if not path:
    return None
  path = os.path.expanduser(path)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    print(f"compilation cache off: cannot create {path} ({e}); point ${ENV} (or the "
          "option naming the cache) at a writable folder, or set it to '' to silence this",
          file=sys.stderr)
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  # JAX caches only programs that took 1 s or more to compile; the engine's initialisation
  # and prediction programs take less on a GPU but add up to seconds per run on a CPU.
  if jax.config.jax_persistent_cache_min_compile_time_secs == 1.0:  # JAX's default
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  # No size bound: JAX's LRU eviction (which a bound turns on) fails every write in a folder
  # that an unbounded process wrote first (entries without their access-time file; seen
  # here). Entries are written whole by one process; a reader that meets a half-written one
  # gets JAX's warning and compiles instead.
  compilation_cache.reset_cache()  # so that it takes effect even after an earlier compile
  return path


def is_empty(path: str | None) -> bool:
  """Whether the cache folder `path` holds no compiled program yet (a cold start)."""
  try:
    return bool(path) and not any(os.scandir(path))
  except OSError:
    return True
