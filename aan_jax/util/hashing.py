"""A file's SHA-256, read in blocks: the one file hasher (the extractors' source videos and
weight files, VAANet's feature provenance).

Fingerprints of in-memory arrays and stable ids hash their own bytes where they are made.
"""

from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 20  # bytes read at a time: any file, however large, in bounded memory


def file_sha256(path: str | os.PathLike, chunk: int = CHUNK) -> str:
  """The hex SHA-256 of the file's bytes."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      h.update(block)
  return h.hexdigest()
