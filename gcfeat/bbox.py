"""`python -m gcfeat.bbox`: one frame, one class: its heatmap, every predicted box, the ground
truth, the class probabilities (the original ``miccai_bbox.py``, without its crashes).

    python -m gcfeat.bbox --bidx 15 --tclass 3 --threshold 0.3

Frame ``--bidx`` of the split (validation by default), class ``--tclass`` (index or name)
overlaid in JET at alpha 0.5; the boxes of every class whose probability exceeds
``--pred-threshold`` in per-class colours with labels and scores; ground-truth boxes dashed when
the data has them; the class probabilities in the title. The boxes it drew are printed as a
table. Defaults point at what ``scripts/demo`` writes.

MRI tasks (:func:`run_task_bbox`)::

    python -m gcfeat.bbox --task organ3d --data runs/demo_organ3d/data \\
        --checkpoint runs/demo_organ3d/organ3d_resnet3d_18_slim_best.pt --bidx 3 --out fig.png

Sample ``--bidx`` of the split (test by default), the CAM of ``--tclass`` (index or name;
default: the predicted class) on the task's target layer, its boxes at ``--threshold`` and the
ground truth: the box around the sample's ``gt_mask`` (lesion / organ / ventricles; a sample
may have none, e.g. a lesion-free prostate slice: the title and the printout say so). 2D: the
image (prostate: the T2W channel) with the heatmap, predicted boxes solid, the GT box dashed,
class probabilities in the title. 3D: a montage of the axis-0 slices the boxes (and the GT box)
span, each box drawn on the slices it covers, the GT mask's contour in white. Prints the boxes
and the IoU of the best box with the GT box.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from gcfeat.cli import apply_task_options
from gcfeat.tune import (DEFAULT_CHECKPOINT, DEFAULT_DATA, DISPLAY_CHANNEL, METHOD_NAMES, TuneError,
                         cam_batch, class_modes_for, load_dataset, load_model,
                         load_task_dataset, load_task_model, make_cam, make_task_cam, mask_boxes,
                         task_cam_batch, task_demo_paths)

if TYPE_CHECKING:
    from gcfeat.boxes import Boxes

DEFAULT_OUT_DIR = "runs/demo"


def resolve_class(tclass: str | int, classes: Sequence[str]) -> int:
    """``"3"`` / ``3`` / ``"monopolar_curved_scissors"`` -> 3, or an error listing the names."""
    text = str(tclass).strip()
    if text.lstrip("-").isdigit():
        k = int(text)
        if 0 <= k < len(classes):
            return k
    elif text in classes:
        return list(classes).index(text)
    else:
        lower = [c.lower() for c in classes]
        if text.lower() in lower:
            return lower.index(text.lower())
    names = ", ".join(f"{i} {n}" for i, n in enumerate(classes))
    raise TuneError(f"--tclass {text!r}: unknown class; expected an index 0..{len(classes) - 1} "
                    f"or a name: {names}")


def probability_title(probs, classes: Sequence[str], tclass: int, pred_threshold: float,
                      header: str, marked: Sequence[bool] | None = None) -> str:
    """Title lines: the header, then ``name p`` for every class (``*`` marks predicted: above
    ``pred_threshold``, or where ``marked`` is true when given)."""
    if marked is None:
        marked = [p > pred_threshold for p in probs]
    items = [f"{'*' if m else ''}{n} {p:.2f}" for n, p, m in zip(classes, probs, marked)]
    body = textwrap.wrap("  ".join(items), width=95)
    return "\n".join([header] + body)


def format_boxes(boxes, classes: Sequence[str]) -> str:
    """Printed table of a frame's boxes: ``class_id name x1 y1 x2 y2 score`` per row (3D:
    ``z1 y1 x1 z2 y2 x2``)."""
    cols = ("z1", "y1", "x1", "z2", "y2", "x2") if boxes.xyxy.shape[-1] == 6 else ("x1", "y1", "x2", "y2")
    lines = [f"  {'class_id':>8} {'class':<26} " + " ".join(f"{c:>5}" for c in cols) + f" {'score':>6}"]
    for xyxy, k, s in zip(boxes.xyxy.tolist(), boxes.label.tolist(), boxes.score.tolist()):
        name = classes[k] if 0 <= k < len(classes) else str(k)
        lines.append(f"  {k:>8d} {name:<26} " + " ".join(f"{int(v):>5d}" for v in xyxy) + f" {s:>6.3f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# MRI tasks (--task prostate | organ3d | alzheimer)

#: What a task's ``gt_mask`` marks (for titles and printouts).
GT_NAMES = {"prostate": "lesion", "organ3d": "organ", "alzheimer": "ventricles"}


@dataclass
class TaskBoxes:
    """What :func:`run_task_bbox` found for one sample (tensors on the CPU)."""

    task: str
    classes: list[str]
    where: str                  # "<video> #<frame_index>"
    label: int                  # true class
    pred: int                   # predicted class (arg-max)
    tclass: int                 # class of the heatmap and boxes
    probs: torch.Tensor         # (K,) softmax
    heatmap: torch.Tensor       # (*S) in [0, 1]
    boxes: Boxes                # xyxy (M, 2d)
    gt_box: torch.Tensor | None  # (2d,) box around gt_mask; None: no ground truth
    iou: torch.Tensor | None    # (M,) IoU of each box with gt_box
    figure: Path
    title: str

    @property
    def best(self) -> int | None:
        """Index of the box with the highest IoU (None without ground truth or boxes)."""
        if self.iou is None or self.iou.numel() == 0:
            return None
        return int(self.iou.argmax())


def run_task_bbox(task: str, data: str | Path | None = None, checkpoint: str | Path | None = None,
                  bidx: int = 0, *, tclass: str | int | None = None, threshold: float = 0.3,
                  split: str = "test", out: str | Path | None = None, method: str = "gradcam",
                  layer: str | None = None, mode: str = "components", min_area: float = 25,
                  device: str = "cpu") -> TaskBoxes:
    """One sample of an MRI task: its CAM, boxes, ground-truth box and figure.

    Args:
        task: ``prostate``, ``organ3d`` or ``alzheimer``.
        data, checkpoint: dataset and task checkpoint (default: what ``scripts/demo --task``
            writes).
        bidx: sample index within ``split``.
        tclass: class of the heatmap: index or name; None: the predicted class.
        threshold, mode, min_area: as :func:`gcfeat.boxes.heatmap_to_boxes`.
        out: the PNG (default ``runs/demo_<task>/bbox_<bidx>_<class>.png``).
        method, layer: CAM method and target module (default the task's target layer).

    Returns:
        :class:`TaskBoxes`; the figure is written (2D overlay or 3D slice montage).
    """
    from gcfeat.boxes import box_iou, heatmap_to_boxes
    from gcfeat.tasks import get_task

    t = get_task(task)
    if t.name == "surgical":
        raise TuneError("run_task_bbox: --task surgical draws with the surgical path (run)")
    if not 0.0 <= threshold <= 1.0:
        raise TuneError(f"--threshold {threshold}: expected a value in [0, 1]")
    paths = task_demo_paths(t.name)
    data = paths["data"] if data is None else data
    checkpoint = paths["checkpoint"] if checkpoint is None else checkpoint
    classes = list(t.classes)
    k = None if tclass is None else resolve_class(tclass, classes)  # before any heavy work
    model, info = load_task_model(t, checkpoint, device)
    ds = load_task_dataset(t, data, info, split)
    if not 0 <= bidx < len(ds):
        raise TuneError(f"--bidx {bidx}: the {split!r} split of {data} has {len(ds)} samples; "
                        f"expected 0..{len(ds) - 1}")
    sample = ds[bidx]
    cam = make_task_cam(model, t, method, layer)
    heat, probs, cls = task_cam_batch(cam, sample["image"][None], "argmax" if k is None else [k],
                                      device)
    heat, probs = heat.cpu(), probs[0].cpu()
    k = int(cls[0])
    boxes = heatmap_to_boxes(heat[:, None], threshold, mode=mode, min_area=min_area,
                             classes=[k]).to("cpu")
    mask = sample.get("gt_mask")
    gt_box = iou = None
    if torch.is_tensor(mask) and bool(mask.any()):
        gt_box = mask_boxes(mask[None])[0][0]
        iou = box_iou(gt_box[None], boxes.xyxy)[0]
    label, pred = int(sample["label"]), int(probs.argmax())
    where = f"{sample.get('video', '?')} #{sample.get('frame_index', '?')}"
    what = GT_NAMES.get(t.name, "ground-truth")
    header = (f"{t.name} {where} (bidx {bidx}, {split}) | true {classes[label]} | heatmap: "
              f"{classes[k]} p={float(probs[k]):.2f} | {method}, T={threshold:g}")
    if gt_box is None:
        gt_line = f"no ground truth: the sample's {what} mask is empty"
    elif len(boxes) == 0:
        gt_line = f"GT = box around the {what} mask (dashed) | no box at T={threshold:g}"
    else:
        gt_line = f"GT = box around the {what} mask (dashed) | best box IoU {float(iou.max()):.3f}"
    title = probability_title(probs.tolist(), classes, k, 0.0, header,
                              marked=[i == pred for i in range(len(classes))]) + "\n" + gt_line
    out = Path(out) if out else Path(paths["out"]) / f"bbox_{bidx}_{classes[k]}.png"
    image = sample["image"][DISPLAY_CHANNEL.get(t.name, 0)]
    if t.spatial_dims == 3:
        save_volume_box_figure(out, image, heat[0], boxes.xyxy, gt_mask=mask if gt_box is not None
                               else None, gt_box=gt_box, color_label=k, title=title)
    else:
        from gcfeat.viz import save_box_figure

        save_box_figure(out, _grey_uint8(image), heat[0], boxes=boxes.xyxy, labels=boxes.label,
                        scores=boxes.score, gt_boxes=None if gt_box is None else gt_box[None],
                        gt_labels=None if gt_box is None else [label], class_names=classes,
                        title=title)
    return TaskBoxes(t.name, classes, where, label, pred, k, probs, heat[0], boxes, gt_box, iou,
                     out, title)


def format_task_boxes(r: TaskBoxes, threshold: float | None = None) -> str:
    """The printout of :func:`run_task_bbox`: classes, the box table, the GT box, the best IoU."""
    c = r.classes
    d = r.heatmap.ndim
    cols = ("z1", "y1", "x1", "z2", "y2", "x2") if d == 3 else ("x1", "y1", "x2", "y2")
    t = "" if threshold is None else f"; T={threshold:g}"
    lines = [f"{r.task} {r.where}: true class {r.label} {c[r.label]}; predicted {r.pred} "
             f"{c[r.pred]} (p={float(r.probs[r.pred]):.3f}); heatmap of class {r.tclass} "
             f"{c[r.tclass]} (p={float(r.probs[r.tclass]):.3f}){t}",
             "probabilities: " + ", ".join(f"{n} {float(p):.3f}" for n, p in zip(c, r.probs)),
             f"boxes drawn ({len(r.boxes)}):", format_boxes(r.boxes, c)]
    what = GT_NAMES.get(r.task, "ground-truth")
    if r.gt_box is None:
        lines.append(f"ground truth: none (the sample's {what} mask is empty)")
    else:
        lines.append(f"ground-truth box ({what} mask, dashed): " + " ".join(cols) + " = "
                     + " ".join(str(int(v)) for v in r.gt_box.tolist()))
        b = r.best
        lines.append("IoU of the best box with the GT box: " + (
            "no box" if b is None else f"{float(r.iou[b]):.3f} (row {b})"))
    lines.append(f"wrote {r.figure}")
    return "\n".join(lines)


def _grey_uint8(image) -> np.ndarray:
    """``(H, W)`` float -> uint8 grey, min-max scaled."""
    x = image.detach().cpu().float().numpy()
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return np.rint(x * 255).astype(np.uint8)


def save_volume_box_figure(path: str | Path, volume, heat, boxes, *, gt_mask=None, gt_box=None,
                           color_label: int = 0, title: str | None = None, max_slices: int = 32,
                           cols: int = 8, dpi: int = 100) -> Path:
    """Slice montage of a volume with its heatmap and 3D boxes.

    The slices (axis 0) are those the boxes and the GT box span (all slices when there are
    none; at most ``max_slices``, evenly spaced). On each slice: the heatmap (JET, alpha 0.5),
    every box covering the slice as its in-plane rectangle (solid), the GT box dashed and the
    GT mask's contour (white).

    Args:
        volume: ``(D, H, W)``; heat: ``(D, H, W)`` in [0, 1].
        boxes: ``(M, 6)`` z1, y1, x1, z2, y2, x2 (exclusive end).
        gt_mask: ``(D, H, W)`` bool or None; gt_box: ``(6,)`` or None.
        color_label: class id for the box colour.

    Returns:
        The written path.
    """
    from gcfeat.viz.montage import overlay
    from gcfeat.viz.overlay import class_color, draw_boxes, new_figure, save_figure

    vol = volume.detach().cpu().float().numpy()
    hm = heat.detach().cpu().float().numpy()
    b = np.asarray(boxes.detach().cpu() if torch.is_tensor(boxes) else boxes, float).reshape(-1, 6)
    g = None if gt_box is None else np.asarray(gt_box.tolist() if torch.is_tensor(gt_box) else gt_box, float)
    m = None if gt_mask is None else gt_mask.detach().cpu().numpy().astype(bool)
    D = vol.shape[0]
    spans = [(int(r[0]), int(r[3])) for r in b] + ([(int(g[0]), int(g[3]))] if g is not None else [])
    zs = sorted({z for lo, hi in spans for z in range(max(lo, 0), min(hi, D))}) or list(range(D))
    if len(zs) > max_slices:
        zs = [zs[i] for i in np.linspace(0, len(zs) - 1, max_slices).round().astype(int)]
    cols = min(cols, len(zs))
    rows = -(-len(zs) // cols)
    tile, label = 1.7, 0.25  # inches per slice, per slice title
    top = 0.14 * (title.count("\n") + 1) + 0.1 if title else 0.05
    height = (tile + label) * rows + top
    fig = new_figure(tile * cols, height, dpi)
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - (top + label) / height,
                        wspace=0.06, hspace=label / tile)
    lo, hi = float(vol.min()), float(vol.max())
    grey = (vol - lo) / (hi - lo) if hi > lo else np.zeros_like(vol)
    colour = class_color(color_label)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, z in zip(axes.flat, zs):
        ax.imshow(overlay(grey[z], hm[z], normalize=False), interpolation="nearest")
        on = [r for r in b if r[0] <= z < r[3]]
        if on:  # in-plane rectangle of each box covering z: x1, y1, x2, y2
            draw_boxes(ax, [[r[2], r[1], r[5], r[4]] for r in on], color=colour, linewidth=1.2)
        if g is not None and g[0] <= z < g[3]:
            draw_boxes(ax, [[g[2], g[1], g[5], g[4]]], color="white", dashed=True, linewidth=1.0)
        if m is not None and m[z].any():
            ax.contour(m[z].astype(float), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_xlim(-0.5, vol.shape[2] - 0.5)
        ax.set_ylim(vol.shape[1] - 0.5, -0.5)
        ax.set_title(f"z={z}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=7, y=0.995, va="top")
    return save_figure(fig, path, dpi)


# --------------------------------------------------------------------------------------------
#: ``{dest: default}`` per side (see :func:`gcfeat.cli.apply_task_options`).
_COMMON = {"bidx": 0, "threshold": 0.3, "method": "gradcam", "mode": "components",
           "min_area": 25, "device": "cpu", "out": None}
BBOX_SURGICAL = {**_COMMON, "tclass": "0", "data": DEFAULT_DATA, "split": "val",
                 "checkpoint": DEFAULT_CHECKPOINT, "layer": "layer4", "layout": "auto",
                 "pred_threshold": 0.5}
BBOX_MRI = {**_COMMON, "tclass": None, "data": lambda t: task_demo_paths(t)["data"],
            "split": "test", "checkpoint": lambda t: task_demo_paths(t)["checkpoint"],
            "layer": None}


def build_parser() -> argparse.ArgumentParser:
    from gcfeat.tasks import TASK_NAMES

    S = argparse.SUPPRESS  # defaults depend on --task: filled by apply_task_options
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.bbox",
        description="One frame, one class: the class heatmap (JET, alpha 0.5), every predicted "
                    "box with label and score, the ground-truth boxes (dashed) and the class "
                    "probabilities; prints the boxes drawn. --task surgical (default): boxes of "
                    "every class above --pred-threshold. --task prostate|organ3d|alzheimer: the "
                    "boxes of one class (--tclass, default the predicted one), the ground truth "
                    "is the box around the sample's gt_mask (lesion / organ / ventricles), the "
                    "IoU of the best box is printed; organ3d draws a slice montage of its 3D "
                    "boxes.",
        epilog="Options of one side only give an error with the other side's --task.")
    p.add_argument("--task", default="surgical", choices=TASK_NAMES,
                   help="surgical (default) or an MRI task")
    g = p.add_argument_group("all tasks")
    g.add_argument("--bidx", type=int, default=S, help="frame / sample index within the split (default 0)")
    g.add_argument("--tclass", default=S,
                   help="class whose heatmap is shown: index or name (default: surgical 0; MRI "
                        "the predicted class)")
    g.add_argument("--threshold", type=float, default=S, help="heatmap threshold T in [0, 1] (default 0.3)")
    g.add_argument("--data", default=S,
                   help=f"dataset folder (default: surgical {DEFAULT_DATA}; MRI runs/demo_<task>/data)")
    g.add_argument("--split", default=S, help="split (default: surgical val, MRI test)")
    g.add_argument("--checkpoint", default=S,
                   help=f"classifier checkpoint (default: surgical {DEFAULT_CHECKPOINT}; MRI "
                        "runs/demo_<task>/<task>_<demo arch>_best.pt)")
    g.add_argument("--method", default=S, choices=sorted(METHOD_NAMES),
                   help="CAM method (default gradcam)")
    g.add_argument("--layer", default=S,
                   help="target module of the model (default: surgical layer4; MRI the task's "
                        "target layer)")
    g.add_argument("--mode", default=S, choices=("components", "largest", "union"),
                   help="box mode (default components; surgical: tissue always gets one union box)")
    g.add_argument("--min-area", type=float, default=S,
                   help="drop boxes with area (pixels or voxels) <= this (default 25)")
    g.add_argument("--device", default=S, help="torch device (default cpu)")
    g.add_argument("--out", default=S,
                   help=f"output PNG (default: surgical {DEFAULT_OUT_DIR}/bbox_<bidx>_<class>.png; "
                        "MRI runs/demo_<task>/bbox_<bidx>_<class>.png)")
    s = p.add_argument_group("surgical only")
    s.add_argument("--layout", default=S, choices=("auto", "miccai18", "cholec80"),
                   help="dataset layout (default: detected)")
    s.add_argument("--pred-threshold", type=float, default=S,
                   help="classes whose sigmoid score exceeds this get boxes (default 0.5)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parsed ``python -m gcfeat.bbox`` arguments with the ``--task``'s defaults filled in."""
    p = build_parser()
    return apply_task_options(p, p.parse_args(argv), BBOX_SURGICAL, BBOX_MRI)


def run(args: argparse.Namespace) -> int:
    from gcfeat.boxes import heatmap_to_boxes
    from gcfeat.viz import denormalize, save_box_figure

    if not 0.0 <= args.threshold <= 1.0:
        raise TuneError(f"--threshold {args.threshold}: expected a value in [0, 1]")
    model, info = load_model(args.checkpoint, args.device)
    classes = list(info.classes)
    tclass = resolve_class(args.tclass, classes)
    dataset = load_dataset(args.data, info, layout=args.layout, split=args.split)
    try:
        n = len(dataset)
    except TypeError:
        n = None
    if n is not None and not 0 <= args.bidx < n:
        raise TuneError(f"--bidx {args.bidx}: the {args.split!r} split of {args.data} has {n} frames; "
                        f"expected 0..{n - 1}")
    if n is None:  # iterable dataset (a video layout): walk to the frame
        sample = next((s for i, s in enumerate(dataset) if i == args.bidx), None)
        if sample is None:
            raise TuneError(f"--bidx {args.bidx}: the {args.split!r} split of {args.data} has fewer frames")
    else:
        sample = dataset[args.bidx]

    cam = make_cam(model, args.method, args.layer)
    heat, probs = cam_batch(cam, sample["image"][None], args.device)
    boxes = heatmap_to_boxes(heat, args.threshold, mode=args.mode, min_area=args.min_area,
                             class_modes=class_modes_for(classes), probs=probs,
                             pred_threshold=args.pred_threshold).to("cpu")

    mean = info.mean or (0.4664, 0.3421, 0.3651)
    std = info.std or (0.2030, 0.1825, 0.1965)
    image = denormalize(sample["image"], mean, std)
    p = probs[0].cpu().tolist()
    where = f"{sample.get('video', '?')} frame {sample.get('frame_index', '?')}"
    header = (f"{where} (bidx {args.bidx}, {args.split}) | heatmap: {classes[tclass]} "
              f"p={p[tclass]:.2f} | {args.method} {args.layer}, T={args.threshold:g}")
    title = probability_title(p, classes, tclass, args.pred_threshold, header)
    out = Path(args.out) if args.out else Path(DEFAULT_OUT_DIR) / f"bbox_{args.bidx}_{classes[tclass]}.png"
    gt_boxes = sample.get("gt_boxes")
    gt_labels = sample.get("gt_labels")
    save_box_figure(out, image, heat[0, tclass].cpu(), boxes=boxes.xyxy, labels=boxes.label,
                    scores=boxes.score, gt_boxes=gt_boxes, gt_labels=gt_labels,
                    class_names=classes, title=title)
    print(f"{where} (bidx {args.bidx} of split {args.split!r}); heatmap of class {tclass} "
          f"{classes[tclass]} (p={p[tclass]:.3f}); T={args.threshold:g}, pred > {args.pred_threshold:g}")
    predicted = [f"{classes[k]} {p[k]:.2f}" for k in range(len(classes)) if p[k] > args.pred_threshold]
    print(f"predicted classes: {', '.join(predicted) if predicted else 'none'}")
    print(f"boxes drawn ({len(boxes)}):")
    print(format_boxes(boxes, classes))
    if gt_boxes is not None:
        print(f"ground-truth boxes: {len(gt_boxes)} (dashed)")
    print(f"wrote {out}")
    return 0


def run_task(args: argparse.Namespace) -> int:
    """The MRI path of the CLI: :func:`run_task_bbox`, then the printout."""
    r = run_task_bbox(args.task, args.data, args.checkpoint, args.bidx, tclass=args.tclass,
                      threshold=args.threshold, split=args.split, out=args.out,
                      method=args.method, layer=args.layer, mode=args.mode,
                      min_area=args.min_area, device=args.device)
    print(format_task_boxes(r, args.threshold))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args) if args.task == "surgical" else run_task(args)
    except ValueError as e:  # user-caused: bad index, class, path, checkpoint
        print(f"gcfeat.bbox: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
