"""Config checking shared by every task: one error type, one set of rules."""

from __future__ import annotations


class ConfigError(ValueError):
  """Settings that cannot run; the message has one line per problem."""
