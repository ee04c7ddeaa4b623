"""RAF-DB basic: 7-class facial expressions on aligned 100x100 faces, official train/test lists.

`tfds build datasets/raf_db --manual_dir=DIR`
"""

from __future__ import annotations

import logging
import pathlib
import re
import sys

import numpy as np
import tensorflow_datasets as tfds

from aan_jax.data.classes import FER_EMOTIONS
from aan_jax.util import cli

# The builders' shared readers are the package datasets/_common, imported as `_common` from
# datasets/ on sys.path (datasets/ itself is not a package: it must never shadow the
# `datasets` library). `tfds build datasets/<name>` puts datasets/ there while it imports
# this file, as tests/datasets/_builders.py does; the lines below make sure of it however
# this file is loaded.
_DATASETS = str(pathlib.Path(__file__).resolve().parents[1])
if _DATASETS not in sys.path:
  sys.path.insert(0, _DATASETS)
from _common.annotations import CorpusFileError  # noqa: E402

log = logging.getLogger(__name__)

_DESCRIPTION = """\
The basic subset of the Real-world Affective Faces Database (Li, Deng and Du, CVPR 2017):
about 15,339 face images from the web, each with one of 7 expressions by crowd vote,
split by the authors into about 12,271 training and 3,068 test images
(basic/EmoLabel/list_patition_label.txt). Images are the aligned 100x100 RGB faces
(basic/Image/aligned/<name>_aligned.jpg). `label` uses the class names and order of the
FER-2013 classifier of the faces track (angry, disgust, fear, happy, sad, surprise,
neutral), mapped from RAF-DB's own numbering by name; `raf_label` keeps RAF-DB's 1-7.
"""

# The project's expression classes, in the order of aan_jax.models.fer.EMOTIONS (faces track,
# events), written in aan_jax.data.classes.
CLASSES = FER_EMOTIONS
# RAF-DB's numbering (its README): 1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness,
# 6 Anger, 7 Neutral. Mapped by name: the two orders differ.
RAF_NAMES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry",
             7: "neutral"}
LIST_FILE = "list_patition_label.txt"  # sic, as RAF-DB spells it
_LINE = re.compile(r"^(train|test)_(\d+)\.jpg\s+([1-7])$")


def read_partition(path: pathlib.Path) -> dict[str, list[tuple[str, int]]]:
  """{"train": [(name, raf label 1-7)], "test": [...]} from list_patition_label.txt."""
  out: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
  seen = set()
  try:
    lines = path.read_text(encoding="utf-8").splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise CorpusFileError(f"{path}: cannot be read as text ({e})") from None
  for i, line in enumerate(lines, 1):
    if not line.strip():
      continue
    m = _LINE.match(line.strip())
    if not m:
      raise CorpusFileError(f"{path}:{i}: {line.strip()!r} is not '<train|test>_<n>.jpg <1-7>'")
    name = line.split()[0]
    if name in seen:
      raise CorpusFileError(f"{path}:{i}: {name} is listed twice")
    seen.add(name)
    out[m[1]].append((name, int(m[3])))
  if not seen:
    raise CorpusFileError(f"{path}: lists no image")
  return out


def read_image(path: pathlib.Path) -> np.ndarray:
  """RGB uint8 (H, W, 3) of one image file; a damaged file fails with its name."""
  from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"))
  except (OSError, UnidentifiedImageError, ValueError) as e:
    raise CorpusFileError(f"{path}: not a readable image ({e}); re-extract it from RAF-DB's "
                          "aligned.zip") from None


class Builder(tfds.core.GeneratorBasedBuilder):
  """RAF-DB basic: aligned faces with 7 expression classes, official train/test split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Request RAF-DB from its authors (http://www.whdeng.cn/RAF/model1.html; an agreement for
  non-commercial research use). Unzip the `basic` part so that DIR (--manual_dir) holds,
  anywhere below it:
  - basic/EmoLabel/list_patition_label.txt (lines `train_00001.jpg 5`, `test_0001.jpg 1`);
  - basic/Image/aligned/<name>_aligned.jpg (from aligned.zip), e.g. train_00001_aligned.jpg.
  A listed image that is missing or unreadable fails the build, naming it.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=CLASSES),
            "raf_label": tfds.features.Scalar(dtype=np.int32),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="http://www.whdeng.cn/RAF/model1.html",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    # Under `tfds build`, a problem with the user's files is one line, not a traceback.
    with cli.tfds_user_errors():
      return self._splits(dl_manager)

  def _splits(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    lists = sorted(root.rglob(LIST_FILE))
    if not lists:
      raise CorpusFileError(f"manual_dir {root}: no basic/EmoLabel/{LIST_FILE} below it. "
                            "See datasets/raf_db/README.md.")
    if len(lists) > 1:
      log.warning("RAF-DB: %d copies of %s; using %s", len(lists), LIST_FILE, lists[0])
    partition = read_partition(lists[0])
    basic = lists[0].parent.parent  # basic/EmoLabel/.. -> basic/
    aligned = basic / "Image" / "aligned"
    if not aligned.is_dir():
      raise CorpusFileError(f"{aligned}: no such folder; unzip RAF-DB's aligned.zip there "
                            f"(the images that {lists[0]} lists)")
    return {split: self._generate_examples(aligned, rows)
            for split, rows in partition.items() if rows}

  def _generate_examples(self, aligned: pathlib.Path, rows):
    # A missing or unreadable image, met while the examples are written: one line too.
    return cli.tfds_user_errors_in(self._examples(aligned, rows))

  def _examples(self, aligned: pathlib.Path, rows):
    for name, raf in rows:
      path = aligned / f"{name[:-len('.jpg')]}_aligned.jpg"
      if not path.is_file():
        raise CorpusFileError(f"{path}: listed in {LIST_FILE} but not there; unzip RAF-DB's "
                              "aligned.zip into basic/Image/aligned/")
      yield name, {"image": read_image(path), "label": RAF_NAMES[raf], "raf_label": raf,
                   "file_name": name}
