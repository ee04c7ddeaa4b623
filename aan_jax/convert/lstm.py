"""Import of a torch.nn.LSTM's trained weights into the baselines' TorchLSTM (aan_jax.models.
baselines), read from a state dict or a .pth file without running code from it."""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from aan_jax.convert import torch_pickle


class TorchImportError(ValueError):
  """A torch LSTM state dict that does not fit."""


def import_torch_lstm(source: Mapping[str, Any] | str | os.PathLike, prefix: str = "",
                      like: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
  """TorchLSTM parameters from a torch.nn.LSTM state dict (or a .pth file holding one).

  `prefix` selects the LSTM inside a larger state dict (e.g. "lstm."); layers are read
  from `weight_ih_l0` on until one is missing. Bidirectional LSTMs (`_reverse` keys) and
  projections (`weight_hr_`) are refused: they are not causal or not this cell. `like`,
  the parameters of an initialised TorchLSTM (e.g. `variables["params"]["lstm"]`), makes
  every array's shape checked against it. A file is read with `aan_jax.convert.torch_pickle`,
  which never runs code from it.
  """
  name = "state dict"
  if isinstance(source, (str, os.PathLike)):
    name = os.fspath(source)
    source = torch_pickle.state_dict(torch_pickle.load(source))
  sd = {k[len(prefix):]: v for k, v in source.items() if k.startswith(prefix)}
  odd = sorted(k for k in sd if k.endswith("_reverse") or k.startswith("weight_hr_"))
  if odd:
    raise TorchImportError(
        f"{name}: {prefix}{odd[0]} is a bidirectional or projected LSTM; only a "
        "unidirectional torch.nn.LSTM without proj_size imports (the baselines are causal)")
  if "weight_ih_l0" not in sd:
    raise TorchImportError(
        f"{name}: no {prefix}weight_ih_l0; keys with that prefix: {sorted(sd)[:8]}")
  params: dict[str, np.ndarray] = {}
  k = 0
  hidden = None
  while f"weight_ih_l{k}" in sd:
    for key in (f"weight_hh_l{k}", f"bias_ih_l{k}", f"bias_hh_l{k}"):
      if key not in sd:
        raise TorchImportError(f"{name}: missing {prefix}{key} (bias=False LSTMs are "
                               "not supported: torch.nn.LSTM's default has both biases)")
    w_ih, w_hh, b_ih, b_hh = (np.asarray(sd[f"{n}_l{k}"], np.float32)
                              for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    if hidden is None:
      if w_ih.ndim != 2 or w_ih.shape[0] % 4:
        raise TorchImportError(f"{name}: {prefix}weight_ih_l0 has shape {w_ih.shape}; "
                               "expected (4 * hidden, input_size)")
      hidden = w_ih.shape[0] // 4
    want = {"weight_ih": (4 * hidden, w_ih.shape[-1] if k == 0 else hidden),
            "weight_hh": (4 * hidden, hidden), "bias_ih": (4 * hidden,),
            "bias_hh": (4 * hidden,)}
    for n, arr in zip(want, (w_ih, w_hh, b_ih, b_hh)):
      if arr.shape != want[n]:
        raise TorchImportError(
            f"{name}: {prefix}{n}_l{k} has shape {arr.shape}; expected {want[n]}")
    params[f"layer_{k}_kernel_ih"] = w_ih.T.copy()
    params[f"layer_{k}_kernel_hh"] = w_hh.T.copy()
    params[f"layer_{k}_bias_ih"] = b_ih
    params[f"layer_{k}_bias_hh"] = b_hh
    k += 1
  if like is not None:
    if set(like) != set(params):
      raise TorchImportError(
          f"{name}: {k} layer(s) of {hidden} cells, the model has "
          f"{sorted(set(like) ^ set(params))[:4]} differing")
    for n, arr in params.items():
      if tuple(np.shape(like[n])) != arr.shape:
        raise TorchImportError(
            f"{name}: {n} has shape {arr.shape} from the file; the model wants "
            f"{tuple(np.shape(like[n]))}")
  return params
