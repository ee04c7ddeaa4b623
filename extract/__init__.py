"""Feature extraction for aan-jax: the paper's five features from a movie file (see docs/extraction.md)."""

from extract.core import extract_file, load_npz, save_npz
from extract.media import MediaError, parse_segmentation
from extract.weights import WeightsNotFound

__all__ = ["extract_file", "load_npz", "save_npz", "MediaError", "parse_segmentation",
           "WeightsNotFound"]
