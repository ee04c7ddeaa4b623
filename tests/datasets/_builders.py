"""Loads the builders in datasets/<name>/ (not a package) as importable modules for tests."""

from __future__ import annotations

import importlib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATASETS = ROOT / "datasets"


def load_module(name: str, filename: str | None = None):
  """datasets/<name>/<filename> imported as `<name>.<stem>`, as `tfds build` imports it."""
  stem = (filename or f"{name}_dataset_builder.py").removesuffix(".py")
  if str(DATASETS) not in sys.path:
    sys.path.insert(0, str(DATASETS))  # <name>/ is then a namespace package, as for the CLI
  return importlib.import_module(f"{name}.{stem}")


def hide_gpus():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:
    pass
