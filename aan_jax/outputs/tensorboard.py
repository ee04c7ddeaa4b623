"""TensorBoard event files of a result: one folder per run, a scalar per tag and epoch.

CLU's metric_writers are not used here: `import clu.metric_writers` imports TensorFlow and
the tensorboard package (its SummaryWriter is tf.summary's), which the `experiments` extra
does not install (tried: it fails without them). tensorboardX writes the same event files
with numpy alone.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np


def write(directory: str, names, series: dict, final: dict | None = None) -> None:
  """series: tag -> (R, E) per run and epoch (NaN: not trained, left out); final: tag ->
  {run name: value}, written at the last epoch."""
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("tensorboardX is not installed: no TensorBoard event files "
          "(pip install 'aan-jax[experiments]')", file=sys.stderr)
    return
  epochs = max((np.shape(a)[1] for a in series.values()), default=0)
  for r, name in enumerate(names):
    with SummaryWriter(os.path.join(directory, name.replace("/", "_"))) as w:
      for epoch in range(epochs):
        for tag, arr in series.items():
          v = float(arr[r, epoch])
          if math.isfinite(v):
            w.add_scalar(tag, v, epoch + 1)
      for tag, values in (final or {}).items():
        if name in values:
          w.add_scalar(tag, values[name], epochs)
