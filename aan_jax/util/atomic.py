"""Atomic file writes: a temp file in the target's folder, then os.replace, so that an
interrupted run never leaves a half-written output (results, predictions, reports, events)."""

from __future__ import annotations

import os
import tempfile


def write_file(path, data: bytes | str) -> None:
  """Writes `data` to `path` atomically, with the permissions a plain open() would give."""
  path = os.fspath(path)
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode() if isinstance(data, str) else data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
