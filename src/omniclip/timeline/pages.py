"""What a person reads: the timeline figure (PNG), the timeline report page and the search results page (HTML).

Both pages are single self-contained files: styles, scripts and the figure are inline, nothing is fetched from the
network, and videos are referenced by paths relative to the page (so a folder of videos and pages can be moved or
shared as a whole). Clicking a segment (in a lane or in the table) seeks the page's player to the segment's start; a
search hit plays its video from the hit's start, and its link opens the video at that time (``video.mp4#t=12.5``,
a W3C media fragment).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from omniclip.files import pyplot
from omniclip.timeline.segments import owned_bounds

if TYPE_CHECKING:
    from omniclip.timeline.scores import Timeline

MAX_LANES = 20  # with more classes, only those that have a segment get a lane


def clock(seconds: float) -> str:
    """``75.25`` -> ``"1:15.2"``; hours appear when needed (``"1:02:03.0"``)."""
    tenths = int(round(max(seconds, 0.0) * 10))
    h, rest = divmod(tenths, 36000)
    m, rest = divmod(rest, 600)
    s = rest / 10
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m}:{s:04.1f}"


def video_href(video: str | Path, page_dir: str | Path) -> str:
    """URL of ``video`` relative to a page in ``page_dir`` (percent-encoded, forward slashes)."""
    target = Path(video).absolute()
    try:
        rel = os.path.relpath(target, Path(page_dir).absolute())
    except ValueError:  # another drive (Windows): only an absolute URL reaches it
        return target.as_uri()
    return quote(Path(rel).as_posix())


def lane_classes(tl: Timeline) -> list[int]:
    """Indices of the classes that get a lane: all of them up to ``MAX_LANES``, else those with a segment."""
    if len(tl.classes) <= MAX_LANES:
        return list(range(len(tl.classes)))
    found = {s.label for s in tl.segments}
    return [i for i, name in enumerate(tl.classes) if name in found]


def class_colors(count: int) -> list[str]:
    """``count`` distinct hex colours (matplotlib's tab10, then tab20)."""
    cmap = pyplot().get_cmap("tab10" if count <= 10 else "tab20")
    return ["#{:02x}{:02x}{:02x}".format(*(int(255 * c) for c in cmap(i % cmap.N)[:3])) for i in range(count)]


# ----------------------------------------------------------------------------------------------- figure
def timeline_figure(tl: Timeline) -> Any:
    """One lane per class over time: the smoothed probability as a filled curve, the segments as solid bars."""
    lanes = lane_classes(tl)
    colors = class_colors(len(tl.classes))
    fig, ax = pyplot().subplots(figsize=(12, 1.2 + 0.45 * max(len(lanes), 1)))
    bounds = owned_bounds(tl.starts, tl.ends, tl.duration) if tl.starts else np.zeros(1)
    for row, c in enumerate(lanes):
        base = len(lanes) - 1 - row
        level = np.append(tl.smoothed[:, c], tl.smoothed[-1:, c])  # one value per owned stretch, held to its end
        ax.fill_between(bounds, base, base + 0.8 * level, step="post", color=colors[c], alpha=0.35, linewidth=0)
        bars = [(s.start, s.end - s.start) for s in tl.segments if s.label == tl.classes[c]]
        ax.broken_barh(bars, (base, 0.25), facecolors=colors[c])
    ax.set_yticks([len(lanes) - 1 - r + 0.4 for r in range(len(lanes))], [tl.classes[c] for c in lanes])
    ax.set_ylim(0, max(len(lanes), 1))
    ax.set_xlim(0, max(tl.duration, 1e-3))
    ax.set_xlabel("time (s)")
    ax.set_title(f"{tl.video.name}: smoothed class probability (curves) and segments (bars)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _png_data_uri(tl: Timeline) -> str:
    fig = timeline_figure(tl)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=80)
    finally:
        pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------------------------- pages
_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }
h1 { font-size: 1.3em; margin: 0 0 .3em; } .meta { color: #555; margin: 0 0 1em; }
video { width: 100%; max-height: 60vh; background: #000; }
#lanes { position: relative; margin: 1em 0; }
.lane { display: flex; align-items: center; height: 26px; }
.lane .name { width: 160px; flex: none; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.track { position: relative; flex: 1; height: 22px; background: #f1f1f1; }
.track svg { position: absolute; inset: 0; width: 100%; height: 100%; }
.seg { position: absolute; top: 0; height: 100%; cursor: pointer; opacity: .85; border-radius: 2px; }
.seg:hover, .seg.active { opacity: 1; outline: 2px solid #222; }
.playhead { position: absolute; top: 0; bottom: 0; width: 2px; background: #d00; pointer-events: none; }
table { border-collapse: collapse; margin-top: 1em; } td, th { padding: 3px 10px; text-align: left; }
tbody tr { cursor: pointer; } tbody tr:hover, tr.active { background: #eef; }
.swatch { display: inline-block; width: .8em; height: .8em; margin-right: .4em; border-radius: 2px; }
img.figure { max-width: 100%; margin-top: 1em; }
ol.hits li { margin: .4em 0; } .score { color: #555; font-variant-numeric: tabular-nums; }
button { cursor: pointer; }
"""

_TIMELINE_SCRIPT = """
const player = document.getElementById("player");
const duration = parseFloat(document.body.dataset.duration);
function seek(t) { player.currentTime = t; document.body.dataset.seeked = String(t); }
document.querySelectorAll("[data-start]").forEach((el) => {
  el.addEventListener("click", () => {
    document.querySelectorAll(".active").forEach((a) => a.classList.remove("active"));
    document.querySelectorAll('[data-segment="' + el.dataset.segment + '"]').forEach((a) => a.classList.add("active"));
    seek(parseFloat(el.dataset.start));
  });
});
const playhead = document.querySelector(".playhead");
const lanes = document.getElementById("lanes");
function movePlayhead() {
  const track = lanes.querySelector(".track");
  if (!track || !(duration > 0)) return;
  const left = track.offsetLeft + track.offsetWidth * Math.min(player.currentTime / duration, 1);
  playhead.style.left = left + "px";
}
player.addEventListener("timeupdate", movePlayhead);
player.addEventListener("seeked", movePlayhead);
window.addEventListener("resize", movePlayhead);
movePlayhead();
"""


def _curve(values: Sequence[float], bounds: Sequence[float], duration: float) -> str:
    """An inline SVG step area: ``values[i]`` (0..1) over ``[bounds[i], bounds[i + 1])``, in a 0..1000 x 0..1 box."""
    if not values:
        return ""
    scale = 1000.0 / max(duration, 1e-6)
    pts = " ".join(
        f"{bounds[i] * scale:.1f},{1 - v:.3f} {bounds[i + 1] * scale:.1f},{1 - v:.3f}" for i, v in enumerate(values)
    )
    return (
        '<svg viewBox="0 0 1000 1" preserveAspectRatio="none" aria-hidden="true">'
        f'<polygon points="{bounds[0] * scale:.1f},1 {pts} {bounds[-1] * scale:.1f},1" fill="#999" '
        'fill-opacity="0.35"/></svg>'
    )


def timeline_html(tl: Timeline, page_dir: str | Path) -> str:
    """The report page of ``tl`` for a file in ``page_dir`` (the video is linked relative to it)."""
    esc = html.escape
    colors = class_colors(len(tl.classes))
    duration = max(tl.duration, 1e-6)
    bounds = [float(b) for b in owned_bounds(tl.starts, tl.ends, tl.duration)] if tl.starts else []
    lane_rows = []
    for c in lane_classes(tl):
        name = tl.classes[c]
        segs = "".join(
            f'<div class="seg" data-segment="{k}" data-start="{s.start:.3f}" data-end="{s.end:.3f}" '
            f'data-class="{esc(name)}" style="left:{100 * s.start / duration:.4f}%;'
            f'width:{100 * (s.end - s.start) / duration:.4f}%;background:{colors[c]}" '
            f'title="{esc(name)} {clock(s.start)}-{clock(s.end)} ({s.score:.2f})"></div>'
            for k, s in enumerate(tl.segments)
            if s.label == name
        )
        curve = _curve([float(v) for v in tl.smoothed[:, c]], bounds, duration)
        lane_rows.append(
            f'<div class="lane" data-class="{esc(name)}"><span class="name" title="{esc(name)}">{esc(name)}</span>'
            f'<div class="track">{curve}{segs}</div></div>'
        )
    table_rows = "".join(
        f'<tr class="segment" data-segment="{k}" data-start="{s.start:.3f}" data-end="{s.end:.3f}" '
        f'data-class="{esc(s.label)}"><td>{k + 1}</td><td>{clock(s.start)}</td><td>{clock(s.end)}</td>'
        f'<td><span class="swatch" style="background:{colors[tl.classes.index(s.label)]}"></span>{esc(s.label)}</td>'
        f"<td>{s.score:.3f}</td></tr>"
        for k, s in enumerate(tl.segments)
    )
    seg = tl.segment_config.to_dict(tl.spec.window)
    spec = tl.spec.to_dict()
    meta = (
        f"{clock(tl.duration)} &middot; {len(tl.starts)} windows of {spec['window']:g} s every {spec['stride']:g} s "
        f"({spec['frames']} frames) &middot; smoothing {seg['smooth']} windows, threshold {seg['threshold']:g}, "
        f"segments of at least {seg['min_length']:g} s &middot; model {esc(tl.source or '?')}"
    )
    empty = "" if tl.segments else "<p>No segment: no class reached the threshold long enough.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(tl.video.name)}: omniclip timeline</title><link rel="icon" href="data:,"><style>{_STYLE}</style></head>
<body data-duration="{tl.duration:.3f}">
<h1>{esc(tl.video.name)}</h1><p class="meta">{meta}</p>
<video id="player" src="{esc(video_href(tl.video, page_dir))}" controls preload="metadata"></video>
<div id="lanes">{"".join(lane_rows)}<div class="playhead"></div></div>
{empty}<table id="segments"><thead><tr><th>#</th><th>start</th><th>end</th><th>class</th><th>score</th></tr></thead>
<tbody>{table_rows}</tbody></table>
<img class="figure" alt="class probabilities over time" src="{_png_data_uri(tl)}">
<script>{_TIMELINE_SCRIPT}</script>
</body></html>
"""


_SEARCH_SCRIPT = """
const player = document.getElementById("player");
let wanted = null;
player.addEventListener("loadedmetadata", () => { if (wanted !== null) { player.currentTime = wanted; } });
document.querySelectorAll("li.hit").forEach((li) => {
  li.querySelector("button.play").addEventListener("click", () => {
    document.querySelectorAll("li.active").forEach((a) => a.classList.remove("active"));
    li.classList.add("active");
    wanted = parseFloat(li.dataset.start);
    const src = li.dataset.video;
    if (player.getAttribute("src") !== src) { player.setAttribute("src", src); player.load(); }
    else { player.currentTime = wanted; }
    document.getElementById("now").textContent = li.querySelector("a.open").textContent;
  });
});
"""


def search_html(query: str, hits: Sequence[dict[str, Any]], page_dir: str | Path, summary: str = "") -> str:
    """Results page: one entry per hit (video, time span, score), a player and links at the hit's start."""
    esc = html.escape
    items = []
    for rank, hit in enumerate(hits, start=1):
        href = video_href(hit["video"], page_dir)
        label = f"{Path(hit['video']).name} {clock(hit['start'])}-{clock(hit['end'])}"
        items.append(
            f'<li class="hit" data-rank="{rank}" data-video="{esc(href)}" data-start="{hit["start"]:.3f}" '
            f'data-end="{hit["end"]:.3f}"><button class="play" type="button">play here</button> '
            f'<a class="open" href="{esc(href)}#t={hit["start"]:.3f}" target="_blank">{esc(label)}</a> '
            f'<span class="score">score {hit["score"]:.4f}</span></li>'
        )
    body = f'<ol class="hits">{"".join(items)}</ol>' if items else "<p>No windows in the index.</p>"
    data = json.dumps(list(hits)).replace("</", "<\\/")  # a string in it cannot end the script element
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(query)}: omniclip search</title><link rel="icon" href="data:,"><style>{_STYLE}</style></head>
<body>
<h1>{esc(query)}</h1><p class="meta">{esc(summary)}</p>
<video id="player" controls preload="none"></video><p id="now"></p>
{body}
<script>{_SEARCH_SCRIPT}</script>
<script type="application/json" id="results">{data}</script>
</body></html>
"""
