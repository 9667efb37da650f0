"""The HTML page: one template with inline CSS and a small inline script, and table helpers.

The page reads without JavaScript (every table, figure and gallery item is static markup); the
script only adds the gallery's class filter and IoU sort, by toggling ``hidden`` and reordering
the items from their ``data-classes`` / ``data-iou`` / ``data-ious`` / ``data-order``
attributes (with a class selected, items sort by that class's IoU).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["esc", "fmt", "table", "section", "page", "hex_color"]


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(v: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals (integers as they are), ``n/a`` for None / NaN."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    cls: str = "",
    caption: str | None = None,
    digits: int = 3,
) -> str:
    """A ``<table>``; numbers right-aligned and formatted by :func:`fmt`."""
    out = [f'<table class="{esc(cls)}">' if cls else "<table>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>")
    for r in rows:
        cells = []
        for v in r:
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            cells.append(
                f'<td class="num">{esc(fmt(v, digits))}</td>' if num else f"<td>{esc(fmt(v, digits))}</td>"
            )
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>\n{body}\n</section>\n'


def hex_color(rgb: Sequence[float]) -> str:
    """``(r, g, b)`` floats in [0, 1] -> ``#rrggbb``."""
    return "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgb[:3])


_CSS = """
:root { --fg: #1d2430; --muted: #5b6473; --line: #d9dee6; --bg: #f6f7f9; --card: #fff;
        --accent: #2f6fdf; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
       Arial, sans-serif; color: var(--fg); background: var(--bg); }
header { background: #1d2430; color: #fff; padding: 14px 24px; }
header h1 { margin: 0; font-size: 20px; font-weight: 600; }
header .sub { color: #aab3c2; font-size: 12px; margin-top: 2px; }
nav { position: sticky; top: 0; z-index: 5; background: #fff; border-bottom: 1px solid var(--line);
      padding: 6px 24px; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 16px; }
main { max-width: 1280px; margin: 0 auto; padding: 8px 24px 40px; }
section { scroll-margin-top: 40px; background: var(--card); border: 1px solid var(--line); border-radius: 6px;
          padding: 12px 18px 16px; margin: 16px 0; }
h2 { font-size: 17px; margin: 2px 0 10px; font-weight: 600; }
h3 { font-size: 14px; margin: 14px 0 6px; font-weight: 600; color: #333b48; }
p.note { color: var(--muted); margin: 4px 0 8px; font-size: 13px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px;
        font-variant-numeric: tabular-nums; }
caption { text-align: left; color: var(--muted); font-size: 12px; padding-bottom: 3px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eceff3; text-align: left;
         white-space: nowrap; }
th { background: #f0f2f5; font-weight: 600; }
td.num { text-align: right; }
tbody tr:nth-child(even) td { background: #fafbfc; }
.cols { display: flex; flex-wrap: wrap; gap: 8px 32px; align-items: flex-start; }
.figs { display: flex; flex-wrap: wrap; gap: 10px; }
.figs figure { margin: 0; }
.figs img { max-width: 100%; height: auto; border: 1px solid var(--line); }
.figs figcaption { font-size: 12px; color: var(--muted); }
.figs img.wide { width: 820px; }
.figs img.small { width: 380px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; margin: 6px 0 10px;
          align-items: center; }
.sw { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 4px;
      vertical-align: -1px; }
.jet { display: inline-block; width: 120px; height: 10px; vertical-align: -1px; margin: 0 4px;
       background: linear-gradient(90deg, #00007f, #0000ff, #007fff, #00ffff, #7fff7f, #ffff00,
       #ff7f00, #ff0000, #7f0000); }
.line-pred { display: inline-block; width: 22px; border-top: 2px solid #333; vertical-align: 3px; }
.line-gt { display: inline-block; width: 22px; border-top: 2px dashed #333; vertical-align: 3px; }
#controls { display: flex; flex-wrap: wrap; gap: 8px 18px; align-items: center; margin: 6px 0 10px;
            padding: 8px 10px; background: #f0f2f5; border-radius: 4px; font-size: 13px; }
#controls[hidden] { display: none; }
#controls select, #controls button { font: inherit; padding: 2px 6px; }
#items { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr));
           gap: 12px; }
.item { margin: 0; border: 1px solid var(--line); border-radius: 5px; padding: 6px;
        background: #fff; }
.item[hidden] { display: none; }
.item.miss { border-color: #e0a0a0; }
.tiles { display: flex; flex-wrap: wrap; gap: 4px; }
.tile { position: relative; margin: 0; }
.tile img { display: block; width: var(--w, 160px); height: auto; image-rendering: auto; }
.tile img.px { image-rendering: pixelated; }
.tile svg { position: absolute; left: 0; top: 0; width: 100%; height: calc(100% - 16px);
            pointer-events: none; overflow: visible; }
.tile svg rect { fill: none; stroke-width: 1.6; vector-effect: non-scaling-stroke; }
.tile svg rect.gt { stroke-dasharray: 4 3; }
.tile svg text { font-family: system-ui, sans-serif; paint-order: stroke; stroke: #000;
                 stroke-width: 2px; fill: #fff; vector-effect: non-scaling-stroke; }
.tcap { font-size: 11px; height: 16px; line-height: 16px; overflow: hidden; white-space: nowrap;
        text-overflow: ellipsis; max-width: var(--w, 160px); }
.item figcaption { font-size: 12px; color: var(--muted); margin-top: 4px; }
.item figcaption b { color: var(--fg); }
.iou-bad { color: #b3261e; font-weight: 600; }
.iou-ok { color: #1f7a3a; font-weight: 600; }
pre.vec { margin: 0; font-size: 12px; }
@media (max-width: 760px) { main { padding: 4px 8px; } #items { grid-template-columns: 1fr; } }
"""

_SCRIPT = """
(function () {
  var g = document.getElementById("items");
  var box = document.getElementById("controls");
  if (!g || !box) return;
  var items = Array.prototype.slice.call(g.querySelectorAll(".item"));
  var cls = document.getElementById("f-class"), sort = document.getElementById("f-sort");
  var count = document.getElementById("f-count"), worst = document.getElementById("f-worst");
  box.hidden = false;
  function iou(it) {            // with a class filter: that class's IoU in the frame
    var c = cls.value, v = it.getAttribute("data-iou");
    if (c) {
      v = "";
      (it.getAttribute("data-ious") || "").split(" ").forEach(function (kv) {
        var i = kv.lastIndexOf(":");
        if (i > 0 && kv.slice(0, i) === c) v = kv.slice(i + 1);
      });
    }
    return v === "" ? null : parseFloat(v);
  }
  function order(it) { return parseInt(it.getAttribute("data-order"), 10); }
  function cmp(a, b) {
    var k = sort.value;
    if (k === "order") return order(a) - order(b);
    var va = iou(a), vb = iou(b);
    if (va === null || vb === null) {          // frames without ground truth go last
      if (va === vb) return order(a) - order(b);
      return va === null ? 1 : -1;
    }
    return (k === "iou-asc" ? va - vb : vb - va) || order(a) - order(b);
  }
  function apply() {
    var c = cls.value, shown = 0;
    items.forEach(function (it) {
      var ok = !c || (" " + it.getAttribute("data-classes") + " ").indexOf(" " + c + " ") >= 0;
      it.hidden = !ok;
      if (ok) shown += 1;
    });
    items.slice().sort(cmp).forEach(function (it) { g.appendChild(it); });
    count.textContent = shown + " of " + items.length + " frames shown";
  }
  cls.addEventListener("change", apply);
  sort.addEventListener("change", apply);
  worst.addEventListener("click", function () { sort.value = "iou-asc"; apply(); });
  apply();
})();
"""


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: ``sections`` are ``(anchor, title, body_html)``; empty bodies are
    left out (with their navigation link)."""
    kept = [s for s in sections if s[2]]
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in kept)
    body = "".join(section(a, t, b) for a, t, b in kept)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style></head>\n<body>\n"
        f'<header><h1>{esc(title)}</h1><div class="sub">{esc(subtitle)}</div></header>\n'
        f"<nav>{nav}</nav>\n<main>\n{body}</main>\n<script>{_SCRIPT}</script>\n"
        "</body></html>\n"
    )
