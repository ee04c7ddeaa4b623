"""aan_jax.util.cli.run: one line for user errors, 130 and what was kept for Ctrl-C, --debug."""

import sys

import pytest

from aan_jax.util import cli
from aan_jax.convert import torch_pickle


def _raise(exc):
  def main():
    raise exc
  return main


@pytest.mark.parametrize("exc,line", [
    (cli.UserError("--config.batch_size=0: must be positive"),
     "error: --config.batch_size=0: must be positive"),
    (torch_pickle.CheckpointError("m.pth: a tensor on storage 0: a stride is -1"),
     "error: m.pth: a tensor on storage 0: a stride is -1"),
    (FileNotFoundError(2, "No such file or directory", "films/a.mp4"),
     "error: films/a.mp4: No such file or directory"),
    (PermissionError(13, "Permission denied", "/out"), "error: /out: Permission denied"),
    (IsADirectoryError(21, "Is a directory", "films"), "error: films: Is a directory"),
    (NotADirectoryError(20, "Not a directory", "a.txt/out"), "error: a.txt/out: Not a directory"),
    (ValueError("bad value\n  spread over\tlines"), "error: bad value spread over lines"),
])
def test_user_errors_are_one_line(capsys, monkeypatch, exc, line):
  monkeypatch.delenv("AAN_DEBUG", raising=False)
  monkeypatch.setattr(sys, "argv", ["prog"])
  assert cli.run(_raise(exc)) == 1
  out, err = capsys.readouterr()
  assert err.splitlines() == [line] and out == ""


def test_return_values_and_programming_errors(monkeypatch):
  monkeypatch.delenv("AAN_DEBUG", raising=False)
  monkeypatch.setattr(sys, "argv", ["prog"])
  assert cli.run(lambda: None) == 0
  assert cli.run(lambda: 3) == 3
  # A bug is not the user's fault: its traceback shows.
  with pytest.raises(ZeroDivisionError):
    cli.run(lambda: 1 / 0)


def test_interrupt_says_what_was_kept(capsys, monkeypatch):
  monkeypatch.delenv("AAN_DEBUG", raising=False)
  monkeypatch.setattr(sys, "argv", ["prog"])

  def main():
    cli.on_interrupt("3 of 5 files done in out/; run the same command to resume")
    raise KeyboardInterrupt
  assert cli.run(main) == 130
  assert capsys.readouterr().err.splitlines() == [
      "interrupted: 3 of 5 files done in out/; run the same command to resume"]
  # The note belongs to one run: the next starts with the default.
  assert cli.run(_raise(KeyboardInterrupt())) == 130
  assert capsys.readouterr().err.startswith("interrupted: nothing was kept")


def test_debug_shows_the_traceback(capsys, monkeypatch):
  monkeypatch.delenv("AAN_DEBUG", raising=False)
  monkeypatch.setattr(sys, "argv", ["prog"])
  with pytest.raises(cli.UserError):
    cli.run(_raise(cli.UserError("x")), debug=True)
  with pytest.raises(KeyboardInterrupt):
    cli.run(_raise(KeyboardInterrupt()), debug=True)
  monkeypatch.setattr(sys, "argv", ["prog", "in.pth", "--debug", "out"])
  seen = []
  with pytest.raises(ValueError):
    cli.run(lambda: seen.append(list(sys.argv)) or _raise(ValueError("x"))())
  assert seen == [["prog", "in.pth", "out"]]  # removed before the command parses its flags
  monkeypatch.setattr(sys, "argv", ["prog"])
  monkeypatch.setenv("AAN_DEBUG", "1")
  with pytest.raises(FileNotFoundError):
    cli.run(_raise(FileNotFoundError("x")))
  monkeypatch.setenv("AAN_DEBUG", "0")
  assert cli.run(_raise(FileNotFoundError("x"))) == 1
  assert capsys.readouterr().err == "error: x\n"
