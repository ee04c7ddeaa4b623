"""`faces` as a modality: its name and dim, outside "all", usable by the models."""

import jax
import numpy as np
import pytest

from aan_jax.models import aan as models
from aan_jax.data.features import FEATURE_DIMS, FEATURES, PAPER_FEATURE_DIMS, canonical_modalities


def test_faces_is_a_known_modality_after_the_paper_five():
  assert FEATURE_DIMS["faces"] == 9 and "faces" not in PAPER_FEATURE_DIMS
  assert FEATURES == tuple(PAPER_FEATURE_DIMS)  # "all" stays the paper's five
  assert canonical_modalities("faces,vggish") == ("vggish", "faces")
  assert canonical_modalities("all") == FEATURES
  with pytest.raises(ValueError, match="unknown modality 'face'"):
    canonical_modalities("face")


def test_extract_layout_matches_the_declared_dim():
  faces = pytest.importorskip("extract.faces", reason="extract's dependencies not installed")
  assert faces.FACES_DIM == FEATURE_DIMS["faces"] == len(faces.FACES_LAYOUT)


def test_feature_aan_takes_faces():
  model = models.FeatureAAN(modalities=("vggish", "faces"), num_layers=1)
  x = {"vggish": np.ones((3, 128), np.float32), "faces": np.full((3, 9), 0.1, np.float32)}
  v = model.init(jax.random.key(0), x)
  assert model.apply(v, x, deterministic=True).shape == (3,)
  assert v["params"]["tokens"]["proj_faces"]["kernel"].shape == (9, 8)
  with pytest.raises(ValueError, match="faces"):
    model.apply(v, {"vggish": x["vggish"], "faces": np.ones((3, 7), np.float32)},
                deterministic=True)
