"""Split lists of the categorical video corpora (VideoEmotion-8, Ekman-6), UCF-101 style.

`classInd.txt` ("1 Anger" per line, 1-based), `trainlistKK.txt` ("Class/video label"),
`testlistKK.txt` ("Class/video", a label optional) for splits KK = 01, 02, ... Videos
are keyed by "Class/video": VideoEmotion-8 lists one video (3527012618_7ceb8fb27b_700)
under two classes, and keying by the bare name (as the authors' JSON did) silently keeps
only one of its labels. Every error names the file and the line.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Iterable, Sequence

from .annotations import VIDEO_SUFFIXES, CorpusFileError, weights_mode

TRAIN, TEST = 1, 2  # values of an example's `split` vector; 0: not in that split's lists


@dataclasses.dataclass(frozen=True)
class Video:
  key: str         # "Class/name", unique
  class_name: str  # canonical spelling
  name: str
  label: int       # 0-based index into the corpus's classes


def read_class_index(path, expected: Sequence[str]) -> tuple[str, ...]:
  """The classes of classInd.txt in its order, spelled as in `expected` (matched by name)."""
  path = pathlib.Path(path)
  canon = {c.lower(): c for c in expected}
  names = []
  for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
    if not line.strip():
      continue
    parts = line.split()
    if len(parts) != 2 or not parts[0].isdigit():
      raise CorpusFileError(f"{path}:{i}: expected 'index ClassName', got {line.strip()!r}")
    if int(parts[0]) != len(names) + 1:
      raise CorpusFileError(f"{path}:{i}: index {parts[0]}, expected {len(names) + 1} "
                            "(1-based, in order)")
    if parts[1].lower() not in canon:
      raise CorpusFileError(f"{path}:{i}: unknown class {parts[1]!r}; expected one of "
                            f"{list(expected)}")
    names.append(canon[parts[1].lower()])
  if sorted(names) != sorted(expected):
    raise CorpusFileError(f"{path}: lists classes {names}; expected each of {list(expected)} once")
  return tuple(names)


def read_split_list(path, index_classes: Sequence[str], classes: Sequence[str],
                    labelled: bool) -> list[Video]:
  """Entries of a train or test list; labels (1-based, classInd order) must match the folder."""
  path = pathlib.Path(path)
  canon = {c.lower(): c for c in classes}
  out, seen = [], {}
  for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
    text = line.strip()
    if not text:
      continue
    parts = text.rsplit(None, 1)
    label = None
    if len(parts) == 2 and re.fullmatch(r"\d+", parts[1]):
      text, label = parts[0], int(parts[1])
    elif labelled:
      raise CorpusFileError(f"{path}:{i}: expected 'Class/video label', got {line.strip()!r}")
    if "/" not in text:
      raise CorpusFileError(f"{path}:{i}: expected 'Class/video', got {text!r}")
    cls, name = text.split("/", 1)
    if cls.lower() not in canon or not name:
      raise CorpusFileError(f"{path}:{i}: unknown class folder {cls!r}; expected one of "
                            f"{list(classes)}")
    cls = canon[cls.lower()]
    if label is not None:
      if not 1 <= label <= len(index_classes):
        raise CorpusFileError(f"{path}:{i}: label {label} is outside 1..{len(index_classes)}")
      if index_classes[label - 1] != cls:
        raise CorpusFileError(f"{path}:{i}: label {label} is {index_classes[label - 1]} in "
                              f"classInd.txt, but the video is in the {cls} folder")
    key = f"{cls}/{name}"
    if key in seen:
      raise CorpusFileError(f"{path}:{i}: {key} is listed twice (first on line {seen[key]})")
    seen[key] = i
    out.append(Video(key, cls, name, classes.index(cls)))
  if not out:
    raise CorpusFileError(f"{path}: lists no video")
  return out


def find_split_lists(root) -> dict[int, tuple[pathlib.Path, pathlib.Path]]:
  """{split number: (trainlist, testlist)} found anywhere under root; both must exist."""
  root = pathlib.Path(root)
  found: dict[str, dict[int, pathlib.Path]] = {"train": {}, "test": {}}
  for p in sorted(root.rglob("*list*.txt")):
    m = re.fullmatch(r"(train|test)list(\d+)\.txt", p.name, re.IGNORECASE)
    if m:
      k = int(m.group(2))
      if k in found[m.group(1).lower()]:
        raise CorpusFileError(f"{p}: a second {m.group(1)} list for split {k} "
                              f"(the first is {found[m.group(1).lower()][k]})")
      found[m.group(1).lower()][k] = p
  for a, b in (("train", "test"), ("test", "train")):
    for k in sorted(set(found[a]) - set(found[b])):
      raise CorpusFileError(f"{found[a][k]}: split {k} has no {b}list{k:02d}.txt")
  return {k: (found["train"][k], found["test"][k]) for k in sorted(found["train"])}


def read_splits(root, classes: Sequence[str]) -> tuple[dict[str, Video], dict[str, list[int]],
                                                        tuple[int, ...]]:
  """(videos by key, split membership per key: TRAIN/TEST/0 per split, split numbers)."""
  root = pathlib.Path(root)
  lists = find_split_lists(root)
  if not lists:
    raise CorpusFileError(f"manual_dir {root}: no trainlistKK.txt / testlistKK.txt found")
  ind = next(iter(sorted(root.rglob("classInd.txt"))), None)
  index_classes = read_class_index(ind, classes) if ind else tuple(classes)
  videos: dict[str, Video] = {}
  member: dict[str, list[int]] = {}
  numbers = tuple(lists)
  for j, k in enumerate(numbers):
    train = read_split_list(lists[k][0], index_classes, classes, labelled=True)
    test = read_split_list(lists[k][1], index_classes, classes, labelled=False)
    both = sorted({v.key for v in train} & {v.key for v in test})
    if both:
      raise CorpusFileError(f"{lists[k][1]}: {both[0]} is also in {lists[k][0].name} "
                            f"({len(both)} such videos)")
    for role, entries in ((TRAIN, train), (TEST, test)):
      for v in entries:
        videos.setdefault(v.key, v)
        member.setdefault(v.key, [0] * len(numbers))[j] = role
  return videos, member, numbers


def duplicate_names(videos: Iterable[Video]) -> dict[str, list[str]]:
  """Video names listed under more than one class: {name: [classes]}."""
  by_name: dict[str, list[str]] = {}
  for v in videos:
    by_name.setdefault(v.name, []).append(v.class_name)
  return {n: sorted(c) for n, c in sorted(by_name.items()) if len(c) > 1}


def _class_of(parts: Sequence[str], classes: Sequence[str]) -> str | None:
  """The class a file's folders name: a folder called Class, or ending in -Class
  (VideoEmotionDataset3-Fear/youtube/...)."""
  for part in reversed(parts):
    low = part.lower()
    for c in classes:
      if low == c.lower() or low.endswith("-" + c.lower()):
        return c
  return None


def index_sources(root, classes: Sequence[str], features_folder: str
                  ) -> dict[str, pathlib.Path]:
  """{"Class/name": source}: <features_folder>/Class/name.npz first, else a video file whose
  stem is the name under a folder of that class. Names may hold dots (an embedded .avi):
  only the last suffix is the file type."""
  root = pathlib.Path(root)
  out: dict[str, pathlib.Path] = {}
  feats = root / features_folder
  for p in sorted(root.rglob("*")):
    if not p.is_file():
      continue
    is_npz = p.suffix.lower() == ".npz"
    if not is_npz and p.suffix.lower() not in VIDEO_SUFFIXES:
      continue
    rel = p.relative_to(root).parts
    if is_npz and not p.is_relative_to(feats):
      continue
    cls = _class_of(rel[:-1], classes)
    if cls is None:
      continue
    key = f"{cls}/{p.name[:-len(p.suffix)]}"
    if is_npz or key not in out:  # features win over the video
      out[key] = p
  return out


# ---- examples (run by the TFDS builders, also on Beam workers) ----

def load_or_extract(source, root, backbone: str, cache_dir) -> dict:
  """A video's VAANet inputs: read from its .npz, or extracted from the video.

  Extraction runs `python -m extract.vaanet_features` in a child process (torch next to
  TensorFlow, as in `tfds build`, crashes); its output stays in cache_dir/<backbone>/ and
  is reused when the video, backbone and weights match.
  """
  import json, subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  from extract import vaanet_features  # pylint: disable=g-import-not-at-top  (numpy only)
  path = pathlib.Path(source)
  if path.suffix.lower() == ".npz":
    try:
      return vaanet_features.load(path, backbone)
    except ValueError as e:
      raise CorpusFileError(str(e)) from None
  weights = weights_mode()
  out = pathlib.Path(cache_dir) / backbone
  cmd = [sys.executable, "-m", "extract.vaanet_features", str(path), "--out", str(out),
         "--root", str(root), "--backbone", backbone, "--weights", weights]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  rel = path.relative_to(root)
  target = out / rel.with_name(rel.name[:-len(rel.suffix)] + ".npz")
  if proc.returncode != 0 or not target.is_file():
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    raise CorpusFileError(f"{path}: feature extraction failed (exit {proc.returncode}): "
                          f"{' | '.join(tail)}. Run `{' '.join(cmd)}` to see the full error.")
  got = vaanet_features.load(target, backbone)
  mode = json.loads(got.get("metadata", "{}")).get("weights", {}).get("mode")
  if mode != weights:
    raise CorpusFileError(f"{target}: extracted with {mode} weights, expected {weights}; "
                          "delete it and build again")
  return got


def video_examples(task: dict):
  """One example per listed video: its inputs, label and split membership."""
  feats = load_or_extract(task["source"], task["root"], task["backbone"], task["cache_dir"])
  yield task["key"], {"visual": feats["visual"], "mfcc": feats["mfcc"], "label": task["label"],
                      "video": task["key"], "split": task["split"]}


def build_tasks(root, classes: Sequence[str], backbone: str, features_folder: str,
                cache_dir, corpus: str, log=None) -> tuple[list[dict], dict]:
  """The builders' work list (one task per listed video with a source) and their metadata."""
  root = pathlib.Path(root)
  videos, member, numbers = read_splits(root, classes)
  sources = index_sources(root, classes, features_folder)
  tasks, missing = [], []
  for key in sorted(videos):
    src = sources.get(key)
    if src is None:
      missing.append(key)
      continue
    tasks.append({"key": key, "source": str(src), "root": str(root), "backbone": backbone,
                  "cache_dir": str(cache_dir), "label": videos[key].label, "split": member[key]})
  if missing and log is not None:
    log.warning("%s: %d of %d listed videos have neither %s/<Class>/<video>.npz nor a video "
                "file and are skipped (first: %s)", corpus, len(missing), len(videos),
                features_folder, missing[0])
  if not tasks:
    raise CorpusFileError(f"manual_dir {root}: none of the {len(videos)} listed videos has "
                          f"{features_folder}/<Class>/<video>.npz or a video file under a "
                          "folder of its class")
  from_video = [t["source"] for t in tasks if not t["source"].endswith(".npz")]
  meta = {"splits": list(numbers), "missing": missing,
          "duplicate_names": duplicate_names(videos.values()),
          "from_video": len(from_video)}
  return tasks, meta


def tfds_features(backbone: str, classes: Sequence[str]):
  """The builders' FeaturesDict (imports TFDS: call it from a builder only)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  dims = {"resnet101": 2048, "i3d": 1024}  # extract.vaanet_features.BACKBONES
  return tfds.features.FeaturesDict({
      "visual": tfds.features.Tensor(shape=(12, 16, dims[backbone]), dtype=np.float32),
      "mfcc": tfds.features.Tensor(shape=(4096, 32), dtype=np.float32),
      "label": tfds.features.ClassLabel(names=list(classes)),
      "video": tfds.features.Text(),
      "split": tfds.features.Tensor(shape=(None,), dtype=np.int8),
  })
