"""Extended COGNIMUSE: 5-s segments of 12 movies with mean arousal/valence.

`tfds build datasets/cognimuse --manual_dir=DIR [--config=experienced]`
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
Extended COGNIMUSE (12 half-hour movie clips) cut into 5-s segments. Each example holds
the five AttendAffectNet features of the segment (resnet50, flownet, i3d, vggish,
emobase2010; float32) and the mean arousal and valence of the annotation over the
segment's 25-fps frames. One split per movie (BMI, LOR, GLA, DEP, CRA, CHI, FNE, ABE, MDB,
NCO, RAT, SIL), so leave-one-movie-out reads `split=MOVIE` and the rest.
"""


# What each annotation kind is read from (MANUAL_DOWNLOAD_INSTRUCTIONS has the details).
_NEEDS = {
    "intended": "annotations/<CODE>.csv, annotations/intended/<CODE>.csv or the official "
                "intended_<k>_<LongName>.dat files",
    "experienced": "annotations/experienced/<CODE>.csv or the official viewers' traces "
                   "subj<S>_<I>_<LongName>.dat",
}


class CognimuseConfig(tfds.core.BuilderConfig):
  """Which annotation: intended (the paper's) or experienced (mean of 12 traces)."""

  def __init__(self, *, annotation: str, **kwargs):
    super().__init__(version=tfds.core.Version("1.0.0"), **kwargs)
    self.annotation = annotation


class Builder(tfds.core.GeneratorBasedBuilder):
  """Extended COGNIMUSE segments with features and annotations."""

  BUILDER_CONFIGS = [
      CognimuseConfig(name="intended", annotation="intended",
                      description="Intended emotion (as in the AttendAffectNet paper)."),
      CognimuseConfig(name="experienced", annotation="experienced",
                      description="Experienced emotion: mean of the viewers' traces."),
  ]
  DEFAULT_CONFIG_NAME = "intended"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  COGNIMUSE cannot be downloaded automatically: request the database at
  http://cognimuse.cs.ntua.gr/database and obtain the 12 movies yourself. Then fill
  DIR (passed as --manual_dir) with, for each movie code BMI LOR GLA DEP CRA CHI FNE
  ABE MDB NCO RAT SIL you have:

  1. its features OR its video:
     - features/<CODE>.npz, written by `python -m extract VIDEO --out DIR/features
       --segmentation fixed:5` with the video renamed <CODE>.<ext> (no torch and no
       video decoding is needed at build time); or
     - the video anywhere under DIR named <CODE>.<ext> (e.g. 2001GLA/GLA.avi,
       videos/GLA.mp4); features are then extracted during the build.
  2. its annotation, one of:
     - annotations/<CODE>.csv or annotations/intended/<CODE>.csv (and
       annotations/experienced/<CODE>.csv for the experienced config): a header
       `frame,arousal,valence`, one row per 25-fps frame from frame 0;
     - the official files, e.g. the unzipped COGNIMUSEdatabase_v0.1 anywhere under DIR:
       `intended_<k>_<LongName>.dat`, `subj<S>_<I>_<LongName>.dat` (time valence
       arousal every 0.04 s; all traces of a movie are averaged).

  Movies with features/video but no annotation (or the reverse) are skipped with a
  logged reason. An annotation whose length differs from the video by more than
  max(2 s, 3%) fails the build; smaller differences are cut to the shorter.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    feats = {f: tfds.features.Tensor(shape=(d,), dtype=np.float32)
             for f, d in PAPER_FEATURE_DIMS.items()}
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            **feats,
            "arousal": tfds.features.Scalar(dtype=np.float32),
            "valence": tfds.features.Scalar(dtype=np.float32),
            "movie": tfds.features.Text(),
            "segment_index": tfds.features.Scalar(dtype=np.int32),
            "start_s": tfds.features.Scalar(dtype=np.float32),
            "end_s": tfds.features.Scalar(dtype=np.float32),
        }),
        supervised_keys=None,
        homepage="http://cognimuse.cs.ntua.gr/database",
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def download_and_prepare(self, *, download_dir=None, download_config=None, **kwargs):
    # Plain `tfds build datasets/cognimuse` builds every config in turn. Most users have one
    # kind of annotation: the config with none at all is skipped with one line, instead of
    # failing the whole command after the other was built. Asked for by name (--config, the
    # Python API), it fails as before, saying what is missing.
    reason = self._plain_build_skip(download_config)
    if reason:
      print(f"skipped cognimuse/{self.builder_config.name}: {reason}", file=sys.stderr)
      return None
    return super().download_and_prepare(download_dir=download_dir,
                                        download_config=download_config, **kwargs)

  def _plain_build_skip(self, download_config) -> str | None:
    """Why this config has nothing to build from, in a plain `tfds build`; else None."""
    manual = getattr(download_config, "manual_dir", None)
    if not manual or not cli.under_tfds_build() or cli.tfds_config_requested():
      return None
    root = pathlib.Path(manual)

    def has(kind):
      return any(ann.find_cognimuse_annotations(root, m, kind) for m in ann.COGNIMUSE_MOVIES)
    kind = self.builder_config.annotation
    others = [c.name for c in self.BUILDER_CONFIGS if c.annotation != kind and has(c.annotation)]
    if has(kind) or not others:
      return None  # buildable, or nothing is: then the build's own error says why
    return (f"no {kind} annotation under {root} (it needs {_NEEDS[kind]}); building "
            f"{', '.join(others)} only. Add them and run with --config={self.builder_config.name}")

  def _download_and_prepare(self, dl_manager, download_config):
    # Beam only when the user asked for a pipeline: plain builds need no Beam runner.
    self._use_beam = bool(download_config.beam_runner or download_config.beam_options)
    return super()._download_and_prepare(dl_manager, download_config)

  def _tasks(self, root: pathlib.Path) -> list[dict]:
    if not root.is_dir() or not any(root.iterdir()):
      raise ann.CorpusFileError(
          f"manual_dir {root} is empty or missing. Put the features or videos and the "
          f"annotations there as described in MANUAL_DOWNLOAD_INSTRUCTIONS "
          f"(datasets/cognimuse/README.md).")
    kind = self.builder_config.annotation
    npz = {s.upper(): p for s, p in ann.list_stems(root / "features", (".npz",)).items()}
    tasks, skipped = [], []
    for movie in ann.COGNIMUSE_MOVIES:
      source = npz.get(movie)
      if source is None:
        source = (ann.find_video(root, movie)
                  or ann.find_video(root, ann.COGNIMUSE_LONG_NAMES[movie]))
      notes = ann.find_cognimuse_annotations(root, movie, kind)
      if source is None and not notes:
        continue
      if source is None:
        skipped.append(f"{movie}: annotation {notes[0]} but no features/{movie}.npz or video")
        continue
      if not notes:
        skipped.append(f"{movie}: {source} but no {kind} annotation")
        continue
      tasks.append({"movie": movie, "source": str(source),
                    "annotations": [str(p) for p in notes], "features": FEATURES})
    for s in skipped:
      log.warning("COGNIMUSE: skipping %s", s)
    if not tasks:
      raise ann.CorpusFileError(
          f"manual_dir {root}: no movie has both features (features/<CODE>.npz or a video "
          f"<CODE>.<ext>) and a {kind} annotation"
          + (f" (skipped: {'; '.join(skipped)})" if skipped else "")
          + ". See MANUAL_DOWNLOAD_INSTRUCTIONS (datasets/cognimuse/README.md).")
    return tasks

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    # Under `tfds build`, a problem with the user's files is one line, not a traceback.
    with cli.tfds_user_errors():
      return self._splits(dl_manager)

  def _splits(self, dl_manager: tfds.download.DownloadManager):
    tasks = self._tasks(pathlib.Path(dl_manager.manual_dir))
    # Features extracted from videos are cached next to TFDS's downloads, so building
    # the other config (or re-running after a failure) does not extract again.
    cache = pathlib.Path(dl_manager.download_dir) / "aan_jax_features"
    for t in tasks:
      t["cache_dir"] = str(cache)
    videos = [t["movie"] for t in tasks if not t["source"].endswith(".npz")]
    self.info.metadata.update({
        "annotation": self.builder_config.annotation,
        "movies": [t["movie"] for t in tasks],
        "extracted_from_video": videos,
        # Builds from video record the extractor weights; "random" marks test data.
        "extract_weights": ann.weights_mode() if videos else "n/a (features given)",
    })
    return {t["movie"]: self._generate_examples(t) for t in tasks}

  def _generate_examples(self, task: dict):
    if getattr(self, "_use_beam", False):
      beam = tfds.core.lazy_imports.apache_beam
      # One element per movie: the worker extracts the whole video once, then yields
      # its segments.
      return (beam.Create([task])
              | beam.FlatMap(ann.cognimuse_movie_examples))
    return cli.tfds_user_errors_in(ann.cognimuse_movie_examples(task))
