"""`python -m gcfeat.demo` / `gcfeat demo` / `scripts/demo`: the demo of a task on synthetic
data (see :mod:`gcfeat.workflows.demo` and :mod:`gcfeat.workflows.task_demo`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gcfeat import config
from gcfeat.cli.common import add_debug, debugging, run
from gcfeat.data import parse_size
from gcfeat.models.zoo import ZooError, check_arch
from gcfeat.tasks import get_task
from gcfeat.workflows.demo import DEFAULT_CHECKPOINT_DIR, DEFAULT_OUT, demo


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.demo",
        description="The main job on synthetic data: generate scenes, train the classifier, "
        "study the box threshold, draw one frame, extract features, export, report "
        "(report.md, then report.html: gcfeat report). "
        "Defaults finish within 10 minutes on 2 CPU cores. --task organ3d|prostate|"
        "alzheimer runs the MRI demo instead: synthetic data in the real format, "
        "train, Grad-CAM / Score-CAM vs a random map (localisation, deletion / "
        "insertion AUC), features of the test split into HDF5, report.md and "
        "report.html (gcfeat.workflows.task_demo).",
    )
    p.add_argument(
        "--task",
        default="surgical",
        choices=("surgical", "organ3d", "prostate", "alzheimer"),
        help="demo to run (default surgical, the main job)",
    )
    p.add_argument(
        "--out", default=None, help=f"output folder (default {DEFAULT_OUT}; MRI tasks: runs/demo_<task>)"
    )
    p.add_argument(
        "--videos", type=int, default=10, help="synthetic videos (default 10; seq 1 and 5 are val)"
    )
    p.add_argument("--frames", type=int, default=150, help="frames per video (default 150)")
    p.add_argument(
        "--size", default="128x160", help="frame size HxW (default 128x160; the original is 256x320)"
    )
    p.add_argument(
        "--arch",
        default=None,
        help="classifier (surgical: resnet18 (default), resnet34, resnet50 or any "
        "torchvision classifier (efficientnet_b0, mobilenet_v3_large, "
        "convnext_tiny, ...) or timm:NAME, from scratch: ResNet50, the product "
        "default, needs about 3x the training time, see the README; MRI tasks: "
        "any of the task's archs, default in the task's Task.demo)",
    )
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 5; MRI: 4)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="training batch size (default 32; MRI: per task)"
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate, AdamW one-cycle (default 2e-3; MRI: per task)",
    )
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help="MRI tasks: synthetic training volumes / cases / images (per-task default)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="MRI tasks: test samples for CAMs and deletion / insertion curves, a "
        "class-balanced subset (gcfeat.data.subsets.balanced_subset)",
    )
    p.add_argument(
        "--n-steps",
        type=int,
        default=None,
        help="MRI tasks: deletion / insertion steps, points = steps + 1 (per-task "
        "default: organ3d 32, prostate 64, alzheimer 129)",
    )
    p.add_argument(
        "--exports",
        type=int,
        default=2,
        help="MRI tasks: test samples with CAM exports and curve figures (default 2)",
    )
    p.add_argument(
        "--cams",
        nargs="+",
        default=["gradcam", "scorecam"],
        help="MRI tasks: CAM methods evaluated beside the random map (default gradcam scorecam)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for data and training (default 0)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=["m1", "m2", "m3"],
        choices=("m1", "m2", "m3"),
        help="feature extractors (default m1 m2 m3)",
    )
    p.add_argument("--thresholds", default=config.THRESHOLD_SWEEP, help="threshold sweep start:stop:step")
    p.add_argument(
        "--checkpoint-dir",
        default=None,
        help=f"where the checkpoint goes (default {DEFAULT_CHECKPOINT_DIR}; MRI: --out)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    p.add_argument(
        "--skip-train",
        action="store_true",
        help="reuse checkpoints/demo_<arch>_best.pt if it exists (MRI: "
        "<checkpoint-dir>/<task>_<arch>_best.pt)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--test-videos",
        type=int,
        default=2,
        help="surgical: held-out test videos after --videos (default 2; the train / "
        "val videos are the same with or without them): T is calibrated on val "
        "and scored on them; 0 skips the transfer stage",
    )
    return add_debug(p)


def main(argv: Sequence[str] | None = None) -> int:
    """User errors print ``error: ...`` and return 2 like every command (``--debug`` shows
    the traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return run(lambda: _demo(parser, args), debugging(args))


def _demo(parser, args) -> int:
    if args.task != "surgical":
        demo(
            args.task,
            args.out,
            n=args.n,
            arch=args.arch,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            limit=args.limit,
            n_steps=args.n_steps,
            methods=args.cams,
            exports=args.exports,
            checkpoint_dir=args.checkpoint_dir,
            skip_train=args.skip_train,
            seed=args.seed,
            device=args.device,
            progress=not args.no_progress,
        )
        return 0
    d = get_task("surgical").demo
    arch = args.arch or d["arch"]
    try:
        check_arch(arch)  # any torchvision / timm:NAME classifier
    except ZooError as e:
        parser.error(str(e))
    demo(
        "surgical",
        args.out or DEFAULT_OUT,
        videos=args.videos,
        frames=args.frames,
        size=parse_size(args.size),
        arch=arch,
        epochs=d["epochs"] if args.epochs is None else args.epochs,
        batch_size=args.batch_size or d["batch_size"],
        lr=args.lr or d["lr"],
        seed=args.seed,
        checkpoint_dir=args.checkpoint_dir or DEFAULT_CHECKPOINT_DIR,
        methods=args.methods,
        thresholds=args.thresholds,
        device=args.device,
        skip_train=args.skip_train,
        workers=args.workers,
        progress=not args.no_progress,
        test_videos=args.test_videos,
    )
    return 0
