"""Reads a state dict saved from the authors' PyTorch VAANet into the Flax `VAANet`.

    from aan_jax.convert import attendaffectnet as convert
    model, variables = convert.from_vaanet("ve8_epoch100.pth")
    out = model.apply(variables, visual, audio, deterministic=True)

The file is read by `aan_jax.convert.torch_pickle` (legacy or zip layout; a bare state dict, a
`{"state_dict": ...}` training checkpoint, or a whole pickled module), which never runs
code from it. Keys are the authors' (`conv0.0.weight`, `sa_net.conv.0.weight`,
`a_resnet.5.0.downsample.1.running_var`, `av_fc.bias`, ...); a `module.` prefix
(DataParallel) is dropped; the visual backbone's keys and the unused VisualStream `fc`
are ignored. Every size of the model is read from the tensors' shapes.
"""

from __future__ import annotations

import os
import re
from typing import Mapping

import jax
import numpy as np

from aan_jax.convert import torch_pickle
from aan_jax.models.vaanet import VAANet

# The head's modules in the authors' VAANet; any other top-level key (the 3D ResNet
# backbone, whatever its attribute name) is not part of what this model holds.
_HEAD = ("conv0", "sa_net", "cwa_net", "ta_net", "a_resnet", "a_fc", "aa_net", "av_fc")
_IGNORED_HEAD = ("fc",)  # VisualStream's classifier: in the state dict, unused by forward


class VAANetConversionError(ValueError):
  """The state dict does not look like the authors' VAANet."""


def _f32(a) -> np.ndarray:
  return np.asarray(a, np.float32)


def _bn(sd, prefix) -> tuple[dict, dict]:
  return ({"scale": _f32(sd[prefix + ".weight"]), "bias": _f32(sd[prefix + ".bias"])},
          {"mean": _f32(sd[prefix + ".running_mean"]), "var": _f32(sd[prefix + ".running_var"])})


def _linear(sd, prefix, bias: bool = True) -> dict:
  out = {"kernel": np.ascontiguousarray(_f32(sd[prefix + ".weight"]).T)}
  if bias:
    out["bias"] = _f32(sd[prefix + ".bias"])
  return out


def _conv1d(sd, prefix, bias: bool = False) -> dict:
  """Conv1d weight [out, in, 1] -> Dense kernel [in, out]."""
  w = _f32(sd[prefix + ".weight"])
  if w.ndim != 3 or w.shape[2] != 1:
    raise VAANetConversionError(f"{prefix}.weight has shape {w.shape}; expected [out, in, 1]")
  out = {"kernel": np.ascontiguousarray(w[:, :, 0].T)}
  if bias:
    out["bias"] = _f32(sd[prefix + ".bias"])
  return out


def _conv2d(sd, prefix) -> dict:
  """Conv2d weight [out, in, kh, kw] -> Flax kernel [kh, kw, in, out]."""
  return {"kernel": np.ascontiguousarray(_f32(sd[prefix + ".weight"]).transpose(2, 3, 1, 0))}


def _attention(sd, prefix, fc_bias: bool) -> tuple[dict, dict]:
  bn_p, bn_s = _bn(sd, prefix + ".conv.1")
  return ({"conv": _conv1d(sd, prefix + ".conv.0"), "bn": bn_p,
           "fc": _linear(sd, prefix + ".fc", bias=fc_bias)}, {"bn": bn_s})


def audio_resnet_variables(sd: Mapping[str, np.ndarray], prefix: str = "a_resnet",
                           torchvision: bool = False) -> tuple[dict, dict]:
  """The audio ResNet's (params, batch_stats) from torch keys.

  `prefix="a_resnet"`: the authors' Sequential (0 conv, 1 bn, 4..7 layer1..4).
  `torchvision=True`: a torchvision ResNet-18 state dict (bn1, layer1..4; its 3-channel
  conv1 is not used: the audio branch's first conv is new), as VAANet starts from it.
  """
  if torchvision:
    name = lambda k: f"layer{k}"
    stem_bn = "bn1"
  else:
    name = lambda k: f"{prefix}.{3 + k}"
    stem_bn = f"{prefix}.1"
  params, stats = {}, {}
  if not torchvision:
    params["stem_conv"] = _conv2d(sd, f"{prefix}.0")
  params["stem_bn"], stats["stem_bn"] = _bn(sd, stem_bn)
  for k in range(1, 5):
    blocks = sorted({int(m.group(1)) for key in sd
                     if (m := re.match(re.escape(name(k)) + r"\.(\d+)\.", key))})
    if blocks != list(range(len(blocks))) or not blocks:
      raise VAANetConversionError(f"{name(k)}: blocks {blocks} are not 0..N-1")
    for j in blocks:
      p = f"{name(k)}.{j}"
      bp, bs = {}, {}
      bp["conv1"], bp["conv2"] = _conv2d(sd, p + ".conv1"), _conv2d(sd, p + ".conv2")
      bp["bn1"], bs["bn1"] = _bn(sd, p + ".bn1")
      bp["bn2"], bs["bn2"] = _bn(sd, p + ".bn2")
      if p + ".downsample.0.weight" in sd:
        bp["down_conv"] = _conv2d(sd, p + ".downsample.0")
        bp["down_bn"], bs["down_bn"] = _bn(sd, p + ".downsample.1")
      params[f"layer{k}_{j}"], stats[f"layer{k}_{j}"] = bp, bs
  return params, stats


def _strip(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = {}
  for k, v in sd.items():
    k = k[len("module."):] if k.startswith("module.") else k
    if k.split(".")[0] in _HEAD:
      out[k] = np.asarray(v)
  return out


def _sizes(sd: Mapping[str, np.ndarray], source: str) -> dict:
  """Every VAANet size, read from the tensors' shapes."""
  try:
    hidden, backbone_dim = sd["conv0.0.weight"].shape[:2]
    widths, blocks = [], []
    for k in range(1, 5):
      ids = {int(m.group(1)) for key in sd
             if (m := re.match(rf"a_resnet\.{3 + k}\.(\d+)\.conv1\.weight$", key))}
      widths.append(int(sd[f"a_resnet.{3 + k}.0.conv1.weight"].shape[0]))
      blocks.append(len(ids))
    stem = sd["a_resnet.0.weight"].shape
    if stem[1:] != (1, 7, 1):
      raise VAANetConversionError(f"{source}: a_resnet.0.weight has shape {stem}; expected "
                                  "[width, 1, 7, 1] (the audio branch's first conv)")
    return dict(
        num_classes=int(sd["av_fc.weight"].shape[0]),
        seq_len=int(sd["ta_net.fc.weight"].shape[0]),
        positions=int(sd["sa_net.fc.weight"].shape[0]),
        backbone_dim=int(backbone_dim), hidden=int(hidden),
        audio_segments=int(sd["aa_net.fc.weight"].shape[0]),
        audio_widths=tuple(widths), audio_blocks=tuple(blocks),
        audio_dim=int(sd["a_fc.0.weight"].shape[0]))
  except KeyError as e:
    raise VAANetConversionError(f"{source}: missing tensor {e.args[0]!r}; is this a VAANet "
                                "state dict?") from None


def from_state_dict(sd: Mapping[str, np.ndarray], *, source: str = "state dict",
                    audio_frames: int = 256, n_mfcc: int = 32) -> tuple[VAANet, dict]:
  """Builds a VAANet and its variables ({"params", "batch_stats"}) from the authors' keys.

  `audio_frames` and `n_mfcc` (the MFCC image of one segment) are not recorded in the
  weights; the authors' values are the defaults.
  """
  sd = _strip(sd)
  if not sd:
    raise VAANetConversionError(
        f"{source}: none of VAANet's modules ({', '.join(_HEAD)}) is in the state dict")
  model = VAANet(**_sizes(sd, source), audio_frames=audio_frames, n_mfcc=n_mfcc)
  try:
    params, stats = {}, {}
    params["conv0"] = _conv1d(sd, "conv0.0", bias=True)
    params["conv0_bn"], stats["conv0_bn"] = _bn(sd, "conv0.1")
    params["sa"], stats["sa"] = _attention(sd, "sa_net", fc_bias=False)
    params["cwa"], stats["cwa"] = _attention(sd, "cwa_net", fc_bias=False)
    params["ta"], stats["ta"] = _attention(sd, "ta_net", fc_bias=True)
    params["a_resnet"], stats["a_resnet"] = audio_resnet_variables(sd)
    params["a_fc"] = _linear(sd, "a_fc.0")
    params["a_fc_bn"], stats["a_fc_bn"] = _bn(sd, "a_fc.1")
    params["aa"], stats["aa"] = _attention(sd, "aa_net", fc_bias=True)
    params["av_fc"] = _linear(sd, "av_fc")
  except KeyError as e:
    raise VAANetConversionError(f"{source}: missing tensor {e.args[0]!r}") from None
  variables = {"params": params, "batch_stats": stats}
  check_variables(model, variables, source)
  return model, variables


def check_variables(model: VAANet, variables: dict, source: str) -> None:
  """Every converted array must have the shape Flax creates, and none may be missing."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), *model.dummy_inputs(1))
  flat = lambda tree: {"/".join(str(getattr(k, "key", k)) for k in path): tuple(np.shape(v))
                       for path, v in jax.tree_util.tree_leaves_with_path(tree)}
  want, got = flat(dict(shapes)), flat(variables)
  if want != got:
    diff = sorted(set(want.items()) ^ set(got.items()))[:4]
    raise VAANetConversionError(f"{source}: converted arrays do not fit the model: {diff}")


def from_vaanet(path: str | os.PathLike, **kwargs) -> tuple[VAANet, dict]:
  """Reads a .pth holding the authors' VAANet state dict as (model, variables)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    raise VAANetConversionError(f"{path}: is a directory; give the .pth file")
  obj = torch_pickle.load(path)  # its own errors (UnsafeCheckpointError, ...) name the file
  try:
    sd = torch_pickle.state_dict(obj)
  except ValueError as e:  # CheckpointError: a bare tensor, a list, ...
    raise VAANetConversionError(f"{path}: {e}" if not str(e).startswith(path) else str(e)
                                ) from None
  return from_state_dict(sd, source=path, **kwargs)


def load_audio_resnet18(variables: dict, sd: Mapping[str, np.ndarray],
                        source: str = "resnet18 state dict") -> dict:
  """Copies a torchvision ResNet-18 (ImageNet) body into the audio branch, as VAANet starts.

  Returns new variables; the new first conv and everything else stay as given.
  """
  try:
    p, s = audio_resnet_variables(
        {k: np.asarray(v) for k, v in sd.items()}, torchvision=True)
  except KeyError as e:
    raise VAANetConversionError(f"{source}: missing tensor {e.args[0]!r}") from None
  params = jax.tree_util.tree_map(np.asarray, dict(variables["params"]))
  stats = jax.tree_util.tree_map(np.asarray, dict(variables["batch_stats"]))
  a_p, a_s = dict(params["a_resnet"]), dict(stats["a_resnet"])
  for k in p:
    if k != "stem_conv":
      a_p[k] = p[k]
  a_s.update(s)
  params["a_resnet"], stats["a_resnet"] = a_p, a_s
  out = {**variables, "params": params, "batch_stats": stats}
  want = jax.tree_util.tree_map(np.shape, {"params": variables["params"],
                                           "batch_stats": variables["batch_stats"]})
  got = jax.tree_util.tree_map(np.shape, {"params": params, "batch_stats": stats})
  if want != got:
    raise VAANetConversionError(f"{source}: does not fit the audio branch (a ResNet-18 "
                                "body of the model's widths is expected)")
  return out
