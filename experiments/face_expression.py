"""What the characters show: VTT's expression model (seed 003) on RAF-DB or synthetic faces.

    python -m experiments.face_expression --config.data_dir=~/tensorflow_datasets --workdir=workdir/raf_db
    python -m experiments.face_expression --config.dataset=synthetic --workdir=workdir/faces_demo
    python -m experiments.face_expression --config.vtt.image_size=224 ...   # VTT's input size

A TSM ResNet-18 over 4-frame face buffers, trained from scratch in the categorical engine on
RAF-DB basic's official train/test partition (each still face a buffer of 4 copies), tested
with the last epoch's model; accuracy and per-class recall in results.json.
"""

from aan_jax.training import launch

if __name__ == "__main__":
  launch.configure_xla()

# pylint: disable=g-import-not-at-top,wrong-import-position
from aan_jax.training import faces as vtt_task


def get_config():
  return vtt_task.get_task_config()


if __name__ == "__main__":
  launch.main(get_config, vtt_task.train_and_evaluate)
