"""Reads PyTorch checkpoint files without torch and without running code from them.

Why by hand: `torch.load` unpickles arbitrary objects (it runs whatever the pickle
asks), its `weights_only` mode refuses the authors' whole-module pickles, and aan_jax
must not import torch. This reader understands both of torch's file layouts:

* legacy (torch < 1.6, what the authors released): five pickles in a row (magic number,
  protocol version, system info, the object, the sorted storage keys) followed by the
  raw storages, each an int64 element count and then the little-endian data;
* zip (torch >= 1.6): `<archive>/data.pkl` plus `<archive>/data/<key>` per storage.

The unpickler admits only a fixed allowlist of globals: `collections.OrderedDict`,
torch's tensor-rebuild functions and storage types (replaced by numpy equivalents here),
and module classes, which become inert `StateHolder`s that only keep their state. A
module class is admitted from `torch.nn.modules.*`, `__main__`, or from a module that
does not exist on this machine (the authors' scripts, such as `model_1_correct_5_words_pooling`), since
such a name cannot run anything when it is never imported. Any other global (os.system,
builtins.eval, subprocess.Popen, ...) raises `UnsafeCheckpointError` before it is called.
"""

from __future__ import annotations

import _compat_pickle
import collections
import importlib.util
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    # bfloat16 has no numpy dtype; read its bits and widen in _Storage.array.
    "BFloat16Storage": "bfloat16",
}


class CheckpointError(ValueError):
  """The file is not a checkpoint this reader understands."""


class UnsafeCheckpointError(CheckpointError):
  """The checkpoint's pickle asks for something that could run code."""


class StateHolder:
  """Inert stand-in for a pickled module class: keeps the state, runs nothing."""
  class_name = "?"
  source: str | None = None

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    self.__dict__["state"] = state

  def __repr__(self):
    return f"<{self.class_name}>"


class _Storage:
  """A torch storage: filled from the file after the object pickle is read."""

  def __init__(self, dtype, numel: int):
    self.dtype = dtype
    self.numel = int(numel)
    self.data: np.ndarray | None = None

  def fill(self, raw: bytes):
    if self.dtype == "bfloat16":
      bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
      self.data = bits.view(np.float32)
    else:
      self.data = np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder("<")).astype(
          self.dtype)
    if self.data.size < self.numel:
      raise CheckpointError(
          f"storage holds {self.data.size} elements, expected {self.numel}: file truncated?")


class LazyTensor:
  """A tensor view into a storage; materialised once every storage has been read."""

  def __init__(self, storage: _Storage, offset: int, size, stride):
    self.storage, self.offset = storage, int(offset)
    self.size, self.stride = tuple(size), tuple(stride)

  def numpy(self) -> np.ndarray:
    data = self.storage.data
    if data is None:
      raise CheckpointError("tensor refers to a storage that the file never provides")
    if not self.size:
      return data[self.offset].copy()
    if any(s == 0 for s in self.size):
      return np.zeros(self.size, data.dtype)
    end = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
    if self.offset < 0 or end > data.size:
      raise CheckpointError("tensor reaches outside its storage: file corrupt")
    item = data.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[self.offset:], shape=self.size, strides=[s * item for s in self.stride],
        writeable=False)
    return np.array(view)


def _rebuild_tensor(storage, offset, size, stride, *unused):
  if not isinstance(storage, _Storage):
    raise UnsafeCheckpointError("tensor rebuilt from something that is not a storage")
  return LazyTensor(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
  return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    # Old modules pickled their THNN backend through this factory; nothing is needed.
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): lambda *a: None,
    ("torch", "Size"): tuple,
}
# Names that are harmless to construct from the pickle (plain data).
_ALLOWED.update({("torch", k): k for k in _STORAGE_DTYPES})
_ALLOWED.update({("torch", "UntypedStorage"): "ByteStorage"})


def _module_exists(module: str) -> bool:
  top = module.split(".")[0]
  try:
    # Top-level find_spec locates without importing (nothing is executed).
    return importlib.util.find_spec(top) is not None
  except (ImportError, ValueError):
    return True  # unknown state: treat as existing, i.e. refuse


class _SafeUnpickler(pickle.Unpickler):
  """Admits only the allowlist above; module classes become StateHolders."""

  def __init__(self, file, storages: dict, loader):
    super().__init__(file)
    self._storages = storages
    self._loader = loader  # key -> raw bytes, or None when data comes later
    self._classes: dict[tuple[str, str], type] = {}

  def find_class(self, module: str, name: str):
    # Protocol-2 pickles name some modules by their Python 2 names ('commands' for
    # subprocess, '__builtin__' for builtins); judge them by what they would load.
    if (module, name) in _compat_pickle.NAME_MAPPING:
      module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    is_class_name = name.isidentifier() and name[:1].isupper()
    # `__main__`: classes of a user's own script that re-saved a whole module.
    if is_class_name and (module.startswith("torch.nn.modules.") or module == "__main__"
                          or not _module_exists(module)):
      key = (module, name)
      if key not in self._classes:
        self._classes[key] = type(name, (StateHolder,), {"class_name": name,
                                                         "module_name": module})
      return self._classes[key]
    raise UnsafeCheckpointError(
        f"the checkpoint's pickle asks for {module}.{name}, which is not a tensor, a "
        "storage or a module class; refusing to load it (nothing it asked for was run)")

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid:
      raise UnsafeCheckpointError(f"unexpected persistent id {pid!r}")
    if pid[0] == "module":  # legacy: ('module', class, source file, source)
      cls = pid[1]
      if not (isinstance(cls, type) and issubclass(cls, StateHolder)):
        raise UnsafeCheckpointError("persistent module id that is not a module class")
      if len(pid) > 3 and isinstance(pid[3], str):
        cls.source = pid[3]
      return cls
    if pid[0] == "storage":
      # legacy: (tag, type, key, location, numel, view_metadata); zip: (tag, type, key, location, numel)
      storage_type, key, numel = pid[1], str(pid[2]), pid[4]
      if storage_type not in _STORAGE_DTYPES:
        raise UnsafeCheckpointError(f"unknown storage type {storage_type!r}")
      if key not in self._storages:
        st = _Storage(_STORAGE_DTYPES[storage_type], numel)
        if self._loader is not None:
          st.fill(self._loader(key, st))
        self._storages[key] = st
      st = self._storages[key]
      view = pid[5] if len(pid) > 5 else None
      if view is not None:  # legacy views: (view key, offset, size)
        raise CheckpointError("legacy storage views are not supported")
      return st
    raise UnsafeCheckpointError(f"unexpected persistent id tag {pid[0]!r}")


def _raw_pickle_load(f):
  # Only for the legacy header (an int, an int, a dict of ints): no globals allowed.
  class _NoGlobals(pickle.Unpickler):
    def find_class(self, module, name):
      raise UnsafeCheckpointError(
          f"the checkpoint header asks for {module}.{name}; refusing to load it")
  return _NoGlobals(f).load()


def _load_legacy(f) -> Any:
  magic = _raw_pickle_load(f)
  if magic != LEGACY_MAGIC:
    raise CheckpointError("not a PyTorch checkpoint (wrong magic number)")
  _raw_pickle_load(f)  # protocol version
  _raw_pickle_load(f)  # system info
  storages: dict[str, _Storage] = {}
  obj = _SafeUnpickler(f, storages, None).load()
  keys = _raw_pickle_load(f)
  if not isinstance(keys, list):
    raise CheckpointError("storage key list missing: file truncated?")
  for key in keys:
    st = storages.get(str(key))
    if st is None:
      raise CheckpointError(f"storage {key} is listed but never used")
    head = f.read(8)
    if len(head) != 8:
      raise CheckpointError("file ends inside the storage data: truncated?")
    (numel,) = struct.unpack("<q", head)
    itemsize = 2 if st.dtype == "bfloat16" else np.dtype(st.dtype).itemsize
    raw = f.read(numel * itemsize)
    if len(raw) != numel * itemsize:
      raise CheckpointError("file ends inside the storage data: truncated?")
    st.fill(raw)
  return obj


def _load_zip(path) -> Any:
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl")]
    if not pkl:
      raise CheckpointError(f"zip file without data.pkl: {path}")
    prefix = pkl[0][: -len("data.pkl")]
    byteorder = prefix + "byteorder"
    if byteorder in names and zf.read(byteorder).strip() != b"little":
      raise CheckpointError("big-endian checkpoints are not supported")

    def loader(key, st):
      return zf.read(f"{prefix}data/{key}")

    return _SafeUnpickler(io.BytesIO(zf.read(pkl[0])), {}, loader).load()


def load(path: str | os.PathLike) -> Any:
  """Loads a .pth file safely: returns its object with tensors as numpy arrays.

  Module objects come back as `StateHolder`s; their `state` dict holds torch's
  `_parameters`, `_buffers` and `_modules` (and any plain attributes).
  """
  path = os.fspath(path)
  try:
    if zipfile.is_zipfile(path):
      obj = _load_zip(path)
    else:
      with open(path, "rb") as f:
        obj = _load_legacy(f)
  except CheckpointError as e:
    raise type(e)(f"{path}: {e}") from None
  except (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile, KeyError,
          AttributeError, TypeError, IndexError) as e:
    raise CheckpointError(
        f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
  return _materialise(obj)


def _materialise(obj):
  if isinstance(obj, LazyTensor):
    return obj.numpy()
  if isinstance(obj, StateHolder):
    state = obj.__dict__.get("state")
    if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) form
      state = state[0]
    obj.__dict__["state"] = _materialise(state) if state is not None else {}
    return obj
  if isinstance(obj, dict):
    return type(obj)((k, _materialise(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v) for v in obj)
  return obj


def state_dict(obj) -> "collections.OrderedDict[str, np.ndarray]":
  """torch's `state_dict()` of a loaded module (or the dict itself if it is one)."""
  if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
    obj = obj["state_dict"]
  if isinstance(obj, dict):
    out = collections.OrderedDict()
    for k, v in obj.items():
      if isinstance(v, np.ndarray):
        out[str(k)] = v
      elif isinstance(v, StateHolder):
        out.update((f"{k}.{kk}", vv) for kk, vv in state_dict(v).items())
    return out
  if not isinstance(obj, StateHolder):
    raise CheckpointError(
        f"expected a module or a state dict, found {type(obj).__name__}")
  out = collections.OrderedDict()

  def walk(mod: StateHolder, prefix: str):
    st = mod.state
    for group in ("_parameters", "_buffers"):
      for name, value in (st.get(group) or {}).items():
        if value is not None:
          out[prefix + name] = value
    for name, child in (st.get("_modules") or {}).items():
      if isinstance(child, StateHolder):
        walk(child, f"{prefix}{name}.")

  walk(obj, "")
  return out


def find_modules(obj: StateHolder, class_name: str) -> list[StateHolder]:
  """All submodules of `obj` (itself included) whose class is named `class_name`."""
  found = []
  stack = [obj]
  while stack:
    mod = stack.pop()
    if not isinstance(mod, StateHolder):
      continue
    if mod.class_name == class_name:
      found.append(mod)
    stack.extend(reversed(list((mod.state.get("_modules") or {}).values())))
  return found
