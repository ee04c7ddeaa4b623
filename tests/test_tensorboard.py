"""aan_jax.outputs.tensorboard writes tensorboardX's event files byte for byte."""

import struct

import numpy as np
import pytest

from aan_jax.outputs import tensorboard


def _records(data: bytes) -> list[bytes]:
  out, i = [], 0
  while i < len(data):
    (n,) = struct.unpack("<Q", data[i:i + 8])
    assert data[i + 8:i + 12] == tensorboard._masked(data[i:i + 8])
    out.append(data[i + 12:i + 12 + n])
    assert data[i + 12 + n:i + 16 + n] == tensorboard._masked(out[-1])
    i += 16 + n
  return out


def test_crc32c_known_values():
  # RFC 3720's test vectors (iSCSI): 32 zero bytes, 32 0xFF bytes, and "123456789".
  assert tensorboard.crc32c(bytes(32)) == 0x8A9136AA
  assert tensorboard.crc32c(b"\xff" * 32) == 0x62A8AB43
  assert tensorboard.crc32c(b"123456789") == 0xE3069283


def test_records_equal_tensorboardx(tmp_path):
  tbx = pytest.importorskip("tensorboardX")
  scalars = [("loss/train", 0.0, 1), ("loss/train", 0.25, 2), ("loss/validation", -3.5e-7, 2),
             ("a tag/with ünïcode", 1234.5678, 300), ("loss/train", float(np.float32(1 / 3)), 2**40)]
  with tbx.SummaryWriter(str(tmp_path / "tbx")) as w:
    for i, (tag, v, step) in enumerate(scalars):
      w.add_scalar(tag, v, step, walltime=1.7e9 + i * 0.125)
  with tensorboard.EventWriter(str(tmp_path / "ours")) as w:
    for i, (tag, v, step) in enumerate(scalars):
      w.add_scalar(tag, v, step, walltime=1.7e9 + i * 0.125)
  theirs = _records(next((tmp_path / "tbx").iterdir()).read_bytes())
  ours = _records(open(w.path, "rb").read())
  assert len(ours) == len(theirs) == len(scalars) + 1
  assert ours[1:] == theirs[1:]
  # The file_version event: the same bytes but for its own wall time.
  (t,) = struct.unpack("<d", theirs[0][1:9])
  assert tensorboard._event(t, file_version="brain.Event:2") == theirs[0]
  assert ours[0][9:] == theirs[0][9:]


def test_write_leaves_out_nan_and_names_folders(tmp_path):
  series = {"loss/train": np.array([[1.0, np.nan], [2.0, 3.0]], np.float32)}
  tensorboard.write(str(tmp_path), ["a/0", "b"], series, final={"ccc": {"b": 0.5}})
  counts = {d.name: len(_records(next(d.iterdir()).read_bytes())) - 1 for d in tmp_path.iterdir()}
  assert counts == {"a_0": 1, "b": 3}
