"""extract_file, load_npz and the CLI: outputs, metadata, resume, atomic writes, bad files."""

import json

import numpy as np
import pytest

import extract
from extract import __main__ as cli
from extract import core

FEW = "subsegments:2x2"  # 4 frames in all: keeps ResNet-50/I3D/FlowNetS cheap on a CPU


def test_extract_file_all_five_random_weights_deterministic(media_dir):
  r = extract.extract_file(media_dir / "av.mp4", segmentation=FEW, weights="random")
  dims = {"resnet50": 2048, "flownet": 1024, "i3d": 1024, "vggish": 128, "emobase2010": 1582}
  for f, d in dims.items():
    assert r[f].shape == (2, d) and r[f].dtype == np.float32 and np.isfinite(r[f]).all()
  np.testing.assert_allclose(r["start_s"], [0, 3])
  np.testing.assert_allclose(r["end_s"], [3, 6])
  meta = json.loads(r["metadata"])
  assert meta["segmentation"] == FEW and meta["features"] == list(dims)
  assert all(meta["weights"][f]["mode"] == "random" for f in ("resnet50", "flownet", "i3d",
                                                             "vggish"))
  assert len(meta["source"]["sha256"]) == 64 and "torch" in meta["versions"]
  core._EXTRACTORS.clear()  # fresh models: random init must be reproducible, not cached
  again = extract.extract_file(media_dir / "av.mp4", segmentation=FEW, weights="random")
  for f in dims:
    np.testing.assert_array_equal(again[f], r[f])


def test_missing_audio_error_or_nan(media_dir, tmp_path):
  with pytest.raises(extract.MediaError, match="silent.mp4: has no audio stream.*--missing-audio"):
    extract.extract_file(media_dir / "silent.mp4", segmentation="fixed:1", features="audio")
  r = extract.extract_file(media_dir / "silent.mp4", segmentation="subsegments:3x2",
                           features="resnet50,vggish", weights="random", missing_audio="nan")
  assert np.isnan(r["vggish"]).all() and np.isfinite(r["resnet50"]).all()
  assert json.loads(r["metadata"])["nan_features"] == ["vggish"]
  extract.save_npz(r, tmp_path / "silent.npz")
  assert np.isnan(extract.load_npz(tmp_path / "silent.npz")["vggish"]).all()


def test_load_npz_validates(media_dir, tmp_path):
  r = extract.extract_file(media_dir / "av.mp4", segmentation="fixed:2", features="vggish",
                           weights="random")
  good = tmp_path / "good.npz"
  extract.save_npz(r, good)
  back = extract.load_npz(good)
  np.testing.assert_array_equal(back["vggish"], r["vggish"])
  assert back["metadata"] == r["metadata"] and back["vggish"].shape == (3, 128)
  with np.load(good, allow_pickle=False) as z:  # metadata is a 0-d unicode array
    assert z["metadata"].shape == () and z["metadata"].dtype.kind == "U"
  cases = {"shape": dict(r, vggish=r["vggish"][:, :100]),
           "NaN": dict(r, vggish=np.full_like(r["vggish"], np.nan)),
           "end_s": dict(r, end_s=r["end_s"][:2])}
  for what, bad in cases.items():
    p = tmp_path / f"bad_{what}.npz"
    extract.save_npz(bad, p)
    with pytest.raises(ValueError, match=f"bad_{what}.npz"):
      extract.load_npz(p)
  (tmp_path / "junk.npz").write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="junk.npz: not a readable .npz"):
    extract.load_npz(tmp_path / "junk.npz")


def test_cli_bad_files_resume_and_exit_status(media_dir, tmp_path, capsys):
  out = tmp_path / "out"
  files = [str(media_dir / n) for n in ("av.mp4", "corrupt.mp4", "notes.txt", "truncated.mp4",
                                        "short.mp4", "gray.mkv")]
  argv = files + ["--out", str(out), "--segmentation", "fixed:2.5", "--features", "audio",
                  "--no-progress", "--weights", "random", "--missing-audio", "nan"]
  assert cli.main(argv) == 1
  err = capsys.readouterr().err
  for name in ("corrupt.mp4", "notes.txt", "truncated.mp4", "short.mp4"):
    lines = [l for l in err.splitlines() if "FAILED" in l and name in l]
    assert len(lines) == 1, err
  assert "short.mp4: is 2.00 s long, shorter than one 2.5 s segment" in err
  assert sorted(p.name for p in out.iterdir()) == ["av.npz"]  # no temp files, no bad outputs
  data = extract.load_npz(out / "av.npz")
  assert data["vggish"].shape == (2, 128)
  meta = json.loads(data["metadata"])
  assert meta["dropped_tail_s"] == pytest.approx(1.0)
  mtime = (out / "av.npz").stat().st_mtime_ns
  assert cli.main([files[0]] + argv[len(files):]) == 0
  assert "already done" in capsys.readouterr().out
  assert (out / "av.npz").stat().st_mtime_ns == mtime
  # Other options: not done, redone.
  assert cli.main([files[0], "--out", str(out), "--segmentation", "fixed:3", "--features",
                   "vggish", "--no-progress", "--weights", "random"]) == 0
  assert extract.load_npz(out / "av.npz")["vggish"].shape == (2, 128)
  assert "emobase2010" not in extract.load_npz(out / "av.npz")


def test_cli_usage_errors(media_dir, tmp_path, capsys):
  assert cli.main([str(media_dir / "av.mp4"), "--out", str(tmp_path),
                   "--segmentation", "fixed"]) == 2
  assert "bad segmentation" in capsys.readouterr().err
  assert cli.main([str(media_dir / "av.mp4"), "--out", str(tmp_path), "--features", "hog"]) == 2


def test_interrupted_write_leaves_nothing(media_dir, tmp_path, monkeypatch):
  r = {"vggish": np.zeros((1, 128), np.float32), "start_s": np.zeros(1), "end_s": np.ones(1),
       "metadata": "{}"}

  def boom(*a, **k):
    raise KeyboardInterrupt
  monkeypatch.setattr(np, "savez", boom)
  with pytest.raises(KeyboardInterrupt):
    core.save_npz(r, tmp_path / "x.npz")
  assert list(tmp_path.iterdir()) == []


def test_cli_caches_the_i3d_program(media_dir, tmp_path, fresh_compilation_cache):
  """--compilation-cache DIR: I3D's compiled program is written there for later processes."""
  core._EXTRACTORS.clear()
  from extract import i3d  # pylint: disable=g-import-not-at-top
  i3d._pooled_fn.cache_clear()  # a fresh jit: earlier tests compiled this shape in memory
  assert cli.main([str(media_dir / "av.mp4"), "--out", str(tmp_path / "out"), "--features",
                   "i3d", "--segmentation", FEW, "--weights", "random", "--no-progress",
                   "--compilation-cache", str(tmp_path / "xla")]) == 0
  assert [f for f in (tmp_path / "xla").iterdir() if f.name.endswith("-cache")]
