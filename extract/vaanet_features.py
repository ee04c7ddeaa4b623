"""VAANet's inputs from a video: backbone maps per 16-frame snippet, and MFCCs (VAANET.md).

    python -m extract.vaanet_features VIDEO [VIDEO ...] --out DIR [--root ROOT]
        [--backbone resnet101|i3d] [--weights pretrained|random] [--device cpu|cuda]

writes DIR/<path relative to ROOT, or the stem>.npz with
  `resnet101` (12, 16, 2048) or `i3d` (12, 16, 1024): float32 maps per snippet, positions
      h * 4 + w, channels last (what `aan_jax.models.vaanet.VAANet` takes as `visual`);
  `mfcc` (4096, 32): raw MFCC frames, the clip tiled to 4096 frames (`audio`);
  `frame_indices` (12, 16): the frames each snippet used; `metadata`: a JSON string.

Sampling is deterministic (the authors' draws are random, at validation too): the frame
list is loop-padded to at least 12 x 16 frames and cut into 12 equal segments; each
snippet is the centre 16-frame window of its segment; the crop is the centre square of
side min(H, W), bilinearly resized to 112 x 112. `sample_snippets(..., rng=...)` gives
the authors' random training draw instead.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import zipfile
from typing import Sequence

import numpy as np

from aan_jax.util.hashing import file_sha256 as _sha256

SEQ_LEN = 12
SNIPPET = 16
SIZE = 112
FRAME_HEIGHT = 240   # the authors' frames: ffmpeg to JPEG at height 240
AUDIO_RATE = 44100   # librosa.load(sr=44100, mono=True)
N_MFCC = 32
MFCC_FRAMES = 4096   # tiled and cut to 4096 frames (about 47.6 s at hop 512)
BACKBONES = {"resnet101": 2048, "i3d": 1024}
MAX_BYTES = 64 << 20  # a VAANet .npz holds about 2 MiB of arrays; more is a zip bomb
_CROPS = ("center", "top_left", "top_right", "bottom_left", "bottom_right")


def sample_snippets(n_frames: int, seq_len: int = SEQ_LEN, snippet: int = SNIPPET,
                    rng: np.random.Generator | None = None) -> np.ndarray:
  """(seq_len, snippet) frame indices, TSN style as the authors sample them.

  The frame list is repeated from the start until it has at least seq_len * snippet
  frames, then cut into seq_len consecutive segments of floor(len / seq_len) frames. With
  `rng`, each window starts uniformly in [0, max(0, seglen - 17)] (the authors' range);
  without, at the centre of its segment (deterministic, for features and evaluation).
  """
  if n_frames <= 0:
    raise ValueError("a video without frames has no snippets")
  reps = -(-seq_len * snippet // n_frames)
  frames = np.tile(np.arange(n_frames), reps)
  seglen = len(frames) // seq_len
  if rng is None:
    starts = np.full(seq_len, (seglen - snippet) // 2)
  else:
    starts = rng.integers(0, max(0, seglen - snippet - 1) + 1, seq_len)
  idx = np.arange(seq_len)[:, None] * seglen + starts[:, None] + np.arange(snippet)[None]
  return frames[idx]


def crop_resize(frame: np.ndarray, size: int = SIZE, position: str = "center") -> np.ndarray:
  """A square of side min(H, W) at `position`, bilinearly resized to size x size (PIL)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  if position not in _CROPS:
    raise ValueError(f"crop position {position!r}; expected one of {_CROPS}")
  h, w = frame.shape[:2]
  s = min(h, w)
  y = {"center": (h - s) // 2, "top_left": 0, "top_right": 0}.get(position, h - s)
  x = {"center": (w - s) // 2, "top_left": 0, "bottom_left": 0}.get(position, w - s)
  img = Image.fromarray(np.ascontiguousarray(frame[y:y + s, x:x + s]))
  return np.asarray(img.resize((size, size), Image.BILINEAR))


def decode(path, indices: np.ndarray, size: int = SIZE, crop: str = "center",
           audio: bool = True) -> tuple[np.ndarray, np.ndarray | None, int]:
  """Decodes the frames in `indices` (uint8 (*indices.shape, size, size, 3)) and the audio.

  Audio: mono (the mean of the channels, as librosa.load) at 44.1 kHz (resampled with
  librosa's default soxr_hq when the file has another rate); None without an audio stream.
  """
  import av  # pylint: disable=import-outside-toplevel
  from extract import media  # pylint: disable=import-outside-toplevel
  info = media.probe(str(path))
  if not info.has_video:
    raise media.MediaError(f"{path}: has no video stream")
  want = {int(k) for k in np.unique(indices)}
  pts_to_index = {int(p): i for i, p in enumerate(info.frame_pts)}
  frames: dict[int, np.ndarray] = {}
  chunks, rate, seen = [], None, -1
  with media._open(str(path)) as c:  # pylint: disable=protected-access
    vs = c.streams.video[0]
    as_ = c.streams.audio[0] if (audio and c.streams.audio) else None
    vs.thread_type = "AUTO"
    try:
      for packet in c.demux(*[s for s in (vs, as_) if s is not None]):
        for frame in packet.decode():
          if packet.stream is as_:
            rate = frame.sample_rate
            x = frame.to_ndarray().astype(np.float32)
            if not frame.format.is_planar:  # interleaved: (1, samples * channels)
              x = x.reshape(-1, len(frame.layout.channels)).T
            if frame.format.name.startswith(("s16", "s32", "u8")):
              x = x / {"s16": 32768.0, "s32": 2147483648.0, "u8": 128.0}[frame.format.name[:3]]
            chunks.append(x.mean(axis=0))
            continue
          k = pts_to_index.get(frame.pts, seen + 1) if frame.pts is not None else seen + 1
          seen = max(seen, k)
          if k in want:
            h, w = frame.height, frame.width
            # The authors' frames were written at height 240 first (ffmpeg's default bicubic).
            rgb = frame.reformat(width=max(1, round(w * FRAME_HEIGHT / h)), height=FRAME_HEIGHT,
                                 format="rgb24", interpolation="BICUBIC").to_ndarray()
            frames[k] = crop_resize(rgb, size, crop)
    except av.error.FFmpegError as e:
      raise media.MediaError(f"{path}: corrupt or truncated ({media._reason(e)})") from None  # pylint: disable=protected-access
  missing = sorted(want - set(frames))
  if missing:
    raise media.MediaError(f"{path}: frame {missing[0]} of {len(info.frame_times)} could not "
                           "be decoded (corrupt or truncated)")
  video = np.stack([frames[int(k)] for k in np.asarray(indices).reshape(-1)])
  video = video.reshape(*np.shape(indices), size, size, 3)
  if as_ is None or not chunks:
    return video, None, len(info.frame_times)
  wav = np.concatenate(chunks)
  if rate != AUDIO_RATE:
    import librosa  # pylint: disable=import-outside-toplevel
    wav = librosa.resample(wav, orig_sr=rate, target_sr=AUDIO_RATE, res_type="soxr_hq")
  return video, wav.astype(np.float32), len(info.frame_times)


def mfcc(wav: np.ndarray, frames: int = MFCC_FRAMES) -> np.ndarray:
  """(frames, 32) raw MFCCs: librosa.feature.mfcc(sr=44100, n_mfcc=32), defaults otherwise.

  The clip's MFCC frames are repeated from the start until there are `frames` of them.
  (librosa >= 0.10 pads the signal's ends with zeros for centred frames; the releases of
  the authors' time reflected them: only the first and last frame differ.)
  """
  import librosa  # pylint: disable=import-outside-toplevel
  wav = np.asarray(wav, np.float32)
  if wav.size == 0:
    raise ValueError("no audio samples")
  m = librosa.feature.mfcc(y=wav, sr=AUDIO_RATE, n_mfcc=N_MFCC).T  # (T, 32)
  reps = -(-frames // len(m))
  return np.ascontiguousarray(np.tile(m, (reps, 1))[:frames], dtype=np.float32)


class I3DMapsExtractor:
  """RGB I3D (Kinetics-400) Mixed_5c maps: snippets (n, 16, 112, 112, 3) -> (n, 16, 1024).

  Mixed_5c of a 16-frame 112-px snippet is 2 x 4 x 4; it is averaged over time, leaving
  VAANet's 16 positions (h * 4 + w) of 1024 channels.
  """
  name = "i3d"

  def __init__(self, weights: str = "pretrained", device: str = "cpu"):
    import jax  # pylint: disable=import-outside-toplevel
    from extract import i3d  # pylint: disable=import-outside-toplevel
    self._base = i3d.I3DExtractor(weights=weights, device=device)  # resolves and checks weights
    self.weights_info = self._base.weights_info
    self.dim = i3d.DIM

    def maps(variables, table, frames):
      """(Mixed_5c averaged over time (n, H', W', C), the pooled I3D feature (n, C))."""
      (pooled, _), state = i3d.I3D().apply(
          variables, table[frames], capture_intermediates=lambda m, _: m.name == "Mixed_5c")
      return state["intermediates"]["Mixed_5c"]["__call__"][0].mean(axis=1), pooled
    self._fn = jax.jit(maps)

  def snippets(self, snippets: np.ndarray) -> np.ndarray:
    import jax  # pylint: disable=import-outside-toplevel
    x = np.asarray(snippets)
    if x.dtype != np.uint8 or x.ndim != 5:
      raise ValueError(f"snippets must be uint8 (n, frames, H, W, 3); got {x.dtype} {x.shape}")
    y, self.last_pooled = self._fn(self._base.variables, self._base._table,  # pylint: disable=protected-access
                                   jax.device_put(x, self._base.device))
    y = np.asarray(y, np.float32)
    return y.reshape(len(x), -1, y.shape[-1])


def make_backbone(backbone: str, weights: str, device: str):
  if backbone == "resnet101":
    from extract.resnet3d import ResNet3DExtractor  # pylint: disable=import-outside-toplevel
    return ResNet3DExtractor(weights=weights, device=device)
  if backbone == "i3d":
    return I3DMapsExtractor(weights=weights, device=device)
  raise ValueError(f"unknown backbone {backbone!r}; expected one of {sorted(BACKBONES)}")


def extract_video(path, extractor, *, seq_len: int = SEQ_LEN) -> dict:
  """One video's arrays and metadata (see the module docstring)."""
  from extract import media  # pylint: disable=import-outside-toplevel
  info = media.probe(str(path))
  if not info.has_audio:
    raise media.MediaError(f"{path}: has no audio stream (VAANet needs its MFCCs)")
  indices = sample_snippets(len(info.frame_times), seq_len)
  video, wav, n = decode(path, indices)
  if wav is None or wav.size == 0:
    raise media.MediaError(f"{path}: its audio stream holds no samples")
  maps = extractor.snippets(video)
  meta = {"source": {"file": os.path.basename(str(path)), "sha256": _sha256(path)},
          "backbone": extractor.name, "weights": extractor.weights_info, "frames": int(n),
          "fps": round(info.fps, 4), "seq_len": seq_len, "snippet": SNIPPET, "size": SIZE,
          "sampling": "centre window per segment, centre crop",
          "audio": {"rate": AUDIO_RATE, "n_mfcc": N_MFCC, "frames": MFCC_FRAMES,
                    "seconds": round(len(wav) / AUDIO_RATE, 3)}}
  return {extractor.name: maps.astype(np.float32), "mfcc": mfcc(wav),
          "frame_indices": indices.astype(np.int32), "metadata": json.dumps(meta, sort_keys=True)}


def save(result: dict, path) -> None:
  """Writes atomically (a temp file in the same folder, then a rename)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz.tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **{k: (np.array(v) if k == "metadata" else v) for k, v in result.items()})
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def load(path, backbone: str | None = None, seq_len: int = SEQ_LEN) -> dict:
  """Reads and checks a VAANet .npz; ValueError names the file and the problem."""
  path = str(path)
  try:
    # A file object, not a path: TFDS's builder tests allow np.load only on open files.
    with open(path, "rb") as f:
      with zipfile.ZipFile(f) as zf:  # declared sizes first: nothing is inflated yet
        declared = sum(i.file_size for i in zf.infolist())
      if declared > MAX_BYTES:
        raise ValueError(f"declares {declared / 2**20:.0f} MiB of arrays; a VAANet file "
                         f"holds about 2 (cap {MAX_BYTES >> 20} MiB)")
      f.seek(0)
      with np.load(f, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
  except Exception as e:  # zipfile/numpy raise several kinds for a damaged file
    raise ValueError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None
  names = [b for b in BACKBONES if b in data] if backbone is None else [backbone]
  if len(names) != 1 or names[0] not in data:
    raise ValueError(f"{path}: expected one backbone array "
                     f"({backbone or ' or '.join(BACKBONES)}); found {sorted(data)}")
  b = names[0]
  checks = {b: (seq_len, 16, BACKBONES[b]), "mfcc": (MFCC_FRAMES, N_MFCC)}
  for k, shape in checks.items():
    a = data.get(k)
    if a is None or a.dtype != np.float32 or a.shape != shape:
      got = "missing" if a is None else f"{a.dtype} {a.shape}"
      raise ValueError(f"{path}: {k} is {got}; expected float32 {shape} "
                       "(written by `python -m extract.vaanet_features`)")
    if not np.isfinite(a).all():
      raise ValueError(f"{path}: {k} holds NaN or inf values")
  out = {"visual": data[b], "mfcc": data["mfcc"], "backbone": b}
  if "metadata" in data:
    out["metadata"] = str(data["metadata"])
  return out


def _done(out: pathlib.Path, video, extractor) -> bool:
  """An output counts as done if it is valid and from the same video, backbone and weights."""
  try:
    meta = json.loads(load(out, extractor.name).get("metadata", "{}"))
  except ValueError:
    return False
  return (meta.get("source", {}).get("sha256") == _sha256(video)
          and meta.get("weights") == extractor.weights_info)


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m extract.vaanet_features",
                              description="VAANet's inputs (backbone maps per snippet, MFCCs).")
  p.add_argument("videos", nargs="+", metavar="VIDEO")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--root", default=None,
                 help="write OUT/<path relative to ROOT>.npz (keeps class folders apart); "
                      "default OUT/<stem>.npz")
  p.add_argument("--backbone", default="resnet101", choices=sorted(BACKBONES))
  p.add_argument("--weights", default="pretrained", choices=("pretrained", "random"),
                 help="random: tests only (recorded in the metadata)")
  p.add_argument("--device", default="cpu")
  p.add_argument("--overwrite", action="store_true")
  args = p.parse_args(argv)
  from extract import media  # pylint: disable=import-outside-toplevel
  from extract.weights import WeightsNotFound  # pylint: disable=import-outside-toplevel
  try:
    extractor = make_backbone(args.backbone, args.weights, args.device)
  except (WeightsNotFound, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  failed = 0
  for v in args.videos:
    rel = (pathlib.Path(os.path.relpath(v, args.root)) if args.root
           else pathlib.Path(pathlib.Path(v).name))
    out = pathlib.Path(args.out) / rel.with_name(rel.name.rsplit(".", 1)[0] + ".npz")
    if not args.overwrite and _done(out, v, extractor):
      print(f"skipped (done) {out}")
      continue
    try:
      save(extract_video(v, extractor), out)
      print(f"{v} -> {out}")
    except (media.MediaError, ValueError, OSError) as e:
      print(f"FAILED {v}: {e}", file=sys.stderr)
      failed += 1
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
