"""What the TFDS builders in datasets/ share: the corpora's annotation and feature-file
readers (`annotations`) and the VideoEmotion-8 / Ekman-6 split lists (`emotion_lists`).

They serve only the builders (and their tests), so they live here, not in the TF-free
library aan_jax. datasets/ itself is deliberately not a package (it must never shadow the
`datasets` library), so this folder is imported as the top-level package `_common`, from
datasets/ on sys.path: `tfds build datasets/<name>` puts it there while it imports the
builder, and so does tests/datasets/_builders.py; each builder also makes sure of it
before its `from _common import ...`, however it is loaded. Once imported, the modules
stay in sys.modules for the rest of the build. A Beam runner whose workers are other
processes needs datasets/ on their PYTHONPATH (as it needs aan_jax installed there).
"""
