"""VTT's face-expression task (`python -m experiments.face_expression`): the engine's
categorical training of VTT's TSM ResNet-18 (aan_jax.models.vtt_classifier, the engine's "vtt"
model) on RAF-DB or synthetic faces (aan_jax.data.faces), and its output contract.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from aan_jax.data import faces as face_corpora
from aan_jax.models import vtt_classifier
from aan_jax.training import categorical
from aan_jax.util.config import Checks, is_number, is_whole

# ------------------------------------------------------------------- the task

DATASETS = ("raf_db", "synthetic")
# The synthetic demo's sizes, where the command line left the defaults: a small TSM on
# 16x16 faces trains in about a minute on a CPU.
SYNTHETIC_SIZES = {"num_epochs": 30, "learning_rate": 3e-3, "batch_size": 32}
SYNTHETIC_VTT = {"widths": (8, 16), "stage_sizes": (1, 1), "jitter": 2}
SYNTHETIC_FACES = {"size": 16, "per_class": 60}


def get_task_config() -> ml_collections.ConfigDict:
  """The categorical engine's settings for VTT's model on face stills (our defaults: VTT's
  own training settings are not published; Adam 1e-3, batch 64, 40 epochs, cross-entropy)."""
  c = categorical.get_config()
  c.dataset = "raf_db"   # raf_db | synthetic
  c.model = "vtt"
  c.loss = "ce"          # pcce: happy and surprise are FER's positive classes
  c.learning_rate = 1e-3
  c.batch_size = 64
  c.num_epochs = 40
  c.vtt = vtt_classifier.get_config()
  c.faces = face_corpora.get_config()
  return c


def resolve(config) -> ml_collections.ConfigDict:
  """The synthetic demo's sizes where the defaults were left (not given on the command line)."""
  config = config.copy_and_resolve_references()
  if config.dataset == "synthetic":
    d, given = get_task_config(), categorical.explicit_settings(config)
    same = lambda a, b: tuple(np.atleast_1d(a)) == tuple(np.atleast_1d(b))
    with config.unlocked():
      for prefix, group, ref, sizes in (("", config, d, SYNTHETIC_SIZES),
                                        ("vtt.", config.vtt, d.vtt, SYNTHETIC_VTT),
                                        ("faces.", config.faces, d.faces, SYNTHETIC_FACES)):
        for k, v in sizes.items():
          if prefix + k not in given and same(group[k], ref[k]):
            group[k] = v
  return config


def validate(config) -> None:
  """The categorical engine's checks of its shared settings, then the faces' and the model's."""
  c = Checks(config)
  categorical.check_task(c, DATASETS)
  v, f = config.vtt, config.faces
  if not (len(v.widths) >= 1 and len(v.widths) == len(v.stage_sizes)
          and all(is_whole(x) and x >= 1 for x in tuple(v.widths) + tuple(v.stage_sizes))):
    c.problems.append(f"vtt.widths / vtt.stage_sizes: equal-length lists of whole numbers >= 1; "
                      f"got {v.widths!r} / {v.stage_sizes!r}")
  for k, low in (("shift_div", 0), ("image_size", 0), ("jitter", 0)):
    c.whole(k, low, value=v[k], name=f"vtt.{k}")
  c.need(is_number(v.dropout) and 0 <= v.dropout < 1,
         f"vtt.dropout: must be in [0, 1); got {v.dropout!r}")
  if config.dataset == "synthetic":
    c.whole("size", 12, value=f.size, name="faces.size")
    c.whole("per_class", 2, value=f.per_class, name="faces.per_class")
    c.need(is_number(f.test_fraction) and 0 < f.test_fraction < 1,
           f"faces.test_fraction: must be in (0, 1); got {f.test_fraction!r}")
  c.done()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The launcher's one call: the engine's train and evaluate on a face corpus, and its
  output contract (results.json, predictions.csv, models/, tensorboard/, plots/confusion.png)."""
  config = resolve(config)
  validate(config)
  synthetic = config.dataset == "synthetic"
  return categorical.run(config, workdir, face_corpora.load, lambda corpus: {
      "label": "VTT TSM ResNet-18",
      "protocol": ("stratified train/test split" if synthetic else "official train/test "
                   "partition") + "; last epoch on the test list (no validation set)",
      "input": "each still face as a buffer of 4 copies; training jitters each frame and "
               "mirrors whole buffers",
      "synthetic": synthetic})
