"""3D ResNet (Hara et al., Kinetics-400) in PyTorch: VAANet's visual backbone, maps per snippet.

The network is the one of Hara et al.'s 3D-ResNets-PyTorch release (shortcut type B: a
1x1x1 conv + BN where the shape changes; conv1 7x7x7 stride (1, 2, 2); max pool 3x3x3
stride 2), and its parameter names are those of their checkpoints (`module.conv1.weight`,
`module.layer3.22.conv2.weight`, `module.layer1.0.downsample.0.weight`, ...), so their
`resnet-101-kinetics.pth` loads as it is. The depth is read from the file (ResNet-101 by
default: Bottleneck blocks [3, 4, 23, 3]); `fc` and the average pool are not used.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from extract import weights as weights_lib
from extract.torch_models import _seeded, torch_device

RESNET101_BLOCKS = (3, 4, 23, 3)
# VAANet's input scaling: pixels in 0-255, x / 255 - 100 / 255 (one mean, no std).
PIXEL_MEAN = 100.0


class Bottleneck3D(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm3d(planes)
    self.conv2 = nn.Conv3d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm3d(planes)
    self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm3d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class BasicBlock3D(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv3d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm3d(planes)
    self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm3d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet3D(nn.Module):
  """Hara et al.'s 3D ResNet up to layer4: (N, 3, T, H, W) -> (N, C, T', H', W')."""

  def __init__(self, blocks=RESNET101_BLOCKS, bottleneck: bool = True):
    super().__init__()
    block = Bottleneck3D if bottleneck else BasicBlock3D
    self.inplanes = 64
    self.conv1 = nn.Conv3d(3, 64, 7, (1, 2, 2), (3, 3, 3), bias=False)
    self.bn1 = nn.BatchNorm3d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool3d(3, 2, 1)
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
      setattr(self, f"layer{i + 1}", self._layer(block, planes, n, 1 if i == 0 else 2))
    self.dim = 512 * block.expansion

  def _layer(self, block, planes, n, stride):
    down = None
    if stride != 1 or self.inplanes != planes * block.expansion:  # shortcut type B
      down = nn.Sequential(nn.Conv3d(self.inplanes, planes * block.expansion, 1, stride,
                                     bias=False), nn.BatchNorm3d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, down)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes) for _ in range(1, n)]
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def architecture(state: dict) -> tuple[tuple[int, ...], bool]:
  """(blocks per layer, bottleneck?) read from a Hara-layout state dict (prefix stripped)."""
  blocks = []
  for k in range(1, 5):
    ids = {int(m.group(1)) for key in state if (m := re.match(rf"layer{k}\.(\d+)\.", key))}
    if ids != set(range(len(ids))) or not ids:
      raise ValueError(f"layer{k}: blocks {sorted(ids)} are not 0..N-1")
    blocks.append(len(ids))
  return tuple(blocks), "layer1.0.conv3.weight" in state


def _strip(state: dict) -> dict:
  """Drops DataParallel's `module.` prefix and the Kinetics classifier."""
  out = {}
  for k, v in state.items():
    k = k[len("module."):] if k.startswith("module.") else k
    if not k.startswith("fc."):
      out[k] = v
  return out


class ResNet3DExtractor:
  """uint8 snippets (n, 16, 112, 112, 3) -> maps (n, positions, channels), channels last.

  Positions are the layer4 map's h * W' + w (4 x 4 = 16 for 112-px snippets); a map with
  more than one time step (longer snippets) is averaged over time.
  """
  name = "resnet101"
  batch_size = 4

  def __init__(self, weights: str = "pretrained", device: str = "cpu",
               blocks=RESNET101_BLOCKS):
    if weights == "pretrained":
      path = weights_lib.resolve("resnet101_3d")
      state = _strip(weights_lib.load_torch_state_dict(path, "resnet101_3d"))
      try:
        blocks, bottleneck = architecture(state)
      except ValueError as e:
        raise ValueError(f"{path}: not a 3D ResNet checkpoint in Hara et al.'s layout ({e})") \
            from None
      model = ResNet3D(blocks, bottleneck)
      own = model.state_dict()
      missing = [k for k in own if k not in state]
      unexpected = [k for k in state if k not in own]
      bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
      if missing or unexpected or bad:
        raise ValueError(f"{path}: does not fit the 3D ResNet (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}, wrong shape {bad[:3]})")
      model.load_state_dict(state)
      self.weights_info = {**weights_lib.describe("resnet101_3d", path),
                           "blocks": list(blocks)}
    else:
      with _seeded(0):
        model = ResNet3D(blocks)
      self.weights_info = {"mode": "random", "seed": 0, "blocks": list(blocks)}
    self.dim = model.dim
    self.device = torch_device(device)
    self.model = model.eval().to(self.device)

  def snippets(self, snippets: np.ndarray) -> np.ndarray:
    x = np.asarray(snippets)
    if x.dtype != np.uint8 or x.ndim != 5 or x.shape[-1] != 3:
      raise ValueError(f"snippets must be uint8 (n, frames, H, W, 3); got {x.dtype} {x.shape}")
    outs = []
    with torch.inference_mode():
      for s in range(0, len(x), self.batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[s:s + self.batch_size])).to(self.device)
        xb = (xb.permute(0, 4, 1, 2, 3).float() - PIXEL_MEAN) / 255.0
        y = self.model(xb).mean(dim=2)                     # (n, C, H', W')
        outs.append(y.flatten(2).transpose(1, 2).float().cpu())  # (n, H'W', C)
    if not outs:
      return np.zeros((0, 16, self.dim), np.float32)
    return torch.cat(outs).numpy()
