"""Config checking shared by every task: one error type, one set of rules.

A whole number is an int and never a bool (`--config.num_epochs=True` is refused, not read
as 1); a number is an int or a float, finite, and never a bool. Every task's `validate`
collects its problems with `Checks` and raises one ConfigError with a line per problem.
"""

from __future__ import annotations

import math

PRNG_IMPLS = ("hash32", "threefry2x32", "rbg", "unsafe_rbg")


class ConfigError(ValueError):
  """Settings that cannot run; the message has one line per problem."""


def is_whole(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Checks:
  """Collects problems as lines; `done()` raises them as one ConfigError."""

  def __init__(self, config):
    self.config = config
    self.problems: list[str] = []

  def need(self, ok, msg: str) -> None:
    if not ok:
      self.problems.append(msg)

  def whole(self, key: str, low: int, value=None, name: str | None = None) -> None:
    v = self.config[key] if value is None else value
    self.need(is_whole(v) and v >= low,
              f"{name or key}: must be a whole number >= {low}; got {v!r}")

  def number(self, key: str, low: float | None = None, high: float | None = None,
             low_open: bool = False, high_open: bool = True) -> None:
    """A finite number within [low, high) (or the bounds' other closures)."""
    v = self.config[key]
    ok = is_number(v)
    if ok and low is not None:
      ok = v > low if low_open else v >= low
    if ok and high is not None:
      ok = v < high if high_open else v <= high
    if low is not None and high is not None:
      rng = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
      rng = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
      rng = "a finite number"
    self.need(ok, f"{key}: must be {rng}; got {v!r}")

  def choice(self, key: str, options) -> None:
    v = self.config[key]
    self.need(v in options, f"{key}: unknown {v!r}; use one of {list(options)}")

  def engine_settings(self) -> None:
    """What every task's engine reads: epochs, batch, seeds, checkpoints, devices, PRNG."""
    for k in ("num_epochs", "batch_size", "seeds", "checkpoint_every"):
      self.whole(k, 1)
    for k in ("max_devices", "seed"):
      self.whole(k, 0)
    self.number("learning_rate", 0, low_open=True)
    self.need(self.config.prng_impl in PRNG_IMPLS,
              f"prng_impl: unknown {self.config.prng_impl!r}; use hash32 or threefry2x32")
    if "runs_per_program" in self.config:
      v = str(self.config.runs_per_program).strip()
      self.need(v == "auto" or (v.isdigit() and int(v) >= 1),
                f"runs_per_program: must be 'auto' or a whole number >= 1; got {v!r}")
    if "distributed" in self.config:
      from aan_jax.util import distributed  # pylint: disable=g-import-not-at-top
      self.problems.extend(distributed.problems(self.config.distributed))

  def done(self) -> None:
    if self.problems:
      raise ConfigError("\n".join(self.problems))


def add_scale_settings(c):
  """The settings of how an experiment's runs spread (every task's config carries them):
  `runs_per_program` ("auto" or a whole number, as text: aan_jax.engine.split) and
  `distributed` (aan_jax.util.distributed)."""
  from aan_jax.util import distributed  # pylint: disable=g-import-not-at-top
  # "auto": the engine's measured rule for the backend; N: at most N runs per compiled
  # program. Results do not depend on it.
  c.runs_per_program = "auto"
  c.distributed = distributed.config()
  return c
