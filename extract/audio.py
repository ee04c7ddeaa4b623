"""Audio features: VGGish's log-mel front end, and openSMILE emobase2010 (IS10_paraling)."""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import tempfile
from typing import Sequence

import numpy as np

from extract.media import AUDIO_RATE

# The published VGGish recipe (vggish_params.py / mel_features.py of tensorflow/models audioset).
_WIN = int(round(0.025 * AUDIO_RATE))  # 400 samples
_HOP = int(round(0.010 * AUDIO_RATE))  # 160 samples
_FFT = 2 ** int(np.ceil(np.log2(_WIN)))  # 512
_MEL_BANDS, _MEL_LO, _MEL_HI = 64, 125.0, 7500.0
_LOG_OFFSET = 0.01
_PATCH = 96  # frames per example: 0.96 s, hop 0.96 s
MIN_VGGISH_SAMPLES = _WIN + (_PATCH - 1) * _HOP


def _hz_to_mel(hz):
  return 1127.0 * np.log(1.0 + np.asarray(hz, np.float64) / 700.0)


@functools.lru_cache(maxsize=None)
def _mel_matrix() -> np.ndarray:
  """(257, 64) triangular weights on the HTK mel scale, as VGGish defines them."""
  bins_mel = _hz_to_mel(np.linspace(0.0, AUDIO_RATE / 2, _FFT // 2 + 1))
  edges = np.linspace(_hz_to_mel(_MEL_LO), _hz_to_mel(_MEL_HI), _MEL_BANDS + 2)
  lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
  w = np.maximum(0.0, np.minimum((bins_mel[:, None] - lo) / (mid - lo),
                                 (hi - bins_mel[:, None]) / (hi - mid)))
  w[0, :] = 0.0  # VGGish zeroes the DC bin
  return w


def log_mel(audio: np.ndarray) -> np.ndarray:
  """(frames, 64) log(mel + 0.01) of 16 kHz audio: 25 ms periodic Hann, 10 ms hop, |FFT 512|."""
  audio = np.asarray(audio, np.float64)
  n = 1 + (len(audio) - _WIN) // _HOP if len(audio) >= _WIN else 0
  if n <= 0:
    return np.zeros((0, _MEL_BANDS), np.float32)
  idx = np.arange(_WIN)[None, :] + _HOP * np.arange(n)[:, None]
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_WIN) / _WIN)  # periodic Hann
  spec = np.abs(np.fft.rfft(audio[idx] * window, _FFT))
  return np.log(spec @ _mel_matrix() + _LOG_OFFSET).astype(np.float32)


def vggish_examples(audio: np.ndarray) -> np.ndarray:
  """(n, 96, 64) non-overlapping 0.96 s log-mel patches of a segment's audio.

  A segment shorter than one patch (e.g. 4 sub-segments of a 2 s excerpt) is zero-padded
  to one patch so that it still gets an embedding; an empty one gets none (NaN later).
  """
  if len(audio) == 0:
    return np.zeros((0, _PATCH, _MEL_BANDS), np.float32)
  if len(audio) < MIN_VGGISH_SAMPLES:
    audio = np.pad(audio, (0, MIN_VGGISH_SAMPLES - len(audio)))
  mel = log_mel(audio)
  n = len(mel) // _PATCH
  return mel[:n * _PATCH].reshape(n, _PATCH, _MEL_BANDS)


# ---- openSMILE emobase2010 ----------------------------------------------------------------

EMOBASE_WINDOW_S, EMOBASE_HOP_S = 0.32, 0.04
EMOBASE_DIM = 1582


@functools.lru_cache(maxsize=None)
def emobase_config_path() -> str:
  """Writes IS10_paraling with functionals over 320 ms windows every 40 ms; returns its path.

  The opensmile package runs the set's functionals over the whole input and offers no option
  for a frame size, so its own config file is rewritten at run time (only the three
  cFunctionals sections' frameMode/frameSize/frameStep lines change).
  """
  import opensmile
  src = os.path.join(os.path.dirname(opensmile.__file__), "core", "config", "is09-13",
                     opensmile.FeatureSet.IS10.value.split("/")[-1] + ".conf")
  with open(src) as f:
    text = f.read()
  sections = re.split(r"(?m)^(?=\[)", text)
  changed = 0
  for i, sec in enumerate(sections):
    if re.match(r"\[\w+:cFunctionals\]", sec):
      sec = re.sub(r"(?m)^\s*frameMode\s*=.*$", "frameMode = fixed", sec)
      sec = re.sub(r"(?m)^\s*frameSize\s*=.*$", f"frameSize = {EMOBASE_WINDOW_S}", sec)
      sec = re.sub(r"(?m)^\s*frameStep\s*=.*$", f"frameStep = {EMOBASE_HOP_S}", sec)
      sections[i] = sec
      changed += 1
  if changed != 3:
    raise RuntimeError(f"{src}: expected 3 cFunctionals sections, found {changed}; this "
                       f"opensmile {opensmile.__version__} ships a different IS10 config")
  d = tempfile.mkdtemp(prefix="aan_opensmile_")
  atexit.register(shutil.rmtree, d, True)
  path = os.path.join(d, "IS10_paraling_320ms_40ms.conf")
  with open(path, "w") as f:
    f.write("".join(sections))
  return path


class EmobaseExtractor:
  """openSMILE IS10_paraling (emobase2010) functionals per 320 ms window, mean over a segment."""
  name, dim = "emobase2010", EMOBASE_DIM

  def __init__(self, weights: str = "pretrained", device: str = "cpu"):
    import opensmile
    del weights, device  # a fixed signal-processing recipe: no weights, CPU only
    self.smile = opensmile.Smile(feature_set=emobase_config_path(),
                                 feature_level=opensmile.FeatureLevel.Functionals)
    self.weights_info = {"mode": "none", "config": f"opensmile {opensmile.__version__} "
                         f"IS10_paraling_compat, functionals over {EMOBASE_WINDOW_S * 1000:g} ms "
                         f"windows every {EMOBASE_HOP_S * 1000:g} ms"}

  def windows(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start_s, end_s, (n, 1582)) for each 320 ms window of the whole track (decoded once)."""
    if len(audio) < int(EMOBASE_WINDOW_S * AUDIO_RATE):
      audio = np.pad(audio, (0, int(EMOBASE_WINDOW_S * AUDIO_RATE) - len(audio)))
    df = self.smile.process_signal(np.asarray(audio, np.float32), AUDIO_RATE)
    start = df.index.get_level_values("start").total_seconds().to_numpy()
    end = df.index.get_level_values("end").total_seconds().to_numpy()
    return start, end, df.to_numpy(np.float32)

  def segments_from_track(self, audio: np.ndarray, start_s: Sequence[float],
                          end_s: Sequence[float]) -> np.ndarray:
    """Mean over the windows inside each segment (overlapping ones if none fits inside)."""
    ws, we, x = self.windows(audio)
    out = np.full((len(start_s), self.dim), np.nan, np.float32)
    for i, (s, e) in enumerate(zip(start_s, end_s)):
      inside = (ws >= s - 1e-6) & (we <= e + 1e-6)
      if not inside.any():
        inside = (ws < e) & (we > s)
      if inside.any():
        out[i] = x[inside].mean(0)
    return out
