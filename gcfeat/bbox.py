"""`python -m gcfeat.bbox`: one frame, one class: its heatmap, every predicted box, the ground
truth, the class probabilities (the original ``miccai_bbox.py``, without its crashes).

    python -m gcfeat.bbox --bidx 15 --tclass 3 --threshold 0.3

Frame ``--bidx`` of the split (validation by default), class ``--tclass`` (index or name)
overlaid in JET at alpha 0.5; the boxes of every class whose probability exceeds
``--pred-threshold`` in per-class colours with labels and scores; ground-truth boxes dashed when
the data has them; the class probabilities in the title. The boxes it drew are printed as a
table. Defaults point at what ``scripts/demo`` writes.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Sequence

from gcfeat.tune import (DEFAULT_CHECKPOINT, DEFAULT_DATA, METHOD_NAMES, TuneError, cam_batch,
                         class_modes_for, load_dataset, load_model, make_cam)

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
                      header: str) -> str:
    """Title lines: the header, then ``name p`` for every class (``*`` marks predicted)."""
    items = [f"{'*' if p > pred_threshold else ''}{n} {p:.2f}" for n, p in zip(classes, probs)]
    body = textwrap.wrap("  ".join(items), width=95)
    return "\n".join([header] + body)


def format_boxes(boxes, classes: Sequence[str]) -> str:
    """Printed table of a frame's boxes: ``class_id name x1 y1 x2 y2 score`` per row."""
    lines = [f"  {'class_id':>8} {'class':<26} {'x1':>5} {'y1':>5} {'x2':>5} {'y2':>5} {'score':>6}"]
    for (x1, y1, x2, y2), k, s in zip(boxes.xyxy.tolist(), boxes.label.tolist(), boxes.score.tolist()):
        name = classes[k] if 0 <= k < len(classes) else str(k)
        lines.append(f"  {k:>8d} {name:<26} {int(x1):>5d} {int(y1):>5d} {int(x2):>5d} {int(y2):>5d} {s:>6.3f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.bbox",
        description="One frame, one class: the class heatmap (JET, alpha 0.5), every predicted "
                    "box with label and score, the ground-truth boxes (dashed) and the class "
                    "probabilities; prints the boxes drawn.")
    p.add_argument("--bidx", type=int, default=0, help="frame index within the split (default 0)")
    p.add_argument("--tclass", default="0", help="class whose heatmap is shown: index or name (default 0)")
    p.add_argument("--threshold", type=float, default=0.3, help="heatmap threshold T in [0, 1] (default 0.3)")
    p.add_argument("--pred-threshold", type=float, default=0.5,
                   help="classes whose sigmoid score exceeds this get boxes (default 0.5)")
    p.add_argument("--data", default=DEFAULT_DATA, help=f"dataset folder (default {DEFAULT_DATA})")
    p.add_argument("--layout", default="auto", choices=("auto", "miccai18", "cholec80"),
                   help="dataset layout (default: detected)")
    p.add_argument("--split", default="val", help="split (default val)")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help=f"classifier checkpoint (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--method", default="gradcam", choices=sorted(METHOD_NAMES),
                   help="CAM method (default gradcam)")
    p.add_argument("--layer", default="layer4", help="target module of the model (default layer4)")
    p.add_argument("--mode", default="components", choices=("components", "largest", "union"),
                   help="instrument box mode (tissue always gets one union box; default components)")
    p.add_argument("--min-area", type=float, default=25,
                   help="drop boxes with area <= this many pixels (default 25)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--out", default=None,
                   help=f"output PNG (default {DEFAULT_OUT_DIR}/bbox_<bidx>_<class>.png)")
    return p


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ValueError as e:  # user-caused: bad index, class, path, checkpoint
        print(f"gcfeat.bbox: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
