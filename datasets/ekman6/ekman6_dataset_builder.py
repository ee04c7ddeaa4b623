"""Ekman-6 (Xu et al., IEEE TAFFC 2018): six basic emotions of user videos, for VAANet.

`tfds build datasets/ekman6 --manual_dir=DIR [--config=resnet101|i3d]`
"""

from __future__ import annotations

import logging
import pathlib
import sys

import tensorflow_datasets as tfds

from aan_jax.util import cli
from aan_jax.data.classes import EKMAN6_CLASSES

# The builders' shared readers are the package datasets/_common, imported as `_common` from
# datasets/ on sys.path (datasets/ itself is not a package: it must never shadow the
# `datasets` library). `tfds build datasets/<name>` puts datasets/ there while it imports
# this file, as tests/datasets/_builders.py does; the lines below make sure of it however
# this file is loaded.
_DATASETS = str(pathlib.Path(__file__).resolve().parents[1])
if _DATASETS not in sys.path:
  sys.path.insert(0, _DATASETS)
from _common import emotion_lists  # noqa: E402

log = logging.getLogger(__name__)
CLASSES = EKMAN6_CLASSES

_DESCRIPTION = """\
Ekman-6: about 1,637 YouTube and Flickr videos in six classes (Anger, Disgust, Fear,
Joy, Sadness, Surprise), with VAANet's inputs per video: backbone maps of 12 snippets of
16 frames (112 px; centre windows, centre crop) and 4096 x 32 raw MFCC frames. One
split, `videos`, holds every listed video once; its `split` vector says, for each split
found (trainlistKK/testlistKK; the dataset gives one train/test split), whether the video
is in its training list (1), its test list (2) or neither (0).
"""


# One config per backbone; its name is the backbone (extract.vaanet_features.BACKBONES).
CONFIGS = [
    tfds.core.BuilderConfig(name="resnet101", version=tfds.core.Version("1.0.0"),
                            description="3D ResNet-101 (Kinetics) maps: (12, 16, 2048) per video."),
    tfds.core.BuilderConfig(name="i3d", version=tfds.core.Version("1.0.0"),
                            description="I3D (Kinetics) Mixed_5c maps: (12, 16, 1024) per video."),
]


class Builder(tfds.core.GeneratorBasedBuilder):
  """Ekman-6 with VAANet's inputs and its official split(s)."""

  BUILDER_CONFIGS = CONFIGS
  DEFAULT_CONFIG_NAME = "resnet101"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Get Ekman-6 from its authors (Xu et al., "Heterogeneous knowledge transfer in video
  emotion recognition, attribution and summarization", IEEE TAFFC 2018). Its train/test
  partition is written as UCF-101-style lists, as VAANet's code uses for VideoEmotion-8
  (the authors' code ships no Ekman-6 lists; class names are matched case-insensitively):
  - anywhere under DIR (--manual_dir): trainlistKK.txt ("Class/video label") and
    testlistKK.txt ("Class/video") for each split KK (01 for the one given split); labels
    are 1-based in the order of classInd.txt ("1 anger" ... "6 surprise") or, without
    it, in the order Anger, Disgust, Fear, Joy, Sadness, Surprise;
  - for each video, its features OR the video itself:
    * features/<config>/<Class>/<video>.npz from `python -m extract.vaanet_features VIDEOS
      --out DIR/features/<config> --root VIDEO_ROOT --backbone <config>`;
    * or the video anywhere under a folder of its class (anger/x.mp4); features are then
      extracted during the build.
  Listed videos with neither are skipped (the count is logged and kept in the metadata).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=emotion_lists.tfds_features(self.builder_config.name, CLASSES),
        homepage="https://github.com/maysonma/VAANet",
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def _download_and_prepare(self, dl_manager, download_config):
    # Beam only when the user asked for a pipeline: plain builds need no Beam runner.
    self._use_beam = bool(download_config.beam_runner or download_config.beam_options)
    return super()._download_and_prepare(dl_manager, download_config)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    # Under `tfds build`, a problem with the user's files (a bad list line or label, a
    # missing list) is one line, not a traceback.
    with cli.tfds_user_errors():
      return self._splits(dl_manager)

  def _splits(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    tasks, meta = emotion_lists.build_tasks(
        pathlib.Path(dl_manager.manual_dir), CLASSES, cfg.name, f"features/{cfg.name}",
        pathlib.Path(dl_manager.download_dir) / "aan_jax_vaanet_features", "Ekman-6", log)
    meta["extract_weights"] = (emotion_lists.weights_mode() if meta["from_video"]
                               else "n/a (features given)")
    self.info.metadata.update(meta)
    return {"videos": self._generate_examples(tasks)}

  def _generate_examples(self, tasks: list):
    if getattr(self, "_use_beam", False):
      beam = tfds.core.lazy_imports.apache_beam
      return beam.Create(tasks) | beam.FlatMap(emotion_lists.video_examples)
    return cli.tfds_user_errors_in(ex for t in tasks for ex in emotion_lists.video_examples(t))
