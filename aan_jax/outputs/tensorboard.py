"""TensorBoard event files of a result: one folder per run, a scalar per tag and epoch.

The event files are written here by hand, for speed: tensorboardX (which writes the same
files with numpy alone) imports PyTorch when it is installed, 3.0 s of the README demo's
45 s on the 2-core CPU, and CLU's metric_writers import TensorFlow. The format is small and
fixed: TFRecord framing (length, masked CRC-32C, data, masked CRC-32C) around `Event`
protocol buffers (tensorboard's event.proto and summary.proto, proto3), a `file_version`
event first, then one `simple_value` summary per scalar. tests/test_tensorboard.py checks
that the records are byte for byte tensorboardX's.
"""

from __future__ import annotations

import math
import os
import re
import socket
import struct
import time

import numpy as np


def _crc32c_table() -> list[int]:
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli, reflected
    table.append(c)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  c = 0xFFFFFFFF
  for b in data:
    c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
  return c ^ 0xFFFFFFFF


def _masked(data: bytes) -> bytes:
  c = crc32c(data)
  return struct.pack("<I", (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    b, n = n & 0x7F, n >> 7
    out.append(b | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # length-delimited (wire type 2)
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int = 0, file_version: str = "",
           tag: str = "", value: float = 0.0) -> bytes:
  """An Event message; proto3 leaves default scalars out, a oneof member is always written."""
  out = b"\x09" + struct.pack("<d", wall_time) if wall_time else b""
  if step:
    out += b"\x10" + _varint(step)
  if file_version:
    out += _field(3, file_version.encode())
  if tag:
    summary_value = _field(1, tag.encode()) + b"\x15" + struct.pack("<f", value)
    out += _field(5, _field(1, summary_value))
  return out


_INVALID_TAG = re.compile(r"[^-/\w\.]")  # TensorFlow's name rule: other characters become _


def clean_tag(tag: str) -> str:
  return _INVALID_TAG.sub("_", tag).lstrip("/")


def record(data: bytes) -> bytes:
  """One TFRecord: little-endian length, its masked CRC-32C, the data, its masked CRC-32C."""
  header = struct.pack("<Q", len(data))
  return header + _masked(header) + data + _masked(data)


class EventWriter:
  """Scalars into `logdir/events.out.tfevents.<time>.<host>`, written on `close`."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    now = time.time()
    self.path = os.path.join(
        logdir, f"events.out.tfevents.{str(now)[:10]}.{socket.gethostname()}")
    self._records = [record(_event(now, file_version="brain.Event:2"))]

  def add_scalar(self, tag: str, value: float, step: int, walltime: float | None = None):
    self._records.append(record(_event(time.time() if walltime is None else walltime,
                                       step, tag=clean_tag(tag), value=float(value))))

  def close(self):
    with open(self.path, "wb") as f:
      f.write(b"".join(self._records))

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def write(directory: str, names, series: dict, final: dict | None = None) -> None:
  """series: tag -> (R, E) per run and epoch (NaN: not trained, left out); final: tag ->
  {run name: value}, written at the last epoch."""
  epochs = max((np.shape(a)[1] for a in series.values()), default=0)
  for r, name in enumerate(names):
    with EventWriter(os.path.join(directory, name.replace("/", "_"))) as w:
      for epoch in range(epochs):
        for tag, arr in series.items():
          v = float(arr[r, epoch])
          if math.isfinite(v):
            w.add_scalar(tag, v, epoch + 1)
      for tag, values in (final or {}).items():
        if name in values:
          w.add_scalar(tag, values[name], epochs)
