"""MediaEval 2017/2018 continuous (LIRIS-ACCEDE long movies): 10-s windows every 5 s.

`tfds build datasets/liris_accede_continuous --manual_dir=DIR --config=mediaeval2017`
"""

from __future__ import annotations

import logging
import pathlib
import re
import sys

import numpy as np
import tensorflow_datasets as tfds

from aan_jax.util import cli
from aan_jax.data.features import FEATURE_DIMS, PAPER_FEATURE_DIMS, FEATURES  # noqa: F401

# The builders' shared readers are the package datasets/_common, imported as `_common` from
# datasets/ on sys.path (datasets/ itself is not a package: it must never shadow the
# `datasets` library). `tfds build datasets/<name>` puts datasets/ there while it imports
# this file, as tests/datasets/_builders.py does; the lines below make sure of it however
# this file is loaded.
_DATASETS = str(pathlib.Path(__file__).resolve().parents[1])
if _DATASETS not in sys.path:
  sys.path.insert(0, _DATASETS)
from _common import annotations as ann  # noqa: E402

log = logging.getLogger(__name__)

_DESCRIPTION = """\
LIRIS-ACCEDE long movies of the MediaEval 2017 and 2018 Emotional Impact of Movies
tasks, cut into 10-s windows every 5 s. Each example: the five features of the window,
its valence and arousal, and the binary fear label (-1 where none is given). One split
per movie; the official dev/test partition is in info.metadata["dev"] / ["test"]
(read it as `split="+".join(info.metadata["dev"])`, so no window is stored twice).
"""

# File-name patterns (CORPORA.md; test names conflict between sources, so both are accepted).
_PATTERNS = {
    "mediaeval2017": {
        "va": [r"(?P<m>.+)-MEDIAEVAL2017-valence_arousal\.txt",
               r"(?P<m>MEDIAEVAL17_\d+)_(valence_arousal|Valence-Arousal)\.txt"],
        "fear": [r"(?P<m>.+)-MEDIAEVAL2017-fear\.txt", r"(?P<m>MEDIAEVAL17_\d+)_(fear|Fear)\.txt"],
        "test": r"MEDIAEVAL17_\d+",
    },
    "mediaeval2018": {
        "va": [r"(?P<m>MEDIAEVAL18_\d+)_Valence-Arousal\.txt"],
        "fear": [r"(?P<m>MEDIAEVAL18_\d+)_Fear\.txt"],
        "test": r"MEDIAEVAL18_(5[4-9]|6[0-5])",  # 54-65 (CORPORA.md)
    },
}


class LirisConfig(tfds.core.BuilderConfig):
  def __init__(self, **kwargs):
    super().__init__(version=tfds.core.Version("1.0.0"), **kwargs)


class Builder(tfds.core.GeneratorBasedBuilder):
  """MediaEval 2017/2018 long movies with per-window features and labels."""

  BUILDER_CONFIGS = [
      LirisConfig(name="mediaeval2017", description="MediaEval 2017: 30 dev + 14 test movies."),
      LirisConfig(name="mediaeval2018", description="MediaEval 2018: movies 0-53 dev, 54-65 test."),
  ]
  DEFAULT_CONFIG_NAME = "mediaeval2017"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Request the MediaEval 2017/2018 Emotional Impact of Movies data (LIRIS-ACCEDE
  continuous movies) at https://liris-accede.ec-lyon.fr/. Put in DIR (--manual_dir),
  anywhere below it:
  - 2017: <Movie>-MEDIAEVAL2017-valence_arousal.txt and <Movie>-MEDIAEVAL2017-fear.txt
    (dev); MEDIAEVAL17_NN_valence_arousal.txt or _Valence-Arousal.txt and
    MEDIAEVAL17_NN_fear.txt (test);
  - 2018: MEDIAEVAL18_NN_Valence-Arousal.txt (one row per second) and optionally
    MEDIAEVAL18_NN_Fear.txt with one fear sequence per line as `start_s end_s`
    (the official 2018 fear format was not available to us; convert it to this);
  - per movie, features/<Movie>.npz from `python -m extract VIDEO --out DIR/features
    --segmentation sliding:10:5`, or the video <Movie>.mp4 anywhere under DIR.
  Movies with labels but no features/video (or the reverse) are skipped with a logged reason.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    feats = {f: tfds.features.Tensor(shape=(d,), dtype=np.float32)
             for f, d in PAPER_FEATURE_DIMS.items()}
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            **feats,
            "valence": tfds.features.Scalar(dtype=np.float32),
            "arousal": tfds.features.Scalar(dtype=np.float32),
            "fear": tfds.features.Scalar(dtype=np.int32),
            "movie": tfds.features.Text(),
            "segment_index": tfds.features.Scalar(dtype=np.int32),
            "start_s": tfds.features.Scalar(dtype=np.float32),
            "end_s": tfds.features.Scalar(dtype=np.float32),
        }),
        homepage="https://liris-accede.ec-lyon.fr/",
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def _download_and_prepare(self, dl_manager, download_config):
    # Beam only when the user asked for a pipeline: plain builds need no Beam runner.
    self._use_beam = bool(download_config.beam_runner or download_config.beam_options)
    return super()._download_and_prepare(dl_manager, download_config)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    # Under `tfds build`, a problem with the user's files is one line, not a traceback.
    with cli.tfds_user_errors():
      return self._splits(dl_manager)

  def _splits(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    pats = _PATTERNS[self.builder_config.name]
    files = [p for p in root.rglob("*.txt") if p.is_file()]
    found: dict[str, dict[str, str]] = {}
    for kind in ("va", "fear"):
      for p in files:
        for pat in pats[kind]:
          m = re.fullmatch(pat, p.name)
          if m:
            found.setdefault(m["m"], {})[kind] = str(p)
    npz = ann.list_stems(root / "features", (".npz",))
    videos = ann.index_files(root, ann.VIDEO_SUFFIXES)
    cache = str(pathlib.Path(dl_manager.download_dir) / "aan_jax_features")
    tasks, skipped = {}, []
    for movie in sorted(found):
      if "va" not in found[movie]:
        skipped.append(f"{movie}: fear labels but no valence/arousal file")
        continue
      source = npz.get(movie) or videos.get(movie)
      if source is None:
        skipped.append(f"{movie}: no features/{movie}.npz or video")
        continue
      tasks[ann.split_name(movie)] = {
          "movie": movie, "source": str(source), "kind": self.builder_config.name,
          "valence_arousal": found[movie]["va"], "fear": found[movie].get("fear"),
          "features": FEATURES, "cache_dir": cache}
    for s in skipped:
      log.warning("LIRIS-ACCEDE continuous: skipping %s", s)
    if not tasks:
      raise ann.CorpusFileError(
          f"manual_dir {root}: no movie has both a valence/arousal file and features or a "
          "video. See datasets/liris_accede_continuous/README.md.")
    test = [s for s, t in tasks.items() if re.fullmatch(pats["test"], t["movie"])]
    from_video = [t["movie"] for t in tasks.values() if not t["source"].endswith(".npz")]
    self.info.metadata.update({
        "dev": [s for s in tasks if s not in test], "test": test,
        "extract_weights": ann.weights_mode() if from_video else "n/a (features given)",
    })
    return {s: self._generate_examples(t) for s, t in tasks.items()}

  def _generate_examples(self, task: dict):
    if getattr(self, "_use_beam", False):
      beam = tfds.core.lazy_imports.apache_beam
      return beam.Create([task]) | beam.FlatMap(ann.window_examples)
    return cli.tfds_user_errors_in(ann.window_examples(task))
