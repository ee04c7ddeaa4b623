"""A film's report as one self-contained HTML page (no network, no CDN, no library).

The first screen (a 1280x800 window, no scrolling) answers the film person's question: the
video (linked by a relative path) beside the moments (the notable moments the models can back,
and the face moments, each with a thumbnail of the face), then the curves with a cursor that
follows playback (their height fits what is left of the window) and the faces lane: each face
track's expression over time (colour: the class; opacity: its probability). A film of one or
two segments draws its points and their band as markers. The data is one JSON element read by
the page's own script; nothing is fetched.
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
            title: str, video_src: str | None, face_moments: Sequence[dict] | None = None,
            thumbs: Sequence | None = None) -> str:
  """One page, no network: the video (a relative path) and the moments, the curves, the faces
  lane. face_moments: `face_track.moments`; thumbs: a data URI (or None) for each."""
  sources = list(dict.fromkeys(c.source for c in curves))
  face_moments = list(face_moments or [])
  thumbs = list(thumbs or [None] * len(face_moments))
  track = metadata.get("face_track") or {}
  data = {"curves": curves_json(curves), "events": events, "faceEvents": face_events,
          "faceMoments": [{**m, "thumb": t} for m, t in zip(face_moments, thumbs)],
          "faceClasses": list(FACE_COLOURS), "faceColours": FACE_COLOURS,
          "faceNote": ("no face found" if track.get("ran") else
                       "faces not tracked (run with --face-track)"),
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
      meta=html.escape(json.dumps({k: metadata[k] for k in (
          "segmentation", "features", "weights", "moments", "face_track") if k in metadata},
          indent=1)))


# The FER-2013 classes (extract.faces, aan_jax.models.fer) and their colours in the lane.
FACE_COLOURS = {"angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#2ca02c",
                "sad": "#1f77b4", "surprise": "#ff7f0e", "neutral": "#8a8a8a"}

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}: predicted emotion</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 8px 12px; color: #222; }}
h1 {{ font-size: 17px; margin: 0 0 6px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
.warn {{ background: #c00; color: #fff; padding: 4px 10px; font-weight: bold; margin-bottom: 6px; font-size: 13px; }}
.top {{ display: flex; gap: 14px; align-items: stretch; height: 270px; }}
video {{ width: 480px; height: 270px; background: #000; flex: none; }}
#novideo {{ width: 300px; padding: 20px; background: #eee; color: #666; flex: none; }}
.lists {{ flex: 1; overflow-y: auto; font-size: 13px; border: 1px solid #ddd; padding: 4px 6px; }}
.lists h2 {{ font-size: 14px; margin: 2px 0 4px; }}
.lists li {{ cursor: pointer; padding: 2px 4px; list-style: none; display: flex; align-items: center; gap: 6px; }}
.lists li:hover {{ background: #eef; }}
.lists li.empty {{ cursor: default; color: #555; font-style: italic; }}
.lists ul {{ padding: 0; margin: 0 0 6px; }}
.thumb {{ width: 40px; height: 40px; border-radius: 3px; flex: none; }}
.swatch-face {{ display: inline-block; width: 10px; height: 10px; border-radius: 2px; flex: none; }}
.time {{ font-variant-numeric: tabular-nums; color: #555; }}
#plots svg, #lane svg {{ display: block; margin-top: 2px; cursor: crosshair; }}
#tip {{ position: fixed; pointer-events: none; background: rgba(255,255,255,.95); border: 1px solid #999;
  padding: 4px 6px; font-size: 12px; display: none; white-space: pre; }}
details {{ font-size: 12px; margin-top: 10px; }}
#legend {{ font-size: 12px; margin-top: 4px; display: flex; gap: 18px; flex-wrap: wrap; }}
.swatch {{ display: inline-block; width: 14px; height: 4px; margin-right: 6px; vertical-align: middle; }}
</style></head>
<body>
<h1>{title}</h1>
{warn}
<div class="top">{video}
<div class="lists" id="lists"><h2>Moments</h2><ul id="events"></ul></div></div>
<div id="legend"></div>
<div id="plots"></div>
<div id="lane"></div>
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
const plots = document.getElementById("plots");
let W = 1000, H = 170;
const L = 56, R = 12, T = 8, B = 20;
let tMax = 0;
for (const c of D.curves) tMax = Math.max(tMax, c.end_s[c.end_s.length - 1] || 0);
for (const e of D.faceEvents) tMax = Math.max(tMax, e.seconds);
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
let cursors = [], lastT = 0;
function setCursor(t) {{ lastT = t; for (const c of cursors) {{ c.setAttribute("x1", X(t)); c.setAttribute("x2", X(t)); }} }}
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
function hover(svg, lines) {{
  const toT = ev => {{ const r = svg.getBoundingClientRect(); return T_of((ev.clientX - r.left) * W / r.width); }};
  svg.addEventListener("click", ev => seek(toT(ev)));
  svg.addEventListener("mousemove", ev => {{
    tip.textContent = lines(toT(ev), ev).join("\\n");
    tip.style.display = "block"; tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px";
  }});
  svg.addEventListener("mouseleave", () => {{ tip.style.display = "none"; }});
}}
function axis(svg, h) {{
  const step = tMax > 1200 ? 300 : tMax > 300 ? 60 : tMax > 60 ? 10 : tMax > 12 ? 5 : 1;
  for (let t = 0; t <= tMax; t += step)
    el("text", {{x: X(t), y: h - 5, "text-anchor": "middle", "font-size": 11, fill: "#555"}}, svg).textContent = fmt(t);
}}
// The faces lane: one row per face track (tracks that never overlap share a row, 6 rows at most).
const tracks = {{}};
for (const e of D.faceEvents) {{ const id = e.object && e.object.id != null ? e.object.id : 0;
  (tracks[id] = tracks[id] || []).push(e); }}
const times = [...new Set(D.faceEvents.map(e => e.seconds))].sort((a, b) => a - b);
const gaps = times.slice(1).map((t, i) => t - times[i]).sort((a, b) => a - b);
const faceStep = gaps.length ? gaps[Math.floor(gaps.length / 2)] : 0.5;
const rowEnd = [], rowOf = {{}};
for (const id of Object.keys(tracks).sort((a, b) => tracks[a][0].seconds - tracks[b][0].seconds)) {{
  const evs = tracks[id], s = evs[0].seconds, e = evs[evs.length - 1].seconds + faceStep;
  let r = rowEnd.findIndex(x => x <= s);
  if (r < 0) r = rowEnd.length < 6 ? rowEnd.length : rowEnd.length - 1;
  rowEnd[r] = Math.max(rowEnd[r] || 0, e); rowOf[id] = r;
}}
const ROW = 14, laneH = D.faceEvents.length ? 18 + ROW * rowEnd.length + B : 0;
function draw() {{
  // Drawn again when the window changes size: the curves fill what it has left below the
  // top row (between 70 and 170 px each).
  plots.textContent = ""; document.getElementById("lane").textContent = ""; cursors = [];
  W = Math.max(600, Math.min(1400, plots.clientWidth || 1000));
  const plotsTop = (plots.getBoundingClientRect().top || 0) + (window.scrollY || 0);
  const room = (window.innerHeight || 800) - plotsTop - laneH - 12;
  H = Math.round(Math.max(70, Math.min(170, room / Math.max(1, targets.length))));
  for (const target of targets) {{
    const cs = D.curves.filter(c => c.target === target);
    let lo = Infinity, hi = -Infinity;
    for (const c of cs) for (const v of (c.low || c.mean).concat(c.high || c.mean)) {{ if (v !== null) {{ lo = Math.min(lo, v); hi = Math.max(hi, v); }} }}
    if (!isFinite(lo)) {{ lo = 0; hi = 1; }}
    if (cs.some(c => c.task === "binary")) {{ lo = 0; hi = 1; }}
    if (!(hi > lo)) {{ lo -= 0.5; hi += 0.5; }}
    const pad = (hi - lo) * 0.05; lo -= pad; hi += pad;
    const Y = v => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
    const svg = el("svg", {{viewBox: `0 0 ${{W}} ${{H}}`, width: W, height: H, "data-target": target}});
    plots.appendChild(svg);
    el("rect", {{x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fafafa", stroke: "#ccc"}}, svg);
    const dec = Math.min(6, Math.max(0, Math.ceil(-Math.log10((hi - lo) / 4)) + 1));
    for (let k = 0; k <= 4; k++) {{
      const v = lo + (hi - lo) * k / 4;
      el("text", {{x: L - 4, y: Y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#555"}}, svg).textContent = v.toFixed(dec);
      el("line", {{x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: "#eee"}}, svg);
    }}
    axis(svg, H);
    el("text", {{x: L + 6, y: T + 14, "font-size": 12, "font-weight": "bold"}}, svg).textContent =
      target + (cs.some(c => c.task === "binary") ? " (probability)" : "");
    for (const c of cs) {{
      const mid = c.start_s.map((s, i) => (s + c.end_s[i]) / 2);
      const col = D.colours[c.source];
      // A segment the input declared missing is null: the curve breaks there (one piece per run).
      const runs = [];
      mid.forEach((t, i) => {{ if (c.mean[i] === null) return;
        if (i && c.mean[i - 1] !== null && runs.length) runs[runs.length - 1].push(i); else runs.push([i]); }});
      // One or two segments (or a piece of one between gaps): points and their band as markers.
      const few = mid.length <= 2;
      for (const run of runs) {{
        if (few || run.length === 1) {{
          for (const i of run) {{
            if (c.low) el("line", {{x1: X(mid[i]), x2: X(mid[i]), y1: Y(c.low[i]), y2: Y(c.high[i]), stroke: col,
              "stroke-opacity": 0.45, "stroke-width": 10, class: "band-bar"}}, svg);
            el("circle", {{cx: X(mid[i]), cy: Y(c.mean[i]), r: 4.5, fill: col, class: "point",
                           "data-source": c.source}}, svg);
          }}
          continue;
        }}
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
    cursors.push(el("line", {{x1: L, x2: L, y1: T, y2: H - B, stroke: "#000", "stroke-width": 1, class: "cursor"}}, svg));
    hover(svg, t => {{
      const lines = [target + " at " + fmt(t)];
      for (const c of cs) {{
        let i = c.start_s.findIndex((s, k) => t >= s && t < c.end_s[k]);
        if (i < 0) continue;
        if (c.mean[i] === null) {{ lines.push(c.source + ": no value (features missing)"); continue; }}
        let s = c.source + ": " + c.mean[i].toFixed(3);
        if (c.low) s += "  [" + c.low[i].toFixed(3) + ", " + c.high[i].toFixed(3) + "]";
        lines.push(s);
      }}
      return lines;
    }});
  }}
  if (D.faceEvents.length) {{
    const svg = el("svg", {{viewBox: `0 0 ${{W}} ${{laneH}}`, width: W, height: laneH, class: "faces-lane"}});
    document.getElementById("lane").appendChild(svg);
    el("text", {{x: L - 4, y: 13, "text-anchor": "end", "font-size": 12, "font-weight": "bold"}}, svg).textContent = "faces";
    let x = L;
    for (const k of D.faceClasses) {{
      el("rect", {{x: x, y: 4, width: 10, height: 10, fill: D.faceColours[k]}}, svg);
      const label = el("text", {{x: x + 13, y: 13, "font-size": 11, fill: "#444"}}, svg); label.textContent = k;
      x += 20 + 7 * k.length;
    }}
    el("text", {{x: x + 6, y: 13, "font-size": 11, fill: "#777"}}, svg).textContent = "(opacity: probability; one row per face track)";
    for (const id in tracks) {{
      const y = 18 + ROW * rowOf[id];
      for (const e of tracks[id])
        el("rect", {{x: X(e.seconds), y: y, width: Math.max(1, X(e.seconds + faceStep) - X(e.seconds) + 0.5), height: ROW - 3,
                     "shape-rendering": "crispEdges",
                     fill: D.faceColours[e.class] || "#444", "fill-opacity": Math.max(0.2, Number(e.object.score) || 0),
                     class: "face-cell"}}, svg);
    }}
    axis(svg, laneH);
    cursors.push(el("line", {{x1: L, x2: L, y1: 16, y2: laneH - B, stroke: "#000", "stroke-width": 1, class: "cursor"}}, svg));
    hover(svg, t => {{
      const lines = ["faces at " + fmt(t)];
      for (const id in tracks) for (const e of tracks[id])
        if (t >= e.seconds && t < e.seconds + faceStep) lines.push("face " + id + ": " + e.class + " " + Number(e.object.score).toFixed(2));
      if (lines.length === 1) lines.push("no face");
      return lines;
    }});
  }}
  setCursor(lastT);
}}
draw();
let resizing = null;
window.addEventListener("resize", () => {{ clearTimeout(resizing); resizing = setTimeout(draw, 100); }});
// The moments: what the models can back, and what the faces show (a thumbnail each), in time order.
const ul = document.getElementById("events");
function item(seconds, text, thumb, colour, cls) {{
  const li = document.createElement("li"); li.className = cls;
  if (thumb) {{ const img = document.createElement("img"); img.className = "thumb"; img.src = thumb; img.alt = "face"; li.appendChild(img); }}
  else if (colour) {{ const sw = document.createElement("span"); sw.className = "swatch-face"; sw.style.background = colour; li.appendChild(sw); }}
  const s = document.createElement("span"); s.className = "time"; s.textContent = fmt(seconds);
  li.appendChild(s); li.appendChild(document.createTextNode(text));
  li.addEventListener("click", () => seek(seconds));
  ul.appendChild(li);
}}
function note(text) {{ const li = document.createElement("li"); li.className = "empty"; li.textContent = text; ul.appendChild(li); }}
if (!D.events.length) note(D.noMoment);
const all = D.events.map(ev => [ev.seconds, 0, ev]).concat(D.faceMoments.map(m => [m.seconds, 1, m]));
all.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
for (const [t, face, ev] of all) {{
  if (face) item(t, "face " + ev.object.id + ": " + ev.class + " (" + Number(ev.object.score).toFixed(2) + ", " +
                 fmt(ev.object.start_s) + "-" + fmt(ev.object.end_s) + ")", ev.thumb, D.faceColours[ev.class], "face-moment");
  else item(t, ev.class.replace("_", " ") + " (" + ev.object.source + "): " + ev.object.evidence.text, null, null, "moment");
}}
if (!D.faceEvents.length) note(D.faceNote);
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
