"""Writes torch checkpoints opcode by opcode (no torch), so tests can make them say anything.

`zip_checkpoint` and `legacy_checkpoint` write a state dict `{name: Tensor(...)}` in torch's
two layouts, with whatever sizes, strides, offsets and storage sizes a test asks for.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import struct
import zipfile

import numpy as np

from aan_jax.convert import torch_pickle

_STORAGE = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage",
            np.dtype(np.float64): "DoubleStorage", np.dtype(np.uint8): "ByteStorage"}


@dataclasses.dataclass
class Tensor:
  """A tensor over storage `key`; `numel` is the storage size the pickle declares."""
  key: str
  numel: int
  size: tuple
  stride: tuple
  offset: int = 0
  dtype: str = "float32"


def _int(x: int) -> bytes:
  if 0 <= x < 256:
    return b"K" + bytes([x])  # BININT1
  body = pickle.encode_long(x)
  return b"\x8a" + bytes([len(body)]) + body  # LONG1


def _str(s: str) -> bytes:
  b = s.encode()
  return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def _tuple(items) -> bytes:
  return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def object_pickle(tensors: dict, extra: bytes = b"", *, legacy: bool = False) -> bytes:
  """Protocol-2 pickle of an OrderedDict {name: tensor} as torch writes it."""
  out = [b"\x80\x02", b"ccollections\nOrderedDict\n", b")R", b"("]  # OrderedDict()
  for name, t in tensors.items():
    storage = _STORAGE[np.dtype(t.dtype)]
    pid = _tuple([_str("storage"), f"ctorch\n{storage}\n".encode(), _str(t.key), _str("cpu"),
                  _int(t.numel)] + ([b"N"] if legacy else []))
    args = _tuple([pid + b"Q", _int(t.offset), _tuple(map(_int, t.size)),
                   _tuple(map(_int, t.stride)), b"\x89", b"ccollections\nOrderedDict\n)R"])
    out += [_str(name), b"ctorch._utils\n_rebuild_tensor_v2\n", args, b"R"]
  out += [b"u", extra, b"."]  # SETITEMS, STOP
  return b"".join(out)


def storage_bytes(tensors: dict, data: dict | None = None) -> dict:
  """key -> raw bytes: `data[key]` where given, else numel elements counting up."""
  data = dict(data or {})
  for t in tensors.values():
    if t.key not in data:
      data[t.key] = np.arange(t.numel).astype(t.dtype).tobytes()
  return data


def zip_checkpoint(path, tensors: dict, data: dict | None = None, *,
                   compression=zipfile.ZIP_STORED, pkl: bytes | None = None):
  """torch >= 1.6 layout: archive/data.pkl, byteorder, version, data/<key>."""
  with zipfile.ZipFile(path, "w", compression) as zf:
    zf.writestr("archive/data.pkl", pkl if pkl is not None else object_pickle(tensors))
    zf.writestr("archive/byteorder", "little")
    zf.writestr("archive/version", "3\n")
    for key, raw in storage_bytes(tensors, data).items():
      zf.writestr(f"archive/data/{key}", raw)
  return path


def legacy_checkpoint(path, tensors: dict, data: dict | None = None, *,
                      numel_in_data: dict | None = None, pkl: bytes | None = None):
  """torch < 1.6 layout: magic, protocol, sys info, object, keys, then each storage."""
  data = storage_bytes(tensors, data)
  buf = io.BytesIO()
  for header in (torch_pickle.LEGACY_MAGIC, 1001, {"little_endian": True}):
    pickle.dump(header, buf, protocol=2)
  buf.write(pkl if pkl is not None else object_pickle(tensors, legacy=True))
  keys = list(dict.fromkeys(t.key for t in tensors.values()))
  pickle.dump(keys, buf, protocol=2)
  for key in keys:
    itemsize = next(np.dtype(t.dtype).itemsize for t in tensors.values() if t.key == key)
    n = (numel_in_data or {}).get(key, len(data[key]) // itemsize)
    buf.write(struct.pack("<q", n) + data[key])
  with open(path, "wb") as f:
    f.write(buf.getvalue())
  return path
