"""The Flax modules: AttendAffectNet (`aan`), its layers and fused CPU kernel, the field's
baselines, VAANet, VTT's TSM ResNet-18 and the FER-2013 mini-Xception.

`import aan_jax.models` gives the three AAN models directly (the notebook entry point).
"""

from aan_jax.models.aan import (  # noqa: F401
    FeatureAAN, FeatureTemporalAAN, ModalityTokens, TemporalAAN, autoregressive_predict,
    check_features, predict_movie, shift_targets, window_indices)
