"""Reads PyTorch checkpoint files without torch and without running code from them.

Why by hand: `torch.load` unpickles arbitrary objects (it runs whatever the pickle
asks), its `weights_only` mode refuses the authors' whole-module pickles, and aan_jax
must not import torch. This reader understands both of torch's file layouts:

* legacy (torch < 1.6, what the authors released): five pickles in a row (magic number,
  protocol version, system info, the object, the sorted storage keys) followed by the
  raw storages, each an int64 element count and then the little-endian data;
* zip (torch >= 1.6): `<archive>/data.pkl` plus `<archive>/data/<key>` per storage.

The unpickler admits only a fixed allowlist of globals: `collections.OrderedDict`, `set`,
torch's tensor-rebuild functions and storage types (replaced by numpy equivalents here),
and module classes, which become inert `StateHolder`s that only keep their state. A
module class is admitted from `torch.nn.modules.*`, `__main__`, or from a module that
does not exist on this machine (the authors' scripts, such as `model_1_correct_5_words_pooling`), since
such a name cannot run anything when it is never imported. Any other global (os.system,
builtins.eval, subprocess.Popen, ...) raises `UnsafeCheckpointError` before it is called.

Memory safety, for files made to hurt (the rules of torch's `weights_only` loader, and
stricter where numpy cannot share storages as torch does):

* the file is read into memory (its size checked first) and each pickle's opcodes are
  scanned before it is run (`scan_pickle`): what makes the C unpickler allocate a size
  that a few bytes declare (a memo slot far past the opcodes read, an out-of-band buffer)
  is refused;
* every tensor's size, strides and offset are checked against its storage's declared
  element count before anything is viewed (`check_strided`): negative values, more
  than 32 dimensions, sizes past 2**62 and extents outside the storage are refused;
* the storages' declared bytes are summed and checked against `max_bytes` (2 GiB by
  default) before any storage is read; a zip entry is read only when its declared size
  is exactly what its storage needs, and a legacy storage only when the file holds it;
* a tensor is copied into its own array only while it fits in its storage and the copies
  stay under the storages' total size; any other (a stride-0 expansion, tied weights)
  comes back as a read-only view of its storage, as torch maps it, never expanded.

So memory stays under about twice the tensor data the file really holds (and the cap).
Any malformed input raises `CheckpointError` naming the file and what is wrong.
"""

from __future__ import annotations

import _compat_pickle
import collections
import importlib.util
import io
import math
import os
import pickle
import pickletools
import reprlib
import struct
import zipfile
from typing import Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
DEFAULT_MAX_BYTES = 2 << 30  # tensor data a checkpoint may hold; models here are far smaller
_MAX_PICKLE_BYTES = 256 << 20  # the object pickle (no tensor data) of any sane checkpoint
_MAX_DIMS = 32  # numpy's limit on older releases
_MAX_MODULE_VISITS = 1 << 20
_MAX_INT = 1 << 62  # sizes, strides, offsets and element counts; keeps byte sizes in int64
# Protocol-5 out-of-band buffers: never written by torch, and BYTEARRAY8 makes the C
# unpickler allocate its declared length before reading it.
_REFUSED_OPCODES = {"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"}
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    # bfloat16 has no numpy dtype; read its bits and widen in _Storage.fill.
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


def _int(x, what: str) -> int:
  if type(x) is not int or not 0 <= x < _MAX_INT:  # pylint: disable=unidiomatic-typecheck
    raise CheckpointError(f"{what} is {_short.repr(x)}; expected an integer in [0, 2**62)")
  return x


def check_strided(size, stride, offset, numel: int, what: str = "tensor") -> tuple:
  """Refuses a strided view that is malformed or reaches outside `numel` storage elements.

  Returns (size, stride, offset) as tuples of ints. Shared by every reader of untrusted
  tensors (torch storages, HDF5, state dicts): call it before viewing any buffer.
  """
  if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
    raise CheckpointError(f"{what}: size and stride must be sequences, got "
                          f"{type(size).__name__} and {type(stride).__name__}")
  if len(size) > _MAX_DIMS:
    raise CheckpointError(f"{what}: {len(size)} dimensions (at most {_MAX_DIMS})")
  if len(size) != len(stride):
    raise CheckpointError(f"{what}: size {_short.repr(size)} and stride "
                          f"{_short.repr(stride)} differ in length")
  size = tuple(_int(n, f"{what}: a size") for n in size)
  stride = tuple(_int(s, f"{what}: a stride") for s in stride)
  offset = _int(offset, f"{what}: the storage offset")
  if math.prod(n for n in size if n) >= _MAX_INT:
    raise CheckpointError(f"{what}: size {size} has too many elements")
  if 0 in size:
    return size, stride, offset  # empty: torch allows any strides and offset
  end = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
  if end > numel:
    raise CheckpointError(
        f"{what}: size {size}, stride {stride} and offset {offset} reach element {end - 1} "
        f"of a storage of {numel}: file corrupt")
  return size, stride, offset


class _Storage:
  """A torch storage: its declared size from the pickle, its data read afterwards."""
  __slots__ = ("key", "dtype", "itemsize", "numel", "data")

  def __init__(self, key: str, dtype, numel: int):
    self.key, self.dtype = key, dtype
    self.itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    self.numel = _int(numel, f"storage {key}: the element count")
    self.data: np.ndarray | None = None

  def __setstate__(self, state):
    raise UnsafeCheckpointError("the pickle tries to change a storage's attributes")

  @property
  def nbytes(self) -> int:
    return self.numel * self.itemsize

  def fill(self, raw):
    """raw: exactly `nbytes` little-endian bytes (bytes or memoryview; not copied)."""
    if len(raw) != self.nbytes:
      raise CheckpointError(f"storage {self.key} holds {len(raw)} bytes, expected "
                            f"{self.nbytes}: file truncated?")
    if self.dtype == "bfloat16":
      bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
      self.data = bits.view(np.float32)
    else:
      data = np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder("<"))
      # Native little-endian: a read-only view of the file's bytes, no copy.
      self.data = data if data.dtype.isnative else data.astype(self.dtype)


class _Copies:
  """How many bytes tensors may still be copied into arrays of their own."""

  def __init__(self, budget: int):
    self.left = budget

  def take(self, nbytes: int) -> bool:
    if nbytes > self.left:
      return False
    self.left -= nbytes
    return True


class LazyTensor:
  """A tensor view into a storage, checked when made; materialised once data is read."""
  __slots__ = ("storage", "offset", "size", "stride")

  def __init__(self, storage: _Storage, offset, size, stride):
    self.storage = storage
    self.size, self.stride, self.offset = check_strided(
        size, stride, offset, storage.numel, f"a tensor on storage {storage.key}")

  def __setstate__(self, state):
    raise UnsafeCheckpointError("the pickle tries to change a tensor's attributes")

  def numpy(self, copies: _Copies | None = None) -> np.ndarray:
    data = self.storage.data
    if data is None:
      raise CheckpointError("tensor refers to a storage that the file never provides")
    if not self.size:
      return data[self.offset].copy()
    if 0 in self.size:
      return np.zeros(self.size, data.dtype)
    item = data.itemsize
    # A dimension of size 1 is never stepped over: its stride is irrelevant (keep it 0).
    strides = [s * item if n > 1 else 0 for n, s in zip(self.size, self.stride)]
    view = np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.size,
                                           strides=strides, writeable=False)
    if view.size <= data.size and (copies is None or copies.take(view.nbytes)):
      return np.array(view)
    return view  # stride-0 expansion or shared storage: a read-only view, never expanded


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
    # Modules saved by current torch keep a set of non-persistent buffer names.
    ("builtins", "set"): set,
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

  def __init__(self, file, storages: dict):
    super().__init__(file)
    self._storages = storages  # key -> _Storage, filled after the pickle is read
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
      raise UnsafeCheckpointError(f"unexpected persistent id {_short.repr(pid)}")
    if pid[0] == "module":  # legacy: ('module', class, source file, source)
      cls = pid[1] if len(pid) > 1 else None
      if not (isinstance(cls, type) and issubclass(cls, StateHolder)):
        raise UnsafeCheckpointError("persistent module id that is not a module class")
      if len(pid) > 3 and isinstance(pid[3], str):
        cls.source = pid[3]
      return cls
    if pid[0] == "storage" and len(pid) >= 5:
      # legacy: (tag, type, key, location, numel, view_metadata); zip: (tag, type, key, location, numel)
      storage_type, key, numel = pid[1], pid[2], pid[4]
      if not isinstance(storage_type, str) or storage_type not in _STORAGE_DTYPES:
        raise UnsafeCheckpointError(f"unknown storage type {_short.repr(storage_type)}")
      if type(key) not in (str, int):  # pylint: disable=unidiomatic-typecheck
        raise CheckpointError(f"storage key {_short.repr(key)} is not a name")
      key = str(key)
      if key not in self._storages:
        self._storages[key] = _Storage(key, _STORAGE_DTYPES[storage_type], numel)
      st = self._storages[key]
      if st.dtype != _STORAGE_DTYPES[storage_type] or st.numel != numel:
        raise CheckpointError(f"storage {key} is declared twice, differently")
      view = pid[5] if len(pid) > 5 else None
      if view is not None:  # legacy views: (view key, offset, size)
        raise CheckpointError("legacy storage views are not supported")
      return st
    raise UnsafeCheckpointError(f"unexpected persistent id {_short.repr(pid)}")


def scan_pickle(f, what: str) -> None:
  """Walks one pickle's opcodes in a seekable in-memory file (running nothing) and rewinds.

  Refuses, as CheckpointError, what makes CPython's C unpickler allocate what a few bytes
  declare: out-of-band buffers and memo slots past the opcodes read so far; and a damaged
  or truncated pickle. For every reader of untrusted pickles (call it before `load()`).
  """
  start = f.tell()
  try:
    for n, (op, arg, _) in enumerate(pickletools.genops(f)):
      if op.name in _REFUSED_OPCODES:
        raise UnsafeCheckpointError(f"{what} uses the pickle opcode {op.name}, which no "
                                    "torch checkpoint holds")
      # The C unpickler grows its memo table to the index it is given: a pickler numbers
      # entries from 0, so an index past the opcodes read so far is a memory bomb.
      if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not (
          isinstance(arg, int) and 0 <= arg <= n):
        raise CheckpointError(f"{what} stores to memo slot {_short.repr(arg)} after {n} "
                              "opcodes: file corrupt")
  except ValueError as e:  # genops says "truncated" or "unknown opcode" this way
    if isinstance(e, CheckpointError):
      raise
    raise CheckpointError(f"{what} is damaged or truncated ({e})") from None
  f.seek(start)


def _raw_pickle_load(f):
  # Only for the legacy header (an int, an int, a dict of ints): no globals allowed.
  class _NoGlobals(pickle.Unpickler):
    def find_class(self, module, name):
      raise UnsafeCheckpointError(
          f"the checkpoint header asks for {module}.{name}; refusing to load it")

    def persistent_load(self, pid):
      raise CheckpointError("the checkpoint header holds a persistent id")
  scan_pickle(f, "the checkpoint header")
  return _NoGlobals(f).load()


def _check_total(storages: dict, max_bytes: int) -> None:
  total = sum(st.nbytes for st in storages.values())
  if total > max_bytes:
    raise CheckpointError(
        f"its tensors declare {total / 2**30:.2f} GiB of data, above the cap of "
        f"{max_bytes / 2**30:.2f} GiB (pass max_bytes= to load a bigger trusted file)")


def _load_legacy(data: bytes, max_bytes: int) -> tuple[Any, dict]:
  if not data.startswith(b"\x80"):
    raise CheckpointError("not a PyTorch checkpoint (neither a zip nor a pickle)")
  f = io.BytesIO(data)
  magic = _raw_pickle_load(f)
  if magic != LEGACY_MAGIC:
    raise CheckpointError("not a PyTorch checkpoint (wrong magic number)")
  _raw_pickle_load(f)  # protocol version
  _raw_pickle_load(f)  # system info
  storages: dict[str, _Storage] = {}
  scan_pickle(f, "the checkpoint's object pickle")
  obj = _SafeUnpickler(f, storages).load()
  keys = _raw_pickle_load(f)
  if not isinstance(keys, list):
    raise CheckpointError("storage key list missing: file truncated?")
  _check_total(storages, max_bytes)
  view = memoryview(data)
  for key in keys:
    st = storages.get(str(key)) if type(key) in (str, int) else None
    if st is None:
      raise CheckpointError(f"storage {_short.repr(key)} is listed but never used")
    if st.data is not None:
      raise CheckpointError(f"storage {key} is listed twice")
    head = f.read(8)
    if len(head) != 8:
      raise CheckpointError("file ends inside the storage data: truncated?")
    (numel,) = struct.unpack("<q", head)
    if numel != st.numel:
      raise CheckpointError(f"storage {key} holds {numel} elements in its data section but "
                            f"{st.numel} in the pickle: file corrupt")
    start = f.tell()
    if start + st.nbytes > len(data):
      raise CheckpointError("file ends inside the storage data: truncated?")
    st.fill(view[start:start + st.nbytes])  # no copy: the data stays in `data`
    f.seek(start + st.nbytes)
  return obj, storages


def _load_zip(data: bytes, max_bytes: int) -> tuple[Any, dict]:
  # Parsed from memory: a damaged header then cannot make zipfile seek or preallocate
  # a read of the size it declares.
  with zipfile.ZipFile(io.BytesIO(data)) as zf:
    infos = {i.filename: i for i in zf.infolist()}
    pkl = [n for n in infos if n.endswith("data.pkl")]
    if not pkl:
      raise CheckpointError("zip file without data.pkl: not a PyTorch checkpoint")
    prefix = pkl[0][: -len("data.pkl")]
    byteorder = prefix + "byteorder"
    if byteorder in infos:
      if infos[byteorder].file_size > 16 or zf.read(byteorder).strip() != b"little":
        raise CheckpointError("big-endian checkpoints are not supported")
    if infos[pkl[0]].file_size > _MAX_PICKLE_BYTES:
      raise CheckpointError(f"{pkl[0]} declares {infos[pkl[0]].file_size} bytes; an object "
                            f"pickle is far smaller (cap {_MAX_PICKLE_BYTES})")
    f = io.BytesIO(zf.read(pkl[0]))
    scan_pickle(f, pkl[0])
    storages: dict[str, _Storage] = {}
    obj = _SafeUnpickler(f, storages).load()
    _check_total(storages, max_bytes)
    for key, st in storages.items():
      name = f"{prefix}data/{key}"
      info = infos.get(name)
      if info is None:
        raise CheckpointError(f"storage {key} has no entry {name} in the zip: file truncated?")
      # The declared size is checked before anything is inflated (a deflate bomb stops here).
      if info.file_size != st.nbytes:
        raise CheckpointError(f"zip entry {name} declares {info.file_size} bytes; its "
                              f"storage needs {st.nbytes}: file corrupt")
      with zf.open(info) as entry:
        st.fill(entry.read(st.nbytes))
  return obj, storages


def load(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
  """Loads a .pth file safely: returns its object with tensors as numpy arrays.

  Module objects come back as `StateHolder`s; their `state` dict holds torch's
  `_parameters`, `_buffers` and `_modules` (and any plain attributes). A file whose
  tensors declare more than `max_bytes` of data is refused before any is read.
  """
  path = os.fspath(path)
  # OSErrors from here (no such file, a directory, no permission) are the caller's to report.
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    if size > max_bytes + _MAX_PICKLE_BYTES:
      raise CheckpointError(f"{path}: {size / 2**30:.2f} GiB, above the cap of "
                            f"{max_bytes / 2**30:.2f} GiB of tensor data (pass max_bytes=)")
    data = f.read()
  try:
    if data.startswith(b"PK"):
      if not zipfile.is_zipfile(io.BytesIO(data)):
        raise CheckpointError("a zip checkpoint (torch >= 1.6) whose zip directory is "
                              "missing or damaged: file truncated?")
      obj, storages = _load_zip(data, max_bytes)
    else:
      obj, storages = _load_legacy(data, max_bytes)
    copies = _Copies(sum(st.nbytes for st in storages.values()))
    return _materialise(obj, copies, {})
  except CheckpointError as e:
    raise type(e)(f"{path}: {e}") from None
  except MemoryError:
    raise  # a real shortage on this machine: the caps keep hostile files far below one
  except RecursionError:
    raise CheckpointError(f"{path}: its objects are nested too deeply") from None
  except Exception as e:  # pylint: disable=broad-except
    # Parsing hostile bytes raises many kinds (UnpicklingError, EOFError, struct.error,
    # BadZipFile, KeyError, TypeError, ...); nothing from the file was run, so each is just
    # a damaged file.
    raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                          f"{_short.repr(str(e))[1:-1]})") from None


def _materialise(obj, copies: _Copies, memo: dict):
  """Replaces LazyTensors with arrays; shared and cyclic structures stay shared, once each."""
  if id(obj) in memo:
    return memo[id(obj)]
  if isinstance(obj, LazyTensor):
    out = memo[id(obj)] = obj.numpy(copies)
    return out
  if isinstance(obj, StateHolder):
    memo[id(obj)] = obj
    state = obj.__dict__.get("state")
    if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) form
      state = state[0]
    obj.__dict__["state"] = _materialise(state, copies, memo) if state is not None else {}
    return obj
  if isinstance(obj, dict):
    out = memo[id(obj)] = type(obj)() if type(obj) in (dict, collections.OrderedDict) else {}
    for k, v in list(obj.items()):
      out[k] = _materialise(v, copies, memo)
    return out
  if isinstance(obj, list):
    out = memo[id(obj)] = []
    out.extend(_materialise(v, copies, memo) for v in list(obj))
    return out
  if isinstance(obj, tuple):
    # A tuple cannot contain itself except through a list or dict, which are memoised.
    out = memo[id(obj)] = tuple(_materialise(v, copies, memo) for v in obj)
    return out
  return obj


def _state(mod: "StateHolder") -> dict:
  st = mod.__dict__.get("state")
  return st if isinstance(st, dict) else {}


def _group(st: dict, name: str) -> dict:
  g = st.get(name)
  return g if isinstance(g, dict) else {}


def state_dict(obj) -> "collections.OrderedDict[str, np.ndarray]":
  """torch's `state_dict()` of a loaded module (or the dict itself if it is one)."""
  if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
    obj = obj["state_dict"]
  out = collections.OrderedDict()
  # A module shared by two parents is listed under both names, as torch does; a hostile
  # pickle can also make a module its own descendant, or share one module so often that
  # the names multiply: the first is skipped, the second refused.
  path: set[int] = set()
  visits = [0]

  def walk(mod: StateHolder, prefix: str):
    if id(mod) in path:
      return
    visits[0] += 1
    if visits[0] > _MAX_MODULE_VISITS:
      raise CheckpointError(f"more than {_MAX_MODULE_VISITS} named modules (shared "
                            "submodules repeated): not a real model")
    path.add(id(mod))
    st = _state(mod)
    for group in ("_parameters", "_buffers"):
      for name, value in _group(st, group).items():
        if isinstance(value, np.ndarray):
          out[f"{prefix}{name}"] = value
    for name, child in _group(st, "_modules").items():
      if isinstance(child, StateHolder):
        walk(child, f"{prefix}{name}.")
    path.discard(id(mod))

  if isinstance(obj, dict):
    for k, v in obj.items():
      if isinstance(v, np.ndarray):
        out[str(k)] = v
      elif isinstance(v, StateHolder):
        walk(v, f"{k}.")
    return out
  if not isinstance(obj, StateHolder):
    raise CheckpointError(
        f"expected a module or a state dict, found {type(obj).__name__}")
  walk(obj, "")
  return out


def find_modules(obj: StateHolder, class_name: str) -> list[StateHolder]:
  """All submodules of `obj` (itself included) whose class is named `class_name`."""
  found, seen = [], set()
  stack = [obj]
  while stack:
    mod = stack.pop()
    if not isinstance(mod, StateHolder) or id(mod) in seen:
      continue
    seen.add(id(mod))
    if mod.class_name == class_name:
      found.append(mod)
    stack.extend(reversed(list(_group(_state(mod), "_modules").values())))
  return found
