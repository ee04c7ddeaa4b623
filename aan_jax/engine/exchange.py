"""Files that carry a program's arrays: its checkpoints, and its results between processes.

Both are .npz archives read with allow_pickle=False (nothing in them runs code), written
atomically. A program's checkpoint (`FileCheckpointer`, the engine's one checkpoint format,
aan_jax.engine.loop) is one archive, whether one process trains every program or
jax.distributed runs several, each training programs of its own.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import jax
import numpy as np

from aan_jax.util import atomic

_SEP = "/"


def _flatten(tree, prefix=""):
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      if _SEP in str(k):
        raise ValueError(f"a key holds {_SEP!r}: {k!r}")
      out.update(_flatten(v, f"{prefix}{k}{_SEP}"))
    return out
  return {prefix[:-1]: np.asarray(tree)}


def _unflatten(flat: dict) -> dict:
  out: dict = {}
  for key, v in flat.items():
    node = out
    parts = key.split(_SEP)
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = v
  return out


def _save(path: str, arrays: dict) -> None:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  atomic.write_file(path, buf.getvalue())


def _load(path: str) -> dict:
  with np.load(path, allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def write_results(path: str, tree: dict) -> None:
  """A nested dict of arrays (a program's results) to `path`."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  _save(path, _flatten(tree))


def read_results(path: str) -> dict:
  try:
    return _unflatten(_load(path))
  except (OSError, ValueError) as e:
    raise RuntimeError(f"{path}: cannot read a process's results ({e}); every process must "
                       "see the same --workdir (a shared filesystem)") from e


class FileCheckpointer:
  """A program's whole training state as one .npz (the last one kept), named by a fingerprint
  (JSON) of its experiment: a checkpoint of another experiment is refused."""

  def __init__(self, directory: str, fingerprint: dict):
    self.directory = os.path.abspath(directory)
    self.path = os.path.join(self.directory, "state.npz")
    self.fingerprint = fingerprint
    os.makedirs(self.directory, exist_ok=True)

  def restore(self, template):
    if not os.path.exists(self.path):
      return None
    leaves, treedef = jax.tree.flatten(template)
    try:
      z = _load(self.path)
      meta = json.loads(str(z.pop("__meta__")))
      got = [z[f"a{i}"] for i in range(len(leaves))]
      if len(z) != len(leaves) or any(
          g.shape != l.shape or g.dtype != l.dtype for g, l in zip(got, leaves)):
        raise ValueError("its arrays do not fit this experiment's state")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
      raise RuntimeError(
          f"cannot restore the checkpoint {self.path}: {e}. Delete that folder or choose "
          "another --workdir to start afresh.") from e
    if meta != self.fingerprint:
      raise RuntimeError(
          f"the checkpoint in {self.directory} belongs to a different experiment "
          "(config, data or runs differ). Choose another --workdir, or delete that "
          "folder to start afresh.")
    return jax.tree.unflatten(treedef, [
        jax.device_put(g, l.sharding) for g, l in zip(got, leaves)])

  def save(self, state, epoch: int):
    del epoch
    arrays = {f"a{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(state))}
    arrays["__meta__"] = np.asarray(json.dumps(self.fingerprint, sort_keys=True))
    _save(self.path, arrays)

  def close(self):
    pass


__all__ = ["write_results", "read_results", "FileCheckpointer"]
