"""MediaEval 2016 Global (LIRIS-ACCEDE excerpts): valence and arousal per excerpt.

`tfds build datasets/eimt16_global --manual_dir=DIR [--config=excerpt|temporal4]`
"""

from __future__ import annotations

import logging
import pathlib
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
LIRIS-ACCEDE excerpts as used by the MediaEval 2016 Emotional Impact of Movies Global
subtask: 9,800 training excerpts (ACCEDEranking.txt valence/arousal values, 1-5 scale)
and 1,200 test excerpts (MEDIAEVAL16-Global_prediction.txt). `excerpt`: one feature vector
per excerpt (64 frames sampled uniformly); `temporal4`: 4 sub-segments of 16 frames per
excerpt, all with the excerpt's label (for the Temporal AAN).
"""


class Eimt16Config(tfds.core.BuilderConfig):
  """How an excerpt is cut: one part of 64 frames, or 4 parts of 16."""

  def __init__(self, *, parts: int, segmentation: str, folder: str, **kwargs):
    super().__init__(version=tfds.core.Version("1.0.0"), **kwargs)
    self.parts, self.segmentation, self.folder = parts, segmentation, folder


class Builder(tfds.core.GeneratorBasedBuilder):
  """MediaEval 2016 Global excerpts with features and valence/arousal."""

  BUILDER_CONFIGS = [
      Eimt16Config(name="excerpt", parts=1, segmentation="excerpt:64", folder="features",
                   description="One 64-frame feature vector per excerpt."),
      Eimt16Config(name="temporal4", parts=4, segmentation="subsegments:4x16",
                   folder="features_4x16",
                   description="4 sub-segments of 16 frames per excerpt."),
  ]
  DEFAULT_CONFIG_NAME = "excerpt"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Request LIRIS-ACCEDE at https://liris-accede.ec-lyon.fr/ (Discrete set and the
  MediaEval 2016 test set). Put in DIR (--manual_dir):
  - annotations/ACCEDEranking.txt (from LIRIS-ACCEDE-annotations.zip): training labels;
  - MEDIAEVAL16-Global_prediction.txt anywhere under DIR: test labels (clip, valence,
    arousal; no header);
  - for each clip, its features OR its video:
    * config `excerpt`: features/<clip>.npz from
      `python -m extract VIDEOS --out DIR/features --segmentation excerpt:64`;
    * config `temporal4`: features_4x16/<clip>.npz from
      `python -m extract VIDEOS --out DIR/features_4x16 --segmentation subsegments:4x16`;
    * or the videos anywhere under DIR (e.g. data/ACCEDE00000.mp4, unzipped from
      LIRIS-ACCEDE-data.zip); features are then extracted during the build.
  Clips with a label but neither features nor video are skipped (the count is logged).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    parts = self.builder_config.parts
    shape = (lambda d: (d,)) if parts == 1 else (lambda d: (parts, d))
    feats = {f: tfds.features.Tensor(shape=shape(d), dtype=np.float32)
             for f, d in PAPER_FEATURE_DIMS.items()}
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            **feats,
            "valence": tfds.features.Scalar(dtype=np.float32),
            "arousal": tfds.features.Scalar(dtype=np.float32),
            "excerpt": tfds.features.Text(),
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
    cfg = self.builder_config
    ranking = next(iter(sorted(root.rglob("ACCEDEranking.txt"))), None)
    test_file = next(iter(sorted(root.rglob("MEDIAEVAL16-Global_prediction.txt"))), None)
    if ranking is None and test_file is None:
      raise ann.CorpusFileError(
          f"manual_dir {root}: neither annotations/ACCEDEranking.txt nor "
          "MEDIAEVAL16-Global_prediction.txt found. See datasets/eimt16_global/README.md.")
    npz = ann.list_stems(root / cfg.folder, (".npz",))
    videos = ann.index_files(root, ann.VIDEO_SUFFIXES)
    cache = str(pathlib.Path(dl_manager.download_dir) / "aan_jax_features")
    splits, from_video = {}, 0
    for split, path, reader in (("train", ranking, ann.read_accede_ranking),
                                ("test", test_file, ann.read_mediaeval16_global_labels)):
      if path is None:
        log.warning("EIMT16: no label file for the %s split; it is not built", split)
        continue
      labels = reader(path)
      tasks, missing = [], []
      for key, name in enumerate(sorted(labels)):
        source = npz.get(name) or videos.get(name)
        if source is None:
          missing.append(name)
          continue
        from_video += source.suffix != ".npz"
        v, a = labels[name]
        tasks.append({"key": key, "name": name, "source": str(source), "valence": v,
                      "arousal": a, "parts": cfg.parts, "segmentation": cfg.segmentation,
                      "features": FEATURES, "cache_dir": cache})
      if missing:
        log.warning("EIMT16 %s: %d of %d labelled clips have no features or video and are "
                    "skipped (first: %s)", split, len(missing), len(labels), missing[0])
      if not tasks:
        raise ann.CorpusFileError(
            f"{path}: none of its {len(labels)} clips has {cfg.folder}/<clip>.npz or a video "
            "under the manual dir. See datasets/eimt16_global/README.md.")
      splits[split] = self._generate_examples(tasks)
    self.info.metadata.update({
        "segmentation": cfg.segmentation,
        "extract_weights": ann.weights_mode() if from_video else "n/a (features given)",
    })
    return splits

  def _generate_examples(self, tasks: list):
    if getattr(self, "_use_beam", False):
      beam = tfds.core.lazy_imports.apache_beam
      return beam.Create(tasks) | beam.FlatMap(ann.excerpt_examples)
    return cli.tfds_user_errors_in(ex for t in tasks for ex in ann.excerpt_examples(t))
