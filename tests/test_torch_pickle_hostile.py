"""Hostile and broken checkpoints: every one is refused in one line, or mapped without harm."""

import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

from aan_jax.convert import attendaffectnet as convert
from aan_jax.convert import torch_pickle

sys.path.insert(0, os.path.dirname(__file__))
from hostile_ckpt import Tensor, legacy_checkpoint, object_pickle, zip_checkpoint  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRITERS = {"zip": zip_checkpoint, "legacy": legacy_checkpoint}


def _convert_cli(*args):
  """`python -m aan_jax.convert ...` in a child process (a crash would show as a signal)."""
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  env.pop("AAN_DEBUG", None)
  return subprocess.run([sys.executable, "-m", "aan_jax.convert", *map(str, args)],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def _peak_bytes(fn):
  """Peak memory Python and numpy allocate while fn() runs (tracemalloc sees both)."""
  tracemalloc.start()
  try:
    fn()
  finally:
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
  return peak


@pytest.mark.parametrize("layout", list(WRITERS))
def test_valid_views_match_torch(tmp_path, layout):
  """Shared storages, offsets, transposes and stride-0 expansions read as torch reads them."""
  tensors = {"a": Tensor("0", 6, (2, 3), (3, 1)), "t": Tensor("0", 6, (3, 2), (1, 3)),
             "tail": Tensor("0", 6, (2,), (1,), offset=4),
             "e": Tensor("1", 2, (4, 2), (0, 1)), "i": Tensor("2", 3, (3,), (1,), dtype="int64"),
             "empty": Tensor("3", 0, (0, 5), (5, 1))}
  path = WRITERS[layout](tmp_path / "ok.pth", tensors)
  ours = torch_pickle.load(path)
  torch = pytest.importorskip("torch")
  theirs = torch.load(path, weights_only=True)
  for k, v in theirs.items():
    np.testing.assert_array_equal(ours[k], v.numpy(), err_msg=k)
    assert ours[k].dtype == v.numpy().dtype, k
  # The expansion is a read-only view of its 2-element storage, never expanded in memory.
  assert not ours["e"].flags.writeable and ours["e"].strides[0] == 0
  assert ours["a"].flags.writeable and ours["a"].flags.c_contiguous


@pytest.mark.parametrize("layout", list(WRITERS))
@pytest.mark.parametrize("tensor,why", [
    (Tensor("0", 4, (2000,), (-1,), offset=3), "a stride is -1"),
    (Tensor("0", 4, (2, 2), (2, 1), offset=-1), "the storage offset is -1"),
    (Tensor("0", 4, (-2, 2), (2, 1)), "a size is -2"),
    (Tensor("0", 4, (3,), (2,)), r"reach element 4 of a storage of 4"),
    (Tensor("0", 4, (2,), (1,), offset=3), r"reach element 4 of a storage of 4"),
    (Tensor("0", 4, (2, 2**62), (1, 1)), r"a size is 4611686018427387904"),
    (Tensor("0", 4, (2**31, 2**31, 2), (0, 0, 1)), "too many elements"),
    (Tensor("0", 4, (1,) * 40, (1,) * 40), "40 dimensions"),
    (Tensor("0", 4, (2, 2), (1,)), "differ in length"),
])
def test_malformed_views_are_refused(tmp_path, layout, tensor, why):
  path = WRITERS[layout](tmp_path / "bad.pth", {"w": tensor})
  with pytest.raises(torch_pickle.CheckpointError, match=why) as e:
    torch_pickle.load(path)
  assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_negative_stride_cli_one_line_no_crash(tmp_path):
  """The issue's 645-byte file: a segmentation fault before; one line and exit 1 now."""
  path = zip_checkpoint(tmp_path / "neg.pth", {"linear1.weight": Tensor("0", 4, (2000,), (-1,),
                                                                        offset=3)})
  r = _convert_cli(path, tmp_path / "out")
  assert r.returncode == 1, r
  lines = r.stderr.strip().splitlines()
  assert lines == [f"error: {path}: a tensor on storage 0: a stride is -1; expected an integer "
                   "in [0, 2**62)"]
  assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def test_stride_zero_expansion_is_a_view_not_149_gib(tmp_path):
  path = zip_checkpoint(tmp_path / "expand.pth",
                        {"linear1.weight": Tensor("0", 4, (200000, 200000), (0, 0))})
  out = {}
  peak = _peak_bytes(lambda: out.update(torch_pickle.load(path)))
  w = out["linear1.weight"]
  assert w.shape == (200000, 200000) and not w.flags.writeable and w.strides == (0, 0)
  assert peak < 4 << 20, peak
  # Converting it would copy 149 GiB: refused from the shape, before any copy.
  peak = _peak_bytes(lambda: pytest.raises(convert.ConversionError, convert.from_attendaffectnet,
                                           path).match("40000000000 parameters"))
  assert peak < 4 << 20, peak


def test_storage_cap_before_reading(tmp_path):
  """3 GiB declared: refused from the pickle alone, whatever the zip entry holds."""
  path = zip_checkpoint(tmp_path / "big.pth", {"w": Tensor("0", 3 << 28, (4,), (1,))},
                        data={"0": b"\0" * 16})
  with pytest.raises(torch_pickle.CheckpointError,
                     match=r"declare 3.00 GiB of data, above the cap of 2.00 GiB"):
    torch_pickle.load(path)


def test_deflate_bomb_is_never_inflated(tmp_path):
  """A 64 MiB deflated entry (64 KiB on disk) is refused from its declared size."""
  bomb = b"\0" * (64 << 20)
  # The entry is far bigger than its 4-element storage.
  small = zip_checkpoint(tmp_path / "bomb.pth", {"w": Tensor("0", 4, (4,), (1,))},
                         data={"0": bomb}, compression=zipfile.ZIP_DEFLATED)
  assert os.path.getsize(small) < 1 << 20
  with pytest.raises(torch_pickle.CheckpointError, match="declares 67108864 bytes; its storage "
                                                           "needs 16"):
    peak = _peak_bytes(lambda: torch_pickle.load(small))
  peak = _peak_bytes(lambda: pytest.raises(torch_pickle.CheckpointError, torch_pickle.load, small))
  assert peak < 2 << 20, peak
  # The storage really is that big, but above the caller's cap.
  big = zip_checkpoint(tmp_path / "bomb2.pth", {"w": Tensor("0", 16 << 20, (4,), (1,))},
                       data={"0": bomb}, compression=zipfile.ZIP_DEFLATED)
  peak = _peak_bytes(lambda: pytest.raises(torch_pickle.CheckpointError, torch_pickle.load, big,
                                           max_bytes=1 << 20).match("above the cap"))
  assert peak < 2 << 20, peak
  assert torch_pickle.load(big)["w"].tolist() == [0, 0, 0, 0]  # within the default cap: fine


def test_truncated_files(tmp_path):
  good = zip_checkpoint(tmp_path / "good.pth", {"w": Tensor("0", 4, (4,), (1,))})
  data = good.read_bytes()
  cut = tmp_path / "cut.pth"
  cut.write_bytes(data[: len(data) * 2 // 3])
  with pytest.raises(torch_pickle.CheckpointError, match="zip directory is missing or damaged"):
    torch_pickle.load(cut)
  legacy = legacy_checkpoint(tmp_path / "legacy.pth", {"w": Tensor("0", 4, (4,), (1,))})
  cut.write_bytes(legacy.read_bytes()[:-3])
  with pytest.raises(torch_pickle.CheckpointError, match="truncated"):
    torch_pickle.load(cut)
  # The data section claims more elements than the pickle (and the file) holds.
  lying = legacy_checkpoint(tmp_path / "lying.pth", {"w": Tensor("0", 4, (4,), (1,))},
                            numel_in_data={"0": 2**40})
  with pytest.raises(torch_pickle.CheckpointError, match="1099511627776 elements in its data"):
    torch_pickle.load(lying)


def test_pickle_tricks(tmp_path):
  """Opcodes that allocate what they declare, deep nesting, and BUILD on a checked tensor."""
  tensor = (b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
            b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00"
            b"K\x02\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR")
  cases = {
      "bytearray8": (b"\x80\x05\x96" + struct.pack("<Q", 4) + b"abcd.", "opcode BYTEARRAY8"),
      # The C unpickler would allocate the declared TiB before reading: the scan stops it.
      "bytearray8_huge": (b"\x80\x05\x96" + struct.pack("<Q", 1 << 40) + b".",
                          "expected 1099511627776 bytes in a bytearray8, but only 1 remain"),
      "deep": (b"\x80\x02" + b"]" * 100000 + b"a" * 99999 + b".", "nested too deeply"),
      "build": (b"\x80\x02" + tensor + b"}X\x06\x00\x00\x00offsetJ\xe8\x03\x00\x00sb.",
                "change a tensor"),
      "storage_build": (b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01"
                        b"\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ}X\x05\x00\x00\x00numelJ"
                        b"\xe8\x03\x00\x00sb.", "change a storage"),
  }
  assert pickle.loads(b"\x80\x02" + b"]" * 3 + b"a" * 2 + b".") == [[[]]]  # what "deep" is
  for name, (pkl, why) in cases.items():
    path = zip_checkpoint(tmp_path / f"{name}.pth", {"w": Tensor("0", 4, (2,), (1,))}, pkl=pkl)
    peak = _peak_bytes(lambda: pytest.raises(torch_pickle.CheckpointError, torch_pickle.load,
                                             path).match(why))
    assert peak < 64 << 20, (name, peak)


def test_cyclic_and_shared_modules(tmp_path):
  """A module that is its own child: walks end. A shared child is named twice, as in torch."""
  holder = torch_pickle.StateHolder()
  child = torch_pickle.StateHolder()
  child.__setstate__({"_parameters": {"w": np.ones(2)}, "_modules": {}})
  holder.__setstate__({"_parameters": {}, "_modules": {"a": child, "b": child}})
  holder.state["_modules"]["self"] = holder
  assert list(torch_pickle.state_dict(holder)) == ["a.w", "b.w"]
  assert torch_pickle.find_modules(holder, "?") == [holder, child]
  # From a file: the pickle makes a list that holds itself, and a dict that does.
  pkl = b"\x80\x02]q\x00h\x00a}q\x01X\x01\x00\x00\x00xh\x01s\x86."
  path = zip_checkpoint(tmp_path / "cycle.pth", {}, pkl=pkl)
  lst, dct = torch_pickle.load(path)
  assert lst[0] is lst and dct["x"] is dct


def test_fuzz_never_crashes_or_overallocates(tmp_path):
  """Thousands of mutated small checkpoints, in a child process with a memory limit."""
  torch = pytest.importorskip("torch")
  seeds = tmp_path / "seeds"
  seeds.mkdir()
  gen = torch.Generator().manual_seed(0)
  sd = {"w": torch.randn(3, 4, generator=gen), "b": torch.arange(3),
        "e": torch.randn(1, 3, generator=gen).expand(4, 3), "t": torch.randn(2, 3).t(),
        "h": torch.randn(4, dtype=torch.bfloat16), "s": torch.tensor(2.5)}
  sd["view"] = sd["w"][1:, ::2]
  torch.save(sd, seeds / "sd_zip.pth")
  torch.save(sd, seeds / "sd_legacy.pth", _use_new_zipfile_serialization=False)
  model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
  torch.save(model, seeds / "module_zip.pth")
  torch.save(model, seeds / "module_legacy.pth", _use_new_zipfile_serialization=False)
  zip_checkpoint(seeds / "crafted_zip.pth", {"a": Tensor("0", 6, (2, 3), (3, 1)),
                                               "e": Tensor("1", 2, (4, 2), (0, 1))})
  legacy_checkpoint(seeds / "crafted_legacy.pth", {"a": Tensor("0", 6, (2, 3), (3, 1))})
  n = int(os.environ.get("AAN_FUZZ_ITERATIONS", "3000"))
  env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
  r = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "fuzz_checkpoints.py"),
                      str(seeds), str(tmp_path / "work"), str(n), "0"],
                     capture_output=True, text=True, env=env, timeout=300)
  assert r.returncode == 0, (r.returncode, r.stdout[-3000:], r.stderr[-3000:])
  summary = r.stdout.strip().splitlines()[-1]
  counts = dict(item.split("=") for item in summary.split())
  assert int(counts["iterations"]) == n and int(counts["failures"]) == 0, r.stdout[-3000:]
  # The mutations reach both outcomes: loads (a harmless change) and refusals.
  assert int(counts["loaded"]) > n // 20 and int(counts["refused"]) > n // 2, summary


def test_convert_cli_refuses_before_reading(tmp_path, capsys, monkeypatch):
  """Bad destinations and settings are one line, exit 1, and nothing is read or written."""
  monkeypatch.delenv("AAN_DEBUG", raising=False)
  monkeypatch.setattr(sys, "argv", ["python -m aan_jax.convert"])
  good = zip_checkpoint(tmp_path / "m.pth", {"w": Tensor("0", 4, (4,), (1,))})
  read = []
  monkeypatch.setattr(torch_pickle, "load", lambda *a, **k: read.append(a) or {})
  busy = tmp_path / "busy"
  busy.mkdir()
  (busy / "keep.txt").write_text("x")
  cases = [
      ([str(good), str(busy)], f"error: {busy} exists and is not an empty directory; choose a "
                               "new one (nothing was written)"),
      ([str(good), str(busy / "keep.txt" / "out")],
       f"error: {busy / 'keep.txt' / 'out'}: {busy / 'keep.txt'} is not a directory"),
      ([str(good), str(tmp_path / "o"), "--num-heads", "0"],
       "error: --num-heads 0: must be a positive integer"),
      ([str(tmp_path), str(tmp_path / "o")], f"error: {tmp_path} is a directory; give the .pth "
                                             "file"),
  ]
  for argv, line in cases:
    assert convert.main(argv) == 1, argv
    assert capsys.readouterr().err.splitlines() == [line]
  assert not read and (busy / "keep.txt").read_text() == "x" and not (tmp_path / "o").exists()
  monkeypatch.undo()
  assert convert.main([str(tmp_path / "missing.pth"), str(tmp_path / "o")]) == 1
  assert capsys.readouterr().err.splitlines() == [
      f"error: {tmp_path / 'missing.pth'}: No such file or directory"]
