"""The real `tfds build` command on bad data for raf_db, videoemotion8 and ekman6: one line
`error: <file>: <what is wrong>` on stderr (besides TensorFlow's own startup noise), no
traceback, exit status 1. Each case is a copy of the builder's dummy data with one thing
broken (about 20 s a build on this CPU)."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("tensorflow_datasets")

import _builders  # noqa: E402

# TensorFlow/absl startup lines ("I0000 00:00:... cudart_stub.cc:31] ...", "WARNING: All log
# messages ...", "To enable the following instructions: ...") and its log lines: not ours.
_NOISE = re.compile(r"^([IWEF]\d{4} |WARNING|INFO|To enable the following instructions)")
# TFDS's progress bars share stderr: tqdm redraws them with carriage returns and cursor moves
# ("Generating train examples...: 0 examples [00:00, ? examples/s]\x1b[A", "Shuffling
# <file>...: 0%| | 0/4 [...]"), and a line printed while one is drawn starts right after it.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BAR = re.compile(r"^\s*(Generating|Shuffling) .*?\.\.\.:[^\]]*\]")


def _our_lines(stderr: bytes) -> list[str]:
  """stderr's lines, less TensorFlow's noise and TFDS's progress bars."""
  out = []
  for line in stderr.decode("utf-8", "replace").split("\n"):
    for part in _ANSI.sub("\r", line).split("\r"):
      part = _BAR.sub("", part).strip()
      if part and not _NOISE.match(part):
        out.append(part)
  return out


def _manual(tmp_path, name: str) -> pathlib.Path:
  manual = tmp_path / "manual"
  shutil.copytree(_builders.DATASETS / name / "dummy_data", manual)
  return manual


def _tfds_build(tmp_path, name: str, manual, *args) -> tuple[int, list[str], str]:
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
  env.pop("AAN_DEBUG", None)
  tfds_cli = pathlib.Path(sys.executable).with_name("tfds")
  proc = subprocess.run(
      [str(tfds_cli), "build", str(_builders.DATASETS / name), *args, f"--manual_dir={manual}",
       f"--data_dir={tmp_path / 'data'}", f"--download_dir={tmp_path / 'downloads'}"],
      capture_output=True, env=env, cwd=tmp_path, check=False, timeout=600)
  return proc.returncode, _our_lines(proc.stderr), proc.stderr.decode("utf-8", "replace")


def _assert_one_line(result, expected: str):
  rc, ours, err = result
  assert "Traceback" not in err, err[-3000:]
  assert ours == [expected], err[-3000:]
  assert rc == 1, err[-3000:]


def _replace_line(path: pathlib.Path, old: str, new: str):
  text = path.read_text()
  assert old in text
  path.write_text(text.replace(old, new, 1))


def test_raf_db_bad_label_is_one_line(tmp_path):
  manual = _manual(tmp_path, "raf_db")
  lst = manual / "basic" / "EmoLabel" / "list_patition_label.txt"
  _replace_line(lst, "train_00002.jpg 1", "train_00002.jpg 9")
  _assert_one_line(_tfds_build(tmp_path, "raf_db", manual),
                   f"error: {lst}:2: 'train_00002.jpg 9' is not '<train|test>_<n>.jpg <1-7>'")


def test_raf_db_missing_list_file_is_one_line(tmp_path):
  manual = _manual(tmp_path, "raf_db")
  (manual / "basic" / "EmoLabel" / "list_patition_label.txt").unlink()
  _assert_one_line(_tfds_build(tmp_path, "raf_db", manual),
                   f"error: manual_dir {manual}: no basic/EmoLabel/list_patition_label.txt "
                   "below it. See datasets/raf_db/README.md.")


def test_raf_db_unreadable_image_is_one_line(tmp_path):
  manual = _manual(tmp_path, "raf_db")
  image = manual / "basic" / "Image" / "aligned" / "test_0002_aligned.jpg"
  image.write_bytes(b"not a jpeg")
  rc, ours, err = _tfds_build(tmp_path, "raf_db", manual)
  assert "Traceback" not in err, err[-3000:]
  assert len(ours) == 1 and ours[0].startswith(f"error: {image}: not a readable image ("), err[-3000:]
  assert ours[0].endswith("re-extract it from RAF-DB's aligned.zip"), ours
  assert rc == 1, err[-3000:]


def test_videoemotion8_bad_label_is_one_line(tmp_path):
  manual = _manual(tmp_path, "videoemotion8")
  lst = manual / "lists" / "trainlist01.txt"
  _replace_line(lst, "Joy/j1 5", "Joy/j1 12")
  _assert_one_line(_tfds_build(tmp_path, "videoemotion8", manual, "--config=resnet101"),
                   f"error: {lst}:4: label 12 is outside 1..8")


def test_videoemotion8_missing_list_file_is_one_line(tmp_path):
  manual = _manual(tmp_path, "videoemotion8")
  (manual / "lists" / "testlist02.txt").unlink()
  _assert_one_line(_tfds_build(tmp_path, "videoemotion8", manual, "--config=resnet101"),
                   f"error: {manual / 'lists' / 'trainlist02.txt'}: split 2 has no "
                   "testlist02.txt")


def test_ekman6_bad_list_line_is_one_line(tmp_path):
  manual = _manual(tmp_path, "ekman6")
  lst = manual / "split" / "trainlist01.txt"
  _replace_line(lst, "joy/v02 4", "joy/v02")
  _assert_one_line(_tfds_build(tmp_path, "ekman6", manual, "--config=resnet101"),
                   f"error: {lst}:2: expected 'Class/video label', got 'joy/v02'")
