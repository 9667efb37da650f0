"""`python -m gcfeat.tune` / `gcfeat tune`: the threshold study (see :mod:`gcfeat.workflows.tune`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gcfeat import config
from gcfeat.cli.common import add_debug, apply_task_options, debugging, run
from gcfeat.config import METHOD_NAMES
from gcfeat.tasks import TASK_NAMES
from gcfeat.workflows.tune import (
    DEFAULT_CHECKPOINT,
    DEFAULT_DATA,
    DEFAULT_OUT,
    format_summary,
    task_demo_paths,
    tune,
)
from gcfeat.workflows.tune_transfer import FUSED, format_transfer, run_transfer

#: ``{dest: default}`` per side of ``python -m gcfeat.tune`` (see :func:`apply_task_options`).
_COMMON = {
    "thresholds": config.THRESHOLD_SWEEP,
    "batch_size": config.CAM_BATCH_SIZE,
    "method": config.CAM_METHOD,
    "mode": config.BOX_MODE,
    "min_area": config.MIN_AREA,
    "metric": config.TUNE_METRIC,
    "device": config.DEVICE,
    "limit": None,
}
TUNE_SURGICAL = {
    "data": DEFAULT_DATA,
    "checkpoint": DEFAULT_CHECKPOINT,
    "out": DEFAULT_OUT,
    "split": "val",
    "layer": None,
    **_COMMON,
    "layout": "auto",
    "num_workers": 0,
    "pred_threshold": config.PRED_THRESHOLD,
    "max_frames": None,
    "calibrate_split": None,
    "score_split": None,
    "layers": None,
    "methods": None,
    "min_gt": 10,
}
TUNE_MRI = {
    "data": lambda t: task_demo_paths(t)["data"],
    "checkpoint": lambda t: task_demo_paths(t)["checkpoint"],
    "out": lambda t: task_demo_paths(t)["out"] + "/tune",
    "split": "test",
    "layer": None,
    **_COMMON,
    "target": "true",
}


def build_parser() -> argparse.ArgumentParser:
    S = argparse.SUPPRESS  # defaults depend on --task: filled by apply_task_options
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.tune",
        description="Threshold study: CAM boxes vs ground-truth boxes for every threshold T and "
        "class (mean IoU, hit rate at IoU 0.5, box precision/recall, pointing game, "
        "boxes per frame). The CAM pass runs once; writes a CSV, PNG curves and the "
        "recommended T per class and overall (JSON). --task surgical (default): "
        "ground-truth boxes of the MICCAI 2018 / Cholec80 layouts, boxes for every "
        "predicted class. --task prostate|organ3d|alzheimer: the ground truth is the "
        "box around each sample's gt_mask (lesion / organ / ventricles; samples "
        "without one are skipped), one CAM per sample (the true class, or --target "
        "pred), 3D boxes for organ3d; pointing game = arg-max inside the mask.",
        epilog="Options of one side only give an error with the other side's --task. "
        "The protocol (surgical): --calibrate-split val --score-split test chooses T on "
        "val and scores the boxes on test beside the oracle T of test, for every "
        "--methods x --layers map source and the baselines (Otsu, 20%% of max, random), "
        "predicted classes and GT-known; writes tune_transfer.csv / .json / .png and "
        "thresholds.json (per-class T of the source chosen on val) for extract "
        "--thresholds.",
    )
    p.add_argument("--task", default="surgical", choices=TASK_NAMES, help="surgical (default) or an MRI task")
    g = p.add_argument_group("all tasks")
    g.add_argument(
        "--data",
        default=S,
        help=f"dataset folder (default: surgical {DEFAULT_DATA}; MRI "
        "runs/demo_<task>/data, what scripts/demo --task writes)",
    )
    g.add_argument(
        "--checkpoint",
        default=S,
        help=f"classifier checkpoint (default: surgical {DEFAULT_CHECKPOINT}; MRI "
        "runs/demo_<task>/<task>_<demo arch>_best.pt)",
    )
    g.add_argument("--split", default=S, help="split to evaluate (default: surgical val, MRI test)")
    g.add_argument(
        "--thresholds",
        default=S,
        help="start:stop:step (stop included) or a comma list (default 0.05:0.95:0.05)",
    )
    g.add_argument(
        "--out", default=S, help=f"output folder (default: surgical {DEFAULT_OUT}; MRI runs/demo_<task>/tune)"
    )
    g.add_argument("--batch-size", type=int, default=S, help="images per CAM batch (default 8)")
    g.add_argument("--method", default=S, choices=sorted(METHOD_NAMES), help="CAM method (default gradcam)")
    g.add_argument(
        "--layer",
        default=S,
        help="target module of the model (default: surgical layer4, or the last feature "
        "level of a non-ResNet, e.g. features.7; MRI the task's "
        "target layer: layer4[-1] / last_conv)",
    )
    g.add_argument(
        "--mode",
        default=S,
        choices=("components", "largest", "union"),
        help="box mode (default components; surgical: tissue always gets one union "
        "box; MRI: mean IoU takes a sample's best component)",
    )
    g.add_argument(
        "--min-area",
        type=float,
        default=S,
        help="drop boxes with area (pixels or voxels) <= this (default 25)",
    )
    g.add_argument(
        "--metric",
        default=S,
        choices=("mean_iou", "hit_rate", "precision", "recall", "f1", "pointing_game"),
        help="what the recommended T maximises (default mean_iou)",
    )
    g.add_argument(
        "--limit",
        type=int,
        default=S,
        help="surgical: only the first N frames; MRI: N samples, class-balanced (as gcfeat.evaluate --limit)",
    )
    g.add_argument("--device", default=S, help="torch device (default cpu)")
    s = p.add_argument_group("surgical only")
    s.add_argument(
        "--layout",
        default=S,
        choices=("auto", "miccai18", "cholec80"),
        help="dataset layout (default: detected)",
    )
    s.add_argument("--num-workers", type=int, default=S, help="data loader workers (default 0)")
    s.add_argument(
        "--pred-threshold",
        type=float,
        default=S,
        help="classes whose sigmoid score exceeds this get boxes (default 0.5)",
    )
    s.add_argument("--max-frames", type=int, default=S, help="only the first N frames (= --limit)")
    s.add_argument(
        "--calibrate-split",
        default=S,
        help="the protocol: choose T on this split (e.g. val; needs --score-split)",
    )
    s.add_argument(
        "--score-split", default=S, help="the protocol: score the calibrated T on this split (e.g. test)"
    )
    s.add_argument(
        "--layers",
        nargs="+",
        default=S,
        help=f"the protocol's layer sweep: module names and/or {FUSED!r} (the "
        "product of the layer2..layer4 maps); default: --layer",
    )
    s.add_argument(
        "--methods",
        nargs="+",
        default=S,
        choices=sorted(METHOD_NAMES),
        help="the protocol's method sweep (default: --method)",
    )
    s.add_argument(
        "--min-gt",
        type=int,
        default=S,
        help="the protocol: classes with fewer calibration GT boxes take the global T (default 10)",
    )
    m = p.add_argument_group("MRI tasks only (prostate, organ3d, alzheimer)")
    m.add_argument(
        "--target",
        default=S,
        choices=("true", "pred"),
        help="class whose CAM is scored: the true label (default) or the prediction",
    )
    return add_debug(p)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parsed ``python -m gcfeat.tune`` arguments with the ``--task``'s defaults filled in."""
    p = build_parser()
    args = p.parse_args(argv)
    apply_task_options(p, args, TUNE_SURGICAL, TUNE_MRI)
    if args.task == "surgical" and args.limit is not None:
        if args.max_frames is not None and args.max_frames != args.limit:
            p.error(f"--limit {args.limit} and --max-frames {args.max_frames}: give one")
        args.max_frames = args.limit
    if args.task == "surgical":
        protocol = args.calibrate_split is not None or args.score_split is not None
        if protocol and (args.calibrate_split is None or args.score_split is None):
            p.error("--calibrate-split and --score-split: give both (the protocol) or neither")
        if not protocol and (args.layers is not None or args.methods is not None):
            p.error("--layers / --methods sweep the protocol: add --calibrate-split and --score-split")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run(lambda: _tune(args), debugging(args))


def _tune(args: argparse.Namespace) -> int:
    if args.task == "surgical" and args.score_split is not None:
        result = run_transfer(
            args.data,
            args.checkpoint,
            args.thresholds,
            calibrate_split=args.calibrate_split,
            score_split=args.score_split,
            methods=args.methods or [args.method],
            layers=args.layers or [args.layer],
            layout=args.layout,
            out=args.out,
            batch_size=args.batch_size,
            pred_threshold=args.pred_threshold,
            mode=args.mode,
            min_area=args.min_area,
            min_gt=args.min_gt,
            device=args.device,
            num_workers=args.num_workers,
            max_frames=args.max_frames,
        )
        print(format_transfer(result))
        f = result.files
        print(f"wrote {f['csv']}, {f['json']}, {f['figure']}, {f['thresholds']}")
        return 0
    if args.task == "surgical":
        table, rec = tune(
            args.task,
            args.data,
            args.checkpoint,
            args.thresholds,
            split=args.split,
            layout=args.layout,
            out=args.out,
            batch_size=args.batch_size,
            method=args.method,
            layer=args.layer,
            pred_threshold=args.pred_threshold,
            mode=args.mode,
            min_area=args.min_area,
            metric=args.metric,
            device=args.device,
            num_workers=args.num_workers,
            max_frames=args.max_frames,
        )
    else:
        table, rec = tune(
            args.task,
            args.data,
            args.checkpoint,
            args.thresholds,
            split=args.split,
            limit=args.limit,
            target=args.target,
            out=args.out,
            batch_size=args.batch_size,
            method=args.method,
            layer=args.layer,
            mode=args.mode,
            min_area=args.min_area,
            metric=args.metric,
            device=args.device,
        )
        st = rec["settings"]
        print(
            f"{args.task}: {st['frames']} of {st['samples']} {st['split']!r} samples have a "
            f"ground-truth mask (the others are skipped); CAM of the "
            f"{'true' if st['target'] == 'true' else 'predicted'} class"
        )
    print(format_summary(table, rec))
    files = rec["files"]
    print(
        f"wrote {files['csv']}, {files['curves']} (+{len(files['class_curves'])} per-class plots), {files['json']}"
    )
    return 0
