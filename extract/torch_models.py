"""ResNet-50 (torchvision), FlowNetS's contracting part and VGGish in PyTorch, with batch APIs."""

from __future__ import annotations

import contextlib
import functools
from typing import Sequence

import numpy as np
import torch
from torch import nn

from extract import weights as weights_lib


def torch_device(device: str) -> torch.device:
  if device.startswith("cuda") and not torch.cuda.is_available():
    raise ValueError(f"device {device!r}: torch sees no CUDA GPU")
  return torch.device(device)


@contextlib.contextmanager
def _seeded(seed: int):
  """Random init from a fixed seed without touching the caller's global RNG."""
  with torch.random.fork_rng(devices=[]):
    torch.manual_seed(seed)
    yield


def _load_into(model: nn.Module, state: dict, path, feature: str, prefixes=None):
  """Loads `state` into `model`, failing clearly on any missing or mis-shaped array."""
  own = model.state_dict()
  if prefixes is not None:  # keep only the part of a larger network that this module holds
    state = {k: v for k, v in state.items() if k.split(".")[0] in prefixes}
  missing = [k for k in own if k not in state]
  unexpected = [k for k in state if k not in own]
  bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
  if missing or unexpected or bad:
    raise ValueError(f"{path}: does not fit the {feature} model (missing {missing[:3]}, "
                     f"unexpected {unexpected[:3]}, wrong shape {bad[:3]}); is it "
                     f"{weights_lib.WEIGHT_FILES[feature].filename}?")
  model.load_state_dict(state)


class _TorchExtractor:
  name: str
  dim: int
  batch_size = 32

  def _setup(self, model: nn.Module, weights: str, device: str, load):
    if weights == "pretrained":
      path = weights_lib.resolve(self.name)
      load(model, weights_lib.load_torch_state_dict(path, self.name), path)
      self.weights_info = weights_lib.describe(self.name, path)
    else:
      self.weights_info = {"mode": "random", "seed": 0}
    self.device = torch_device(device)
    self.model = model.eval().to(self.device)

  def _run(self, x: np.ndarray, prep=None) -> np.ndarray:
    """Runs the model on `x` in batches; returns float32 numpy (n, dim).

    `prep` (optional) turns a batch, already on the device, into the model's input: the
    frame models send uint8 frames and convert them there (a quarter of the bytes to copy,
    and the GPU does the arithmetic). Outputs stay on the device until the end, so the
    host prepares and copies the next batch while the GPU runs this one (one sync per call).
    """
    outs = []
    with torch.inference_mode():
      for s in range(0, len(x), self.batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[s:s + self.batch_size])).to(self.device)
        outs.append(self.model(xb if prep is None else prep(xb)))
      if not outs:
        return np.zeros((0, self.dim), np.float32)
      return torch.cat(outs).float().cpu().numpy()


def _uint8(x, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype != np.uint8:
    raise ValueError(f"{what} must be uint8 RGB frames (0-255); got dtype {x.dtype}")
  return x


def _segment_means(vectors: np.ndarray, counts: Sequence[int], dim: int) -> np.ndarray:
  out = np.full((len(counts), dim), np.nan, np.float32)
  ends = np.cumsum(counts)
  for i, (n, e) in enumerate(zip(counts, ends)):
    if n:
      out[i] = vectors[e - n:e].mean(0)
  return out


class ResNet50Extractor(_TorchExtractor):
  """ImageNet ResNet-50 without its classifier: 2048-d per frame, mean over a segment's frames."""
  name, dim = "resnet50", 2048
  MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
  STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)

  def __init__(self, weights: str = "pretrained", device: str = "cpu"):
    import torchvision
    with _seeded(0):
      model = torchvision.models.resnet50(weights=None)
    model.fc = nn.Identity()

    def load(m, state, path):
      state = {k: v for k, v in state.items() if not k.startswith("fc.")}
      _load_into(m, state, path, "resnet50")
    self._setup(model, weights, device, load)

  def _prep(self, xb: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> normalized float32 NCHW, the same float32 ops in the same order as
    (x / 255 - mean) / std in numpy (bitwise equal on the CPU; tested)."""
    return (xb.permute(0, 3, 1, 2).float() / 255.0 - self._mean) / self._std

  @functools.cached_property
  def _mean(self) -> torch.Tensor:  # on the device once, not per batch
    return torch.from_numpy(self.MEAN).to(self.device)

  @functools.cached_property
  def _std(self) -> torch.Tensor:
    return torch.from_numpy(self.STD).to(self.device)

  def frames(self, frames: np.ndarray) -> np.ndarray:
    """uint8 (n, H, W, 3) RGB frames -> (n, 2048)."""
    return self._run(_uint8(frames, "frames"), self._prep)

  def segments(self, segments: Sequence[np.ndarray]) -> np.ndarray:
    counts = [len(s) for s in segments]
    if not sum(counts):
      return np.full((len(segments), self.dim), np.nan, np.float32)
    return _segment_means(self.frames(np.concatenate(segments)), counts, self.dim)


def _conv(cin, cout, k=3, stride=1, batch_norm=False):
  layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=not batch_norm)]
  if batch_norm:
    layers.append(nn.BatchNorm2d(cout))
  layers.append(nn.LeakyReLU(0.1))
  return nn.Sequential(*layers)


class FlowNetSEncoder(nn.Module):
  """FlowNetS up to conv6_1 (1024 channels); names match FlowNetPytorch's state_dict."""
  LAYERS = ("conv1", "conv2", "conv3", "conv3_1", "conv4", "conv4_1", "conv5", "conv5_1",
            "conv6", "conv6_1")

  def __init__(self, batch_norm: bool = False):
    super().__init__()
    spec = [(6, 64, 7, 2), (64, 128, 5, 2), (128, 256, 5, 2), (256, 256, 3, 1), (256, 512, 3, 2),
            (512, 512, 3, 1), (512, 512, 3, 2), (512, 512, 3, 1), (512, 1024, 3, 2),
            (1024, 1024, 3, 1)]
    for name, (cin, cout, k, s) in zip(self.LAYERS, spec):
      setattr(self, name, _conv(cin, cout, k, s, batch_norm))

  def forward(self, x):
    for name in self.LAYERS:
      x = getattr(self, name)(x)
    return x.mean(dim=(2, 3))  # global average over the conv6_1 map


class FlowNetExtractor(_TorchExtractor):
  """FlowNetS (Flying Chairs) contracting part on consecutive frame pairs, mean over pairs."""
  name, dim = "flownet", 1024
  batch_size = 16
  # FlowNetPytorch's input transform: pixels / 255 minus this per-channel RGB mean.
  MEAN = np.array([0.411, 0.432, 0.45], np.float32).reshape(1, 3, 1, 1)

  def __init__(self, weights: str = "pretrained", device: str = "cpu"):
    state, path = None, None
    if weights == "pretrained":
      path = weights_lib.resolve("flownet")
      state = weights_lib.load_torch_state_dict(path, "flownet")
    batch_norm = state is not None and "conv1.1.running_mean" in state  # flownets_bn checkpoint
    with _seeded(0):
      model = FlowNetSEncoder(batch_norm)

    def load(m, _, path):
      _load_into(m, state, path, "flownet", prefixes=set(FlowNetSEncoder.LAYERS))
    if weights == "pretrained":
      load(model, state, path)
      self.weights_info = weights_lib.describe("flownet", path)
      self.device = torch_device(device)
      self.model = model.eval().to(self.device)
    else:
      self._setup(model, weights, device, load)

  def _prep(self, xb: torch.Tensor) -> torch.Tensor:
    """uint8 frame pairs (n, H, W, 6) -> float32 NCHW, x / 255 - mean per RGB channel, as
    numpy computed it (bitwise equal on the CPU; tested)."""
    return xb.permute(0, 3, 1, 2).float() / 255.0 - self._pair_mean

  @functools.cached_property
  def _pair_mean(self) -> torch.Tensor:  # both frames' RGB means, on the device once
    return torch.from_numpy(np.tile(self.MEAN, (1, 2, 1, 1))).to(self.device)

  def segments(self, segments: Sequence[np.ndarray]) -> np.ndarray:
    """Pairs (frame i, frame i+1) within each segment; a one-frame segment is paired with itself."""
    pairs, counts = [], []
    for s in segments:
      x = _uint8(s, "segment frames")
      if len(x) == 1:
        x = np.concatenate([x, x])
      # Channels: frame i's RGB, then frame i+1's (uint8 here; scaled on the device).
      pairs.append(np.concatenate([x[:-1], x[1:]], axis=-1) if len(x) else x[:0])
      counts.append(max(len(x) - 1, 0))
    if not sum(counts):
      return np.full((len(segments), self.dim), np.nan, np.float32)
    return _segment_means(self._run(np.concatenate(pairs), self._prep), counts, self.dim)

  def pair_segments(self, firsts: Sequence[np.ndarray], seconds: Sequence[np.ndarray]
                    ) -> np.ndarray:
    """Given pairs per segment (frames firsts[i][j] -> seconds[i][j]), the mean over each
    segment's pairs (the fast preset's few pairs; `segments` pairs every consecutive frame)."""
    pairs = [np.concatenate([_uint8(a, "segment frames"), _uint8(b, "segment frames")], axis=-1)
             for a, b in zip(firsts, seconds)]
    counts = [len(p) for p in pairs]
    if not sum(counts):
      return np.full((len(pairs), self.dim), np.nan, np.float32)
    return _segment_means(self._run(np.concatenate(pairs), self._prep), counts, self.dim)


class VGGishNet(nn.Module):
  """VGGish up to its 128-d embedding (ReLU output); names match torchvggish's state_dict."""

  def __init__(self):
    super().__init__()
    layers, cin = [], 1
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
      if v == "M":
        layers.append(nn.MaxPool2d(2, 2))
      else:
        layers += [nn.Conv2d(cin, v, 3, 1, 1), nn.ReLU()]
        cin = v
    self.features = nn.Sequential(*layers)
    self.embeddings = nn.Sequential(nn.Linear(512 * 4 * 6, 4096), nn.ReLU(),
                                    nn.Linear(4096, 4096), nn.ReLU(),
                                    nn.Linear(4096, 128), nn.ReLU())

  def forward(self, x):  # x: (N, 1, 96, 64) log-mel patches
    x = self.features(x)
    # Flatten in (H, W, C) order: the weights were ported from TF, which flattens NHWC.
    x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
    return self.embeddings(x)


class VGGishExtractor(_TorchExtractor):
  """VGGish (AudioSet) raw embedding per 0.96 s example, mean over a segment's examples."""
  name, dim = "vggish", 128
  batch_size = 64

  def __init__(self, weights: str = "pretrained", device: str = "cpu"):
    with _seeded(0):
      model = VGGishNet()

    def load(m, state, path):  # torchvggish ships the PCA separately; drop it if bundled
      _load_into(m, {k: v for k, v in state.items() if not k.startswith("pproc")}, path, "vggish")
    self._setup(model, weights, device, load)

  def segments(self, audio_segments: Sequence[np.ndarray]) -> np.ndarray:
    from extract import audio
    examples = [audio.vggish_examples(a) for a in audio_segments]
    counts = [len(e) for e in examples]
    if not sum(counts):
      return np.full((len(examples), self.dim), np.nan, np.float32)
    x = np.concatenate(examples)[:, None].astype(np.float32)
    return _segment_means(self._run(x), counts, self.dim)

  def stream(self, num_segments: int) -> "VGGishStream":
    """Segments handed over one at a time (in order); the model runs on full batches."""
    return VGGishStream(self, num_segments)


class VGGishStream:
  """`VGGishExtractor.segments` on segments that arrive one by one, in bounded memory.

  Examples wait until a full batch of `batch_size` is there, so the model sees the same
  batches as on the whole list at once (the same numbers), and a segment's mean is taken
  once all its embeddings are in; nothing of earlier segments is kept but their means.
  """

  def __init__(self, extractor: VGGishExtractor, num_segments: int):
    self.ex = extractor
    self.out = np.full((num_segments, extractor.dim), np.nan, np.float32)
    self.waiting: list[np.ndarray] = []  # examples not yet run
    self.n_waiting = 0
    self.pending: list[list] = []  # [segment, examples left to run, embeddings so far]
    self.next = 0

  def push(self, index: int, audio_segment: np.ndarray) -> None:
    from extract import audio
    if index != self.next:
      raise ValueError(f"segment {index} handed over before segment {self.next}")
    self.next += 1
    x = audio.vggish_examples(audio_segment)
    if len(x):
      self.pending.append([index, len(x), []])
      self.waiting.append(x)
      self.n_waiting += len(x)
    if self.n_waiting >= self.ex.batch_size:
      self._run(self.n_waiting // self.ex.batch_size * self.ex.batch_size)

  def finish(self) -> np.ndarray:
    """(segments, 128): the mean embedding of each (NaN for a segment with no example)."""
    if self.n_waiting:
      self._run(self.n_waiting)
    return self.out

  def _run(self, n: int) -> None:
    x = np.concatenate(self.waiting)
    self.waiting = [x[n:]] if n < len(x) else []
    self.n_waiting = len(x) - n
    vectors = self.ex._run(x[:n, None].astype(np.float32))  # pylint: disable=protected-access
    done = 0
    while done < n:
      seg = self.pending[0]
      take = min(seg[1], n - done)
      seg[2].append(vectors[done:done + take])
      seg[1] -= take
      done += take
      if seg[1] == 0:
        self.out[seg[0]] = np.concatenate(seg[2]).mean(0)
        self.pending.pop(0)
