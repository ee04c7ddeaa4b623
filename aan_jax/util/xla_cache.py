"""XLA's persistent compilation cache, shared by the launchers and `python -m extract`.

A program compiled once (the training engine's: 10-45 s on a GPU, ~5 s on a 2-core CPU;
I3D's: ~8 s on a GPU) is read back from disk by later processes that compile the same
program. Settings:

- "auto" (the default): `$AAN_COMPILATION_CACHE` if set, else `~/.cache/aan_jax/xla` on a
  GPU or TPU and off on the CPU. Off on the CPU because XLA:CPU's cached executables are
  machine code for the CPU that compiled them, and public reports show them rejected on
  reload (jax-ml/jax#38445) or crashing the process after a jaxlib reinstall, which a
  default must not risk; name a folder to use it there anyway (it worked on this
  project's CPU machine).
- a folder: the cache lives there.
- "": off.
"""

from __future__ import annotations

import os
import sys

ENV = "AAN_COMPILATION_CACHE"
DEFAULT_DIR = "~/.cache/aan_jax/xla"


def resolve(setting: str | None, platform: str) -> str | None:
  """The folder that `setting` ("auto", a folder, or "") means on `platform`, or None (off)."""
  if setting is None or setting == "auto":
    if ENV in os.environ:
      setting = os.environ[ENV]
    else:
      return DEFAULT_DIR if platform in ("gpu", "cuda", "rocm", "tpu") else None
  return os.path.expanduser(setting) if setting else None


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
  compilation_cache.reset_cache()  # so that it takes effect even after an earlier compile
  return path
