"""One sample's CAM + boxes figure (`gcfeat bbox`, CLI :mod:`gcfeat.cli.bbox`): one frame, one
class: its heatmap, every predicted box, the ground
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

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from gcfeat import config
from gcfeat.boxes import Boxes, box_iou, heatmap_to_boxes
from gcfeat.boxes.masks import mask_boxes
from gcfeat.data import SURGICAL_MEAN, SURGICAL_STD
from gcfeat.tasks import Task, get_task
from gcfeat.viz import denormalize, save_box_figure
from gcfeat.viz.volume_boxes import grey_uint8, save_volume_box_figure
from gcfeat.workflows.tune import (
    DEFAULT_CHECKPOINT,
    DEFAULT_DATA,
    TuneError,
    cam_batch,
    class_modes_for,
    default_layer,
    load_dataset,
    load_model,
    load_task_dataset,
    load_task_model,
    make_cam,
    make_task_cam,
    task_cam_batch,
)

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
    raise TuneError(
        f"--tclass {text!r}: unknown class; expected an index 0..{len(classes) - 1} or a name: {names}"
    )


def probability_title(
    probs,
    classes: Sequence[str],
    tclass: int,
    pred_threshold: float,
    header: str,
    marked: Sequence[bool] | None = None,
) -> str:
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


@dataclass
class TaskBoxes:
    """What :func:`run_task_bbox` found for one sample (tensors on the CPU)."""

    task: str
    classes: list[str]
    where: str  # "<video> #<frame_index>"
    label: int  # true class
    pred: int  # predicted class (arg-max)
    tclass: int  # class of the heatmap and boxes
    probs: torch.Tensor  # (K,) softmax
    heatmap: torch.Tensor  # (*S) in [0, 1]
    boxes: Boxes  # xyxy (M, 2d)
    gt_box: torch.Tensor | None  # (2d,) box around gt_mask; None: no ground truth
    iou: torch.Tensor | None  # (M,) IoU of each box with gt_box
    figure: Path
    title: str

    @property
    def best(self) -> int | None:
        """Index of the box with the highest IoU (None without ground truth or boxes)."""
        if self.iou is None or self.iou.numel() == 0:
            return None
        return int(self.iou.argmax())


def run_task_bbox(
    task: str | Task,
    data: str | Path | None = None,
    checkpoint: str | Path | None = None,
    bidx: int = 0,
    *,
    tclass: str | int | None = None,
    threshold: float = config.BOX_THRESHOLD,
    split: str = "test",
    out: str | Path | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    mode: str = config.BOX_MODE,
    min_area: float = config.MIN_AREA,
    device: str = "cpu",
) -> TaskBoxes:
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
    t = get_task(task)
    if t.ground_truth != "mask":
        raise TuneError(f"run_task_bbox: --task {t.name} draws with the surgical path (run)")
    if not 0.0 <= threshold <= 1.0:
        raise TuneError(f"--threshold {threshold}: expected a value in [0, 1]")
    paths = t.demo_paths()
    data = paths["data"] if data is None else data
    checkpoint = paths["checkpoint"] if checkpoint is None else checkpoint
    classes = list(t.classes)
    k = None if tclass is None else resolve_class(tclass, classes)  # before any heavy work
    model, info = load_task_model(t, checkpoint, device)
    ds = load_task_dataset(t, data, info, split)
    if not 0 <= bidx < len(ds):
        raise TuneError(
            f"--bidx {bidx}: the {split!r} split of {data} has {len(ds)} samples; expected 0..{len(ds) - 1}"
        )
    sample = ds[bidx]
    cam = make_task_cam(model, t, method, layer)
    heat, probs, cls = task_cam_batch(cam, sample["image"][None], "argmax" if k is None else [k], device)
    heat, probs = heat.cpu(), probs[0].cpu()
    k = int(cls[0])
    boxes = heatmap_to_boxes(heat[:, None], threshold, mode=mode, min_area=min_area, classes=[k]).to("cpu")
    mask = sample.get("gt_mask")
    gt_box = iou = None
    if torch.is_tensor(mask) and bool(mask.any()):
        gt_box = mask_boxes(mask[None])[0][0]
        iou = box_iou(gt_box[None], boxes.xyxy)[0]
    label, pred = int(sample["label"]), int(probs.argmax())
    where = f"{sample.get('video', '?')} #{sample.get('frame_index', '?')}"
    what = t.gt_name
    header = (
        f"{t.name} {where} (bidx {bidx}, {split}) | true {classes[label]} | heatmap: "
        f"{classes[k]} p={float(probs[k]):.2f} | {method}, T={threshold:g}"
    )
    if gt_box is None or iou is None:  # both None together: no ground-truth mask
        gt_line = f"no ground truth: the sample's {what} mask is empty"
    elif len(boxes) == 0:
        gt_line = f"GT = box around the {what} mask (dashed) | no box at T={threshold:g}"
    else:
        gt_line = f"GT = box around the {what} mask (dashed) | best box IoU {float(iou.max()):.3f}"
    title = (
        probability_title(
            probs.tolist(), classes, k, 0.0, header, marked=[i == pred for i in range(len(classes))]
        )
        + "\n"
        + gt_line
    )
    out = Path(out) if out else Path(paths["out"]) / f"bbox_{bidx}_{classes[k]}.png"
    image = sample["image"][t.display_channel]
    if t.spatial_dims == 3:
        save_volume_box_figure(
            out,
            image,
            heat[0],
            boxes.xyxy,
            gt_mask=mask if gt_box is not None else None,
            gt_box=gt_box,
            color_label=k,
            title=title,
        )
    else:
        save_box_figure(
            out,
            grey_uint8(image),
            heat[0],
            boxes=boxes.xyxy,
            labels=boxes.label,
            scores=boxes.score,
            gt_boxes=None if gt_box is None else gt_box[None],
            gt_labels=None if gt_box is None else [label],
            class_names=classes,
            title=title,
        )
    return TaskBoxes(t.name, classes, where, label, pred, k, probs, heat[0], boxes, gt_box, iou, out, title)


def format_task_boxes(r: TaskBoxes, threshold: float | None = None) -> str:
    """The printout of :func:`run_task_bbox`: classes, the box table, the GT box, the best IoU."""
    c = r.classes
    d = r.heatmap.ndim
    cols = ("z1", "y1", "x1", "z2", "y2", "x2") if d == 3 else ("x1", "y1", "x2", "y2")
    t = "" if threshold is None else f"; T={threshold:g}"
    lines = [
        f"{r.task} {r.where}: true class {r.label} {c[r.label]}; predicted {r.pred} "
        f"{c[r.pred]} (p={float(r.probs[r.pred]):.3f}); heatmap of class {r.tclass} "
        f"{c[r.tclass]} (p={float(r.probs[r.tclass]):.3f}){t}",
        "probabilities: " + ", ".join(f"{n} {float(p):.3f}" for n, p in zip(c, r.probs)),
        f"boxes drawn ({len(r.boxes)}):",
        format_boxes(r.boxes, c),
    ]
    what = get_task(r.task).gt_name
    if r.gt_box is None:
        lines.append(f"ground truth: none (the sample's {what} mask is empty)")
    else:
        lines.append(
            f"ground-truth box ({what} mask, dashed): "
            + " ".join(cols)
            + " = "
            + " ".join(str(int(v)) for v in r.gt_box.tolist())
        )
        b = r.best
        lines.append(
            "IoU of the best box with the GT box: "
            + ("no box" if b is None or r.iou is None else f"{float(r.iou[b]):.3f} (row {b})")
        )
    lines.append(f"wrote {r.figure}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# tasks with box ground truth (surgical): every predicted class's boxes on one frame


@dataclass
class FrameBoxes:
    """What :func:`inspect_frame` found for one frame (tensors on the CPU)."""

    classes: list[str]
    where: str  # "<video> frame <frame_index>"
    bidx: int
    split: str
    tclass: int  # class of the heatmap shown
    probs: list[float]  # (K,) sigmoid scores
    boxes: Boxes  # every class above pred_threshold
    gt_boxes: torch.Tensor | None  # (n, 4)
    threshold: float
    pred_threshold: float
    figure: Path


def _frame(dataset, bidx: int, split: str, data) -> dict:
    """Sample ``bidx`` of a map-style or iterable (video) dataset."""
    try:
        n = len(dataset)
    except TypeError:
        n = None
    if n is not None and not 0 <= bidx < n:
        raise TuneError(f"--bidx {bidx}: the {split!r} split of {data} has {n} frames; expected 0..{n - 1}")
    if n is not None:
        return dataset[bidx]
    sample = next((s for i, s in enumerate(dataset) if i == bidx), None)  # walk to the frame
    if sample is None:
        raise TuneError(f"--bidx {bidx}: the {split!r} split of {data} has fewer frames")
    return sample


def inspect_frame(
    data: str | Path = DEFAULT_DATA,
    checkpoint: str | Path = DEFAULT_CHECKPOINT,
    bidx: int = 0,
    *,
    tclass: str | int = "0",
    threshold: float = config.BOX_THRESHOLD,
    split: str = "val",
    out: str | Path | None = None,
    method: str = config.CAM_METHOD,
    layer: str | None = None,
    mode: str = config.BOX_MODE,
    min_area: float = config.MIN_AREA,
    layout: str = "auto",
    pred_threshold: float = config.PRED_THRESHOLD,
    device: str = config.DEVICE,
) -> FrameBoxes:
    """One frame of a box-ground-truth task (surgical): the heatmap of ``tclass``, the boxes of
    every class above ``pred_threshold``, the GT boxes dashed, probabilities in the title.
    ``layer`` None: ``layer4`` for a ResNet, else the last feature level (``default_layer``)."""
    if not 0.0 <= threshold <= 1.0:
        raise TuneError(f"--threshold {threshold}: expected a value in [0, 1]")
    model, info = load_model(checkpoint, device)
    classes = list(info.classes)
    k = resolve_class(tclass, classes)
    sample = _frame(load_dataset(data, info, layout=layout, split=split), bidx, split, data)
    layer = default_layer(model, info.input_size) if layer is None else layer
    cam = make_cam(model, method, layer)
    heat, probs = cam_batch(cam, sample["image"][None], device)
    boxes = heatmap_to_boxes(
        heat,
        threshold,
        mode=mode,
        min_area=min_area,
        class_modes=class_modes_for(classes),
        probs=probs,
        pred_threshold=pred_threshold,
    ).to("cpu")
    image = denormalize(sample["image"], info.mean or SURGICAL_MEAN, info.std or SURGICAL_STD)
    p = probs[0].cpu().tolist()
    where = f"{sample.get('video', '?')} frame {sample.get('frame_index', '?')}"
    header = (
        f"{where} (bidx {bidx}, {split}) | heatmap: {classes[k]} "
        f"p={p[k]:.2f} | {method} {layer}, T={threshold:g}"
    )
    title = probability_title(p, classes, k, pred_threshold, header)
    out = Path(out) if out else Path(DEFAULT_OUT_DIR) / f"bbox_{bidx}_{classes[k]}.png"
    gt_boxes = sample.get("gt_boxes")
    save_box_figure(
        out,
        image,
        heat[0, k].cpu(),
        boxes=boxes.xyxy,
        labels=boxes.label,
        scores=boxes.score,
        gt_boxes=gt_boxes,
        gt_labels=sample.get("gt_labels"),
        class_names=classes,
        title=title,
    )
    return FrameBoxes(classes, where, bidx, split, k, p, boxes, gt_boxes, threshold, pred_threshold, out)


def format_frame_boxes(r: FrameBoxes) -> str:
    """The printout of :func:`inspect_frame`."""
    c, p, k = r.classes, r.probs, r.tclass
    predicted = [f"{c[i]} {p[i]:.2f}" for i in range(len(c)) if p[i] > r.pred_threshold]
    lines = [
        f"{r.where} (bidx {r.bidx} of split {r.split!r}); heatmap of class {k} "
        f"{c[k]} (p={p[k]:.3f}); T={r.threshold:g}, pred > {r.pred_threshold:g}",
        f"predicted classes: {', '.join(predicted) if predicted else 'none'}",
        f"boxes drawn ({len(r.boxes)}):",
        format_boxes(r.boxes, c),
    ]
    if r.gt_boxes is not None:
        lines.append(f"ground-truth boxes: {len(r.gt_boxes)} (dashed)")
    lines.append(f"wrote {r.figure}")
    return "\n".join(lines)


def inspect(
    task: str | Task = "surgical", data=None, checkpoint=None, bidx: int = 0, **kwargs
) -> FrameBoxes | TaskBoxes:
    """One sample's CAM + boxes figure for any task (the ``bbox`` command): box-ground-truth
    tasks through :func:`inspect_frame`, mask tasks through :func:`run_task_bbox`."""
    t = get_task(task)
    if t.ground_truth == "boxes":
        return inspect_frame(
            DEFAULT_DATA if data is None else data,
            DEFAULT_CHECKPOINT if checkpoint is None else checkpoint,
            bidx,
            **kwargs,
        )
    return run_task_bbox(t, data, checkpoint, bidx, **kwargs)
