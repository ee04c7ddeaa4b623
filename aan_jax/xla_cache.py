"""XLA's persistent compilation cache, shared by the launchers and `python -m extract`.

A program compiled once (the training engine's, ~5 s on a 2-core CPU and 10-45 s on a
GPU; I3D's, ~8 s on a GPU) is read back from disk by later processes that compile the
same program. The folder is `$AAN_COMPILATION_CACHE`, else `~/.cache/aan_jax/xla`; an
empty value turns the cache off.
"""

from __future__ import annotations

import os
import sys

ENV = "AAN_COMPILATION_CACHE"
DEFAULT_DIR = "~/.cache/aan_jax/xla"


def default_dir() -> str:
  """The folder to use when the caller names none ("" = off)."""
  return os.environ.get(ENV, DEFAULT_DIR)


def enable(path: str | None = None) -> str | None:
  """Points JAX's persistent compilation cache at `path` (default: `default_dir()`).

  Returns the folder in use, or None when the cache stays off: `path` is empty, or the
  folder cannot be created (said on stderr). A folder already set in this process (by
  the user, or by an earlier call) is kept.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache
  path = default_dir() if path is None else path
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
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
