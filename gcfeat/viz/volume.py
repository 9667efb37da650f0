"""A self-contained interactive HTML view of a volume with its CAM (no external JS or CSS).

The page holds one base64 PNG per slice for each of the three orthogonal views (axial z,
coronal y, sagittal x): the image in grey with the CAM in jet on top, drawn only where the
image is foreground (``image > foreground_threshold`` of its range, or an explicit mask), as in
the seed's voxel view. Sliders pick the slice per view and the CAM opacity; a checkbox hides the
CAM. Everything (images, script, style) is inline, so the file opens offline and can be mailed.

Example::

    >>> write_volume_html("cam.html", volume, heat, title="liver, Score-CAM")
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

import numpy as np

from gcfeat.viz.montage import _np, jet

__all__ = ["write_volume_html", "slice_pngs"]


def _png(rgb: np.ndarray, upscale: int) -> str:
    """RGB (or RGBA) uint8 -> base64 PNG, nearest-upscaled by ``upscale``."""
    import cv2

    if upscale > 1:
        rgb = np.repeat(np.repeat(rgb, upscale, 0), upscale, 1)
    bgr = rgb[..., [2, 1, 0, 3]] if rgb.shape[-1] == 4 else rgb[..., ::-1]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
    assert ok
    return base64.b64encode(buf.tobytes()).decode("ascii")


def slice_pngs(
    grey: np.ndarray, heat: np.ndarray, fg: np.ndarray, axis: int, upscale: int = 1
) -> tuple[list[str], list[str]]:
    """Base64 PNGs of every slice along ``axis``: (grey images, RGBA CAM layers on foreground)."""
    gs, hs = [], []
    for i in range(grey.shape[axis]):
        g = np.take(grey, i, axis)
        h = np.take(heat, i, axis)
        f = np.take(fg, i, axis)
        gs.append(_png(np.repeat((g * 255).astype(np.uint8)[..., None], 3, -1), upscale))
        hs.append(_png(np.concatenate([jet(h), (f * 255).astype(np.uint8)[..., None]], -1), upscale))
    return gs, hs


_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; background: #111; color: #ddd; margin: 16px; }}
.views {{ display: flex; gap: 18px; flex-wrap: wrap; }}
.view {{ text-align: center; }}
.stack {{ position: relative; display: inline-block; }}
.stack img {{ display: block; image-rendering: pixelated; width: {px}px; }}
.stack img.cam {{ position: absolute; left: 0; top: 0; }}
input[type=range] {{ width: {px}px; }}
</style></head><body>
<h3>{title}</h3>
<div>CAM opacity <input id="alpha" type="range" min="0" max="100" value="{alpha}">
<label><input id="show" type="checkbox" checked> show CAM</label></div>
<div class="views" id="views"></div>
<script>
const DATA = {data};
const views = document.getElementById("views");
const alpha = document.getElementById("alpha"), show = document.getElementById("show");
const cams = [];
for (const v of DATA.views) {{
  const box = document.createElement("div"); box.className = "view";
  const st = document.createElement("div"); st.className = "stack";
  const g = document.createElement("img"), c = document.createElement("img");
  c.className = "cam"; st.appendChild(g); st.appendChild(c); cams.push(c);
  const lab = document.createElement("div");
  const s = document.createElement("input"); s.type = "range"; s.min = 0;
  s.max = v.grey.length - 1; s.value = Math.floor(v.grey.length / 2);
  const draw = () => {{
    g.src = "data:image/png;base64," + v.grey[s.value];
    c.src = "data:image/png;base64," + v.cam[s.value];
    lab.textContent = v.name + " " + s.value + " / " + (v.grey.length - 1);
  }};
  s.oninput = draw; draw();
  box.appendChild(st); box.appendChild(s); box.appendChild(lab); views.appendChild(box);
}}
const opac = () => cams.forEach(c => {{ c.style.opacity = show.checked ? alpha.value / 100 : 0; }});
alpha.oninput = opac; show.onchange = opac; opac();
</script></body></html>
"""


def write_volume_html(
    path: str | os.PathLike,
    volume,
    heat,
    *,
    title: str = "CAM",
    foreground=None,
    foreground_threshold: float = 0.05,
    alpha: float = 0.5,
    upscale: int | None = None,
    display_px: int = 320,
    views: tuple[str, ...] = ("axial", "coronal", "sagittal"),
) -> Path:
    """Write the interactive page for ``volume (D, H, W)`` and ``heat (D, H, W)`` in [0, 1].

    ``foreground``: bool ``(D, H, W)``; default: voxels above ``foreground_threshold`` of the
    image's range. ``upscale`` enlarges the embedded PNGs (default so a side is >= 128 px).
    """
    vol = _np(volume).astype(np.float32)
    hm = np.clip(_np(heat).astype(np.float32), 0, 1)
    if vol.ndim != 3 or hm.shape != vol.shape:
        raise ValueError(
            f"write_volume_html({path}): volume {vol.shape} and heat {hm.shape} must both be (D, H, W)"
        )
    lo, hi = float(vol.min()), float(vol.max())
    grey = (vol - lo) / (hi - lo) if hi > lo else np.zeros_like(vol)
    fg = (grey > foreground_threshold) if foreground is None else _np(foreground).astype(bool)
    if upscale is None:
        upscale = max(1, int(np.ceil(128 / max(vol.shape))))
    axes = {"axial": 0, "coronal": 1, "sagittal": 2}
    data: dict[str, list[dict[str, object]]] = {"views": []}
    for name in views:
        g, c = slice_pngs(grey, hm, fg, axes[name], upscale)
        data["views"].append({"name": name, "grey": g, "cam": c})
    page = _PAGE.format(
        title=html.escape(title), data=json.dumps(data), px=int(display_px), alpha=int(round(alpha * 100))
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
