"""aan_jax.util.xla_cache: where the persistent compilation cache goes, per setting and platform."""

import os

from aan_jax.util import xla_cache


def test_auto_is_on_for_accelerators_and_off_on_the_cpu(monkeypatch):
  monkeypatch.delenv(xla_cache.ENV, raising=False)
  assert xla_cache.resolve("auto", "gpu") == xla_cache.DEFAULT_DIR
  assert xla_cache.resolve("auto", "tpu") == xla_cache.DEFAULT_DIR
  assert xla_cache.resolve("auto", "cpu") is None
  assert xla_cache.resolve(None, "cpu") is None


def test_env_var_and_explicit_settings_win(monkeypatch, tmp_path):
  monkeypatch.setenv(xla_cache.ENV, str(tmp_path))
  assert xla_cache.resolve("auto", "cpu") == str(tmp_path)
  monkeypatch.setenv(xla_cache.ENV, "")
  assert xla_cache.resolve("auto", "gpu") is None
  assert xla_cache.resolve("~/somewhere", "cpu") == os.path.expanduser("~/somewhere")
  assert xla_cache.resolve("", "gpu") is None
