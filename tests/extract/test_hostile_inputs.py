"""`python -m extract` with files cut short, same-name films, bad --out, directories, Ctrl-C."""

import hashlib
import importlib.util
import json
import os
import pathlib

import av
import pytest

from aan_jax.util import cli as aan_cli
from extract import __main__ as cli
from extract import core


def _conftest():
  # This folder's conftest (the tiny video writer), by path: the name `conftest` is shared.
  spec = importlib.util.spec_from_file_location(
      "extract_tests_conftest", pathlib.Path(__file__).with_name("conftest.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


write_video = _conftest().write_video

# The cheapest feature (no model to build): keeps each extraction well under a second.
CHEAP = ["--features", "emobase2010", "--segmentation", "fixed:1", "--no-progress",
         "--device", "cpu"]


def _faststart(src, dst):
  """Remuxes an mp4 with its index (moov) first, as streaming sites serve them."""
  with av.open(str(src)) as i, av.open(str(dst), "w", options={"movflags": "faststart"}) as o:
    streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
    for packet in i.demux():
      if packet.dts is None:
        continue
      packet.stream = streams[packet.stream.index]
      o.mux(packet)
  return dst


@pytest.fixture(scope="module")
def films(tmp_path_factory):
  d = tmp_path_factory.mktemp("films")
  write_video(d / "plain.mp4", seconds=6.0, width=32, height=32)
  _faststart(d / "plain.mp4", d / "whole.mp4")
  data = (d / "whole.mp4").read_bytes()
  (d / "cut.mp4").write_bytes(data[: len(data) * 6 // 10])
  write_video(d / "whole.mkv", seconds=6.0, width=32, height=32)
  data = (d / "whole.mkv").read_bytes()
  (d / "cut.mkv").write_bytes(data[: len(data) * 6 // 10])
  (d / "a").mkdir()
  (d / "b").mkdir()
  write_video(d / "a" / "film.mp4", seconds=2.0, width=32, height=32)
  write_video(d / "b" / "film.mp4", seconds=3.0, width=32, height=32)
  return d


def _sha(path):
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _failed_lines(err):
  return [line for line in err.splitlines() if "FAILED" in line]


@pytest.mark.parametrize("name", ["cut.mp4", "cut.mkv"])
def test_cut_short_fails_unless_allowed(films, tmp_path, capsys, name):
  out = tmp_path / "out"
  assert cli.main([str(films / name), "--out", str(out)] + CHEAP) == 1
  err = capsys.readouterr().err
  lines = _failed_lines(err)
  assert len(lines) == 1 and "Traceback" not in err, err
  assert f"{films / name}: cut short (a partial download?): its container declares 6." in lines[0]
  assert "--allow-truncated" in lines[0]
  if name.endswith(".mp4"):
    assert "and 150 frames" in lines[0]
  assert list(out.iterdir()) == []  # nothing written
  # The escape: what is there is extracted, and the shortfall is on record.
  assert cli.main([str(films / name), "--out", str(out), "--allow-truncated"] + CHEAP) == 0
  assert "TRUNCATED file" in capsys.readouterr().out
  meta = json.loads(core.load_npz(out / f"cut.npz")["metadata"])
  assert meta["truncated"]["missing_s"] > 1.5 and meta["num_segments"] < 5
  # The whole files pass as whole.
  assert cli.main([str(films / f"whole{name[3:]}"), "--out", str(out)] + CHEAP) == 0
  meta = json.loads(core.load_npz(out / "whole.npz")["metadata"])
  assert meta["truncated"] is None and meta["num_segments"] == 6


def test_same_name_films_are_not_replaced(films, tmp_path, capsys):
  out = tmp_path / "out"
  a, b = films / "a" / "film.mp4", films / "b" / "film.mp4"
  assert cli.main([str(a), "--out", str(out)] + CHEAP) == 0
  before = (out / "film.npz").read_bytes()
  capsys.readouterr()
  assert cli.main([str(b), "--out", str(out)] + CHEAP) == 1
  lines = _failed_lines(capsys.readouterr().err)
  assert len(lines) == 1 and f"{b}: {out / 'film.npz'} was made from a different file " \
      f"(film.mp4, sha256 {_sha(a)[:12]}...); not replaced (use --overwrite" in lines[0], lines
  assert (out / "film.npz").read_bytes() == before
  # A file that is not an extractor output is not replaced either.
  (out / "film.npz").write_bytes(b"someone's notes")
  assert cli.main([str(b), "--out", str(out)] + CHEAP) == 1
  assert "is not a readable extractor output" in capsys.readouterr().err
  assert (out / "film.npz").read_bytes() == b"someone's notes"
  # --overwrite says: replace it.
  assert cli.main([str(b), "--out", str(out), "--overwrite"] + CHEAP) == 0
  meta = json.loads(core.load_npz(out / "film.npz")["metadata"])
  assert meta["source"]["sha256"] == _sha(b)


def test_unusable_out_is_found_before_any_model(films, tmp_path, capsys, monkeypatch):
  def no_models(*a, **k):
    raise AssertionError("a model was loaded before --out was checked")
  monkeypatch.setattr(core, "_make", no_models)
  blocker = tmp_path / "file.txt"
  blocker.write_text("x")
  for out, why in [(blocker, "exists and is not a directory"),
                   (blocker / "sub", "cannot write there (Not a directory)")]:
    assert cli.main([str(films / "whole.mp4"), "--out", str(out)] + CHEAP) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: --out {out}: {why}" + (
        "; nothing was extracted" if "cannot" in why else "")], err
  if os.geteuid() != 0:  # root writes anywhere: a read-only folder stops only other users
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    assert cli.main([str(films / "whole.mp4"), "--out", str(ro)] + CHEAP) == 1
    assert "cannot write there (Permission denied)" in capsys.readouterr().err
  assert blocker.read_text() == "x"
  # --debug: the traceback instead of the line.
  with pytest.raises(aan_cli.UserError):
    cli.main([str(films / "whole.mp4"), "--out", str(blocker), "--debug"] + CHEAP)


def test_directory_is_named_as_such(films, tmp_path, capsys):
  assert cli.main([str(films / "a"), "--out", str(tmp_path / "out")] + CHEAP) == 1
  lines = _failed_lines(capsys.readouterr().err)
  assert lines == [f"extract: FAILED {films / 'a'}: is a directory, not a media file (give the "
                   f"files in it, e.g. {films / 'a'}/*.mp4)"]


def test_ctrl_c_says_what_was_kept(films, tmp_path, capsys, monkeypatch):
  real = core.extract_file
  calls = []

  def interrupted_on_second(*a, **k):
    calls.append(a[0])
    if len(calls) == 2:
      raise KeyboardInterrupt
    return real(*a, **k)
  monkeypatch.setattr(core, "extract_file", interrupted_on_second)
  monkeypatch.delenv("AAN_DEBUG", raising=False)
  out = tmp_path / "out"
  argv = [str(films / "a" / "film.mp4"), str(films / "whole.mkv"), str(films / "plain.mp4"),
          "--out", str(out)] + CHEAP
  assert cli.main(argv) == 130
  err = capsys.readouterr().err
  assert err.strip().splitlines()[-1] == (
      f"interrupted: 1 of 3 files done in {out}/ (nothing half-written is left); run the same "
      "command to resume: finished files are skipped"), err
  assert "Traceback" not in err
  assert sorted(p.name for p in out.iterdir()) == ["film.npz"]  # no temp file left
  # Resuming skips what was done.
  monkeypatch.setattr(core, "extract_file", real)
  assert cli.main(argv) == 0
  assert "already done" in capsys.readouterr().out
  assert sorted(p.name for p in out.iterdir()) == ["film.npz", "plain.npz", "whole.npz"]


def test_decoder_keeps_the_frames_before_the_cut(films):
  """--allow-truncated on video: the partial last packet ends decoding; segments before it
  are whole (the Decoder alone, so that no video model is needed here)."""
  from extract import media  # pylint: disable=g-import-not-at-top
  path = str(films / "cut.mp4")
  info = media.probe(path)
  short = info.shortfall()
  assert short["declared_frames"] == 150 and 60 < short["found_frames"] < 110
  plan = media.plan_segments(media.parse_segmentation("fixed:1"), info.duration_s)
  strict = media.Decoder(path, info, plan, video=True, audio=True)
  with pytest.raises(media.MediaError, match="cut.mp4: corrupt or truncated"):
    list(strict.segments())
  dec = media.Decoder(path, info, plan, video=True, audio=True, tolerate_errors=True)
  segs = list(dec.segments())
  assert [i for i, _ in segs] == list(range(len(plan.start_s))) and len(segs) >= 2
  assert all(f.shape == (25, 224, 224, 3) for _, f in segs)
  assert dec.stopped_early and len(dec.audio) >= (len(segs) - 0.1) * media.AUDIO_RATE


def test_weights_pickle_bombs_are_refused_before_unpickling(tmp_path):
  """A few bytes that would make the C unpickler allocate gigabytes (a memo slot far out,
  a huge buffer length) are refused by the opcode scan; a good file still loads."""
  import pickle  # pylint: disable=g-import-not-at-top
  import struct  # pylint: disable=g-import-not-at-top
  import tracemalloc  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from extract import weights  # pylint: disable=g-import-not-at-top
  good = tmp_path / "good.pkl"
  good.write_bytes(pickle.dumps({"params": {"w": np.arange(3.0)}}, protocol=4))
  assert weights.load_numpy_pickle(good, "i3d")["params"]["w"].tolist() == [0.0, 1.0, 2.0]
  # LONG_BINPUT 50,000,000: the memo table would be grown (and zeroed) to 800 MB.
  memo = b"\x80\x02}r" + struct.pack("<I", 50_000_000) + b"."
  huge = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"."  # BINBYTES8 of 1 TiB
  for name, data, why in [("memo", memo, "memo slot 50000000"), ("huge", huge, "truncated")]:
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(data)
    tracemalloc.start()
    try:
      with pytest.raises(ValueError, match=f"{name}.pkl: not a readable i3d weight file .*{why}"):
        weights.load_numpy_pickle(path, "i3d")
      peak = tracemalloc.get_traced_memory()[1]
    finally:
      tracemalloc.stop()
    assert peak < 8 << 20, (name, peak)
