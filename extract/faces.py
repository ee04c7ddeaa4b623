"""The `faces` feature: MTCNN faces on sampled frames, their FER expressions, tracks and events.

Frames are sampled at `face_fps` (default 2 per second) from t=0 (the first video frame),
decoded at full resolution (the other video features see a 224x224 centre crop, which would
lose faces at the sides), faces found by facenet-pytorch's MTCNN, each face above
`min_face` pixels cropped as fer crops it (10 px margin, gray, 64x64) and classified by the
FER-2013 mini-Xception (`aan_jax.models.fer`), and faces linked across samples into tracks by box
overlap. Per segment, a fixed 9-vector (FACES_LAYOUT); per face and sample, one event in
VTT's form (schemas/events.schema.json).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import pathlib

import numpy as np

from aan_jax.models import fer
from extract import media

log = logging.getLogger(__name__)

FACE_FPS = 2.0
MIN_FACE = 32  # pixels (shorter side of the box); smaller faces are not classified
MIN_SCORE = 0.9  # MTCNN's final face probability
MATCH_IOU = 0.3  # a face continues a track when its box overlaps the track's last box this much
MAX_GAP_S = 1.0  # a track unseen for longer ends; a face seen again later gets a new id
MAX_SIDE = 1280  # larger frames are scaled down for detection (boxes are reported in source px)
FER_MARGIN = 10  # fer's default offsets: 10 px around the box before cropping
_FER_BATCH = 64  # most crops classified at once; fewer are padded to a power of two (>= 4)
# The 9 numbers per segment, in order.
FACES_LAYOUT: tuple[str, ...] = tuple(f"p_{e}" for e in fer.EMOTIONS) + (
    "face_fraction", "largest_face_share")
FACES_DIM = len(FACES_LAYOUT)
_MTCNN_FILES = ("pnet.pt", "rnet.pt", "onet.pt")


def _mtcnn_dir() -> pathlib.Path:
  # find_spec locates the wheel's files without importing it (its __init__ pulls requests).
  spec = importlib.util.find_spec("facenet_pytorch")
  if spec is None or not spec.submodule_search_locations:
    from extract.weights import WeightsNotFound
    raise WeightsNotFound("MTCNN weights not found: install facenet-pytorch, which ships them "
                          "(`pip install --no-deps facenet-pytorch==2.6.0`)")
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / "data"


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Intersection over union of boxes a (n, 4) and b (m, 4), (x0, y0, x1, y1) -> (n, m)."""
  a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
  x0 = np.maximum(a[:, None, 0], b[None, :, 0])
  y0 = np.maximum(a[:, None, 1], b[None, :, 1])
  x1 = np.minimum(a[:, None, 2], b[None, :, 2])
  y1 = np.minimum(a[:, None, 3], b[None, :, 3])
  inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
  area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])
  union = area(a)[:, None] + area(b)[None, :] - inter
  return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def assign_ids(times: np.ndarray, boxes: list[np.ndarray], match_iou: float = MATCH_IOU,
               max_gap_s: float = MAX_GAP_S) -> list[np.ndarray]:
  """Track ids per sample: greedy best-overlap matching of each sample's boxes to live tracks."""
  tracks: list[dict] = []  # {"id", "box", "t"}
  out = []
  for t, bx in zip(times, boxes):
    ids = np.full(len(bx), -1, np.int64)
    live = [k for k, tr in enumerate(tracks) if t - tr["t"] <= max_gap_s + 1e-9]
    if len(bx) and live:
      ov = iou(np.stack([tracks[k]["box"] for k in live]), bx)
      # Highest overlaps first, each track and each face used once.
      for flat in np.argsort(-ov, axis=None):
        i, j = np.unravel_index(flat, ov.shape)
        if ov[i, j] < match_iou:
          break
        if ids[j] < 0 and tracks[live[i]]["t"] < t:
          ids[j] = tracks[live[i]]["id"]
          tracks[live[i]].update(box=bx[j], t=t)
    for j in np.nonzero(ids < 0)[0]:
      ids[j] = len(tracks)
      tracks.append({"id": len(tracks), "box": bx[j], "t": t})
    out.append(ids)
  return out


def sample_times(duration_s: float, face_fps: float) -> np.ndarray:
  """k / face_fps for every k with that time inside the video."""
  if not face_fps > 0:
    raise ValueError(f"face_fps must be positive; got {face_fps}")
  n = int(np.floor(duration_s * face_fps - 1e-9)) + 1
  return np.arange(max(n, 1)) / face_fps


def _to_gray(rgb: np.ndarray) -> np.ndarray:
  # ITU-R 601 luma, as OpenCV's RGB2GRAY that fer uses.
  return (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().clip(
      0, 255).astype(np.uint8)


def crop_faces(gray: np.ndarray, boxes: np.ndarray, size: int = fer.INPUT_SIZE,
               margin: int = FER_MARGIN) -> np.ndarray:
  """(k, size, size) uint8: each box plus `margin` px, zero outside the frame, resized bilinearly."""
  from PIL import Image
  h, w = gray.shape
  out = np.zeros((len(boxes), size, size), np.uint8)
  for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, np.float64)):
    x0, y0 = int(np.floor(x0)) - margin, int(np.floor(y0)) - margin
    x1, y1 = int(np.ceil(x1)) + margin, int(np.ceil(y1)) + margin
    patch = np.zeros((max(y1 - y0, 1), max(x1 - x0, 1)), np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
      patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = gray[sy0:sy1, sx0:sx1]
    out[i] = np.asarray(Image.fromarray(patch).resize((size, size), Image.BILINEAR))
  return out


class FaceExtractor:
  """MTCNN (facenet-pytorch's weights) + the FER mini-Xception (fer's weights) for one device."""

  def __init__(self, weights: str = "pretrained", device: str = "cpu", min_face: int = MIN_FACE,
               min_score: float = MIN_SCORE):
    import jax
    import torch
    from facenet_pytorch.models import mtcnn as mt
    from extract import weights as weights_lib
    self.torch_device = torch.device(device)
    self.min_face, self.min_score = int(min_face), float(min_score)
    data = _mtcnn_dir()
    self.nets = []
    detector = {}
    for cls, name in zip((mt.PNet, mt.RNet, mt.ONet), _MTCNN_FILES):
      net = cls(pretrained=False)
      # Read here with torch's weights-only unpickler: no code in the file runs.
      net.load_state_dict(weights_lib.load_torch_state_dict(data / name, "MTCNN"))
      self.nets.append(net.eval().to(self.torch_device))
      detector[name] = weights_lib.sha256(str(data / name))
    if weights == "pretrained":
      path = fer.default_weights_path()
      self.model, variables = fer.load(path)
      classifier = {"mode": "pretrained", "file": path.name,
                    "sha256": weights_lib.sha256(str(path))}
    elif weights == "random":
      self.model = fer.MiniXception()
      variables = self.model.init(jax.random.key(0), np.zeros((1, 64, 64, 1), np.float32))
      classifier = {"mode": "random", "seed": 0}
    else:
      raise ValueError(f"weights for faces: {weights!r}; expected 'pretrained' or 'random'")
    platform = "gpu" if device.startswith("cuda") else "cpu"
    try:
      jdev = jax.devices(platform)[0]
    except RuntimeError:
      jdev = jax.devices()[0]  # JAX without CUDA next to a CUDA torch: classify on its default
    self.variables = jax.device_put(variables, jdev)
    self._classify = jax.jit(self.model.apply)
    self.weights_info = {"mode": classifier["mode"], "classifier": classifier,
                         "detector": {"package": "facenet-pytorch", "sha256": detector}}

  def detect(self, frames: np.ndarray) -> list[np.ndarray]:
    """(n, H, W, 3) uint8 -> per frame (k, 5) float: x0, y0, x1, y1, score (kept faces only)."""
    import torch
    from facenet_pytorch.models.utils.detect_face import detect_face
    n, h, w = frames.shape[:3]
    empty = np.zeros((0, 5), np.float32)
    if min(h, w) < max(self.min_face, 12):  # MTCNN's pyramid is empty: no face can fit
      return [empty] * n
    with torch.no_grad():
      boxes, _ = detect_face(frames, self.min_face, *self.nets, [0.6, 0.7, 0.7], 0.709,
                             self.torch_device)
    out = []
    for b in boxes:
      b = np.asarray(b, np.float32).reshape(-1, 5)
      side = np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
      out.append(b[(b[:, 4] >= self.min_score) & (side >= self.min_face)])
    return out

  def classify(self, crops: np.ndarray) -> np.ndarray:
    """(k, 64, 64) uint8 gray faces -> (k, 7) probabilities (fer.EMOTIONS order)."""
    k = len(crops)
    if not k:
      return np.zeros((0, len(fer.EMOTIONS)), np.float32)
    # A few padded sizes keep the compiled shapes few without classifying mostly padding
    # (the CPU cost grows with the batch: 32 crops take ~0.2 s on 2 cores).
    size = min(_FER_BATCH, max(4, 1 << (k - 1).bit_length()))
    pad = -k % size
    x = fer.preprocess(np.concatenate([crops, np.zeros((pad, 64, 64), np.uint8)]))
    probs = [np.asarray(self._classify(self.variables, x[i:i + size]))
             for i in range(0, len(x), size)]
    return np.concatenate(probs)[:k]

  def frames_at(self, path: str, info: media.MediaInfo, times: np.ndarray):
    """Yields (sample index, RGB frame) for the frame shown at each time, in time order."""
    import av
    idx = np.clip(np.searchsorted(info.frame_times, times + 1e-6, side="right") - 1, 0,
                  len(info.frame_times) - 1)
    want: dict[int, list[int]] = {}
    for s, k in enumerate(idx):
      want.setdefault(int(k), []).append(s)
    pts_to_index = {int(p): i for i, p in enumerate(info.frame_pts)}
    scale = min(1.0, MAX_SIDE / max(info.width, info.height, 1))
    size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
    seen = -1
    with media._open(path) as c:  # pylint: disable=protected-access
      vs = c.streams.video[0]
      vs.thread_type = "AUTO"
      try:
        for frame in c.decode(vs):
          k = pts_to_index.get(frame.pts, seen + 1) if frame.pts is not None else seen + 1
          seen = max(seen, k)
          if k in want:
            rgb = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
            for s in want.pop(k):
              yield s, rgb
      except av.error.FFmpegError as e:
        raise media.MediaError(f"{path}: corrupt or truncated, decoding failed near frame "
                               f"{seen + 1} ({media._reason(e)})") from None  # pylint: disable=protected-access
    if want:
      k = min(want)
      raise media.MediaError(f"{path}: corrupt or truncated, frame {k} of "
                             f"{len(info.frame_times)} could not be decoded")

  def run(self, path: str, info: media.MediaInfo, start_s, end_s, face_fps: float = FACE_FPS,
          batch: int = 8) -> tuple[np.ndarray, list[dict], dict]:
    """(features (segments, 9), events, summary) for one file."""
    times = sample_times(info.duration_s, face_fps)
    scale = min(1.0, MAX_SIDE / max(info.width, info.height, 1))
    dets: list = [None] * len(times)
    probs: list = [None] * len(times)
    frame_area = float(info.width * info.height) or 1.0
    pending: list[tuple[int, np.ndarray]] = []

    def flush():
      frames = np.stack([f for _, f in pending])
      found = self.detect(frames)
      # All crops of the batch classified at once: one call instead of one per sample.
      crops = [crop_faces(_to_gray(rgb), b[:, :4]) for (_, rgb), b in zip(pending, found)]
      p = self.classify(np.concatenate(crops))
      ends = np.cumsum([len(b) for b in found])
      for (s, _), b, e in zip(pending, found, ends):
        probs[s] = p[e - len(b):e]
        dets[s] = np.concatenate([b[:, :4] / scale, b[:, 4:]], axis=1)  # source pixels
      pending.clear()

    for s, rgb in self.frames_at(path, info, times):
      pending.append((s, rgb))
      if len(pending) == batch:
        flush()
    if pending:
      flush()
    w, h = info.width, info.height
    boxes = [np.clip(d[:, :4], 0, [w, h, w, h]) for d in dets]
    ids = assign_ids(times, boxes)
    events = []
    for t, b, p, i in zip(times, boxes, probs, ids):
      for j in range(len(b)):
        c = int(np.argmax(p[j]))
        events.append({"type": "emotion", "class": fer.EMOTIONS[c], "seconds": round(float(t), 3),
                       "object": {"id": int(i[j]), "box": [round(float(v), 1) for v in b[j]],
                                  "score": round(float(p[j][c]), 4)}})
    feats = segment_features(times, boxes, probs, frame_area, start_s, end_s)
    num_faces = sum(len(b) for b in boxes)
    if not num_faces:
      log.info("%s: no face found in %d samples at %g per second; no event", path, len(times),
               face_fps)
    summary = {"face_fps": face_fps, "samples": int(len(times)), "faces": int(num_faces),
               "tracks": int(max((int(i.max()) + 1 for i in ids if len(i)), default=0)),
               "samples_with_face": int(sum(len(b) > 0 for b in boxes)),
               "min_face": self.min_face, "min_score": self.min_score, "layout": FACES_LAYOUT}
    return feats, events, summary


def segment_features(times, boxes, probs, frame_area, start_s, end_s) -> np.ndarray:
  """(segments, 9): FACES_LAYOUT over the samples inside each segment.

  A segment with no sample inside (shorter than 1 / face_fps) uses the sample nearest its
  centre. Expression means are over every face of every sample (zeros where no face was seen,
  which face_fraction = 0 tells apart); largest_face_share is the mean over the samples with
  a face of the largest box's area over the frame's.
  """
  times = np.asarray(times)
  out = np.zeros((len(start_s), FACES_DIM), np.float32)
  for n, (s, e) in enumerate(zip(start_s, end_s)):
    inside = np.nonzero((times >= s - 1e-6) & (times < e - 1e-6))[0]
    if not len(inside):
      inside = [int(np.argmin(np.abs(times - (s + e) / 2)))]
    with_face = [k for k in inside if len(boxes[k])]
    if with_face:
      out[n, :7] = np.concatenate([probs[k] for k in with_face]).mean(0)
      areas = [((boxes[k][:, 2] - boxes[k][:, 0]) * (boxes[k][:, 3] - boxes[k][:, 1])).max()
               for k in with_face]
      out[n, 8] = float(np.mean(areas)) / frame_area
    out[n, 7] = len(with_face) / len(inside)
  return out


def save_events(events: list[dict], path) -> None:
  """Writes the events JSON list atomically (aan_jax.util.atomic), one event a line: readable,
  and diffs stay small."""
  from aan_jax.util import atomic  # pylint: disable=g-import-not-at-top
  atomic.write_file(path, "[\n" + ",\n".join(json.dumps(e) for e in events)
                    + ("\n]\n" if events else "]\n"))
