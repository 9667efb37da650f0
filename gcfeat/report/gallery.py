"""The report's gallery: frames (MRI: slices, volume montages) with a heatmap overlay per
predicted class, predicted boxes (solid, with scores) and ground-truth boxes (dashed).

Heatmaps come from one batched CAM pass over the sampled frames (:func:`cam_pass`): the
model's forward gives every class's map at once (Grad-CAM, closed form for ResNets), so a
300-frame gallery costs about one forward per frame. Each item is written as small image files
(JPEG; PNG for tiny MRI slices) and static markup: the boxes are an SVG layer over the image,
so they stay sharp at any zoom and cost nothing to draw. An item carries
``data-classes`` (predicted and ground-truth class names), ``data-iou`` (the mean over its
ground-truth boxes of each one's best IoU with a predicted box of its class, as the threshold
study's ``mean_iou``; empty when the frame has no ground-truth box), ``data-ious`` (the same
per class, ``name:iou`` pairs: a class filter sorts by that class's IoU) and ``data-order``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from gcfeat.boxes import Boxes, heatmap_to_boxes
from gcfeat.boxes.ops import box_iou
from gcfeat.cam import GradCAM
from gcfeat.data import collate
from gcfeat.viz import class_color, denormalize
from gcfeat.viz.montage import jet

from .page import esc, hex_color

__all__ = [
    "FrameView",
    "GalleryItem",
    "sample_indices",
    "cam_pass",
    "frame_views",
    "render_item",
    "best_ious",
    "mask_box",
    "display_frames",
    "slices_for",
    "gallery_html",
    "legend_html",
]

#: classes whose box is the whole frame (drawn on their own heatmap tile only, not scored)
BACKGROUND = ("tissue",)
_JET = jet(np.linspace(0, 1, 256))  # (256, 3) uint8 lookup table


@dataclass
class FrameView:
    """One frame ready to draw.

    ``slices (S, H, W, 3)`` uint8 (2D: S = 1; volumes: the shown axial slices ``z``), ``heat``
    class id -> ``(S, H, W)`` float in [0, 1], boxes ``(n, 4)`` x1, y1, x2, y2 or ``(n, 6)``
    z1, y1, x1, z2, y2, x2 (exclusive end, input pixels) with ``labels`` / ``scores``, ground
    truth ``gt_boxes`` / ``gt_labels`` in the same form, ``probs (K,)`` or None.
    """

    video: str
    frame_index: int
    slices: np.ndarray
    z: list[int] | None
    heat: dict[int, np.ndarray]
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    probs: np.ndarray | None = None
    shown: list[int] = field(default_factory=list)  # classes with a tile, in order
    predicted: list[int] = field(default_factory=list)


@dataclass
class GalleryItem:
    """A rendered item: its markup and what the page filters / sorts it by."""

    order: int
    video: str
    frame_index: int
    classes: list[str]
    iou: float | None
    html: str
    files: list[str]


def sample_indices(n: int, k: int | None, seed: int = 0) -> list[int]:
    """``k`` of ``range(n)`` drawn without replacement (seeded), in ascending order; all when
    ``k`` is None or ``>= n``."""
    if k is None or k >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(n, generator=g)[: max(int(k), 0)].tolist())


def display_frames(x: torch.Tensor, mean=None, std=None) -> np.ndarray:
    """Model inputs -> displayable uint8 ``(B, S, H, W, 3)``: 2D frames as ``S = 1``, volumes
    with all ``S = D`` axial slices.

    ``x (B, C, H, W)`` with ``mean`` / ``std`` is de-normalised to RGB; otherwise (MRI) the last
    channel (prostate: T2W; grey tasks: the image) is min-max scaled per image (volume) to grey.
    """
    if x.dim() == 4 and mean is not None and std is not None and x.shape[1] == len(mean):
        return denormalize(x, mean, std)[:, None]
    g = x[:, -1].float()
    if g.dim() == 3:
        g = g[:, None]
    lo = g.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = g.flatten(1).max(1).values.view(-1, 1, 1, 1)
    g = ((g - lo) / (hi - lo).clamp(min=1e-12) * 255).round().clamp(0, 255).to(torch.uint8)
    return np.repeat(g.numpy()[..., None], 3, -1)


def slices_for(depth: int, boxes: np.ndarray, k: int = 5) -> list[int]:
    """``k`` axial slices of a volume: spread over the z-extent of ``boxes (n, 6)`` (the
    ground truth, else the predicted boxes: the montage shows the object), else the depth."""
    if len(boxes):
        lo, hi = int(boxes[:, 0].min()), int(boxes[:, 3].max())
        lo, hi = max(lo, 0), min(max(hi, lo + 1), depth)
    else:
        lo, hi = 0, depth
    n = min(k, hi - lo)
    return [lo + int((i + 0.5) * (hi - lo) / n) for i in range(n)]


def mask_box(mask: torch.Tensor) -> torch.Tensor | None:
    """Bounding box of a non-empty mask ``(H, W)`` / ``(D, H, W)``: ``(4,)`` x1, y1, x2, y2 or
    ``(6,)`` z1, y1, x1, z2, y2, x2, exclusive end; None for an empty mask."""
    idx = mask.nonzero()
    if not len(idx):
        return None
    lo, hi = idx.min(0).values, idx.max(0).values + 1
    if mask.dim() == 2:
        return torch.stack([lo[1], lo[0], hi[1], hi[0]]).float()
    return torch.cat([lo, hi]).float()


def best_ious(
    gt_boxes: np.ndarray, gt_labels: np.ndarray, boxes: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """For each ground-truth box ``(g, 4|6)`` its best IoU with a predicted box ``(n, 4|6)`` of
    the same class (0 when there is none): ``(g,)``, the threshold study's per-box IoU."""
    if not len(gt_boxes):
        return np.zeros(0, np.float32)
    if not len(boxes):
        return np.zeros(len(gt_boxes), np.float32)
    iou = box_iou(torch.as_tensor(gt_boxes, dtype=torch.float32), torch.as_tensor(boxes, dtype=torch.float32))
    same = torch.as_tensor(gt_labels)[:, None] == torch.as_tensor(labels)[None, :]
    return torch.where(same, iou, torch.zeros_like(iou)).max(1).values.numpy()


def cam_pass(
    model,
    target_layer,
    dataset,
    indices: Sequence[int],
    *,
    classes: Sequence[str],
    activation: str,
    threshold: float | None,
    pred_threshold: float = 0.5,
    min_area: float = 25,
    batch_size: int = 32,
    device: str = "cpu",
    progress: bool = True,
) -> Iterator[tuple[dict, torch.Tensor, torch.Tensor, Boxes | None]]:
    """One CAM pass over ``dataset[indices]`` in batches.

    Yields ``(batch, heat (B, K, *spatial), probs (B, K), boxes)``: every class's Grad-CAM map
    from one forward (+ batched backward), class scores (sigmoid, or softmax for single-label
    tasks) and, when ``threshold`` is given, :func:`heatmap_to_boxes` of the predicted classes
    (sigmoid: probability above ``pred_threshold``; softmax: the top class), tissue as one union
    box, as the extraction pipeline does.
    """
    tissue = list(classes).index("tissue") if "tissue" in classes else None
    modes = {tissue: "union"} if tissue is not None else None
    loader = DataLoader(
        Subset(dataset, list(indices)),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate,
        num_workers=0,
    )
    cam = GradCAM(model, [target_layer])
    bar = tqdm(total=len(indices), unit="frame", desc="report CAM", disable=None if progress else True)
    with bar:
        for batch in loader:
            x = batch["image"].to(device)
            res = cam.explain(x)
            logits = res.logits.float()
            if activation == "sigmoid":
                probs, gate, pt = logits.sigmoid(), logits.sigmoid(), pred_threshold
            else:
                probs = logits.softmax(1)
                gate, pt = torch.nn.functional.one_hot(probs.argmax(1), probs.shape[1]).float(), 0.5
            boxes = None
            if threshold is not None:
                boxes = heatmap_to_boxes(
                    res.heatmap.float(),
                    threshold,
                    min_area=min_area,
                    class_modes=modes,
                    probs=gate,
                    pred_threshold=pt,
                )
            bar.update(len(x))
            yield batch, res.heatmap.float().cpu(), probs.cpu(), boxes


def _gt(batch: dict, b: int, spatial_dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth of item ``b``: the dataset's boxes, or the box of its mask (MRI)."""
    width = 2 * spatial_dims
    if "gt_boxes" in batch:
        gb = torch.as_tensor(batch["gt_boxes"][b]).reshape(-1, width).float().numpy()
        return gb, torch.as_tensor(batch["gt_labels"][b]).reshape(-1).long().numpy()
    masks = batch.get("gt_mask")
    if masks is not None and "label" in batch:
        m = masks[b] if not torch.is_tensor(masks) else masks[b]
        box = mask_box(torch.as_tensor(m).bool()) if m is not None else None
        if box is not None:
            return box[None].numpy(), np.asarray([int(batch["label"][b])])
    return np.zeros((0, width), np.float32), np.zeros(0, np.int64)


def frame_views(
    batch: dict,
    heat: torch.Tensor | None,
    probs: torch.Tensor | None,
    boxes: Boxes | list | None,
    *,
    activation: str,
    pred_threshold: float = 0.5,
    mean=None,
    std=None,
) -> list[FrameView]:
    """A batch -> one :class:`FrameView` per frame.

    ``heat (B, K, *spatial)`` (or None), ``probs (B, K)`` (or None), ``boxes``: a
    :class:`Boxes` of the batch or a list per frame of ``(xyxy, labels, scores)``.
    Tiles go to the predicted classes (sigmoid above ``pred_threshold``, softmax the top one)
    and to every class that has a box.
    """
    x = batch["image"]
    sd = x.dim() - 2
    frames = display_frames(x, mean, std)
    views = []
    for b in range(len(x)):
        if isinstance(boxes, Boxes):
            sel = boxes.frame == b
            bx, lb, sc = (
                boxes.xyxy[sel].cpu().numpy(),
                boxes.label[sel].cpu().numpy(),
                boxes.score[sel].cpu().numpy(),
            )
        elif boxes is not None:
            bx, lb, sc = (np.asarray(a) for a in boxes[b])
        else:
            bx, lb, sc = np.zeros((0, 2 * sd), np.float32), np.zeros(0, np.int64), np.zeros(0)
        p = None if probs is None else probs[b].numpy()
        predicted: list[int] = []
        if p is not None:
            predicted = (
                np.nonzero(p > pred_threshold)[0].tolist() if activation == "sigmoid" else [int(p.argmax())]
            )
        gb, gl = _gt(batch, b, sd)
        # a ground-truth class the model missed gets its tile too: where did its heat go?
        shown = sorted(set(predicted) | set(int(v) for v in lb) | set(int(v) for v in gl))
        bx = bx.reshape(-1, 2 * sd)
        zs = slices_for(x.shape[2], gb if len(gb) else bx) if sd == 3 else None
        h = {}
        if heat is not None:
            for k in shown:
                hk = heat[b, k]
                h[k] = (hk[zs] if zs is not None else hk[None]).numpy()
        views.append(
            FrameView(
                str(batch["video"][b]) if "video" in batch else "",
                int(batch["frame_index"][b]) if "frame_index" in batch else b,
                frames[b][zs] if zs is not None else frames[b],
                zs,
                h,
                bx,
                lb.astype(np.int64),
                sc.astype(np.float32),
                gb,
                gl.astype(np.int64),
                p,
                shown,
                predicted,
            )
        )
    return views


def _write(path: Path, rgb: np.ndarray) -> None:
    """JPEG (quality 88) for frames of normal size, PNG for tiny ones (MRI slices of 28 px,
    where JPEG blocks would show)."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    if path.suffix == ".png":
        cv2.imwrite(str(path), bgr)
    else:
        cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 88])


def _montage(a: np.ndarray) -> np.ndarray:
    """``(S, H, W, ...)`` -> ``(H, S * W + gaps, ...)``: slices side by side, 1 px apart."""
    if len(a) == 1:
        return a[0]
    gap = np.full((a.shape[1], 1, *a.shape[3:]), 255, a.dtype)
    parts = []
    for i, s in enumerate(a):
        parts += [s, gap] if i < len(a) - 1 else [s]
    return np.concatenate(parts, 1)


def _svg_rects(boxes, labels, scores, *, z, width, height, gt: bool, colors, names, fs: float) -> str:
    """SVG rectangles (and score labels) of ``boxes`` on a montage of slices ``z``."""
    if not len(labels):
        return ""
    out = []
    slots = [None] if z is None else z
    for i, bx in enumerate(np.asarray(boxes).reshape(len(labels), -1)):
        c = colors[int(labels[i]) % len(colors)]
        if len(bx) == 6:
            z1, y1, x1, z2, y2, x2 = bx
        else:
            x1, y1, x2, y2 = bx
            z1 = z2 = None
        for s, zz in enumerate(slots):
            if zz is not None and not (z1 <= zz < z2):
                continue
            ox = s * (width + 1)
            cls = ' class="gt"' if gt else ""
            title = f"{'GT ' if gt else ''}{names[int(labels[i])]}"
            if not gt and scores is not None:
                title += f" {float(scores[i]):.2f}"
            out.append(
                f'<rect{cls} x="{ox + x1:g}" y="{y1:g}" width="{x2 - x1:g}" '
                f'height="{y2 - y1:g}" stroke="{c}"><title>{esc(title)}</title></rect>'
            )
            if not gt and scores is not None:
                # inside the box's top-left corner, kept inside the slice
                tx, ty = min(ox + x1 + 1, ox + width - 2.2 * fs), min(y1 + fs, height - 1)
                out.append(f'<text x="{tx:g}" y="{ty:g}" font-size="{fs:g}">{float(scores[i]):.2f}</text>')
    return "".join(out)


def _tile(src: str, w: int, h: int, svg: str, caption: str, px_width: int, pixelated: bool) -> str:
    cls = ' class="px"' if pixelated else ""
    return (
        f'<div class="tile" style="--w:{px_width}px"><img{cls} src="{esc(src)}" width="{w}" '
        f'height="{h}" loading="lazy" alt="{esc(caption)}">'
        f'<svg viewBox="0 0 {w} {h}" preserveAspectRatio="none">{svg}</svg>'
        f'<div class="tcap">{esc(caption)}</div></div>'
    )


def render_item(
    order: int,
    v: FrameView,
    files_dir: Path,
    rel: str,
    names: Sequence[str],
    colors: Sequence[str],
    *,
    tile_px: int = 176,
) -> GalleryItem:
    """Write the item's images (the frame with every non-background box, then one heatmap
    overlay per shown class with that class's boxes) and return its markup."""
    stem = f"{order:05d}"
    S, H, W = v.slices.shape[:3]
    base = _montage(v.slices)
    mh, mw = base.shape[:2]
    small = max(H, W) < 64
    ext = ".png" if small else ".jpg"
    scale = 4 if small else 1  # tiny slices: upscale the file, keep it crisp
    width_px = tile_px if S == 1 else max(tile_px, min(3 * tile_px, int(mw * scale * 1.5)))
    fs = max(H, W) / 14
    bg = [i for i, n in enumerate(names) if n in BACKGROUND]
    keep = ~np.isin(v.labels, bg)
    gkeep = ~np.isin(v.gt_labels, bg)
    files, tiles = [], []

    def put(name: str, rgb: np.ndarray) -> str:
        if scale > 1:
            rgb = np.repeat(np.repeat(rgb, scale, 0), scale, 1)
        _write(files_dir / name, rgb)
        files.append(name)
        return f"{rel}/{name}"

    svg = _svg_rects(
        v.gt_boxes[gkeep],
        v.gt_labels[gkeep],
        None,
        z=v.z,
        width=W,
        height=H,
        gt=True,
        colors=colors,
        names=names,
        fs=fs,
    ) + _svg_rects(
        v.boxes[keep],
        v.labels[keep],
        v.scores[keep],
        z=v.z,
        width=W,
        height=H,
        gt=False,
        colors=colors,
        names=names,
        fs=fs,
    )
    cap = "frame" if v.z is None else "z = " + ", ".join(map(str, v.z))
    tiles.append(_tile(put(f"{stem}{ext}", base), mw, mh, svg, cap, width_px, small))
    for k in v.shown:
        if k in v.heat:
            h8 = (np.clip(v.heat[k], 0, 1) * 255).astype(np.uint8)
            over = (v.slices.astype(np.uint16) + _JET[h8]) // 2  # alpha 0.5, JET
            img = put(f"{stem}_c{k}{ext}", _montage(over.astype(np.uint8)))
        else:
            img = f"{rel}/{stem}{ext}"
        sk, gk = v.labels == k, v.gt_labels == k
        svg = _svg_rects(
            v.gt_boxes[gk],
            v.gt_labels[gk],
            None,
            z=v.z,
            width=W,
            height=H,
            gt=True,
            colors=colors,
            names=names,
            fs=fs,
        ) + _svg_rects(
            v.boxes[sk],
            v.labels[sk],
            v.scores[sk],
            z=v.z,
            width=W,
            height=H,
            gt=False,
            colors=colors,
            names=names,
            fs=fs,
        )
        p = "" if v.probs is None else f" {float(v.probs[k]):.2f}"
        if v.probs is not None and k not in v.predicted:
            p += " missed"
        tiles.append(_tile(img, mw, mh, svg, f"{names[k]}{p}", width_px, small))

    ious = best_ious(v.gt_boxes[gkeep], v.gt_labels[gkeep], v.boxes, v.labels)
    iou = float(ious.mean()) if len(ious) else None
    classes = sorted({names[int(k)] for k in list(v.shown) + v.gt_labels.tolist()})
    gt_txt = ", ".join(f"{names[int(lab)]} {s:.2f}" for lab, s in zip(v.gt_labels[gkeep], ious))
    iou_txt = (
        "no ground-truth box"
        if iou is None
        else f'IoU <span class="{"iou-bad" if iou < 0.5 else "iou-ok"}">{iou:.2f}</span>'
    )
    miss = " miss" if iou is not None and iou < 0.5 else ""
    data_cls = " ".join(c.replace(" ", "_") for c in classes)
    gkl = v.gt_labels[gkeep]
    per_class = " ".join(
        f"{names[int(k)].replace(' ', '_')}:{float(ious[gkl == k].mean()):.4f}" for k in np.unique(gkl)
    )
    markup = (
        f'<figure class="item{miss}" data-order="{order}" data-classes="{esc(data_cls)}" '
        f'data-iou="{"" if iou is None else f"{iou:.4f}"}" data-ious="{esc(per_class)}" '
        f'data-video="{esc(v.video)}" '
        f'data-frame="{v.frame_index}"><div class="tiles">{"".join(tiles)}</div>'
        f"<figcaption><b>{esc(v.video)} #{v.frame_index}</b> · {iou_txt}"
        + (f"<br>GT best IoU: {esc(gt_txt)}" if gt_txt else "")
        + "</figcaption></figure>"
    )
    return GalleryItem(order, v.video, v.frame_index, classes, iou, markup, files)


def legend_html(names: Sequence[str], colors: Sequence[str], present: Sequence[str] | None = None) -> str:
    """Class colour swatches, box line styles and the heatmap colour scale."""
    keep = [i for i, n in enumerate(names) if present is None or n in present]
    sw = "".join(
        f'<span><span class="sw" style="background:{colors[i]}"></span>{esc(names[i])}</span>' for i in keep
    )
    return (
        f'<div class="legend">{sw}</div><div class="legend"><span><span class="line-pred">'
        '</span> predicted box (score)</span><span><span class="line-gt"></span> ground truth'
        '</span><span>heatmap 0<span class="jet"></span>1 (JET, alpha 0.5)</span></div>'
    )


def gallery_html(
    items: Sequence[GalleryItem], names: Sequence[str], colors: Sequence[str], note: str = ""
) -> str:
    """Legend, the (script-enabled) filter / sort controls and the items' grid."""
    present = sorted({c for it in items for c in it.classes})
    opts = "".join(
        f'<option value="{esc(c.replace(" ", "_"))}">{esc(c)}</option>' for c in names if c in present
    )
    n_gt = sum(it.iou is not None for it in items)
    n_miss = sum(it.iou is not None and it.iou < 0.5 for it in items)
    summary = (
        f"{len(items)} frames; {n_gt} with ground-truth boxes, {n_miss} of them with "
        "mean best IoU below 0.5 (red border)."
        if items
        else "no frames"
    )
    controls = (
        '<div id="controls" hidden><label>class <select id="f-class"><option value="">'
        f'all classes</option>{opts}</select></label><label>sort <select id="f-sort">'
        '<option value="order">frame order</option><option value="iou-asc">IoU, worst '
        'first</option><option value="iou-desc">IoU, best first</option></select></label>'
        '<button id="f-worst" type="button">worst misses first</button>'
        '<span id="f-count"></span></div>'
    )
    body = "".join(it.html for it in items)
    return (
        f'<p class="note">{esc(summary)} {esc(note)}</p>{legend_html(names, colors, present)}'
        f'{controls}<div id="items">{body}</div>'
    )


def class_colors(n: int) -> list[str]:
    """``#rrggbb`` per class id, the colours of :func:`gcfeat.viz.class_color`."""
    return [hex_color(class_color(i)) for i in range(n)]
