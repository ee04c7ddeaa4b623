"""A film's four outputs as one set, and what may be replaced (the predict command's rules).

- `check_folder`: --out / --cache must be folders this process can write in; said before any
  model is loaded or anything is decoded, and nothing is created there yet.
- `existing`: whether <stem>.* in the output folder is a report of this same input (its
  sha256, recorded in the JSON), so that a report of a different input is never replaced
  without --overwrite (as `python -m extract` does with its .npz).
- `write_set`: the four files are made in a temporary folder next to them and moved into
  place only when all four exist, with Ctrl-C held off during the moves; any failure (or
  Ctrl-C) before that leaves nothing of that film.
- `check_finite`: non-finite predictions fail with their cause, unless the input declared
  those segments missing (then they are the report's gaps).
- `printable`: a name for a log line (control characters escaped, one line).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import tempfile
import threading
from typing import Callable, Mapping, Sequence

import numpy as np

OUTPUTS = ("csv", "json", "png", "html")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def printable(text) -> str:
  """One line: control characters (a newline in a file name) escaped as \\n, \\x1b, ..."""
  def esc(m):
    c = m.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c, f"\\x{ord(c):02x}" if ord(c) < 256
                                                       else f"\\u{ord(c):04x}")
  return _CONTROL.sub(esc, str(text))


def check_folder(path, flag: str) -> None:
  """Raises ValueError `flag PATH: why` unless PATH is (or can be made) a writable folder."""
  p = pathlib.Path(path)
  if p.exists() or p.is_symlink():
    if not p.is_dir():
      raise ValueError(f"{flag} {printable(p)}: exists and is not a directory")
    try:  # os.access misses read-only mounts and some ACLs: try it for real
      with tempfile.NamedTemporaryFile(dir=p, prefix=".write-test-"):
        pass
    except OSError as e:
      raise ValueError(f"{flag} {printable(p)}: cannot write there ({e.strerror or e})") from None
    return
  parent = p.absolute().parent
  while not parent.exists():
    parent = parent.parent
  if not parent.is_dir():
    raise ValueError(f"{flag} {printable(p)}: {printable(parent)} is not a directory")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise ValueError(f"{flag} {printable(p)}: cannot create it ({printable(parent)} is not "
                     "writable)")


def existing(out_dir, stem: str, input_sha256: str) -> str | None:
  """None when <stem>.* may be written (absent, or a report of this same input); else why not."""
  out = pathlib.Path(out_dir)
  present = [e for e in OUTPUTS if os.path.lexists(out / f"{stem}.{e}")]
  if not present:
    return None
  j = out / f"{stem}.json"
  if "json" not in present:
    return f"{out / (stem + '.' + present[0])} exists without its {stem}.json"
  try:
    with open(j, encoding="utf-8") as f:
      meta = json.load(f).get("metadata", {})
    made_from = meta.get("input_sha256")
  except (OSError, ValueError, AttributeError) as e:
    return f"{j} is not a readable report ({type(e).__name__})"
  if made_from == input_sha256:
    return None
  name = meta.get("input") if isinstance(meta.get("input"), str) else "?"
  if not isinstance(made_from, str):
    return f"{j} does not say which input it was made from (an older report, or another tool's)"
  return (f"{j} was made from a different input ({printable(name)}, sha256 "
          f"{printable(made_from[:12])}...)")


@contextlib.contextmanager
def _no_interrupt():
  """Ctrl-C waits until the block is done (main thread only; elsewhere nothing changes)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
  try:
    yield
  finally:
    signal.pthread_sigmask(signal.SIG_SETMASK, old)


def write_set(out_dir, stem: str, writers: Mapping[str, Callable[[str], None]],
              may_replace: Callable[[], str | None] = lambda: None) -> dict[str, str]:
  """Each writer(path) makes one file in a temporary folder; when all did, they are moved to
  out_dir/<stem>.<ext>. `may_replace()` is asked again right before the move (a report of
  another input may have appeared meanwhile): a reason refuses the set. Returns the paths."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=out, prefix=f".{stem[:40]}.partial-")
  try:
    made = {}
    for ext, write in writers.items():
      p = os.path.join(tmp, f"{stem}.{ext}")
      write(p)
      if not os.path.isfile(p):
        raise OSError(f"{stem}.{ext} was not written")
      made[ext] = p
    why = may_replace()
    if why:
      raise FileExistsError(f"{why}; not replaced (use --overwrite, or another --out)")
    paths = {ext: str(out / f"{stem}.{ext}") for ext in made}
    with _no_interrupt():
      for ext, p in made.items():
        os.replace(p, paths[ext])
    return paths
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def check_finite(curves, sources: Sequence, feats_by_seg: Mapping, declared: Mapping) -> None:
  """ValueError naming the cause when a curve is not finite outside the declared gaps.

  declared: segmentation -> the features the input declares missing (`nan_features`). A
  segment where some feature a model reads is declared missing and NaN may be NaN (a gap).
  """
  for c in curves:
    src = next(s for s in sources if s.name == c.source)
    models = [m for m in src.models if m.target == c.target and m.segmentation == c.segmentation]
    feats = feats_by_seg[c.segmentation] if c.segmentation in feats_by_seg else feats_by_seg
    for m, y in zip(models, c.folds):
      bad = ~np.isfinite(y)
      if not bad.any():
        continue
      gap = np.zeros(len(y), bool)
      for f in m.modalities:
        if f in declared.get(c.segmentation, ()):
          gap |= ~np.isfinite(np.asarray(feats[f])).all(axis=1)
      bad &= ~gap
      if not bad.any():
        continue
      i = int(np.flatnonzero(bad)[0])
      where = (f"segment {i} ({float(c.start_s[i]):g}-{float(c.end_s[i]):g} s; "
               f"{int(bad.sum())} segments in all)")
      big = {f: float(np.max(np.abs(np.asarray(feats[f][i], np.float64)))) for f in m.modalities}
      f_max = max(big, key=big.get) if big else None
      if f_max is not None and (not np.isfinite(big[f_max]) or big[f_max] > 1e6):
        raise ValueError(f"{printable(src.name)}/{printable(m.name)} predicts "
                         f"{float(y[i])} at {where}: the feature {f_max} reaches "
                         f"{big[f_max]:.3g} there, far outside what the model was trained on")
      raise ValueError(f"{printable(src.name)}/{printable(m.name)} predicts {float(y[i])} at "
                       f"{where} from finite features: the model is broken (non-finite "
                       "parameters, or a zero feature normalisation)")
