"""One-line errors for the command-line entry points: `sys.exit(cli.run(main))`.

A user who gives a bad file or a bad setting needs one line saying what is wrong, not a
traceback; a developer asks for the traceback with `--debug` or `AAN_DEBUG=1`. Ctrl-C says
what was kept and how to resume (the running command keeps that up to date with
`on_interrupt`). `tfds build` runs our builders inside its own command, which prints a
traceback for any error: `tfds_user_errors` turns ours into one line and exit status 1 there
(and only there; the Python API still raises).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterable, Iterator


class UserError(Exception):
  """A message meant for the user: bad input or bad settings, said in one line."""
  exit_status = 1


class UsageError(UserError):
  """Settings or a command line that cannot work (exit status 2, argparse's)."""
  exit_status = 2


_interrupt_note: str | None = None


def on_interrupt(note: str | None) -> None:
  """What Ctrl-C should report as kept and how to resume (None: the default line)."""
  global _interrupt_note
  _interrupt_note = note


def _user_errors() -> tuple[type[BaseException], ...]:
  # A refused checkpoint (aan_jax.convert.torch_pickle.CheckpointError) is a ValueError.
  return (UserError, FileNotFoundError, PermissionError,
          IsADirectoryError, NotADirectoryError, ValueError)


def debug_requested(debug: bool | None) -> bool:
  """True for --debug in argv (removed there), AAN_DEBUG=1, or `debug`; a traceback is then shown."""
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
  """Calls main(); user errors print one line `error: ...` (exit 1; a UsageError 2), Ctrl-C
  prints one `interrupted: ...` line and exits 130."""
  debug = debug_requested(debug)
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
    return int(getattr(e, "exit_status", 1))


def under_tfds_build() -> bool:
  """True inside the `tfds build` command (whose own error handling shows tracebacks)."""
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  return (os.path.basename(sys.argv[0] if sys.argv else "") == "tfds"
          or (spec is not None and spec.name.startswith("tensorflow_datasets.scripts.cli")))


@contextlib.contextmanager
def tfds_user_errors() -> Iterator[None]:
  """Under `tfds build`: a user error prints `error: ...` and exits 1; elsewhere, it raises."""
  try:
    yield
  except _user_errors() as e:
    if not under_tfds_build() or debug_requested(None):
      raise
    print(f"error: {_one_line(str(e))}", file=sys.stderr)
    raise SystemExit(1) from None


def tfds_user_errors_in(examples: Iterable) -> Iterator:
  """`examples`, iterated inside `tfds_user_errors` (for a builder's _generate_examples)."""
  with tfds_user_errors():
    yield from examples


def tfds_config_requested() -> bool:
  """Whether `tfds build` was told which config to build (else it builds every config)."""
  args = sys.argv[1:]
  # `--config=x`, `--config_idx=1`, or a positional `name/config` (not a builder folder).
  # In doubt (an argument naming a path that does not exist), say yes: nothing is skipped.
  return any(a.startswith("--config") for a in args) or any(
      "/" in a and not a.startswith("-") and not os.path.exists(a) for a in args)
