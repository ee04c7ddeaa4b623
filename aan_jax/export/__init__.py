"""Trained models as self-contained folders (model.json + params.npz, no pickle): every
selected run of a regression experiment, every run of a categorical one; and their loaders.

    from aan_jax import export
    models = export.load_models("workdir/cognimuse/models")
"""

from aan_jax.export.core import (  # noqa: F401
    CLASSIFIER_FORMAT, FORMAT, SEGMENTATION, ExportError, ExportedClassifier, ExportedModel,
    export_classifiers, export_result, load_classifiers, load_models, save_model,
    segmentation_of)
