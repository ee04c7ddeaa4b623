import os
import pathlib

import pytest

# The suite uses torch (extract/) and TensorFlow (datasets/) in one process. Importing
# torchvision AFTER TensorFlow segfaults in triton's C extension (torch 2.14.1 CUDA build
# next to TF 2.21; seen here), while the other order works. Import it first.
try:
  import torchvision  # noqa: F401  pylint: disable=unused-import
except ImportError:
  pass

REFERENCE = pathlib.Path(os.environ.get(
    "AAN_REFERENCE_DIR",
    pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "attendaffectnet"))


@pytest.fixture(scope="session")
def reference_dir():
  if not (REFERENCE / "trained_models").is_dir():
    pytest.skip(f"the authors' released models are not at {REFERENCE} "
                "(set AAN_REFERENCE_DIR to the attendaffectnet reference folder)")
  return REFERENCE
