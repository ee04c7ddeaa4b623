"""A film's predicted curves as files: CSV, JSON (with events) and PNG (the HTML page:
`aan_jax.inference.report_html`)."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Sequence

import numpy as np

from aan_jax.inference.predict import Curve
from aan_jax.inference.report_set import printable
from aan_jax.util import atomic

# Colours per source (matplotlib's tab10, also used by the HTML page).
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


# Re-exported: the CLI writes its outputs with it.
write_file = atomic.write_file


def column_name(curve: Curve, single_source: bool) -> str:
  """The curve's CSV column (control characters escaped: one header line)."""
  return printable(curve.target if single_source else curve.label)


def _values(x) -> list:
  """A curve's values for JSON: NaN (a segment the input declared missing) as null."""
  return [None if not math.isfinite(v) else v for v in np.asarray(x, np.float64).tolist()]


def mathtext_safe(text: str) -> str:
  """A name as matplotlib shows it literally: `$` would start mathtext ($\\frac$ fails)."""
  return printable(text).replace("$", r"\$")


def warning_line(random_features: Sequence[str]) -> str:
  if not random_features:
    return ""
  return (f"RANDOM weights for {', '.join(random_features)} (tests only): these predictions "
          "mean nothing")


def to_csv(curves: Sequence[Curve], random_features: Sequence[str] = (), note: str = "") -> str:
  """start_s, end_s, then per (source,) target its value and, with folds, the band's low/high.

  Curves of different segmentations share the file: each row holds the values of the
  curves on its grid and leaves the others empty, and a `segmentation` column says which.
  """
  single = len({c.source for c in curves}) == 1
  segs = list(dict.fromkeys(c.segmentation for c in curves))
  cols = ["segmentation"] if len(segs) > 1 else []
  cols += ["start_s", "end_s"]
  for c in curves:
    name = column_name(c, single)
    cols += [name] + ([f"{name}_low", f"{name}_high"] if c.has_band else [])
  buf = io.StringIO()
  warn = warning_line(random_features)
  if warn:  # read with pandas.read_csv(..., comment="#")
    buf.write(f"# {warn}\n")
  if note:  # e.g. the fast extraction preset
    buf.write(f"# {printable(note)}\n")
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(cols)
  for seg in segs:
    on = [c for c in curves if c.segmentation == seg]
    ref = on[0]
    for i in range(len(ref.start_s)):
      row = [printable(seg)] if len(segs) > 1 else []
      row += [f"{ref.start_s[i]:.3f}", f"{ref.end_s[i]:.3f}"]
      for c in curves:
        width = 3 if c.has_band else 1
        if c.segmentation != seg:
          row += [""] * width
          continue
        vals = [c.mean[i], c.low[i], c.high[i]][:width]
        row += [f"{v:.6f}" if math.isfinite(v) else "" for v in vals]  # a gap: empty
      w.writerow(row)
  return buf.getvalue()


def curves_json(curves: Sequence[Curve]) -> list[dict]:
  out = []
  for c in curves:
    # Values at full precision: the JSON holds exactly what the models returned.
    d = {"source": c.source, "target": c.target, "task": c.task, "segmentation": c.segmentation,
         "start_s": c.start_s.tolist(), "end_s": c.end_s.tolist(),
         "mean": _values(c.mean), "folds": c.fold_names}
    if c.has_band:
      d.update(low=_values(c.low), high=_values(c.high), std=_values(c.std),
               band="min and max over the fold models; the curve is their mean")
    out.append(d)
  return out


def to_json(curves: Sequence[Curve], events: list, face_events: list, metadata: dict,
            face_moments: list | None = None) -> str:
  doc = {"metadata": metadata, "curves": curves_json(curves), "events": events,
         "face_events": face_events, "face_moments": face_moments or []}
  return json.dumps(doc, indent=1, sort_keys=False, allow_nan=False)


def to_png(curves: Sequence[Curve], events: list, title: str, path: str,
           random_features: Sequence[str] = ()) -> None:
  """One panel per target: each source's mean curve over its fold band (Figures 5-6 style)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  targets = list(dict.fromkeys(c.target for c in curves))
  sources = list(dict.fromkeys(c.source for c in curves))
  fig, axes = plt.subplots(len(targets), 1, figsize=(11, 2.4 * len(targets) + 0.8),
                           squeeze=False, sharex=True)
  span = max(float(c.end_s[-1]) for c in curves if len(c.end_s))
  minutes = span >= 180
  scale = 60.0 if minutes else 1.0
  for ax, target in zip(axes[:, 0], targets):
    for c in (c for c in curves if c.target == target):
      col = COLOURS[sources.index(c.source) % len(COLOURS)]
      t = (c.start_s + c.end_s) / 2 / scale
      label = mathtext_safe(c.source) + (f" (mean of {len(c.fold_names)} folds, band min-max)"
                          if c.has_band else "")
      few = len(t) <= 2  # one or two segments: points and their band as markers
      ax.plot(t, c.mean, color=col, lw=1.3, label=label, marker="o" if few else None,
              ls="none" if few else "-")
      if c.has_band and few:
        ax.vlines(t, c.low, c.high, color=col, alpha=0.45, lw=6)
      elif c.has_band:
        ax.fill_between(t, c.low, c.high, color=col, alpha=0.2, lw=0)
    for ev in events:
      if ev["object"].get("target") == target:
        ax.axvline(ev["seconds"] / scale, color="0.4", lw=0.6, ls=":")
    if any(c.task == "binary" for c in curves if c.target == target):
      ax.set_ylim(-0.02, 1.02)
      ax.set_ylabel(f"{mathtext_safe(target)} (probability)")
    else:
      ax.set_ylabel(mathtext_safe(target))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=7)
  axes[-1, 0].set_xlabel("time (min)" if minutes else "time (s)")
  axes[-1, 0].set_xlim(0, span / scale)  # the whole film, a one-segment one too
  warn = warning_line(random_features)
  fig.suptitle(mathtext_safe(title) + (f"\n{warn}" if warn else ""), fontsize=10,
               color="red" if warn else "black")
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=90)
  plt.close(fig)
  write_file(path, buf.getvalue())
