"""The class-name lists of the categorical corpora, in their models' output order.

The one place each list is written: the corpora (aan_jax.data), the TFDS builders
(datasets/) and the models' heads (aan_jax.models.vaanet, aan_jax.models.fer, which
re-export them under their old names) all read them from here.
"""

from __future__ import annotations

# VideoEmotion-8 classes in the authors' (and the dataset's classInd.txt) order.
VE8_CLASSES = ("Anger", "Anticipation", "Disgust", "Fear", "Joy", "Sadness", "Surprise",
               "Trust")
EKMAN6_CLASSES = ("Anger", "Disgust", "Fear", "Joy", "Sadness", "Surprise")
# The face-expression classes: fer's labels, FER-2013's class indices 0..6 (the output
# order of aan_jax.models.fer's mini-Xception, and RAF-DB's classes as datasets/raf_db
# builds them).
FER_EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise",
                                 "neutral")
