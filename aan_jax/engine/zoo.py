"""The built-in model specs (aan_jax.engine.specs finds them here by name).

Models are imported inside the functions, so that listing the names costs no import.
"""

from __future__ import annotations

import jax.numpy as jnp

from aan_jax.data.features import AUDIO_FEATURES, VIDEO_FEATURES, canonical_modalities
from aan_jax.engine.specs import ModelSpec

SPECS: dict[str, ModelSpec] = {}


def output_range(config) -> tuple[float, float]:
  """config.output_range "lo,hi" ("" = (-1, 1)): where a regression tanh head maps to."""
  text = str(config.get("output_range", "") or "").strip()
  if not text:
    return (-1.0, 1.0)
  lo, hi = (float(x) for x in text.split(","))
  return (lo, hi)


# ------------------------------------------------------------------------- Feature AAN


def _feature_aan_build(config):
  from aan_jax import models  # pylint: disable=g-import-not-at-top
  mods = canonical_modalities(config.modalities)
  ffn, tanh = config.ffn, False
  if ffn == "auto":
    # The released single-stream (audio-only, video-only) models differ from audio+video.
    single = set(mods) <= set(AUDIO_FEATURES) or set(mods) <= set(VIDEO_FEATURES)
    ffn, tanh = ("tanh_residual", True) if single else ("relu", False)
  return models.FeatureAAN(
      modalities=mods, d_model=config.d_model, num_heads=config.num_heads,
      num_layers=config.num_layers, dropout=config.dropout,
      attention_dropout=config.dropout, output_dropout=config.dropout,
      ffn=ffn, output_tanh=tanh)


def _feature_aan_init(module, key, example=None):
  del example
  return {"params": module.init(key, module.dummy_features(1))["params"]}


def _feature_aan_inputs(module, data, group, item):
  return {"features": {m: data["features"][m][group, item]
                       for m in canonical_modalities(module.modalities)}}


def _feature_aan_train(module, params, inputs, target, key):
  del target
  return module.apply({"params": params}, inputs["features"], deterministic=False,
                      rngs={"dropout": key})


def _feature_aan_eval(module, params, features, valid):
  del valid
  return module.apply({"params": params}, features, deterministic=True)


SPECS["feature_aan"] = ModelSpec(
    _feature_aan_build, _feature_aan_init, _feature_aan_train, _feature_aan_eval,
    label="Feature AAN", batch_inputs=_feature_aan_inputs, input_projections=("tokens",))


# Temporal AAN and Feature+Temporal AAN: each training example is the window of the last
# `window` items of a group ending at the target item (padded and masked at the group's
# start, never mixed across groups), trained sequence-to-one with teacher forcing (loss on
# the last position only); evaluation re-feeds the model's own outputs.


def _temporal_build(config, feature_layers: int):
  from aan_jax import models  # pylint: disable=g-import-not-at-top
  return models.TemporalAAN(
      modalities=canonical_modalities(config.modalities), d_model=config.d_model,
      num_heads=config.num_heads, num_layers=config.num_layers, dropout=config.dropout,
      attention_dropout=config.dropout, output_dropout=config.dropout,
      ffn="relu" if config.ffn == "auto" else config.ffn, norm_first=config.norm_first,
      window=config.window, feature_layers=feature_layers,
      feature_dropout=config.feature_dropout)


def _temporal_init(module, key, example=None):
  del example
  return {"params": module.init(key, *module.dummy_inputs(1))["params"]}


def _temporal_inputs(module, data, group, item):
  length = module.window
  idx = item[:, None] - (length - 1) + jnp.arange(length)[None]   # (B, L)
  pad = idx < 0
  idx = jnp.maximum(idx, 0)
  rows = group[:, None]
  valid = ~pad & data["mask"][rows, idx]
  feats = {m: data["features"][m][rows, idx] for m in canonical_modalities(module.modalities)}
  # Windows of every target: the inputs are shared by all runs; train_apply picks one.
  return {"features": feats, "targets": data["targets"][:, rows, idx], "mask": valid}


def _temporal_train(module, params, inputs, target, key):
  from aan_jax import models  # pylint: disable=g-import-not-at-top
  mask = inputs["mask"]
  targets_in = models.shift_targets(inputs["targets"][target], mask, module.start_value)
  out = module.apply({"params": params}, inputs["features"], targets_in, mask,
                     deterministic=False, rngs={"dropout": key})
  return out[:, -1]


def _temporal_eval(module, params, features, valid):
  from aan_jax import models  # pylint: disable=g-import-not-at-top
  return models.predict_movie(module, {"params": params}, features, module.window, valid=valid)


SPECS["temporal_aan"] = ModelSpec(
    lambda c: _temporal_build(c, feature_layers=0), _temporal_init, _temporal_train,
    _temporal_eval, label="Temporal AAN", batch_inputs=_temporal_inputs,
    input_projections=("tokens",))
# Feature+Temporal: the per-segment feature encoder has num_layers layers too.
SPECS["feature_temporal_aan"] = ModelSpec(
    lambda c: _temporal_build(c, feature_layers=c.num_layers), _temporal_init, _temporal_train,
    _temporal_eval, label="Feature+Temporal AAN", batch_inputs=_temporal_inputs,
    input_projections=("tokens",))


# ----------------------------------------------------------------------- the baselines
# Recurrent (or per-item) models over a group's sequence of items, trained statefully on
# consecutive windows (the "sequential" sampler) and evaluated on the whole group at once
# from a zero state.


def _baseline_build(kind: str):
  def build(config):
    from aan_jax.models import baselines  # pylint: disable=g-import-not-at-top
    mods = canonical_modalities(config.modalities)
    task = config.get("_task", "regression")
    if task not in baselines.TASKS:
      raise ValueError(f"unknown task {task!r}; expected one of {baselines.TASKS}")
    if kind == "linear":
      return baselines.LinearBaseline(mods, dropout=config.dropout, task=task,
                                      output_range=output_range(config))
    cls = baselines.LSTMBaseline if kind == "lstm" else baselines.LateFusionLSTM
    return cls(mods, projection=config.get("projection", 8), hidden=config.get("hidden", 512),
               num_layers=config.get("lstm_layers", 1), input_dropout=config.dropout,
               dropout=config.dropout, task=task, output_range=output_range(config))
  return build


def _baseline_init(module, key, example=None):
  del example
  return {"params": module.init(key, module.dummy_features(1, 1))["params"]}


def _baseline_carry(module, batch):
  return module.initial_carry(batch)


def _baseline_window(module, params, features, carry, mask, key):
  return module.apply({"params": params}, features, carry, deterministic=False, mask=mask,
                      rngs={"dropout": key})


def _baseline_eval(module, params, features, valid):
  # The whole group in one call from the zero state; padding leaves the state untouched.
  out, _ = module.apply({"params": params}, {m: x[None] for m, x in features.items()},
                        None, True, valid[None])
  return out[0]


for _kind, _label, _fields in (("lstm", "LSTM", ("input_dropout", "dropout")),
                               ("lstm_late_fusion", "LSTM, late fusion",
                                ("input_dropout", "dropout")),
                               ("linear", "Linear", ("dropout",))):
  SPECS[_kind] = ModelSpec(
      _baseline_build(_kind), _baseline_init, eval_apply=_baseline_eval, label=_label,
      sampler="sequential", dropout_fields=_fields, init_carry=_baseline_carry,
      train_window=_baseline_window)


# ------------------------------------------------------------------ clip classifiers


def ints(text) -> tuple[int, ...]:
  if isinstance(text, (tuple, list)):
    return tuple(int(x) for x in text)
  return tuple(int(x) for x in str(text).replace("(", "").replace(")", "").split(",")
               if x.strip())


def _vaanet_build(config):
  from aan_jax.models import vaanet  # pylint: disable=g-import-not-at-top
  return vaanet.VAANet(
      num_classes=config.num_classes, seq_len=config.snippets, positions=config.positions,
      backbone_dim=config.backbone_dim, hidden=config.hidden,
      audio_segments=config.audio_segments, audio_frames=config.audio_frames,
      n_mfcc=config.n_mfcc, audio_widths=ints(config.audio_widths),
      audio_blocks=ints(config.audio_blocks), audio_dim=config.audio_dim)


def _vaanet_fit(config, shapes):
  s, p, d = shapes["visual"]
  frames, mfcc = shapes["audio"]
  segments = config.audio_segments or 16
  return {"snippets": s, "positions": p, "backbone_dim": d, "n_mfcc": mfcc,
          "audio_segments": segments, "audio_frames": frames // segments}


def _vaanet_init(module, key, inputs):
  return dict(module.init(key, inputs["visual"], inputs["audio"], deterministic=True))


def _vaanet_train(module, variables, inputs, key):
  del key  # VAANet has no dropout
  out, new = module.apply(variables, inputs["visual"], inputs["audio"], deterministic=False,
                          mutable=["batch_stats"])
  return out["logits"], dict(new)


def _vaanet_eval(module, variables, inputs):
  out = module.apply(variables, inputs["visual"], inputs["audio"], deterministic=True)
  return out["logits"], {k: v for k, v in out.items() if k != "logits"}


SPECS["vaanet"] = ModelSpec(
    _vaanet_build, _vaanet_init, _vaanet_train, _vaanet_eval, label="VAANet",
    sampler="per_run", dropout_fields=(), fit=_vaanet_fit)


def _vtt(name):
  def call(*args):
    from aan_jax.models import vtt_classifier  # pylint: disable=g-import-not-at-top
    return getattr(vtt_classifier, name)(*args)
  return call


SPECS["vtt"] = ModelSpec(
    _vtt("build"), _vtt("init"), _vtt("train_logits"), _vtt("eval_logits"),
    label="VTT TSM ResNet-18", sampler="per_run", dropout_fields=())
