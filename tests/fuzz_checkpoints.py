"""Fuzzes aan_jax.convert.torch_pickle.load under a memory limit: `python fuzz_checkpoints.py SEEDS WORK N SEED`.

Run by tests/test_torch_pickle_hostile.py in a child process, so that a crash shows as a
signal and an allocation past the limit as a MemoryError (RLIMIT_AS) instead of taking the
machine. Each iteration mutates one seed checkpoint: bytes flipped, inserted or cut,
pickle opcodes replaced, dropped or repeated, integer arguments (tensor sizes, strides,
offsets, storage sizes) set to extreme values, zip entries resized. Every outcome must be
a load or a CheckpointError; anything else is printed with the file kept for a rerun.
Last line: `iterations=N loaded=L refused=R failures=F peak_rss_mib=M`.
"""

import io
import os
import pathlib
import pickle
import pickletools
import random
import resource
import shutil
import sys
import traceback
import zipfile

import numpy as np

from aan_jax.convert import torch_pickle

LIMIT = 384 << 20  # address space the reader may add above the interpreter's own
INTERESTING = [-(1 << 63), -(1 << 31), -2, -1, 0, 1, 2, 3, 7, 255, 256, 65535, 1 << 16,
               (1 << 31) - 1, 1 << 31, 1 << 32, 200000, 10**9, (1 << 62) - 1, 1 << 62,
               (1 << 63) - 1, 1 << 63, 1 << 64]
INT_OPS = {"BININT", "BININT1", "BININT2", "LONG1", "LONG4", "INT", "LONG"}
OPCODES = [op.code.encode("latin-1") for op in pickletools.opcodes]


def _ops(data: bytes, start: int, count: int) -> list:
  """(opcode, arg, pos, end) of `count` consecutive pickles starting at `start`."""
  out, f = [], io.BytesIO(data)
  f.seek(start)
  for _ in range(count):
    prev = None
    for op, arg, pos in pickletools.genops(f):
      if prev is not None:
        out[-1] = out[-1][:3] + (pos,)
      out.append((op, arg, pos, None))
      prev = op
    out[-1] = out[-1][:3] + (f.tell(),)
  return out


def _encode_int(x: int) -> bytes:
  body = pickle.encode_long(x)
  return b"\x8a" + bytes([len(body)]) + body


def _mutate_pickle(pkl: bytes, ops: list, rng: random.Random) -> bytes:
  op, _, pos, end = rng.choice(ops)
  kind = rng.random()
  ints = [o for o in ops if o[0].name in INT_OPS]
  if kind < 0.45 and ints:  # tensor metadata: sizes, strides, offsets, storage sizes
    op, _, pos, end = rng.choice(ints)
    value = rng.choice(INTERESTING) if rng.random() < 0.7 else rng.randint(-1000, 1000)
    return pkl[:pos] + _encode_int(value) + pkl[end:]
  if kind < 0.65:  # replace the opcode byte
    return pkl[:pos] + rng.choice(OPCODES) + pkl[pos + 1:]
  if kind < 0.75:  # drop the opcode
    return pkl[:pos] + pkl[end:]
  if kind < 0.85:  # repeat it
    return pkl[:end] + pkl[pos:end] + pkl[end:]
  return _flip(pkl, rng)


def _flip(data: bytes, rng: random.Random) -> bytes:
  b = bytearray(data)
  for _ in range(rng.randint(1, 4)):
    r = rng.random()
    i = rng.randrange(len(b)) if b else 0
    if r < 0.7 and b:
      b[i] = rng.randrange(256)
    elif r < 0.85:
      b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    else:
      del b[i:i + rng.randint(1, 16)]
  return bytes(b)


class Seed:
  """A checkpoint to mutate: its bytes and where its pickles are."""

  def __init__(self, path: pathlib.Path):
    self.data = path.read_bytes()
    self.zip = zipfile.is_zipfile(path)
    if self.zip:
      with zipfile.ZipFile(path) as zf:
        self.entries = {n: zf.read(n) for n in zf.namelist()}
      self.pkl_name = next(n for n in self.entries if n.endswith("data.pkl"))
      self.ops = _ops(self.entries[self.pkl_name], 0, 1)
    else:
      # Five pickles: magic, protocol, system info, the object, the storage keys.
      self.ops = _ops(self.data, 0, 5)
      self.pickles_end = self.ops[-1][3]

  def mutate(self, rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.1:
      return self.data[:rng.randrange(len(self.data))]  # cut short
    if r < 0.2:
      return _flip(self.data, rng)  # raw bytes (zip: mostly bad CRCs and headers)
    if not self.zip:
      return (_mutate_pickle(self.data[:self.pickles_end], self.ops, rng)
              + self.data[self.pickles_end:])
    entries = dict(self.entries)
    if r < 0.3:  # resize a storage entry
      keys = [n for n in entries if "/data/" in n]
      if keys:
        k = rng.choice(keys)
        entries[k] = entries[k][:rng.randrange(len(entries[k]) + 1)] if rng.random() < 0.5 \
            else entries[k] + bytes(rng.randint(1, 64))
    else:
      entries[self.pkl_name] = _mutate_pickle(entries[self.pkl_name], self.ops, rng)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
      for n, b in entries.items():
        zf.writestr(n, b)
    return out.getvalue()


def _touch(obj, depth=0):
  """Reads every array the loader returned (a view must be valid memory)."""
  if depth > 50:
    return
  if isinstance(obj, np.ndarray):
    if obj.size:
      # First and last element of the view: out-of-bounds memory would fault here.
      _ = obj.reshape(-1)[0] if obj.flags.c_contiguous else obj[(0,) * obj.ndim]
      _ = obj[tuple(n - 1 for n in obj.shape)]
      if obj.flags.owndata:
        assert obj.nbytes <= 1 << 20, obj.shape
  elif isinstance(obj, dict):
    for v in list(obj.values())[:1000]:
      _touch(v, depth + 1)
  elif isinstance(obj, (list, tuple)):
    for v in list(obj)[:1000]:
      _touch(v, depth + 1)
  elif isinstance(obj, torch_pickle.StateHolder):
    _touch(obj.__dict__.get("state"), depth + 1)


def main():
  seeds_dir, work, n, seed = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), \
      int(sys.argv[3]), int(sys.argv[4])
  work.mkdir(parents=True, exist_ok=True)
  seeds = [Seed(p) for p in sorted(seeds_dir.glob("*.pth"))]
  assert seeds, seeds_dir
  page = os.sysconf("SC_PAGE_SIZE")
  vm = int(open("/proc/self/statm").read().split()[0]) * page
  resource.setrlimit(resource.RLIMIT_AS, (vm + LIMIT, vm + LIMIT))
  rng = random.Random(seed)
  loaded = refused = failures = 0
  path = work / "m.pth"
  for i in range(n):
    s = rng.choice(seeds)
    path.write_bytes(s.mutate(rng))
    try:
      obj = torch_pickle.load(path)
      _touch(obj)
      if isinstance(obj, (dict, torch_pickle.StateHolder)):
        torch_pickle.state_dict(obj)
        if isinstance(obj, torch_pickle.StateHolder):
          torch_pickle.find_modules(obj, "Linear")
      loaded += 1
    except torch_pickle.CheckpointError as e:
      msg = str(e)
      assert msg.startswith(str(path)) and "\n" not in msg, msg
      refused += 1
    except BaseException:  # pylint: disable=broad-except
      failures += 1
      keep = work / f"failure_{i}.pth"
      shutil.copy(path, keep)
      print(f"FAILURE {i} ({keep}):\n{traceback.format_exc()}", flush=True)
      if failures > 20:
        break
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"iterations={i + 1} loaded={loaded} refused={refused} failures={failures} "
        f"peak_rss_mib={peak:.0f}")


if __name__ == "__main__":
  main()
