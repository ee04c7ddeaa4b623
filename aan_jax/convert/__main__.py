"""`python -m aan_jax.convert IN.pth OUT_DIR`."""
import sys

from aan_jax.convert.attendaffectnet import main

sys.exit(main())
