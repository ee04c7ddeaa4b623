"""Audio features: VGGish's log-mel front end, and openSMILE emobase2010 (IS10_paraling)."""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import tempfile
import threading
import time
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
def _config_dir() -> str:
  d = tempfile.mkdtemp(prefix="aan_opensmile_")
  atexit.register(shutil.rmtree, d, True)
  return d


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
  path = os.path.join(_config_dir(), "IS10_paraling_320ms_40ms.conf")
  with open(path, "w") as f:
    f.write("".join(sections))
  return path


# The wave level of the streaming run: 4 s of samples (its readers ask for 2 s at once;
# openSMILE would raise a smaller buffer to that).
_STREAM_WAVE_FRAMES = 4 * AUDIO_RATE


@functools.lru_cache(maxsize=None)
def emobase_stream_config() -> tuple[str, str]:
  """(config, source include) of the same set for a run fed in pieces, in bounded memory.

  Every dataMemory level of the IS10 set grows to hold the whole input (its LLD levels say
  so explicitly, and the others inherit it from the external source's wave level), about
  4 MB per second of audio. Only the windowed functionals read these levels now, so they
  become ring buffers: a writer waits until every reader has read, so no frame is lost and
  the output is the same (tested bit for bit), and a full wave level makes the feeder wait.
  """
  import opensmile
  with open(emobase_config_path()) as f:
    text = f.read()
  n_rb = len(re.findall(r"(?m)^\s*writer\.levelconf\.isRb\s*=\s*0\s*$", text))
  text = re.sub(r"(?m)^\s*writer\.levelconf\.isRb\s*=\s*0\s*$", "writer.levelconf.isRb=1", text)
  text = re.sub(r"(?m)^\s*writer\.levelconf\.growDyn\s*=\s*1\s*$",
                "writer.levelconf.growDyn=0", text)
  src = os.path.join(os.path.dirname(opensmile.__file__), "core", "config", "shared",
                     "standard_external_wave_input.conf.inc")
  with open(src) as f:
    source = f.read()
  pats = (r"(?m)^\s*writer\.levelconf\.growDyn\s*=\s*1\s*$",
          r"(?m)^\s*writer\.levelconf\.isRb\s*=\s*0\s*$")
  if n_rb != 6 or not all(re.search(p, source) for p in pats):
    raise RuntimeError(f"opensmile {opensmile.__version__} ships a different IS10 config or "
                       f"external source ({n_rb} growing levels, expected 6)")
  source = re.sub(pats[0], "writer.levelconf.growDyn=0", source)
  source = re.sub(pats[1], f"writer.levelconf.isRb=1\nwriter.levelconf.nT={_STREAM_WAVE_FRAMES}",
                  source)
  config = os.path.join(_config_dir(), "IS10_paraling_320ms_40ms_stream.conf")
  include = os.path.join(_config_dir(), "external_wave_input_ringbuffer.conf.inc")
  for path, body in ((config, text), (include, source)):
    with open(path, "w") as f:
      f.write(body)
  return config, include


class _SegmentMeans:
  """Reduces windows (arriving in time order) to the mean of each segment's windows.

  A segment takes the windows inside it, or the ones overlapping it when none fits inside;
  its rows are kept only until a window starts past its end, so memory holds a segment's
  windows, not the film's.
  """

  def __init__(self, start_s, end_s, dim: int):
    self.start_s = np.asarray(start_s, np.float64)
    self.end_s = np.asarray(end_s, np.float64)
    self.out = np.full((len(self.start_s), dim), np.nan, np.float32)
    self.rows: dict[int, list] = {}  # segment -> [(inside, row)]
    self.lo = 0  # segments before this one are done

  def add(self, ws: float, we: float, row: np.ndarray) -> None:
    n = len(self.start_s)
    while self.lo < n and ws > self.end_s[self.lo] + 1e-6:
      self._close(self.lo)
      self.lo += 1
    for i in range(self.lo, n):
      s, e = self.start_s[i], self.end_s[i]
      if s >= we and s - 1e-6 > ws:
        break  # segments are in start order: none later can hold this window
      inside = ws >= s - 1e-6 and we <= e + 1e-6
      if inside or (ws < e and we > s):
        self.rows.setdefault(i, []).append((inside, row))

  def _close(self, i: int) -> None:
    rows = self.rows.pop(i, [])
    picked = [r for inside, r in rows if inside] or [r for _, r in rows]
    if picked:
      self.out[i] = np.stack(picked).mean(0)

  def finish(self) -> np.ndarray:
    for i in range(self.lo, len(self.start_s)):
      self._close(i)
    self.lo = len(self.start_s)
    return self.out


class EmobaseStream:
  """ONE openSMILE run over a whole track, fed in pieces; segment means kept as windows come.

  openSMILE runs in its own thread (the ctypes call releases the GIL); `feed` waits while its
  wave buffer is full. Memory stays bounded for any length; the output equals
  `EmobaseExtractor.windows` on the whole track reduced per segment.
  """

  def __init__(self, start_s, end_s):
    from opensmile.core.lib import OpenSMILE
    import opensmile
    config, source = emobase_stream_config()
    root = os.path.join(os.path.dirname(opensmile.__file__), "core", "config", "shared")
    self._means = _SegmentMeans(start_s, end_s, EMOBASE_DIM)
    self._last: tuple[float, float, np.ndarray] | None = None  # held until the next one
    self._first = True
    self._error: BaseException | None = None
    self._closing = False
    self.samples = 0
    self._smile = OpenSMILE()
    self._smile.initialize(config, {
        "source": source,
        "sink": os.path.join(root, "standard_external_data_output_single.conf.inc"),
        "sinkLevel": "func", "sampleRate": AUDIO_RATE, "nBits": 16,
        "bufferModeRbConf": os.path.join(root, "BufferModeRb.conf.inc"),
        "frameModeFunctionalsConf": os.path.join(root, "FrameModeFunctionals.conf.inc")},
        loglevel=2)
    self._smile.external_sink_set_callback_ex("extsink", self._on_window)
    self._thread = threading.Thread(target=self._run, daemon=True, name="extract-opensmile")
    self._thread.start()

  def _run(self) -> None:
    try:
      self._smile.run()
    except BaseException as e:  # raised by feed/finish in the caller's thread
      self._error = e

  def _on_window(self, data: np.ndarray, meta) -> None:
    if self._closing or self._error is not None:
      return
    try:
      start = 0.0 if self._first else meta.time  # as opensmile.Smile.process_signal does
      self._first = False
      if self._last is not None:
        self._means.add(*self._last)
      self._last = (start, meta.time + meta.lengthSec, np.array(data, np.float32).reshape(-1))
    except BaseException as e:  # an exception cannot cross the C callback; finish raises it
      self._error = e

  def feed(self, audio: np.ndarray) -> None:
    """Hands 16 kHz float audio (any length) to openSMILE."""
    # The int16 conversion opensmile.Smile applies to a whole signal.
    pcm = bytes((np.asarray(audio, np.float32) * 32768).astype(np.int16))
    self.samples += len(audio)
    while not self._smile.external_audio_source_write_data("extsource", pcm):
      if not self._thread.is_alive():
        raise RuntimeError(f"openSMILE stopped early: {self._error or 'no reason given'}")
      time.sleep(0.002)

  def finish(self) -> np.ndarray:
    """Ends the input; returns (segments, 1582) float32 (NaN for a segment with no window)."""
    short = int(EMOBASE_WINDOW_S * AUDIO_RATE) - self.samples
    if short > 0:  # shorter than one window: zero-padded, as the whole-track path does
      self.feed(np.zeros(short, np.float32))
    self._smile.external_audio_source_set_eoi("extsource")
    self._thread.join()
    self.close()
    if self._error is not None:
      raise RuntimeError(f"openSMILE failed: {self._error}")
    if self._last is not None:
      # process_signal ends the last window at the end of the signal.
      self._means.add(self._last[0], self.samples / AUDIO_RATE, self._last[2])
      self._last = None
    return self._means.finish()

  def close(self) -> None:
    """Ends the run (after an error elsewhere) and frees openSMILE; safe to call twice."""
    if self._smile is None:
      return
    if self._thread.is_alive():
      # Ending the input stops the run after what is buffered (4 s at most); an abort
      # fails unless the run has already started, and a run left going would crash the
      # interpreter at exit.
      self._closing = True
      try:
        self._smile.external_audio_source_set_eoi("extsource")
      except Exception:  # pylint: disable=broad-except
        pass  # the input had already ended
      self._thread.join()
    self._smile.free()
    self._smile = None


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
    """(start_s, end_s, (n, 1582)) for each 320 ms window of the whole track at once.

    The reference path: openSMILE and this output grow with the track (about 4 MB per
    second); extraction uses `stream` instead.
    """
    if len(audio) < int(EMOBASE_WINDOW_S * AUDIO_RATE):
      audio = np.pad(audio, (0, int(EMOBASE_WINDOW_S * AUDIO_RATE) - len(audio)))
    df = self.smile.process_signal(np.asarray(audio, np.float32), AUDIO_RATE)
    start = df.index.get_level_values("start").total_seconds().to_numpy()
    end = df.index.get_level_values("end").total_seconds().to_numpy()
    return start, end, df.to_numpy(np.float32)

  def stream(self, start_s: Sequence[float], end_s: Sequence[float]) -> EmobaseStream:
    """A run to `feed` a track in pieces; `finish()` gives the segments' means."""
    return EmobaseStream(start_s, end_s)

  def segments_from_track(self, audio: np.ndarray, start_s: Sequence[float],
                          end_s: Sequence[float]) -> np.ndarray:
    """Mean over the windows inside each segment (overlapping ones if none fits inside)."""
    run = self.stream(start_s, end_s)
    try:
      for i in range(0, len(audio), AUDIO_RATE):
        run.feed(audio[i:i + AUDIO_RATE])
      return run.finish()
    finally:
      run.close()
