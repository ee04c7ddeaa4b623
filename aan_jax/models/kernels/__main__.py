"""Builds the fused CPU encoder now (it is otherwise built on first use) and says where.

    python -m aan_jax.models.kernels
"""

import sys
import time

from aan_jax.models import kernels


def main() -> int:
  t0 = time.time()
  ok = kernels.available()
  if not ok:
    print(f"the fused CPU encoder is not available: {kernels.unavailable_reason()}",
          file=sys.stderr)
    return 1
  print(f"fused CPU encoder ready in {time.time() - t0:.1f} s: {kernels.library_path()}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
