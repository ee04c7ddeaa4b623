"""The speed paths of extraction give the same values as the plain ones (tiny inputs, CPU)."""

import jax
import numpy as np
import pytest

from extract import i3d

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@pytest.fixture
def compiles():
  """A list that gets one entry per XLA compilation while the test runs."""
  seen = []

  def listener(event, duration, **kwargs):
    if event == _COMPILE_EVENT:
      seen.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listener)
  yield seen
  jax.monitoring.unregister_event_duration_listener(listener)


def test_i3d_fixed_batches_compile_once_and_match_per_clip(compiles):
  ex = i3d.I3DExtractor("random")
  ex.frames_per_call = 6  # clips of 2 frames: batches of 3 clips
  assert i3d.clips_per_call(2, ex.frames_per_call) == 3
  rng = np.random.RandomState(0)
  clips = [rng.randint(0, 256, (2, 32, 32, 3)).astype(np.uint8) for _ in range(5)]
  two = ex.clips(clips[:2])  # one batch, one padding clip
  assert len(compiles) >= 1
  before = len(compiles)
  five = ex.clips(clips)  # two batches, the last one padded: the same program
  assert len(compiles) == before, "a different number of clips recompiled the I3D program"
  assert two.shape == (2, i3d.DIM) and five.shape == (5, i3d.DIM)
  for k, c in enumerate(clips):
    want, _ = i3d._apply_fn()(ex.variables, c[None].astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_allclose(five[k], np.asarray(want)[0], rtol=1e-5, atol=1e-5)
    if k < 2:
      np.testing.assert_allclose(two[k], five[k], rtol=1e-5, atol=1e-5)
  assert np.abs(five).max() > 0 and not np.allclose(five[0], five[1])  # not a constant output


def test_i3d_device_scaling_equals_host_scaling_bitwise():
  """uint8 clips scaled on the device give the bits of the float input scaled by numpy."""
  x = np.arange(256, dtype=np.uint8)
  np.testing.assert_array_equal(i3d._SCALE[x], x.astype(np.float32) / 127.5 - 1.0)
  assert [i3d.clips_per_call(t) for t in (1, 16, 64, 125, 1000)] == [64, 4, 1, 1, 1]
  ex = i3d.I3DExtractor("random")
  ex.frames_per_call = 6
  clips = np.random.RandomState(1).randint(0, 256, (3, 2, 32, 32, 3)).astype(np.uint8)
  got = ex.clips(list(clips))  # one full batch of 3: the same shapes as below
  want, _ = i3d._apply_fn()(ex.variables, clips.astype(np.float32) / 127.5 - 1.0)
  np.testing.assert_array_equal(got, np.asarray(want))
