"""Under `tfds build`: data errors are one line and exit 1; a plain build skips a config with
no annotation of its kind. (In-process, with sys.argv as the `tfds` command sets it: a real
`tfds build` takes over a minute on this shared CPU; the README gives the command.)"""

from __future__ import annotations

import sys

import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import _builders  # noqa: E402
from _common import annotations as ann  # noqa: E402
from aan_jax.util import cli  # noqa: E402

_builders.hide_gpus()
cognimuse = _builders.load_module("cognimuse")
dummy = _builders.load_module("cognimuse", "make_dummy_data.py")


def _manual(tmp_path, *, experienced: bool):
  manual = tmp_path / "manual"
  dummy.write_features(manual / "features" / "BMI.npz", 3)
  dummy.write_csv(manual / "annotations" / "BMI.csv", 375)
  if experienced:
    dummy.write_csv(manual / "annotations" / "experienced" / "BMI.csv", 375, seed=1)
  return manual


def _prepare(manual, data, config):
  builder = cognimuse.Builder(data_dir=str(data), config=config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual)))
  return builder


def _as_tfds(monkeypatch, *args):
  monkeypatch.setattr(sys, "argv", ["/venv/bin/tfds", "build", str(_builders.DATASETS /
                                                                   "cognimuse"), *args])
  monkeypatch.delenv("AAN_DEBUG", raising=False)


def test_plain_build_skips_the_config_with_no_annotation(tmp_path, monkeypatch, capsys):
  manual = _manual(tmp_path, experienced=False)
  _as_tfds(monkeypatch, f"--manual_dir={manual}")
  assert cli.under_tfds_build() and not cli.tfds_config_requested()
  builder = _prepare(manual, tmp_path / "data", "experienced")
  err = capsys.readouterr().err
  assert err.splitlines() == [
      f"skipped cognimuse/experienced: no experienced annotation under {manual} (it needs "
      "annotations/experienced/<CODE>.csv or the official viewers' traces "
      "subj<S>_<I>_<LongName>.dat); building intended only. Add them and run with "
      "--config=experienced"]
  assert not builder.is_prepared()
  assert not (tmp_path / "data" / "cognimuse" / "experienced").exists()
  # Asked for by name, the same config fails, in one line (no traceback), exit status 1.
  _as_tfds(monkeypatch, "--config=experienced", f"--manual_dir={manual}")
  with pytest.raises(SystemExit) as e:
    _prepare(manual, tmp_path / "data", "experienced")
  assert e.value.code == 1
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"error: manual_dir {manual}: no movie has "
                                                 "both features"), lines
  # Outside `tfds build` (the Python API), the error is raised as before.
  monkeypatch.setattr(sys, "argv", ["python"])
  with pytest.raises(ann.CorpusFileError, match="experienced annotation"):
    _prepare(manual, tmp_path / "data", "experienced")


def test_plain_build_builds_both_when_both_are_there(tmp_path, monkeypatch, capsys):
  manual = _manual(tmp_path, experienced=True)
  _as_tfds(monkeypatch, f"--manual_dir={manual}")
  assert _prepare(manual, tmp_path / "data", "experienced").is_prepared()
  assert "skipped" not in capsys.readouterr().err


def test_bad_file_during_generation_is_one_line(tmp_path, monkeypatch, capsys):
  manual = _manual(tmp_path, experienced=False)
  path = manual / "annotations" / "BMI.csv"
  lines = path.read_text().splitlines()
  lines[3] = "2,abc,0.1"
  path.write_text("\n".join(lines))
  _as_tfds(monkeypatch, "--config=intended", f"--manual_dir={manual}")
  with pytest.raises(SystemExit) as e:
    _prepare(manual, tmp_path / "data", "intended")
  assert e.value.code == 1
  err = capsys.readouterr().err
  # TFDS's progress bars share stderr (ending in carriage returns); ours is the one line.
  assert err.count("error: ") == 1 and "Traceback" not in err, err
  assert err.split("error: ")[1].splitlines()[0] == (
      f"{path}: unreadable row (could not convert string to float: 'abc'). Expected a header "
      "`frame,arousal,valence` and one row per 25-fps frame."), err
  # AAN_DEBUG=1 shows the traceback (the error itself) instead.
  monkeypatch.setenv("AAN_DEBUG", "1")
  with pytest.raises(ann.CorpusFileError):
    _prepare(manual, tmp_path / "data2", "intended")
