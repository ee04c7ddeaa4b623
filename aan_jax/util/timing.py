"""Where an experiment's time went: consecutive phases from the process's start."""

from __future__ import annotations

import os
import time

_IMPORTED = time.time()


def process_start() -> float:
  """The wall-clock time this process started (Linux's /proc; elsewhere, when this module
  was first imported, which misses the interpreter's own start-up)."""
  try:
    with open("/proc/self/stat") as f:
      ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
    # Both clocks count from boot: the process's age, to the clock tick (10 ms).
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age
  except (OSError, ValueError, IndexError, AttributeError):
    return _IMPORTED


class Phases:
  """Consecutive phases: `mark(name)` ends the phase running since the last mark (or since
  `start`); a phase marked twice adds up. `seconds` maps each phase to its duration, so
  that they sum to the time from `start` to the last mark."""

  def __init__(self, start: float | None = None):
    self.start = process_start() if start is None else start
    self.last = self.start
    self.seconds: dict[str, float] = {}

  def mark(self, name: str) -> float:
    now = time.time()
    self.seconds[name] = self.seconds.get(name, 0.0) + (now - self.last)
    self.last = now
    return now - self.start

  def split(self, name: str, part: str, seconds: float) -> None:
    """Moves `seconds` of phase `name` into phase `part` (e.g. compile out of training)."""
    seconds = min(max(0.0, seconds), self.seconds.get(name, 0.0))
    out = {}
    for k, v in self.seconds.items():  # `part` goes just before `name`, in time order
      if k == name:
        out[part] = self.seconds.get(part, 0.0) + seconds
        out[k] = v - seconds
      elif k != part:
        out[k] = v
    self.seconds = out

  def summary(self) -> dict:
    return {**{k: round(v, 3) for k, v in self.seconds.items()},
            "total": round(self.last - self.start, 3)}

  def line(self) -> str:
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
    return f"time: {parts}; {self.last - self.start:.1f} s from the process's start"
