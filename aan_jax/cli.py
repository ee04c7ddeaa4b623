"""One-line errors for the command-line entry points: `sys.exit(cli.run(main))`.

A user who gives a bad file or a bad setting needs one line saying what is wrong, not a
traceback; a developer asks for the traceback with `--debug` or `AAN_DEBUG=1`. Ctrl-C says
what was kept and how to resume (the running command keeps that up to date with
`on_interrupt`).
"""

from __future__ import annotations

import os
import sys
from typing import Callable


class UserError(Exception):
  """A message meant for the user: bad input or bad settings, said in one line."""


_interrupt_note: str | None = None


def on_interrupt(note: str | None) -> None:
  """What Ctrl-C should report as kept and how to resume (None: the default line)."""
  global _interrupt_note
  _interrupt_note = note


def _user_errors() -> tuple[type[BaseException], ...]:
  from aan_jax import torch_pickle  # numpy only; imported here to keep this module bare
  return (UserError, torch_pickle.CheckpointError, FileNotFoundError, PermissionError,
          IsADirectoryError, NotADirectoryError, ValueError)


def _debug_requested(debug: bool | None) -> bool:
  if "--debug" in sys.argv[1:]:
    # Removed so that the command's own parser never sees it.
    sys.argv[1:] = [a for a in sys.argv[1:] if a != "--debug"]
    debug = True if debug is None else debug
  if debug is None:
    debug = os.environ.get("AAN_DEBUG", "") not in ("", "0")
  return debug


def _one_line(text: str) -> str:
  return " ".join(str(text).split()) or "(no message)"


def run(main: Callable[[], int | None], *, debug: bool | None = None) -> int:
  """Calls main(); user errors print one line `error: ...` (exit 1), Ctrl-C exits 130."""
  debug = _debug_requested(debug)
  on_interrupt(None)
  try:
    return int(main() or 0)
  except KeyboardInterrupt:
    if debug:
      raise
    note = _interrupt_note or "nothing was kept; run the same command again"
    print(f"interrupted: {_one_line(note)}", file=sys.stderr)
    return 130
  except _user_errors() as e:
    if debug:
      raise
    msg = str(e)
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
      msg = f"{e.filename}: {e.strerror}"  # "[Errno 2] ..." says nothing a user needs
    print(f"error: {_one_line(msg)}", file=sys.stderr)
    return 1
