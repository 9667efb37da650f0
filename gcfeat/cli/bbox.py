"""`python -m gcfeat.bbox` / `gcfeat bbox`: one sample's CAM + boxes figure (the original
``miccai_bbox.py``; see :mod:`gcfeat.workflows.inspect`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gcfeat import config
from gcfeat.cli.common import add_debug, apply_task_options, debugging, run
from gcfeat.config import METHOD_NAMES
from gcfeat.tasks import TASK_NAMES
from gcfeat.workflows.inspect import DEFAULT_OUT_DIR, format_frame_boxes, format_task_boxes, inspect
from gcfeat.workflows.tune import DEFAULT_CHECKPOINT, DEFAULT_DATA, task_demo_paths

#: ``{dest: default}`` per side (see :func:`gcfeat.cli.apply_task_options`).
_COMMON = {
    "bidx": 0,
    "threshold": config.BOX_THRESHOLD,
    "method": config.CAM_METHOD,
    "mode": config.BOX_MODE,
    "min_area": config.MIN_AREA,
    "device": config.DEVICE,
    "out": None,
}
BBOX_SURGICAL = {
    **_COMMON,
    "tclass": "0",
    "data": DEFAULT_DATA,
    "split": "val",
    "checkpoint": DEFAULT_CHECKPOINT,
    "layer": None,
    "layout": "auto",
    "pred_threshold": config.PRED_THRESHOLD,
}
BBOX_MRI = {
    **_COMMON,
    "tclass": None,
    "data": lambda t: task_demo_paths(t)["data"],
    "split": "test",
    "checkpoint": lambda t: task_demo_paths(t)["checkpoint"],
    "layer": None,
}


def build_parser() -> argparse.ArgumentParser:
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
        epilog="Options of one side only give an error with the other side's --task.",
    )
    p.add_argument("--task", default="surgical", choices=TASK_NAMES, help="surgical (default) or an MRI task")
    g = p.add_argument_group("all tasks")
    g.add_argument("--bidx", type=int, default=S, help="frame / sample index within the split (default 0)")
    g.add_argument(
        "--tclass",
        default=S,
        help="class whose heatmap is shown: index or name (default: surgical 0; MRI the predicted class)",
    )
    g.add_argument("--threshold", type=float, default=S, help="heatmap threshold T in [0, 1] (default 0.3)")
    g.add_argument(
        "--data",
        default=S,
        help=f"dataset folder (default: surgical {DEFAULT_DATA}; MRI runs/demo_<task>/data)",
    )
    g.add_argument("--split", default=S, help="split (default: surgical val, MRI test)")
    g.add_argument(
        "--checkpoint",
        default=S,
        help=f"classifier checkpoint (default: surgical {DEFAULT_CHECKPOINT}; MRI "
        "runs/demo_<task>/<task>_<demo arch>_best.pt)",
    )
    g.add_argument("--method", default=S, choices=sorted(METHOD_NAMES), help="CAM method (default gradcam)")
    g.add_argument(
        "--layer",
        default=S,
        help="target module of the model (default: surgical layer4, or the last feature "
        "level of a non-ResNet, e.g. features.7; MRI the task's "
        "target layer)",
    )
    g.add_argument(
        "--mode",
        default=S,
        choices=("components", "largest", "union"),
        help="box mode (default components; surgical: tissue always gets one union box)",
    )
    g.add_argument(
        "--min-area",
        type=float,
        default=S,
        help="drop boxes with area (pixels or voxels) <= this (default 25)",
    )
    g.add_argument("--device", default=S, help="torch device (default cpu)")
    g.add_argument(
        "--out",
        default=S,
        help=f"output PNG (default: surgical {DEFAULT_OUT_DIR}/bbox_<bidx>_<class>.png; "
        "MRI runs/demo_<task>/bbox_<bidx>_<class>.png)",
    )
    s = p.add_argument_group("surgical only")
    s.add_argument(
        "--layout",
        default=S,
        choices=("auto", "miccai18", "cholec80"),
        help="dataset layout (default: detected)",
    )
    s.add_argument(
        "--pred-threshold",
        type=float,
        default=S,
        help="classes whose sigmoid score exceeds this get boxes (default 0.5)",
    )
    return add_debug(p)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parsed ``python -m gcfeat.bbox`` arguments with the ``--task``'s defaults filled in."""
    p = build_parser()
    return apply_task_options(p, p.parse_args(argv), BBOX_SURGICAL, BBOX_MRI)


def _bbox(args: argparse.Namespace) -> int:
    common = dict(
        tclass=args.tclass,
        threshold=args.threshold,
        split=args.split,
        out=args.out,
        method=args.method,
        layer=args.layer,
        mode=args.mode,
        min_area=args.min_area,
        device=args.device,
    )
    if args.task == "surgical":
        r = inspect(
            args.task,
            args.data,
            args.checkpoint,
            args.bidx,
            layout=args.layout,
            pred_threshold=args.pred_threshold,
            **common,
        )
        print(format_frame_boxes(r))
    else:
        r = inspect(args.task, args.data, args.checkpoint, args.bidx, **common)
        print(format_task_boxes(r, args.threshold))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run(lambda: _bbox(args), debugging(args))
