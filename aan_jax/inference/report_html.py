"""A film's report as one self-contained HTML page (no network, no CDN, no library).

The page: the video (linked by a relative path), the curves with a cursor that follows
playback, the notable moments and the faces; its data is one JSON element read by its own
script. `film_report.to_html` calls `to_html` here.
"""

from __future__ import annotations

import html
import json
import urllib.parse
from typing import Sequence

from aan_jax.inference.film_report import COLOURS, curves_json, warning_line
from aan_jax.inference.predict import Curve


def _script_json(x) -> str:
  """JSON safe inside a <script> element (no '</script>' can close it early)."""
  return (json.dumps(x, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e")
          .replace("&", "\\u0026"))


def to_html(curves: Sequence[Curve], events: list, face_events: list, metadata: dict,
            title: str, video_src: str | None) -> str:
  """One page, no network: the video (a relative path) above the curves, events beside."""
  sources = list(dict.fromkeys(c.source for c in curves))
  data = {"curves": curves_json(curves), "events": events, "faceEvents": face_events,
          "colours": {s: COLOURS[i % len(COLOURS)] for i, s in enumerate(sources)},
          "randomWeights": metadata.get("random_weights", []),
          "noMoment": (metadata.get("moments") or {}).get("none")
          or "no moment stands out beyond the models' disagreement"}
  warn = warning_line(metadata.get("random_weights", []))
  # The link is a URL: a file named a#b%20c.mp4 must load that file (quoted, then escaped).
  src = urllib.parse.quote(video_src, safe="/") if video_src else ""
  video = (f'<video id="video" controls preload="auto" src="{html.escape(src)}">'
           "</video>" if video_src else '<div id="novideo">video left out (--no-video)</div>')
  return _PAGE.format(
      title=html.escape(title), warn=(f'<div class="warn">{html.escape(warn)}</div>'
                                      if warn else ""),
      video=video, data=_script_json(data),
      meta=html.escape(json.dumps({k: metadata[k] for k in ("segmentation", "features", "weights")
                                   if k in metadata}, indent=1)))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}: predicted emotion</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 16px; color: #222; }}
h1 {{ font-size: 20px; margin: 0 0 8px; }}
.warn {{ background: #c00; color: #fff; padding: 6px 10px; font-weight: bold; margin-bottom: 8px; }}
.top {{ display: flex; gap: 16px; align-items: flex-start; }}
video {{ width: 560px; max-width: 60vw; background: #000; }}
#novideo {{ width: 300px; padding: 20px; background: #eee; color: #666; }}
.lists {{ flex: 1; max-height: 340px; overflow-y: auto; font-size: 13px; }}
.lists h2 {{ font-size: 14px; margin: 4px 0; }}
.lists li {{ cursor: pointer; padding: 2px 4px; list-style: none; }}
.lists li:hover {{ background: #eef; }}
.lists ul {{ padding: 0; margin: 0 0 8px; }}
.time {{ font-variant-numeric: tabular-nums; color: #555; margin-right: 6px; }}
#plots svg {{ display: block; margin-top: 6px; cursor: crosshair; }}
#tip {{ position: fixed; pointer-events: none; background: rgba(255,255,255,.95); border: 1px solid #999;
  padding: 4px 6px; font-size: 12px; display: none; white-space: pre; }}
details {{ font-size: 12px; margin-top: 10px; }}
#legend {{ font-size: 13px; margin-top: 10px; display: flex; gap: 18px; flex-wrap: wrap; }}
.swatch {{ display: inline-block; width: 14px; height: 4px; margin-right: 6px; vertical-align: middle; }}
</style></head>
<body>
<h1>{title}</h1>
{warn}
<div class="top">{video}
<div class="lists"><h2>Notable moments</h2><ul id="events"></ul>
<h2>Faces</h2><ul id="faces"></ul></div></div>
<div id="legend"></div>
<div id="plots"></div>
<div id="tip"></div>
<details><summary>How this was made</summary><pre>{meta}</pre></details>
<script>
// Errors are kept on the page too, so that a headless test can read them from the DOM.
window.addEventListener("error", e => {{ document.documentElement.dataset.errors =
  (document.documentElement.dataset.errors || "") + e.message + "\\n"; }});
</script>
<script id="data" type="application/json">{data}</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const video = document.getElementById("video");
const NS = "http://www.w3.org/2000/svg";
const W = 1000, H = 170, L = 56, R = 12, T = 10, B = 24;
let tMax = 0;
for (const c of D.curves) tMax = Math.max(tMax, c.end_s[c.end_s.length - 1] || 0);
const fmt = s => {{ const m = Math.floor(s / 60), x = Math.floor(s % 60); return m + ":" + String(x).padStart(2, "0"); }};
const X = t => L + (W - L - R) * t / (tMax || 1);
const T_of = px => Math.max(0, Math.min(tMax, (px - L) / (W - L - R) * tMax));
function el(tag, attrs, parent) {{
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}}
function seek(t) {{ if (video) {{ video.currentTime = t; }} setCursor(t); }}
const cursors = [];
function setCursor(t) {{ for (const c of cursors) {{ c.setAttribute("x1", X(t)); c.setAttribute("x2", X(t)); }} }}
const targets = [...new Set(D.curves.map(c => c.target))];
const legend = document.getElementById("legend");
for (const src of Object.keys(D.colours)) {{
  const c = D.curves.find(c => c.source === src);
  const item = document.createElement("span");
  const sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = D.colours[src];
  item.appendChild(sw);
  item.appendChild(document.createTextNode(src + (c && c.low ? " (mean of " + c.folds.length +
    " fold models; band: lowest to highest fold)" : c ? " (" + c.folds.length + " model per target)" : "")));
  legend.appendChild(item);
}}
const tip = document.getElementById("tip");
for (const target of targets) {{
  const cs = D.curves.filter(c => c.target === target);
  let lo = Infinity, hi = -Infinity;
  for (const c of cs) for (const v of (c.low || c.mean).concat(c.high || c.mean)) {{ if (v !== null) {{ lo = Math.min(lo, v); hi = Math.max(hi, v); }} }}
  if (!isFinite(lo)) {{ lo = 0; hi = 1; }}
  if (cs.some(c => c.task === "binary")) {{ lo = 0; hi = 1; }}
  if (!(hi > lo)) {{ lo -= 0.5; hi += 0.5; }}
  const pad = (hi - lo) * 0.05; lo -= pad; hi += pad;
  const Y = v => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  const svg = el("svg", {{viewBox: `0 0 ${{W}} ${{H}}`, width: "100%", "data-target": target}});
  svg.style.maxWidth = W + "px";
  document.getElementById("plots").appendChild(svg);
  el("rect", {{x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fafafa", stroke: "#ccc"}}, svg);
  const dec = Math.min(6, Math.max(0, Math.ceil(-Math.log10((hi - lo) / 4)) + 1));
  for (let k = 0; k <= 4; k++) {{
    const v = lo + (hi - lo) * k / 4;
    el("text", {{x: L - 4, y: Y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#555"}}, svg).textContent = v.toFixed(dec);
    el("line", {{x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: "#eee"}}, svg);
  }}
  const step = tMax > 1200 ? 300 : tMax > 300 ? 60 : tMax > 60 ? 10 : 5;
  for (let t = 0; t <= tMax; t += step)
    el("text", {{x: X(t), y: H - 6, "text-anchor": "middle", "font-size": 11, fill: "#555"}}, svg).textContent = fmt(t);
  el("text", {{x: L + 6, y: T + 14, "font-size": 12, "font-weight": "bold"}}, svg).textContent =
    target + (cs.some(c => c.task === "binary") ? " (probability)" : "");
  for (const c of cs) {{
    const mid = c.start_s.map((s, i) => (s + c.end_s[i]) / 2);
    const col = D.colours[c.source];
    // A segment the input declared missing is null: the curve breaks there (one piece per run).
    const runs = [];
    mid.forEach((t, i) => {{ if (c.mean[i] === null) return;
      if (i && c.mean[i - 1] !== null && runs.length) runs[runs.length - 1].push(i); else runs.push([i]); }});
    for (const run of runs) {{
      if (c.low) {{
        const up = run.map(i => X(mid[i]) + "," + Y(c.high[i]));
        const dn = run.map(i => X(mid[i]) + "," + Y(c.low[i])).reverse();
        el("polygon", {{points: up.concat(dn).join(" "), fill: col, "fill-opacity": 0.2, class: "band"}}, svg);
      }}
      el("polyline", {{points: run.map(i => X(mid[i]) + "," + Y(c.mean[i])).join(" "), fill: "none",
                       stroke: col, "stroke-width": 1.6, class: "curve", "data-source": c.source}}, svg);
    }}
  }}
  for (const ev of D.events.filter(e => e.object.target === target))
    el("circle", {{cx: X(ev.seconds), cy: T + 4, r: 4, fill: "#333", class: "marker"}}, svg);
  for (const ev of D.faceEvents)
    el("rect", {{x: X(ev.seconds) - 1, y: H - B - 6, width: 2, height: 6, fill: "#b50", class: "face-marker"}}, svg);
  const cur = el("line", {{x1: L, x2: L, y1: T, y2: H - B, stroke: "#000", "stroke-width": 1, class: "cursor"}}, svg);
  cursors.push(cur);
  const toT = ev => {{ const r = svg.getBoundingClientRect(); return T_of((ev.clientX - r.left) * W / r.width); }};
  svg.addEventListener("click", ev => seek(toT(ev)));
  svg.addEventListener("mousemove", ev => {{
    const t = toT(ev);
    const lines = [target + " at " + fmt(t)];
    for (const c of cs) {{
      let i = c.start_s.findIndex((s, k) => t >= s && t < c.end_s[k]);
      if (i < 0) continue;
      if (c.mean[i] === null) {{ lines.push(c.source + ": no value (features missing)"); continue; }}
      let s = c.source + ": " + c.mean[i].toFixed(3);
      if (c.low) s += "  [" + c.low[i].toFixed(3) + ", " + c.high[i].toFixed(3) + "]";
      lines.push(s);
    }}
    tip.textContent = lines.join("\\n");
    tip.style.display = "block"; tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px";
  }});
  svg.addEventListener("mouseleave", () => {{ tip.style.display = "none"; }});
}}
function fill(id, list, text, empty) {{
  const ul = document.getElementById(id);
  if (!list.length) {{ const li = document.createElement("li"); li.className = "empty"; li.textContent = empty || "none"; ul.appendChild(li); return; }}
  for (const ev of list) {{
    const li = document.createElement("li");
    const s = document.createElement("span"); s.className = "time"; s.textContent = fmt(ev.seconds);
    li.appendChild(s); li.appendChild(document.createTextNode(text(ev)));
    li.addEventListener("click", () => seek(ev.seconds));
    ul.appendChild(li);
  }}
}}
fill("events", D.events, ev => ev.class.replace("_", " ") + " (" + ev.object.source + "): " + ev.object.evidence.text, D.noMoment);
fill("faces", D.faceEvents, ev => ev.class + (ev.object && ev.object.score != null ? " (face " + ev.object.id + ", score " + Number(ev.object.score).toFixed(2) + ")" : ""));
// A link to a moment: report.html#t=83 opens the video there.
const start = /t=([0-9.]+)/.exec(location.hash);
if (start) {{
  const t = Math.min(tMax, parseFloat(start[1]));
  setCursor(t);
  if (video) video.addEventListener("loadedmetadata", () => {{ video.currentTime = t; }}, {{once: true}});
}}
if (video) {{
  const follow = () => {{ setCursor(video.currentTime); if (!video.paused) requestAnimationFrame(follow); }};
  video.addEventListener("timeupdate", () => setCursor(video.currentTime));
  video.addEventListener("play", follow);
  video.addEventListener("seeked", () => setCursor(video.currentTime));
}}
document.body.dataset.ready = "1";
</script>
</body></html>
"""
